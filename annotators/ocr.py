"""OCR with PaddleOCR (paddleocr 3.x) on local PP-OCR detection + recognition model folders.

MoAI runs PaddleOCR on CPU and verbalizes the strings with confidence >= 0.85; that keep-threshold
lives in `schemas/verbalize.py`. Here every line above the low storage threshold `min_score` is
kept with its score and its polygon normalized to the image, so texts can be re-verbalized later.

Offline by construction: models load only from folders (given; else `ppocr/<name>` under the
models root, prepared there from the installed wheels when absent; else PaddleX's model cache),
the document-orientation, unwarping and text-line-orientation models stay off unless their folders
are given, the model-source check is off, and PaddleX gets a local font. A missing folder raises
`MissingWeightsError` naming it. The real small PP-OCR weights ship inside the `rapidocr` wheel
(see `annotators/ppocr_models.py`).
"""
from __future__ import annotations

import importlib.metadata
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from schemas.fonts import find_font

from .base import (Failed, MissingWeightsError, Requirement, Result, cache_root, check_device, check_images,
                   models_root, resolve_device, run_isolating, set_offline, sha256_file)

ENGINES = ("onnxruntime", "paddle", "paddle_static")
DEVICES = ("auto", "cpu", "gpu")  # paddle's names; "cuda[:N]" is accepted too and means "gpu[:N]"
ONNX_FILES = ("inference.onnx",)
PADDLE_FILES = (("inference.json", "inference.pdmodel"), ("inference.pdiparams",))


def _paddlex_cache() -> Path:
    return Path(os.environ.get("PADDLE_PDX_CACHE_HOME", Path.home() / ".paddlex")) / "official_models"


def _missing_files(folder: Path, engine: str) -> list[str]:
    """Files PaddleOCR needs in `folder` for `engine` that are not there (empty list = usable)."""
    missing = [] if (folder / "inference.yml").is_file() else ["inference.yml"]
    if engine == "onnxruntime":
        missing += [name for name in ONNX_FILES if not (folder / name).is_file()]
    else:
        missing += [" or ".join(group) for group in PADDLE_FILES
                    if not any((folder / name).is_file() for name in group)]
    return missing


def _default_folder(name: str) -> Path:
    return models_root() / "ppocr" / name


def model_files_sha256(folder: Path) -> dict[str, str]:
    names = ("inference.yml", "inference.onnx", "inference.json", "inference.pdmodel", "inference.pdiparams")
    return {name: sha256_file(folder / name) for name in names if (folder / name).is_file()}


class PaddleOCRAnnotator:
    """(B, H, W, 3) uint8 RGB -> per image {"ocr": [{"text", "score", "polygon"}]} or Failed."""

    name: ClassVar[str] = "ocr"
    columns: ClassVar[tuple[str, ...]] = ("ocr",)
    gpu_dtype: ClassVar[str | None] = None  # the exported models run as they are

    @staticmethod
    def requirements(config: "PaddleOCRAnnotator.Config") -> list[Requirement]:
        from .ppocr_models import WHEEL_MODELS, wheel_file
        requirements = []
        for key, role, folder, name in (
                ("det_model_dir", "detection", config.det_model_dir, config.det_model_name),
                ("rec_model_dir", "recognition", config.rec_model_dir, config.rec_model_name),
                ("textline_orientation_model_dir", "text-line orientation",
                 config.textline_orientation_model_dir, None)):
            if key.startswith("textline") and folder is None:
                continue
            path = Path(folder) if folder is not None else _default_folder(name)
            what = f"PP-OCR {role} model {name or ''}".strip()
            usable = path.is_dir() and not _missing_files(path, config.engine)
            if usable or folder is not None or name not in WHEEL_MODELS:
                requirements.append(Requirement(key, what, str(path), usable,
                                                "" if usable else f"give {key} a PaddleOCR model folder, or prepare "
                                                "the wheel's: python -m annotators.ppocr_models OUT_DIR"))
                continue
            try:  # absent, but it ships in a wheel: the annotator prepares it there on first use
                source = wheel_file(WHEEL_MODELS[name])
                requirements.append(Requirement(key, what, str(path), True, f"prepared on first use from {source}",
                                                prepared=True))
            except MissingWeightsError as err:
                requirements.append(Requirement(key, what, str(path), False, str(err)))
        return requirements

    @dataclass(frozen=True)
    class Config:
        # Model folders (inference.yml + inference.onnx, or Paddle inference files). None = the
        # models root's ppocr/<name> (prepared from the installed wheel when absent), else PaddleX's
        # model cache (~/.paddlex/official_models/<name>); never downloaded.
        det_model_dir: str | None = None
        rec_model_dir: str | None = None
        det_model_name: str = "PP-OCRv6_small_det"
        rec_model_name: str = "PP-OCRv6_small_rec"
        # MoAI's use_angle_cls: on only when its model folder is given (it would download otherwise).
        textline_orientation_model_dir: str | None = None
        textline_orientation_model_name: str = "PP-LCNet_x1_0_textline_ori"
        engine: str = "onnxruntime"     # the wheels ship ONNX; "paddle" for native inference folders
        device: str = "auto"            # auto = "gpu" when the engine can use CUDA, else "cpu" (as MoAI)
                                        # the pipeline picks it from Ray; "cuda[:N]" = "gpu[:N]"
        batch_size: int = 8             # images per detection batch inside PaddleOCR
        rec_batch_size: int = 8         # text lines per recognition batch
        cpu_threads: int | None = None  # None = the engine's default
        min_score: float = 0.5          # storage threshold; MoAI's 0.85 is applied by the verbalizer
        det_limit_side_len: int = 64    # PaddleOCR's general-OCR resize rule: shortest side >= 64
        det_limit_type: str = "min"
        det_thresh: float = 0.3         # DB binarization threshold
        det_box_thresh: float = 0.6     # mean probability inside a box to keep it
        det_unclip_ratio: float = 1.5

        def __post_init__(self):
            if self.engine not in ENGINES:
                raise ValueError(f"engine={self.engine!r}: choose one of {ENGINES}")
            device = str(self.device)
            if device.startswith("gpu"):
                device = "cuda" + device[3:]
            object.__setattr__(self, "device", check_device(device).replace("cuda", "gpu"))
            for field in ("batch_size", "rec_batch_size", "det_limit_side_len"):
                if getattr(self, field) < 1:
                    raise ValueError(f"{field}={getattr(self, field)} must be >= 1")
            if self.cpu_threads is not None and self.cpu_threads < 1:
                raise ValueError(f"cpu_threads={self.cpu_threads} must be >= 1 or None")
            for field in ("min_score", "det_thresh", "det_box_thresh"):
                if not 0.0 <= getattr(self, field) <= 1.0:
                    raise ValueError(f"{field}={getattr(self, field)} must be within [0, 1]")
            if self.det_limit_type not in ("min", "max"):
                raise ValueError(f"det_limit_type={self.det_limit_type!r}: choose 'min' or 'max'")
            if self.det_unclip_ratio <= 0:
                raise ValueError(f"det_unclip_ratio={self.det_unclip_ratio} must be > 0")

    def __init__(self, config: Config = Config()):
        self.config = config
        self.det_dir = self._model_folder("detection", config.det_model_dir, config.det_model_name)
        self.rec_dir = self._model_folder("recognition", config.rec_model_dir, config.rec_model_name)
        self.cls_dir = (None if config.textline_orientation_model_dir is None else self._model_folder(
            "text-line orientation", config.textline_orientation_model_dir, config.textline_orientation_model_name))
        self._check_folders()
        self.device = self._resolve_device(config.device, config.engine)
        set_offline()
        os.environ["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] = "True"
        os.environ.setdefault("PADDLE_PDX_LOCAL_FONT_FILE_PATH", str(find_font()))
        from paddleocr import PaddleOCR  # after the switches: paddlex reads them at import
        from paddlex.inference import load_pipeline_config

        # PaddleOCR's own OCR pipeline config (a local YAML), with our batch sizes: images per
        # pipeline step and per detection forward; recognition batches the lines of each image.
        pipeline_config = load_pipeline_config("OCR")
        pipeline_config["batch_size"] = config.batch_size
        pipeline_config["SubModules"]["TextDetection"]["batch_size"] = config.batch_size

        engine_options = {}
        if config.cpu_threads is not None:
            engine_options = ({"engine_config": {"intra_op_num_threads": config.cpu_threads}}
                              if config.engine == "onnxruntime" else {"cpu_threads": config.cpu_threads})
        self.pipeline = PaddleOCR(
            text_detection_model_name=config.det_model_name, text_detection_model_dir=str(self.det_dir),
            text_recognition_model_name=config.rec_model_name, text_recognition_model_dir=str(self.rec_dir),
            text_recognition_batch_size=config.rec_batch_size,
            use_doc_orientation_classify=False, use_doc_unwarping=False,
            use_textline_orientation=self.cls_dir is not None,
            textline_orientation_model_name=config.textline_orientation_model_name if self.cls_dir else None,
            textline_orientation_model_dir=str(self.cls_dir) if self.cls_dir else None,
            text_det_limit_side_len=config.det_limit_side_len, text_det_limit_type=config.det_limit_type,
            text_det_thresh=config.det_thresh, text_det_box_thresh=config.det_box_thresh,
            text_det_unclip_ratio=config.det_unclip_ratio, text_rec_score_thresh=config.min_score,
            paddlex_config=pipeline_config,
            engine=config.engine, device=self.device, **engine_options)

    @staticmethod
    def _model_folder(role: str, folder: str | None, name: str) -> Path:
        if folder is not None:
            return Path(folder)
        from .ppocr_models import WHEEL_MODELS, prepare_model
        ours, cached = _default_folder(name), _paddlex_cache() / name
        if ours.is_dir():
            return ours
        if cached.is_dir():
            return cached
        if name in WHEEL_MODELS:
            try:
                return prepare_model(name, ours.parent)
            except PermissionError:  # a read-only models root: prepare it in the user's cache
                return prepare_model(name, cache_root() / "ppocr")
        raise MissingWeightsError(
            f"OCR {role} model {name!r}: no folder given, none at {ours} nor in the PaddleX cache ({cached}); "
            "nothing is downloaded. Pass its *_model_dir, or prepare the PP-OCR weights shipped "
            "in the rapidocr wheel: python -m annotators.ppocr_models OUT_DIR")

    def _check_folders(self) -> None:
        for role, folder in (("detection", self.det_dir), ("recognition", self.rec_dir),
                             ("text-line orientation", self.cls_dir)):
            if folder is None:
                continue
            how = ("prepare one with: python -m annotators.ppocr_models OUT_DIR"
                   if self.config.engine == "onnxruntime" else
                   "give a PaddleOCR inference export, or use engine='onnxruntime' with the folders "
                   "from: python -m annotators.ppocr_models OUT_DIR")
            if not folder.is_dir():
                raise MissingWeightsError(f"OCR {role} model folder {folder} does not exist; {how}")
            missing = _missing_files(folder, self.config.engine)
            if missing:
                raise MissingWeightsError(f"OCR {role} model folder {folder} lacks {', '.join(missing)} "
                                          f"for engine {self.config.engine!r}; {how}")

    @staticmethod
    def _resolve_device(device: str, engine: str) -> str:
        if device == "cpu":
            return device
        if engine == "onnxruntime":
            # A GPU without onnxruntime's CUDA provider (the CPU wheel) runs on the CPU; provenance says so.
            import onnxruntime
            # A CUDA build of onnxruntime is not enough: a GPU must be visible to this process.
            has_gpu = ("CUDAExecutionProvider" in onnxruntime.get_available_providers()
                       and resolve_device("auto") == "cuda")
            return (device if device != "auto" else "gpu") if has_gpu else "cpu"
        if device != "auto":
            return device
        import paddle
        has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
        return "gpu" if has_gpu else "cpu"

    def __call__(self, images: np.ndarray) -> list[Result]:
        """images: (B, H, W, 3) uint8 RGB -> B results, {"ocr": [...]} or Failed, in input order."""
        images = check_images(images)
        batch, height, width = images.shape[:3]
        if height == 0 or width == 0:
            return [Failed(f"empty image ({height}x{width}): nothing to read")] * batch
        return run_isolating(lambda chunk: self._predict(chunk, width, height), images,
                             f"PaddleOCR failed on a {height}x{width} image")

    def _predict(self, images: np.ndarray, width: int, height: int) -> list[dict]:
        # PaddleOCR takes BGR arrays (OpenCV order), one per image.
        bgr = [np.ascontiguousarray(image[..., ::-1]) for image in images]  # B x (H, W, 3)
        return [self._lines(result, width, height) for result in self.pipeline.predict(bgr)]

    def _lines(self, result, width: int, height: int) -> dict:
        lines = []
        for text, score, polygon in zip(result["rec_texts"], result["rec_scores"], result["rec_polys"]):
            if not text.strip():
                continue
            points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) / (width, height)  # (P, 2)
            lines.append({"text": str(text), "score": float(score),
                          "polygon": np.clip(points, 0.0, 1.0).round(6).tolist()})
        return {"ocr": lines}

    def provenance(self) -> dict:
        models = {"det": (self.config.det_model_name, self.det_dir),
                  "rec": (self.config.rec_model_name, self.rec_dir)}
        if self.cls_dir is not None:
            models["textline_orientation"] = (self.config.textline_orientation_model_name, self.cls_dir)
        return {
            "annotator": self.name,
            "library": {name: importlib.metadata.version(name) for name in ("paddleocr", "paddlex")},
            "engine": self.config.engine,
            "device": self.device,
            "models": {role: {"name": name, "dir": str(folder), "sha256": model_files_sha256(folder)}
                       for role, (name, folder) in models.items()},
            "use_textline_orientation": self.cls_dir is not None,
            "config": asdict(self.config),
        }


def tiny_config(workdir: Path) -> dict:
    """Options for the real small PP-OCR weights from the rapidocr wheel, prepared under workdir."""
    from .ppocr_models import DEFAULT_DET, DEFAULT_REC, prepare_models
    folders = prepare_models(Path(workdir) / "ppocr", (DEFAULT_DET, DEFAULT_REC))
    return {"det_model_dir": str(folders[DEFAULT_DET]), "det_model_name": DEFAULT_DET,
            "rec_model_dir": str(folders[DEFAULT_REC]), "rec_model_name": DEFAULT_REC,
            "batch_size": 4, "min_score": 0.5}
