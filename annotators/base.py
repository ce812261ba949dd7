"""The one small interface every annotator follows (no Ray here: pipeline/ wraps them).

An annotator is a callable class: `__init__(config)` loads its model once, `__call__(images)`
maps a batch of RGB uint8 images at the working resolution, (B, H, W, 3), to one result per
image. A result is a dict of schema columns (e.g. {"detections": [...]}) or `Failed(reason)`
for that image alone; an exception escaping `__call__` means the whole batch failed.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Union, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Failed:
    """One image the annotator could not process; becomes an error row for that image."""
    message: str


Result = Union[dict[str, Any], Failed]


@runtime_checkable
class Annotator(Protocol):
    name: ClassVar[str]               # stage name: "panoptic" | "owod" | "sgg" | "ocr"
    columns: ClassVar[tuple[str, ...]]  # schema columns its results fill

    def __call__(self, images: np.ndarray) -> list[Result]:
        """images: (B, H, W, 3) uint8 RGB -> B results."""
        ...

    def provenance(self) -> dict:
        """Model id, checkpoint hash, thresholds, vocabulary: goes into the Parquet metadata."""
        ...


def check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"annotators take (B, H, W, 3) uint8 RGB batches, got {images.dtype} {images.shape}")
    return images


def set_offline() -> None:
    """Turn on every library's offline switch: a missing model fails at once, nothing downloads."""
    for key, value in {
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false",
        "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True",
    }.items():
        os.environ.setdefault(key, value)


class MissingWeightsError(FileNotFoundError):
    """The named weights are not on this machine; the message says which and how to get them."""


DEVICE_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"
MODELS_ROOT_ENV = "MOAI_MODELS"


def check_device(device: str) -> str:
    """The one spelling of devices every annotator Config accepts (OCR maps 'cuda' to paddle's 'gpu')."""
    text = str(device)
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ValueError(f"device {device!r}: use {DEVICE_HELP}")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'."""
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def models_root() -> Path:
    """Where the published weights that are not in the Hugging Face cache live (absolute):
    `$MOAI_MODELS`, else `models/` under the current directory. Holds `psgtr_r50/` (written by
    `python -m annotators.psgtr.convert`) and `ppocr/` (prepared from the installed wheels)."""
    return Path(os.environ.get(MODELS_ROOT_ENV) or "models").expanduser().absolute()


def cache_root() -> Path:
    """Where the project keeps what it derives and can derive again (encoded OWLv2 queries, PP-OCR
    folders when the models root is read-only): `$MOAI_CACHE`, else `~/.cache/moai-pipeline`."""
    return Path(os.environ.get("MOAI_CACHE") or Path.home() / ".cache" / "moai-pipeline").expanduser()


@dataclass(frozen=True)
class Requirement:
    """A file or folder an annotator needs before it can load, for `pipeline check`."""
    key: str                 # the Config option that names it ("model", "model_dir", ...)
    what: str                # "Mask2Former checkpoint facebook/...", "OWLv2 query vocabulary"
    path: str                # where it is looked for
    found: bool
    fix: str = ""            # how to get it, when missing
    prepared: bool = False   # absent now, but the annotator prepares it itself (OCR from wheels)


def sha256_file(path, chunk: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in chunks (weights are gigabytes): provenance of checkpoints."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def map_in_batches(images: np.ndarray, batch_size: int, run_batch, what: str = "") -> list[Result]:
    """`run_batch` over chunks of at most `batch_size` images, each through `run_isolating`."""
    return [r for start in range(0, len(images), batch_size)
            for r in run_isolating(run_batch, images[start:start + batch_size], what)]


def run_isolating(run_batch, images, what: str = "") -> list[Result]:
    """`run_batch(images)`; if the batch raises (or returns a result count that is not one per image),
    each image alone, so only the image that breaks the model becomes `Failed` (with `what` and the
    reason) and the rest of its batch is annotated normally. The one copy of this rule: annotators'
    own batching and the pipeline's actors both use it."""
    try:
        results = list(run_batch(images))
        if len(results) != len(images):
            raise RuntimeError(f"{len(results)} results for {len(images)} images")
        return results
    except Exception as err:  # noqa: BLE001 - find the image that breaks the batch
        if len(images) == 1:
            return [failure(err, what)]
    return [run_one(run_batch, image, what) for image in images]


def run_one(run_batch, image, what: str = "") -> Result:
    """One (H, W, 3) image through `run_batch`; an exception becomes its `Failed`."""
    try:
        (result,) = list(run_batch(image[None]))
        return result
    except Exception as err:  # noqa: BLE001 - becomes this image's error row
        return failure(err, what)


def failure(err: BaseException, what: str = "") -> Failed:
    return Failed(f"{what + ': ' if what else ''}{type(err).__name__}: {err}")
