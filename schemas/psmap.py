"""The panoptic segment-id map: stored as lossless PNG, coloured as MoAI does when read.

docs/moai.md §4: ids <= 0 -> 0, coloured by the PASCAL VOC bit-interleaved colormap of 134
entries indexed by segment id (not class).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

MOAI_COLORMAP_SIZE = 134


def encode_ps_map(segment_map: np.ndarray) -> bytes:
    """(H, W) integer segment ids -> 8-bit greyscale PNG bytes. Ids <= 0 become 0."""
    if segment_map.ndim != 2:
        raise ValueError(f"ps_map must be 2-D (H, W), got shape {segment_map.shape}")
    ids = np.clip(np.asarray(segment_map), 0, None)
    if ids.size and ids.max() > 255:
        raise ValueError(f"ps_map holds segment id {int(ids.max())}; at most 255 fit in 8 bits")
    buf = io.BytesIO()
    Image.fromarray(ids.astype(np.uint8), mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_ps_map(png: bytes) -> np.ndarray:
    """PNG bytes -> (H, W) uint8 segment ids."""
    with Image.open(io.BytesIO(png)) as im:
        if im.mode != "L":
            raise ValueError(f"ps_map PNG must be 8-bit greyscale ('L'), got mode {im.mode!r}")
        return np.array(im)


def voc_colormap(n: int = MOAI_COLORMAP_SIZE) -> np.ndarray:
    """(n, 3) uint8 PASCAL VOC colormap: bits of the index interleaved into R, G, B."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def colorize(segment_map: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 RGB in MoAI's colours (ids >= 134 wrap)."""
    ids = np.clip(np.asarray(segment_map).astype(np.int64), 0, None) % MOAI_COLORMAP_SIZE
    return voc_colormap()[ids]
