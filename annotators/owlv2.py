"""Open-world detection with transformers' OWLv2, at MoAI's settings (docs/moai.md §2).

Queries are the vocabulary's bare names (no prompt template); `post_process_object_detection
(threshold=0.1)` at the working size; no extra NMS; boxes not clipped. The published code
re-encodes every text query for every image: here the query embeddings are computed once per
annotator instance and every batch only runs the image tower and the detection heads. They are
also kept on disk (`query_cache`, keyed by the weights' and the vocabulary's hashes, the dtype and
the device type), so a restarted or added actor starts without the ~30 s (one CPU thread) that
encoding MoAI's 1,847 queries takes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from schemas.dtypes import torch_dtype
from schemas.files import replaced_atomically

from .base import (Failed, Requirement, Result, cache_root, check_device, check_images, map_in_batches,
                   resolve_device, set_offline)
from .boxes import normalize_box
from .clip_text import build_clip_tokenizer
from .hf import hf_load, hf_requirement, pretrained_folder, weight_hashes
from .vocab import MOAI_QUERIES, Vocabulary, load_vocabulary, vocabulary_requirements

MOAI_CHECKPOINT = "google/owlv2-base-patch16-ensemble"
MOAI_VOCABULARY_HINT = f"MoAI's 1,847 queries ship as {MOAI_QUERIES!r}; or name files and/or e.g. 'ultralytics:lvis'"


@dataclass(frozen=True)
class OWLv2Config:
    model: str = MOAI_CHECKPOINT          # HF id (offline cache) or local save_pretrained folder
    vocabulary: tuple[str, ...] = (MOAI_QUERIES,)  # files and/or `package:name`, concatenated in order
    device: str = "cpu"                   # "auto" | "cpu" | "cuda[:N]" (the pipeline picks it from Ray)
    dtype: str = "float32"                # "float32" | "bfloat16" | "float16" (cuda)
    batch_size: int = 8                   # images per forward
    threshold: float = 0.1                # stored; the verbalizer keeps >= 0.5 (MoAI)
    text_batch_size: int = 512            # queries per text-tower forward (once, at start)
    query_cache: str | None = ""          # folder for encoded queries; "" = $MOAI_CACHE or ~/.cache/moai-pipeline; None = off
    trust_remote_code: bool = False

    def __post_init__(self):
        vocabulary = (self.vocabulary,) if isinstance(self.vocabulary, str) else tuple(self.vocabulary)
        object.__setattr__(self, "vocabulary", vocabulary)
        if not vocabulary:
            raise ValueError(f"OWLv2 needs a query vocabulary. {MOAI_VOCABULARY_HINT}")
        check_device(self.device)
        if self.batch_size < 1 or self.text_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_size}, {self.text_batch_size}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {self.threshold}")


class OWLv2Annotator:
    """(B, H, W, 3) uint8 RGB -> per image {"detections": [DETECTION...]}."""

    name: ClassVar[str] = "owod"
    columns: ClassVar[tuple[str, ...]] = ("detections",)
    Config: ClassVar[type] = OWLv2Config
    gpu_dtype: ClassVar[str] = "bfloat16"   # what the pipeline runs it in on a GPU

    @staticmethod
    def requirements(config: OWLv2Config) -> list[Requirement]:
        return [hf_requirement("model", config.model, "OWLv2 checkpoint"),
                *vocabulary_requirements("vocabulary", config.vocabulary)]

    def __init__(self, config: OWLv2Config):
        set_offline()  # before transformers is imported: it reads the switches once
        from transformers import Owlv2ForObjectDetection, Owlv2Processor
        self.config = config
        self.vocabulary: Vocabulary = load_vocabulary(config.vocabulary)
        self.device = resolve_device(config.device)
        self.processor = hf_load(Owlv2Processor, config.model, trust_remote_code=config.trust_remote_code)
        self.model = hf_load(Owlv2ForObjectDetection, config.model, trust_remote_code=config.trust_remote_code,
                             dtype=torch_dtype(config.dtype, self.device)).to(self.device).eval()
        self._weights = weight_hashes(pretrained_folder(config.model))
        self.query_embeds = self.cached_queries()  # (Q, D), once per instance (or from disk)
        self._provenance = None

    def _query_cache_file(self) -> Path | None:
        if self.config.query_cache is None or not self._weights:
            return None
        root = Path(self.config.query_cache or cache_root()) / "owlv2-queries"
        key = json.dumps({"weights": self._weights, "vocabulary": self.vocabulary.sha256, "dtype": self.config.dtype,
                          "device": self.device.split(":")[0],
                          "max_length": self.processor.tokenizer.model_max_length}, sort_keys=True)
        return root / f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"

    def cached_queries(self):
        """The query embeddings from the disk cache, or encoded now and stored there (atomically)."""
        from safetensors.torch import load_file, save_file
        path = self._query_cache_file()
        if path is not None and path.is_file():
            return load_file(str(path), device=self.device)["query_embeds"]
        embeds = self.encode_queries(self.vocabulary.names)
        if path is not None:
            try:
                with replaced_atomically(path, folder=False) as tmp:
                    save_file({"query_embeds": embeds.contiguous().cpu()}, str(tmp))
            except OSError:  # a read-only cache: encode again next time
                pass
        return embeds

    def encode_queries(self, names: tuple[str, ...]):
        """Bare names -> (Q, D) text-query embeddings, as Owlv2ForObjectDetection computes them."""
        import torch
        chunks = []
        for start in range(0, len(names), self.config.text_batch_size):
            tokens = self.processor.tokenizer(list(names[start:start + self.config.text_batch_size]),
                                              padding="max_length", truncation=True, return_tensors="pt")
            with torch.inference_mode():
                chunks.append(self.model.owlv2.get_text_features(**tokens.to(self.device)).pooler_output)
        return torch.cat(chunks)  # (Q, D)

    def __call__(self, images: np.ndarray) -> list[Result]:
        """images: (B, H, W, 3) uint8 RGB at the working size -> B results."""
        return map_in_batches(check_images(images), self.config.batch_size, self._batch, "owlv2 forward")

    def _batch(self, images: np.ndarray) -> list[Result]:
        outputs = self.forward(images)
        height, width = images.shape[1:3]
        return self.postprocess(outputs, [(height, width)] * len(images))

    def forward(self, images: np.ndarray):
        """(B, H, W, 3) uint8 -> Owlv2ObjectDetectionOutput (logits (B, P, Q), pred_boxes (B, P, 4))."""
        import torch
        from transformers.models.owlv2.modeling_owlv2 import Owlv2ObjectDetectionOutput
        pixel_values = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(self.device, self.model.dtype)  # (B, 3, S, S)
        with torch.inference_mode():
            feature_map, _ = self.model.image_embedder(pixel_values=pixel_values)  # (B, h, w, D)
            batch, grid_h, grid_w, dim = feature_map.shape
            image_feats = feature_map.reshape(batch, grid_h * grid_w, dim)  # (B, P, D)
            queries = self.query_embeds[None].expand(batch, -1, -1)  # (B, Q, D)
            logits, _ = self.model.class_predictor(image_feats, queries, None)  # (B, P, Q)
            boxes = self.model.box_predictor(image_feats, feature_map)  # (B, P, 4) cxcywh in 0..1
        return Owlv2ObjectDetectionOutput(logits=logits.float(), pred_boxes=boxes.float())

    def postprocess(self, outputs, sizes: list[tuple[int, int]]) -> list[Result]:
        """Model outputs -> one result per image; a failure stays with its image."""
        detected = self.processor.image_processor.post_process_object_detection(
            outputs, threshold=self.config.threshold, target_sizes=sizes)
        results: list[Result] = []
        for (height, width), found in zip(sizes, detected):
            try:
                results.append({"detections": [
                    {"label": self.vocabulary.names[int(q)], "query_index": int(q), "score": float(s),
                     "box": normalize_box(b, width, height)}
                    for s, q, b in zip(found["scores"].tolist(), found["labels"].tolist(), found["boxes"].tolist())
                ]})
            except Exception as err:  # noqa: BLE001 - one image's error row, not the batch's
                results.append(Failed(f"owlv2 postprocess: {type(err).__name__}: {err}"))
        return results

    def provenance(self) -> dict:
        if self._provenance is None:
            cfg = self.config
            self._provenance = {
                "annotator": self.name, "backend": "transformers.Owlv2ForObjectDetection",
                "model": cfg.model, "weights_sha256": self._weights,
                "thresholds": {"threshold": cfg.threshold}, "vocabulary": self.vocabulary.provenance(),
                "device": self.device, "dtype": cfg.dtype,
            }
        return dict(self._provenance)


def tiny_config(workdir: Path) -> dict:
    """A small random-weight OWLv2 + real CLIP tokenizer + image processor under workdir."""
    folder = Path(workdir) / "owlv2-tiny"
    if not (folder / "model.safetensors").is_file() or not (folder / "processor_config.json").is_file():
        save_tiny_owlv2(folder)
    return {"model": str(folder), "vocabulary": ("ultralytics:coco",), "batch_size": 4}


def save_tiny_owlv2(folder: Path, image_size: int = 64) -> Path:
    import torch
    from transformers import Owlv2Config as HFConfig, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor
    torch.manual_seed(0)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "max_position_embeddings": 16}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": image_size, "patch_size": 16}
    config = HFConfig(text_config=text, vision_config=vision, projection_dim=32)
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    tokenizer = build_clip_tokenizer()
    tokenizer.model_max_length = 16  # OWLv2 checkpoints pad every query to 16 tokens
    image_processor = Owlv2ImageProcessor(size={"height": image_size, "width": image_size})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
