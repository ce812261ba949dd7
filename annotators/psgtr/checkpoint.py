"""The on-disk format of a PSGTR model we can load: `model.safetensors` + `config.json`
({"model": PSGTRConfig, "class_names": [...], "predicate_names": [...], "source": {...}}).
Written by `convert.py` (published checkpoint) and `tiny_config` (random weights)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base import MissingWeightsError, sha256_file
from .config import PSGTRConfig
from .model import PSGTR

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ModelInfo:
    config: PSGTRConfig
    class_names: tuple[str, ...]
    predicate_names: tuple[str, ...]
    weights_sha256: str
    source: dict


def check_vocabularies(cfg: PSGTRConfig, class_names, predicate_names) -> None:
    if len(class_names) != cfg.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {cfg.num_classes} classes")
    if len(predicate_names) != cfg.num_predicates:
        raise ValueError(f"{len(predicate_names)} predicate names for a model with {cfg.num_predicates} predicates")


def save_model_dir(state_dict: dict[str, torch.Tensor], cfg: PSGTRConfig, out_dir: str | Path,
                   class_names, predicate_names, source: dict) -> Path:
    """Strict-checks `state_dict` against PSGTR(cfg), then writes the model folder."""
    from safetensors.torch import save_file
    check_vocabularies(cfg, class_names, predicate_names)
    build_model(cfg, state_dict)  # strict: refuses missing, unexpected and mis-shaped tensors
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(out_dir / WEIGHTS_FILE))
    meta = {"model": cfg.to_dict(), "class_names": list(class_names), "predicate_names": list(predicate_names),
            "source": source}
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return out_dir


def convert_command(model_dir: str | Path) -> str:
    """The exact command that writes `model_dir` from the published checkpoint."""
    return f"python -m annotators.psgtr.convert psgtr_r50_epoch_60.pth {model_dir} --sha256 published"


def load_model_dir(model_dir: str | Path) -> tuple[PSGTR, ModelInfo]:
    """The model (eval mode, CPU, float32) and its vocabularies; strict load."""
    from safetensors.torch import load_file
    model_dir = Path(model_dir)
    weights, config = model_dir / WEIGHTS_FILE, model_dir / CONFIG_FILE
    if not weights.is_file() or not config.is_file():
        raise MissingWeightsError(
            f"no PSGTR model in {model_dir} (needs {WEIGHTS_FILE} and {CONFIG_FILE}). Download "
            f"psgtr_r50_epoch_60.pth from the OpenPSG README and convert it: {convert_command(model_dir)}")
    meta = json.loads(config.read_text(encoding="utf-8"))
    cfg = PSGTRConfig.from_dict(meta["model"])
    info = ModelInfo(cfg, tuple(meta["class_names"]), tuple(meta["predicate_names"]), sha256_file(weights),
                     meta.get("source", {}))
    check_vocabularies(cfg, info.class_names, info.predicate_names)
    return build_model(cfg, load_file(str(weights))).eval(), info


def build_model(cfg: PSGTRConfig, state_dict: dict[str, torch.Tensor]) -> PSGTR:
    """PSGTR(cfg) holding exactly `state_dict` (strict), without first allocating a random init."""
    with torch.device("meta"):
        model = PSGTR(cfg)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model
