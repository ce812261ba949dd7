"""Annotators by name, imported lazily (heavy libraries load only when used).

Each annotator class has a nested frozen dataclass `Config` and is built as `cls(cls.Config(**options))`;
its module has `tiny_config(workdir) -> dict`, which writes a small random-weight model (or the
real small weights, for OCR) under `workdir` and returns the options that load it.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .base import Annotator

ANNOTATORS: dict[str, str] = {
    "panoptic": "annotators.mask2former:Mask2FormerAnnotator",
    "owod": "annotators.owlv2:OWLv2Annotator",
    "owod_yolo": "annotators.yolo_world:YOLOWorldAnnotator",
    "sgg": "annotators.psgtr.annotator:PSGTRAnnotator",
    "ocr": "annotators.ocr:PaddleOCRAnnotator",
}


def annotator_class(kind: str) -> type:
    if kind not in ANNOTATORS:
        raise ValueError(f"unknown annotator {kind!r}; choose from {sorted(ANNOTATORS)}")
    module, cls = ANNOTATORS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def build(kind: str, options: dict | None = None) -> Annotator:
    cls = annotator_class(kind)
    return cls(cls.Config(**(options or {})))


def tiny_config(kind: str, workdir: str | Path) -> dict:
    """Options for a small random-weight (tests, CI, demo) version of `kind`, written under workdir."""
    module = importlib.import_module(ANNOTATORS[kind].split(":")[0])
    return module.tiny_config(Path(workdir))
