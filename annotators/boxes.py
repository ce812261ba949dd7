"""Boxes from segment masks, with detectron2's edge semantics (docs/moai.md §3).

detectron2's `BitMasks.get_bounding_boxes` returns [x0, y0, x1, y1] with x1 = last occupied
column + 1 and y1 = last occupied row + 1 (a one-pixel mask at (r, c) has box [c, r, c+1, r+1]),
and an all-zero box for an empty mask. MoAI computes panoptic boxes that way; so do we, in
numpy by default, or through detectron2 itself when a user has it installed.
"""
from __future__ import annotations

import numpy as np

BACKENDS = ("numpy", "detectron2")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(H, W) bool mask -> pixel box (x0, y0, x1, y1), x1/y1 exclusive; (0, 0, 0, 0) if empty."""
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D (H, W), got shape {mask.shape}")
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def masks_boxes(masks: np.ndarray, backend: str = "numpy") -> np.ndarray:
    """(N, H, W) bool masks -> (N, 4) float32 pixel boxes, detectron2 semantics."""
    if backend == "numpy":
        return np.array([mask_box(m) for m in masks], dtype=np.float32).reshape(-1, 4)
    if backend == "detectron2":
        return _detectron2_boxes(masks)
    raise ValueError(f"unknown box backend {backend!r}; choose from {BACKENDS}")


def _detectron2_boxes(masks: np.ndarray) -> np.ndarray:
    try:
        import torch
        from detectron2.structures import BitMasks
    except ImportError as err:
        raise ImportError(
            "box_backend='detectron2' needs detectron2, which is not installed (it has no wheel on PyPI; "
            "build it from source yourself). The default box_backend='numpy' gives the same boxes."
        ) from err
    boxes = BitMasks(torch.from_numpy(np.asarray(masks, dtype=bool))).get_bounding_boxes().tensor
    return boxes.numpy().astype(np.float32).reshape(-1, 4)


def normalize_box(box, width: int, height: int) -> list[float]:
    """Pixel [x0, y0, x1, y1] -> fractions of the working image size (not clipped)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0 / width, y0 / height, x1 / width, y1 / height]
