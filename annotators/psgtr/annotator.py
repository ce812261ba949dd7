"""The `sgg` annotator: PSGTR scene graphs (objects from the panoptic stage, all its relations).

MoAI's top-k / >= 0.8 / name numbering are applied later by `schemas.verbalize`. `compat="moai"`
reproduces the published model-side quirks: RGB fed where the model expects BGR, the class-131
drop, OpenPSG's stretched mask resize, and predicates named by the argmax of the predicate
distribution (what MoAI prints). The empty-text quirk is the verbalizer's `Compat.MOAI`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from schemas.dtypes import check_dtype, torch_dtype
from schemas.files import replaced_atomically
from schemas.verbalize import Compat

from ..base import Failed, Requirement, Result, check_device, check_images, models_root, resolve_device, set_offline
from ..boxes import masks_boxes, normalize_box
from ..vocab import Vocabulary
from .checkpoint import (CONFIG_FILE, WEIGHTS_FILE, convert_command, load_model_dir,
                         save_model_dir)
from .config import PSGTRConfig
from .model import PSGTR
from .postprocess import PostprocessConfig, TripletResult, postprocess

COMPATS = tuple(c.value for c in Compat)
PUBLISHED_DIR = "psgtr_r50"  # under the models root: the converted psgtr_r50_epoch_60.pth
DTYPES = ("float32", "bfloat16")  # autocast dtypes the parity tests cover


def resize_keep_ratio(image: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    """mmdet Resize(keep_ratio=True) to fit (long, short) = scale, OpenCV INTER_LINEAR on uint8."""
    h, w = image.shape[:2]
    s = min(max(scale) / max(h, w), min(scale) / min(h, w))
    new_w, new_h = int(w * s + 0.5), int(h * s + 0.5)
    if (new_h, new_w) == (h, w):
        return image
    try:
        import cv2
    except ImportError:  # same geometry; values may differ by +-1 from OpenCV's
        t = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        t = torch.nn.functional.interpolate(t, size=(new_h, new_w), mode="bilinear", align_corners=False)
        return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


class PSGTRAnnotator:
    name: ClassVar[str] = "sgg"
    columns: ClassVar[tuple[str, ...]] = ("scene_graph",)
    gpu_dtype: ClassVar[str] = "bfloat16"   # what the pipeline runs it in on a GPU

    @staticmethod
    def requirements(config: "PSGTRAnnotator.Config") -> list[Requirement]:
        folder = Path(config.model_dir)
        found = (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()
        return [Requirement("model_dir", "PSGTR R50 (converted psgtr_r50_epoch_60.pth)", str(folder), found,
                            "" if found else f"download psgtr_r50_epoch_60.pth (OpenPSG README) and run: "
                            f"{convert_command(folder)}")]

    @dataclass(frozen=True)
    class Config:
        model_dir: str = ""                      # folder written by annotators.psgtr.convert; "" = the
                                                 # models root's psgtr_r50 ($MOAI_MODELS, else models/)
        device: str = "auto"                     # auto | cpu | cuda[:N] (the pipeline picks it from Ray)
        dtype: str = "float32"                   # float32 | bfloat16 (autocast)
        batch_size: int = 4                      # images per forward pass
        image_scale: tuple[int, int] = (1333, 800)  # resize to fit (long, short), aspect kept (OpenPSG)
        size_divisor: int = 32                   # pad bottom/right to a multiple of this
        mask_chunk_size: int = 25                # queries per mask-branch pass (bounds memory)
        max_triplets: int = 100
        mask_threshold: float = 0.85
        dedup_iou: float = 0.5
        object_score_threshold: float = 0.5
        relation_score_threshold: float = 0.3
        compat: str = "none"                     # none | moai (published model-side quirks)

        def __post_init__(self):
            if not self.model_dir:
                object.__setattr__(self, "model_dir", str(models_root() / PUBLISHED_DIR))
            check_device(self.device)
            check_dtype(self.dtype, DTYPES)
            if self.compat not in COMPATS:
                raise ValueError(f"compat must be one of {COMPATS}, got {self.compat!r}")
            for name in ("batch_size", "size_divisor", "mask_chunk_size"):
                if int(getattr(self, name)) < 1:
                    raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
            scale = tuple(int(v) for v in self.image_scale)
            if len(scale) != 2 or min(scale) < 32:
                raise ValueError(f"image_scale is (long, short) >= 32 pixels, got {self.image_scale!r}")
            object.__setattr__(self, "image_scale", scale)
            self.postprocess_config()  # validates the thresholds

        def postprocess_config(self) -> PostprocessConfig:
            moai = self.compat == Compat.MOAI
            return PostprocessConfig(
                max_triplets=self.max_triplets, mask_threshold=self.mask_threshold, dedup_iou=self.dedup_iou,
                object_score_threshold=self.object_score_threshold,
                relation_score_threshold=self.relation_score_threshold,
                class_131_quirk=moai, mask_resize="stretch" if moai else "aligned")

    def __init__(self, config: "PSGTRAnnotator.Config"):
        set_offline()
        self.config = config
        self.device = torch.device(resolve_device(config.device))
        model, self.info = load_model_dir(config.model_dir)
        self.model: PSGTR = model.to(self.device)
        self.post_cfg = replace(config.postprocess_config(), num_things=self.info.config.num_things)
        cfg = self.info.config
        self.mean = torch.tensor(cfg.pixel_mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.pixel_std, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(B, H, W, 3) uint8 RGB -> pixels (B, 3, Hpad, Wpad), sizes (B, 2) (h', w'), scale factors (B, 4)."""
        resized = [resize_keep_ratio(img, self.config.image_scale) for img in images]
        div = self.config.size_divisor
        hp = max(-(-r.shape[0] // div) * div for r in resized)
        wp = max(-(-r.shape[1] // div) * div for r in resized)
        dtype = next(self.model.parameters()).dtype
        pixels = torch.zeros((len(resized), 3, hp, wp), device=self.device, dtype=dtype)
        for i, r in enumerate(resized):
            x = torch.from_numpy(np.ascontiguousarray(r)).to(self.device).permute(2, 0, 1).float()  # (3, h', w')
            if self.config.compat == Compat.MOAI:
                x = x.flip(0)  # MoAI hands RGB to a pipeline that swaps BGR->RGB: the model sees BGR
            pixels[i, :, : r.shape[0], : r.shape[1]] = (x - self.mean[0]) / self.std[0]
        sizes = torch.tensor([r.shape[:2] for r in resized], dtype=torch.long)
        scale = np.array([[r.shape[1] / img.shape[1], r.shape[0] / img.shape[0]] * 2
                          for r, img in zip(resized, images)], dtype=np.float32)
        return pixels, sizes, scale

    @torch.inference_mode()
    def forward(self, images: np.ndarray) -> list[TripletResult | Failed]:
        """OpenPSG-style results (1-based labels, rel_dists with the background column) for each image."""
        pixels, sizes, scales = self.preprocess(images)
        autocast = torch.autocast(self.device.type, dtype=torch_dtype(self.config.dtype, allowed=DTYPES),
                                  enabled=self.config.dtype != "float32")
        with autocast:
            out = self.model(pixels, sizes.to(self.device), mask_chunk_size=self.config.mask_chunk_size)
        tensors = {k: v.float().cpu() for k, v in vars(out).items()}
        results: list[TripletResult | Failed] = []
        for i in range(len(images)):
            try:
                results.append(postprocess(
                    tensors["sub_logits"][i], tensors["obj_logits"][i], tensors["rel_logits"][i],
                    tensors["sub_boxes"][i], tensors["obj_boxes"][i], tensors["sub_masks"][i], tensors["obj_masks"][i],
                    tuple(sizes[i].tolist()), scales[i], self.post_cfg))
            except Exception as err:  # one bad image must not sink the batch
                results.append(Failed(f"sgg post-processing failed: {type(err).__name__}: {err}"))
        return results

    def __call__(self, images: np.ndarray) -> list[Result]:
        """images (B, H, W, 3) uint8 RGB -> B {"scene_graph": {"objects": [...], "relations": [...]}}."""
        images = check_images(images)
        rows: list[Result] = []
        for start in range(0, len(images), self.config.batch_size):
            for result in self.forward(images[start:start + self.config.batch_size]):
                rows.append(result if isinstance(result, Failed) else {"scene_graph": self.scene_graph(result)})
        return rows

    def scene_graph(self, result: TripletResult) -> dict:
        return to_scene_graph(result, self.info.class_names, self.info.predicate_names,
                              predicate_from_argmax=self.config.compat == Compat.MOAI)

    def provenance(self) -> dict:
        info = self.info
        return {
            "annotator": self.name, "model": f"psgtr_{info.config.backbone}", "weights_sha256": info.weights_sha256,
            "source": info.source, "compat": self.config.compat, "device": str(self.device),
            "dtype": self.config.dtype,
            "image_scale": list(self.config.image_scale), "size_divisor": self.config.size_divisor,
            "thresholds": {"mask": self.config.mask_threshold, "dedup_iou": self.config.dedup_iou,
                           "object_score": self.config.object_score_threshold,
                           "relation_score": self.config.relation_score_threshold,
                           "max_triplets": self.config.max_triplets},
            "classes": Vocabulary("psgtr_classes", info.class_names).provenance(),
            "predicates": Vocabulary("psgtr_predicates", info.predicate_names).provenance(),
        }


def to_scene_graph(result: TripletResult, class_names, predicate_names, predicate_from_argmax: bool = False) -> dict:
    """The schema's scene_graph: one object per panoptic segment (box from its mask, normalized to the
    output size), every surviving relation. The predicate is the triplet's own (OpenPSG's rel_labels),
    or with `predicate_from_argmax` the argmax of its distribution, as MoAI prints it (then a query's
    duplicate triplets repeat one predicate). The score is always the max predicate probability."""
    if result.empty:
        return {"objects": [], "relations": []}
    masks = result.masks.numpy()
    height, width = masks.shape[-2:]
    objects = [{"label": class_names[label - 1], "label_id": label - 1, "score": score,
                "box": normalize_box(box, width, height)}
               for label, score, box in zip(result.labels.tolist(), result.scores.tolist(), masks_boxes(masks))]
    probs = result.rel_dists[:, 1:]
    if len(probs):
        scores, argmax = probs.max(-1)
    else:
        scores, argmax = torch.zeros(0), torch.zeros(0, dtype=torch.long)
    predicate_ids = argmax + 1 if predicate_from_argmax else result.rel_labels
    relations = [{"subject": pair[0], "object": pair[1], "predicate": predicate_names[p - 1],
                  "predicate_id": p, "score": score}
                 for pair, p, score in zip(result.rel_pair_idxes.tolist(), predicate_ids.tolist(), scores.tolist())]
    return {"objects": objects, "relations": relations}


TINY_MODEL = PSGTRConfig(backbone="resnet18", d_model=128, num_heads=8, ffn_dim=256, encoder_layers=2,
                         decoder_layers=2, num_queries=20)


def tiny_config(workdir: Path) -> dict:
    """A small random-weight PSGTR (ResNet-18, d=128, 2+2 layers, 20 queries; 133 classes / 56 predicates
    with placeholder names `class_000`.., `predicate_00`..), saved like a converted checkpoint. Thresholds
    are lowered so random weights still produce objects and relations (the verbalizer's 0.8 still applies)."""
    model_dir = Path(workdir) / "psgtr_tiny"
    if not (model_dir / "model.safetensors").is_file():
        # concurrent builders (Ray workers) write identical folders: the first one renamed in stays
        with torch.random.fork_rng(devices=[]), replaced_atomically(model_dir, keep_existing=True) as staging:
            torch.manual_seed(0)
            model = PSGTR(TINY_MODEL)
            save_model_dir(model.state_dict(), TINY_MODEL, staging,
                           [f"class_{i:03d}" for i in range(TINY_MODEL.num_classes)],
                           [f"predicate_{i:02d}" for i in range(TINY_MODEL.num_predicates)],
                           {"checkpoint": "random init (torch.manual_seed(0))", "tiny": True})
    return {"model_dir": str(model_dir), "device": "cpu", "image_scale": (256, 160), "batch_size": 2,
            "object_score_threshold": 0.0, "relation_score_threshold": 0.0}
