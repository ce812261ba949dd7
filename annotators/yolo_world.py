"""Open-world detection with ultralytics YOLO-World: a faster backend with OWLv2's output.

YOLO-World's `set_classes` would fetch OpenAI's git-installed `clip` package and its weights;
instead the class-name embeddings come from CLIP ViT-B/32's text tower through transformers
(annotators.clip_text, same embedding space) and are set on the model once per instance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from schemas.dtypes import check_dtype

from .base import (Failed, MissingWeightsError, Requirement, Result, check_device, check_images, map_in_batches,
                   models_root, resolve_device, set_offline)
from .clip_text import CLIPTextEncoder, tiny_clip_text
from .base import sha256_file
from .hf import hf_requirement
from .vocab import Vocabulary, load_vocabulary, vocabulary_requirements

DEFAULT_CHECKPOINT = "yolov8s-worldv2.pt"
CLIP_B32 = "openai/clip-vit-base-patch32"
TINY_IMGSZ = 160
PICKLE_HINT = ("ultralytics .pt checkpoints are pickles and run code when loaded: set allow_pickle=True "
               "only for a file you trust (e.g. downloaded yourself from github.com/ultralytics/assets)")


@dataclass(frozen=True)
class YOLOWorldConfig:
    # A folder with <arch>.yaml + model.safetensors (as tiny_config writes), an ultralytics .pt
    # checkpoint (needs allow_pickle), or an architecture YAML (random weights: benchmarks only).
    # "" = the published yolov8s-worldv2.pt under the models root ($MOAI_MODELS, else models/).
    model: str = ""
    vocabulary: tuple[str, ...] = ("ultralytics:coco",)  # files and/or `package:name`
    text_model: str = CLIP_B32            # CLIP text tower (HF id or folder) for the class embeddings
    device: str = "cpu"                   # "auto" | "cpu" | "cuda[:N]" (the pipeline picks it from Ray)
    dtype: str = "float32"                # "float32" | "float16" (cuda)
    batch_size: int = 8
    threshold: float = 0.1                # stored, as OWLv2's; the verbalizer keeps >= 0.5
    iou: float = 0.7                      # YOLO's own NMS (it predicts dense anchors)
    imgsz: int = 640
    max_det: int = 300
    allow_pickle: bool = False

    def __post_init__(self):
        vocabulary = (self.vocabulary,) if isinstance(self.vocabulary, str) else tuple(self.vocabulary)
        object.__setattr__(self, "vocabulary", vocabulary)
        if not self.model:
            object.__setattr__(self, "model", str(models_root() / DEFAULT_CHECKPOINT))
        if not vocabulary:
            raise ValueError("YOLO-World needs a vocabulary: files and/or `package:name`, e.g. 'ultralytics:lvis'")
        check_device(self.device)
        check_dtype(self.dtype, ("float32", "float16"), "dtype (ultralytics runs float32, or float16 on cuda)")
        if self.batch_size < 1 or self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"batch_size >= 1 and imgsz a multiple of 32 needed, got {self.batch_size}, {self.imgsz}")
        for name in ("threshold", "iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


class YOLOWorldAnnotator:
    """(B, H, W, 3) uint8 RGB -> per image {"detections": [DETECTION...]}."""

    name: ClassVar[str] = "owod"
    columns: ClassVar[tuple[str, ...]] = ("detections",)
    Config: ClassVar[type] = YOLOWorldConfig
    gpu_dtype: ClassVar[str] = "float16"   # what the pipeline runs it in on a GPU

    @staticmethod
    def requirements(config: YOLOWorldConfig) -> list[Requirement]:
        path = Path(config.model)
        found = path.is_dir() and (path / "model.safetensors").is_file() or path.is_file()
        return [Requirement("model", "YOLO-World checkpoint", config.model, found,
                            "" if found else "download yolov8s-worldv2.pt from github.com/ultralytics/assets/"
                            "releases (on a machine with network) into the models root and set allow_pickle=true "
                            "for that file you trust, or name a folder with an architecture .yaml + "
                            "model.safetensors"),
                hf_requirement("text_model", config.text_model, "CLIP text tower"),
                *vocabulary_requirements("vocabulary", config.vocabulary)]

    def __init__(self, config: YOLOWorldConfig):
        set_offline()
        self.config = config
        self.device = resolve_device(config.device)
        if config.dtype == "float16" and self.device == "cpu":
            raise ValueError("dtype 'float16' needs device 'cuda'")
        self.vocabulary: Vocabulary = load_vocabulary(config.vocabulary)
        self.yolo, self._weights = load_yolo_world(config.model, config.allow_pickle)
        self.text_encoder = CLIPTextEncoder(config.text_model, device=self.device)
        self.set_class_embeddings(self.text_encoder(self.vocabulary.names))
        self._provenance = None

    def set_class_embeddings(self, embeddings: np.ndarray) -> None:
        """(N, 512) normalized text embeddings -> the model's class prompts, one per vocabulary name."""
        import torch
        world = self.yolo.model
        if embeddings.shape != (len(self.vocabulary), world.txt_feats.shape[-1]):
            raise ValueError(f"class embeddings {embeddings.shape} do not fit {len(self.vocabulary)} names x "
                             f"{world.txt_feats.shape[-1]} (the model's text width); is {self.config.text_model!r} "
                             "CLIP ViT-B/32?")
        world.txt_feats = torch.from_numpy(embeddings)[None]  # (1, N, 512)
        world.model[-1].nc = len(self.vocabulary)
        world.names = dict(enumerate(self.vocabulary.names))
        self.yolo.predictor = None  # a predictor built before would keep the old classes

    def __call__(self, images: np.ndarray) -> list[Result]:
        """images: (B, H, W, 3) uint8 RGB at the working size -> B results."""
        return map_in_batches(check_images(images), self.config.batch_size, self._batch, "yolo-world")

    def _batch(self, images: np.ndarray) -> list[Result]:
        predictions = self.predict(images)
        return [self._result(p) for p in predictions]

    def predict(self, images: np.ndarray) -> list:
        """ultralytics' own letterbox, forward and NMS; boxes come back at the input image size."""
        bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]  # ultralytics reads arrays as BGR
        cfg = self.config
        half = {"half": True} if cfg.dtype == "float16" else {}
        return self.yolo.predict(bgr, conf=cfg.threshold, iou=cfg.iou, imgsz=cfg.imgsz, max_det=cfg.max_det,
                                 batch=len(bgr), device=self.device, verbose=False, **half)

    def _result(self, prediction) -> Result:
        try:
            boxes = prediction.boxes
            return {"detections": [
                {"label": self.vocabulary.names[int(c)], "query_index": int(c), "score": float(s), "box": list(b)}
                for c, s, b in zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxyn.tolist())
            ]}
        except Exception as err:  # noqa: BLE001 - one image's error row, not the batch's
            return Failed(f"yolo-world postprocess: {type(err).__name__}: {err}")

    def provenance(self) -> dict:
        if self._provenance is None:
            cfg = self.config
            self._provenance = {
                "annotator": self.name, "backend": "ultralytics.YOLOWorld", "model": cfg.model,
                "weights_sha256": self._weights, "text_model": self.text_encoder.provenance(),
                "thresholds": {"threshold": cfg.threshold, "iou": cfg.iou, "max_det": cfg.max_det},
                "imgsz": cfg.imgsz, "vocabulary": self.vocabulary.provenance(), "device": self.device,
                "dtype": cfg.dtype,
            }
        return dict(self._provenance)


def load_yolo_world(model: str, allow_pickle: bool = False):
    """-> (ultralytics YOLOWorld, {weight file: sha256}) from a folder, a .pt, or an architecture YAML."""
    from ultralytics import YOLOWorld
    path = Path(model)
    if path.is_dir():
        yamls, weights = sorted(path.glob("*.yaml")), path / "model.safetensors"
        if len(yamls) != 1 or not weights.is_file():
            raise MissingWeightsError(f"{path} should hold one architecture .yaml and model.safetensors "
                                      "(see tiny_config)")
        yaml_file = yamls[0]
        from safetensors.torch import load_file
        yolo = YOLOWorld(str(yaml_file), verbose=False)
        yolo.model.load_state_dict(load_file(weights), strict=True)
        return yolo, {weights.name: sha256_file(weights)}
    if path.suffix == ".pt":
        if not path.is_file():
            raise MissingWeightsError(
                f"YOLO-World checkpoint {model!r} is not on this machine (nothing downloads offline): download it "
                "on a machine with network from github.com/ultralytics/assets/releases and pass its path as `model`, "
                "or pass a folder with an architecture .yaml + model.safetensors")
        if not allow_pickle:
            raise ValueError(f"{model!r}: {PICKLE_HINT}")
        return YOLOWorld(str(path), verbose=False), {path.name: sha256_file(path)}
    if path.suffix in (".yaml", ".yml"):
        return YOLOWorld(model, verbose=False), {}  # architecture only: random weights
    raise MissingWeightsError(f"YOLO-World model {model!r}: give a .pt checkpoint, a folder with an "
                              "architecture .yaml + model.safetensors, or an architecture .yaml")


def tiny_config(workdir: Path) -> dict:
    """A small random-weight YOLOv8n-worldv2 (3.7M parameters) + tiny CLIP text tower (512-d, real tokenizer) under workdir."""
    folder = Path(workdir) / "yolo-world-tiny"
    if not (folder / "model.safetensors").is_file():
        save_tiny_yolo_world(folder, TINY_IMGSZ)
    return {"model": str(folder), "text_model": str(tiny_clip_text(Path(workdir))),
            "vocabulary": ("ultralytics:coco",), "imgsz": TINY_IMGSZ, "batch_size": 4}


def _calibrate_batch_norms(model, imgsz: int) -> None:
    """Set BatchNorm statistics from ultralytics' two bundled photos: without this, random
    features collapse through the network and every image scores alike."""
    import torch
    import ultralytics
    from PIL import Image
    assets = Path(ultralytics.__file__).parent / "assets"
    photos = [np.asarray(Image.open(assets / name).convert("RGB").resize((imgsz, imgsz))) for name in
              ("bus.jpg", "zidane.jpg")]
    batch = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float() / 255  # (2, 3, S, S)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()
    for norm in norms:
        norm.momentum = 0.03


def save_tiny_yolo_world(folder: Path, imgsz: int = 160) -> Path:
    import torch
    import ultralytics
    import yaml
    from safetensors.torch import save_file
    from ultralytics import YOLOWorld
    arch = Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8-worldv2.yaml"
    spec = yaml.safe_load(arch.read_text(encoding="utf-8"))
    folder.mkdir(parents=True, exist_ok=True)
    arch_file = folder / "yolov8n-worldv2.yaml"  # ultralytics reads the scale from the file name
    arch_file.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    torch.manual_seed(0)
    model = YOLOWorld(str(arch_file), verbose=False).model
    _calibrate_batch_norms(model, imgsz)
    with torch.no_grad():  # ultralytics' init scores every class sigmoid(-10): spread them over 0.1..0.7
        for head in (m for m in model.modules() if type(m).__name__ == "BNContrastiveHead"):
            head.bias.fill_(-2.5)
            head.logit_scale.fill_(-3.0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    return folder
