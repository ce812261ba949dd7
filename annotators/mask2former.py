"""Panoptic segmentation with transformers' Mask2Former, at MoAI's settings (docs/moai.md §2).

`post_process_panoptic_segmentation(threshold=0.5, mask_threshold=0.95, label_ids_to_fuse=())`
at the working size; boxes from the segment masks with detectron2's edges (annotators.boxes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from schemas.dtypes import torch_dtype
from schemas.psmap import encode_ps_map

from .base import (Failed, Requirement, Result, check_device, check_images, map_in_batches, resolve_device,
                   set_offline)
from .boxes import BACKENDS, masks_boxes, normalize_box
from .hf import hf_load, hf_requirement, pretrained_folder, weight_hashes

MOAI_CHECKPOINT = "facebook/mask2former-swin-base-coco-panoptic"
COCO_PANOPTIC_LABELS = 133
COCO_PANOPTIC_THINGS = 80  # contiguous ids 0..79 are things, 80..132 stuff


@dataclass(frozen=True)
class Mask2FormerConfig:
    model: str = MOAI_CHECKPOINT            # HF id (offline cache) or local save_pretrained folder
    device: str = "cpu"                      # "auto" | "cpu" | "cuda[:N]" (the pipeline picks it from Ray)
    dtype: str = "float32"                   # "float32" | "bfloat16" | "float16" (cuda)
    batch_size: int = 8                      # images per forward
    threshold: float = 0.5                   # class score to keep a query (MoAI)
    mask_threshold: float = 0.95             # mask probability to count a pixel (MoAI)
    overlap_mask_area_threshold: float = 0.8  # transformers' default, as MoAI
    label_ids_to_fuse: tuple[int, ...] = ()  # MoAI fuses nothing
    thing_ids: tuple[int, ...] | None = None  # None: from the checkpoint (COCO: id < 80)
    box_backend: str = "numpy"               # "numpy" | "detectron2" (same boxes, if installed)
    trust_remote_code: bool = False

    def __post_init__(self):
        check_device(self.device)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.box_backend not in BACKENDS:
            raise ValueError(f"box_backend {self.box_backend!r}: choose from {BACKENDS}")
        object.__setattr__(self, "label_ids_to_fuse", tuple(self.label_ids_to_fuse))
        if self.thing_ids is not None:
            object.__setattr__(self, "thing_ids", tuple(self.thing_ids))


class Mask2FormerAnnotator:
    """(B, H, W, 3) uint8 RGB -> per image {"panoptic": [SEGMENT...], "ps_map": PNG bytes}."""

    name: ClassVar[str] = "panoptic"
    columns: ClassVar[tuple[str, ...]] = ("panoptic", "ps_map")
    Config: ClassVar[type] = Mask2FormerConfig
    gpu_dtype: ClassVar[str] = "bfloat16"   # what the pipeline runs it in on a GPU

    @staticmethod
    def requirements(config: Mask2FormerConfig) -> list[Requirement]:
        return [hf_requirement("model", config.model, "Mask2Former checkpoint")]

    def __init__(self, config: Mask2FormerConfig):
        set_offline()  # before transformers is imported: it reads the switches once
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation
        if config.box_backend == "detectron2":
            masks_boxes(np.zeros((1, 1, 1), bool), "detectron2")  # fail now, not mid-run
        self.config = config
        self.device = resolve_device(config.device)
        dtype = torch_dtype(config.dtype, self.device)
        self.processor = hf_load(AutoImageProcessor, config.model, trust_remote_code=config.trust_remote_code)
        self.model = hf_load(Mask2FormerForUniversalSegmentation, config.model, dtype=dtype,
                             trust_remote_code=config.trust_remote_code).to(self.device).eval()
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.thing_ids = frozenset(self._thing_ids())
        self._provenance = None

    def _thing_ids(self) -> tuple[int, ...]:
        if self.config.thing_ids is not None:
            return self.config.thing_ids
        from_checkpoint = getattr(self.model.config, "thing_ids", None)
        if from_checkpoint is not None:
            return tuple(from_checkpoint)
        if len(self.id2label) == COCO_PANOPTIC_LABELS:
            return tuple(range(COCO_PANOPTIC_THINGS))
        raise ValueError(f"{self.config.model!r} has {len(self.id2label)} labels (not COCO panoptic's 133) "
                         "and no `thing_ids` in its config: set Config.thing_ids")

    def __call__(self, images: np.ndarray) -> list[Result]:
        """images: (B, H, W, 3) uint8 RGB at the working size -> B results."""
        return map_in_batches(check_images(images), self.config.batch_size, self._batch, "mask2former forward")

    def _batch(self, images: np.ndarray) -> list[Result]:
        outputs = self.forward(images)
        height, width = images.shape[1:3]
        return self.postprocess(outputs, [(height, width)] * len(images))

    def forward(self, images: np.ndarray):
        """(B, H, W, 3) uint8 -> the model's outputs (class and mask logits per query)."""
        import torch
        inputs = self.processor(images=list(images), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.model.dtype)  # (B, 3, h, w)
        with torch.inference_mode():
            outputs = self.model(pixel_values=pixel_values)
        outputs.class_queries_logits = outputs.class_queries_logits.float()  # (B, Q, labels + 1)
        outputs.masks_queries_logits = outputs.masks_queries_logits.float()  # (B, Q, h/4, w/4)
        return outputs

    def postprocess(self, outputs, sizes: list[tuple[int, int]]) -> list[Result]:
        """Model outputs -> one result per image; a failure stays with its image."""
        cfg = self.config
        panoptic = self.processor.post_process_panoptic_segmentation(
            outputs, threshold=cfg.threshold, mask_threshold=cfg.mask_threshold,
            overlap_mask_area_threshold=cfg.overlap_mask_area_threshold,
            label_ids_to_fuse=set(cfg.label_ids_to_fuse), target_sizes=sizes)
        results: list[Result] = []
        for image_result in panoptic:
            try:
                results.append(self._result(image_result))
            except Exception as err:  # noqa: BLE001 - one image's error row, not the batch's
                results.append(Failed(f"mask2former postprocess: {type(err).__name__}: {err}"))
        return results

    def _result(self, image_result: dict) -> dict:
        segment_map = image_result["segmentation"].cpu().numpy().astype(np.int32)  # (H, W), -1/0 = none
        height, width = segment_map.shape
        infos = image_result["segments_info"]
        masks = np.stack([segment_map == info["id"] for info in infos]) if infos \
            else np.zeros((0, height, width), bool)  # (S, H, W)
        boxes = masks_boxes(masks, self.config.box_backend)  # (S, 4) pixels
        segments = []
        for info, mask, box in zip(infos, masks, boxes):
            label_id = int(info["label_id"])
            segments.append({
                "segment_id": int(info["id"]), "label_id": label_id, "label": self.id2label[label_id],
                "is_thing": label_id in self.thing_ids, "score": float(info["score"]),
                "box": normalize_box(box, width, height), "area": int(mask.sum()),
            })
        return {"panoptic": segments, "ps_map": encode_ps_map(segment_map)}

    def provenance(self) -> dict:
        if self._provenance is None:
            cfg = self.config
            self._provenance = {
                "annotator": self.name, "backend": "transformers.Mask2FormerForUniversalSegmentation",
                "model": cfg.model, "weights_sha256": weight_hashes(pretrained_folder(cfg.model)),
                "thresholds": {"threshold": cfg.threshold, "mask_threshold": cfg.mask_threshold,
                               "overlap_mask_area_threshold": cfg.overlap_mask_area_threshold,
                               "label_ids_to_fuse": list(cfg.label_ids_to_fuse)},
                "labels": len(self.id2label), "device": self.device, "dtype": cfg.dtype,
                "box_backend": cfg.box_backend,
            }
        return dict(self._provenance)


def _tiny_labels() -> dict[int, str]:
    """133 COCO-panoptic-shaped labels from installed packages: 80 COCO things + 53 ADE20K names."""
    from .vocab import package_vocabulary
    things = package_vocabulary("ultralytics:coco").names
    stuff = [n for n in package_vocabulary("ultralytics:ade20k").names if n not in things]
    names = list(things) + [f"{n}-stuff" for n in stuff[:COCO_PANOPTIC_LABELS - len(things)]]
    return dict(enumerate(names))


def tiny_config(workdir: Path) -> dict:
    """A small random-weight Mask2Former (Swin backbone) + image processor under workdir."""
    folder = Path(workdir) / "mask2former-tiny"
    if not (folder / "model.safetensors").is_file() or not (folder / "preprocessor_config.json").is_file():
        save_tiny_mask2former(folder)
    return {"model": str(folder), "batch_size": 4}


def save_tiny_mask2former(folder: Path, image_size: int = 128) -> Path:
    import torch
    from transformers import (Mask2FormerConfig as HFConfig, Mask2FormerForUniversalSegmentation,
                              Mask2FormerImageProcessor, SwinConfig)
    torch.manual_seed(0)
    labels = _tiny_labels()
    backbone = SwinConfig(image_size=image_size, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                          num_heads=[1, 1, 1, 1], window_size=4,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = HFConfig(backbone_config=backbone, hidden_dim=32, mask_feature_size=32, feature_size=32,
                      encoder_layers=1, decoder_layers=2, num_attention_heads=2, encoder_feedforward_dim=64,
                      dim_feedforward=64, num_queries=10, num_labels=len(labels), id2label=labels,
                      label2id={v: k for k, v in labels.items()}, use_pretrained_backbone=False)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder
