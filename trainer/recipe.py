"""Recipe YAML -> validated settings, and the model a recipe names.

A recipe has four sections: `model` (MoAIConfig fields, or `tiny: DIR` for the random-weight test
backbones), `data` (annotations + conversations, or a feature `cache`), `train` (TrainConfig
fields) and optional `stage1` / `stage2` sections whose keys override `train` for that stage.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

SECTIONS = ("model", "data", "train", "stage1", "stage2")
DATA_KEYS = ("annotations", "conversations", "cache", "max_length", "prompt")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one stage. Defaults are the published MoAI setup (docs/moai.md §7) where it has one."""
    output_dir: str
    seed: int = 0
    micro_batch_size: int = 1        # per process
    grad_accum: int = 1              # global batch = micro_batch_size x processes x grad_accum
    epochs: int = 1
    max_steps: int | None = None     # cap on optimizer steps (the schedule spans them)
    lr: float = 2e-5
    min_lr: float = 1e-6             # cosine floor
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None  # overrides warmup_ratio when set
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 10.0
    precision: str = "bf16"          # bf16 autocast on GPU; CPU always runs fp32
    gradient_checkpointing: bool = False
    distributed: str = "ddp"         # ddp | fsdp (shards the frozen 7B backbone too)
    device: str = "auto"             # auto | cuda | cpu
    num_workers: int = 2             # DataLoader workers per process
    save_every: int = 1000           # checkpoint every N optimizer steps (0 = only the final one)
    keep_checkpoints: int = 2
    stop_after: int | None = None    # stop with a checkpoint after N steps of this run (time-limited jobs)
    init_from: str | None = None     # stage 2: stage-1 checkpoint; default OUTPUT_DIR/stage1/final
    log_every: int = 1

    def __post_init__(self) -> None:
        positive = ("micro_batch_size", "grad_accum", "epochs", "log_every")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"train.{name} must be a positive int, got {value!r}")
        for name, least in (("max_steps", 1), ("stop_after", 1), ("warmup_steps", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"train.{name} must be an int >= {least} or null, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"train.lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"train.min_lr must lie in [0, lr={self.lr}], got {self.min_lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must lie in [0, 1), got {self.warmup_ratio!r}")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"train.precision must be 'bf16' or 'fp32', got {self.precision!r}")
        if self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"train.distributed must be 'ddp' or 'fsdp', got {self.distributed!r}")
        if self.device not in ("auto", "cuda", "cpu"):
            raise ValueError(f"train.device must be auto, cuda or cpu, got {self.device!r}")
        if len(self.betas) != 2:
            raise ValueError(f"train.betas must be two numbers, got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


def load_recipe(path: str | os.PathLike) -> dict:
    """Read and check a recipe YAML; relative paths stay relative to the working directory."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"recipe {path} does not exist")
    try:
        recipe = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a mapping with sections {SECTIONS}")
    check_recipe(recipe, str(path))
    return recipe


def check_recipe(recipe: dict, where: str = "recipe") -> None:
    unknown = set(recipe) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{where}: unknown sections {sorted(unknown)}; known: {SECTIONS}")
    for section in ("model", "data", "train"):
        if not isinstance(recipe.get(section), dict):
            raise ValueError(f"{where}: section {section!r} is missing or not a mapping")
    unknown = set(recipe["data"]) - set(DATA_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown data keys {sorted(unknown)}; known: {DATA_KEYS}")
    if not recipe["data"].get("cache") and not (recipe["data"].get("annotations") and recipe["data"].get("conversations")):
        raise ValueError(f"{where}: data needs either `cache` or both `annotations` and `conversations`")
    max_length = recipe["data"].get("max_length")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"{where}: data.max_length must be a positive int or null, got {max_length!r}")
    for stage in (1, 2):
        stage_config(recipe, stage)  # validates train + stage overrides


def stage_config(recipe: dict, stage: int) -> TrainConfig:
    values = {**recipe["train"], **(recipe.get(f"stage{stage}") or {})}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown train settings {sorted(unknown)}; known: {sorted(known)}")
    try:
        return TrainConfig(**values)
    except TypeError as err:  # e.g. betas: 0.9 (not a pair), lr: "fast"
        raise ValueError(f"train settings of stage {stage}: {err}") from err


def parse_overrides(recipe: dict, items: list[str]) -> dict:
    """Apply `section.key=value` overrides (values parsed as YAML) and re-check the recipe."""
    recipe = copy.deepcopy(recipe)
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or parts[0] not in SECTIONS:
            raise ValueError(f"override {item!r} must look like section.key=value, section in {SECTIONS}")
        node = recipe
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    check_recipe(recipe, "recipe with overrides")
    return recipe


def build_model(section: dict):
    """A MoAIModel from the recipe's `model` section. `tiny: DIR` builds random test backbones there once."""
    from .model import MoAIConfig, MoAIModel
    section = dict(section)
    if "tiny" in section:
        from .model.tiny import tiny_config
        config = tiny_config(section.pop("tiny"), **section)  # builds the backbones there once
    else:
        config = MoAIConfig.from_dict(section)
    return MoAIModel.from_config(config)
