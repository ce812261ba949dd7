"""The annotation job's configuration: frozen dataclasses, loaded from a YAML profile plus overrides.

A profile (`pipeline/profiles/moai.yaml`, `tiny.yaml`, or any YAML file) holds every setting with
its documented default; `--set key.path=value` on the command line overrides single values
(`--set annotators.ocr.enabled=false`, `--set annotators.panoptic.num_gpus=0.5`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from schemas.dtypes import DTYPE_NAMES
from schemas.image import DEFAULT_MAX_PIXELS
from schemas.schema import ANNOTATION_SCHEMA
from schemas.verbalize import VerbalizeConfig

PROFILES = ("moai", "tiny")
# Above this many pixels (width x height, before decoding) an image becomes an error row instead of
# a decompression bomb (schemas/image.py).
GPU_DTYPES = ("", *DTYPE_NAMES)  # "": the annotator's own default


@dataclass(frozen=True)
class AnnotatorStage:
    """One annotator and its Ray actor pool."""
    kind: str                        # registry name ("panoptic", "owod", ...) or "package.module:Class"
    enabled: bool = True
    options: dict = field(default_factory=dict)  # the annotator's Config fields
    tiny: bool = False               # build a small random-weight model (registry.tiny_config) first
    batch_size: int = 8              # images per __call__
    num_gpus: float = 0.0            # per actor; fractions share a GPU (0.25 = four actors per GPU);
                                     # > 0 runs the model on the GPU Ray assigns, 0 on the CPU in float32
    gpu_dtype: str = ""              # dtype on a GPU; "" = the annotator's (bf16; fp16 for YOLO-World)
    num_cpus: float = 1.0            # per actor
    min_actors: int = 1              # actor pool size range (ActorPoolStrategy)
    max_actors: int = 1
    max_restarts: int = 3            # a crashed actor is restarted this many times ...
    max_task_retries: int = 3        # ... and its batch retried this many times

    def __post_init__(self):
        if not self.kind:
            raise ValueError("annotator kind must name a registry entry or 'module:Class'")
        if self.batch_size < 1:
            raise ValueError(f"{self.kind}: batch_size must be >= 1, got {self.batch_size}")
        if self.num_gpus < 0 or self.num_cpus < 0:
            raise ValueError(f"{self.kind}: num_gpus/num_cpus must be >= 0, got {self.num_gpus}/{self.num_cpus}")
        if not 1 <= self.min_actors <= self.max_actors:
            raise ValueError(f"{self.kind}: need 1 <= min_actors <= max_actors, got {self.min_actors}, {self.max_actors}")
        if self.max_restarts < 0 or self.max_task_retries < 0:
            raise ValueError(f"{self.kind}: max_restarts/max_task_retries must be >= 0")
        if self.gpu_dtype not in GPU_DTYPES:
            raise ValueError(f"{self.kind}: gpu_dtype must be one of {GPU_DTYPES}, got {self.gpu_dtype!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"{self.kind}: options must be a mapping, got {type(self.options).__name__}")


@dataclass(frozen=True)
class RunConfig:
    input: str = ""                  # directory, glob, URI, manifest (.parquet/.csv) or LLaVA .json
    output: str = ""                 # output directory (local path or pyarrow filesystem URI)
    image_root: str = ""             # base for relative paths in manifests / conversation JSON
    address: str = ""                # Ray address; "" = $RAY_ADDRESS or an embedded local Ray
    working_size: int = 490          # images are squashed to working_size x working_size (MoAI)
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_batch_size: int = 16
    decode_num_cpus: float = 1.0     # per CPU task (decode, and verbalize + write)
    rows_per_file: int = 1000        # rows per Parquet file (the last file of a run may be smaller)
    block_rows: int = 1000           # most images in one Ray Data block: what a block Ray gives up on costs
    retry_errors: bool = False       # re-annotate images whose stored row is an error
    max_errored_blocks: int = 1000   # blocks lost to crashed workers before the run aborts (rows come back as errors)
    tiny_workdir: str = "runs/tiny-models"  # where tiny (random-weight) models are written
    resource_wait_s: float = 300.0   # cluster: how long a stage may wait for a node that fits its actors
    check_weights: bool = True       # check every named weight file/folder on the driver before Ray starts
    object_store_memory: int = 0     # embedded Ray only; 0 = Ray's default
    num_cpus: int = 0                # embedded Ray only; 0 = all CPUs
    verbalize: VerbalizeConfig = VerbalizeConfig()
    annotators: dict = field(default_factory=dict)  # name -> AnnotatorStage

    def __post_init__(self):
        if self.working_size < 1:
            raise ValueError(f"working_size must be >= 1, got {self.working_size}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.rows_per_file < 1 or self.decode_batch_size < 1 or self.block_rows < 1:
            raise ValueError(f"rows_per_file, decode_batch_size and block_rows must be >= 1, got "
                             f"{self.rows_per_file}, {self.decode_batch_size}, {self.block_rows}")
        if self.resource_wait_s < 0:
            raise ValueError(f"resource_wait_s must be >= 0, got {self.resource_wait_s}")
        stages = {name: s if isinstance(s, AnnotatorStage) else AnnotatorStage(**s)
                  for name, s in (self.annotators or {}).items()}
        object.__setattr__(self, "annotators", stages)
        if isinstance(self.verbalize, dict):
            object.__setattr__(self, "verbalize", VerbalizeConfig(**self.verbalize))

    @property
    def enabled(self) -> dict[str, AnnotatorStage]:
        return {name: stage for name, stage in self.annotators.items() if stage.enabled}

    def check_runnable(self) -> None:
        """Errors that only matter when a job is about to start."""
        if not self.input:
            raise ValueError("no input: pass --input (directory, glob, URI, manifest or LLaVA JSON)")
        if not self.output:
            raise ValueError("no output: pass --output DIR")


def check_columns(columns_by_stage: dict[str, tuple[str, ...]]) -> None:
    """Two enabled annotators must not fill the same schema column (e.g. owod and owod_yolo)."""
    owner: dict[str, str] = {}
    for stage, columns in columns_by_stage.items():
        for column in columns:
            if column not in ANNOTATION_SCHEMA.names:
                raise ValueError(f"annotator {stage!r} fills {column!r}, which is not a schema column")
            if column in owner:
                raise ValueError(f"annotators {owner[column]!r} and {stage!r} both fill {column!r}; "
                                 f"disable one (--set annotators.{stage}.enabled=false)")
            owner[column] = stage


def profile_path(name_or_path: str) -> Path:
    if name_or_path in PROFILES:
        return Path(str(resources.files("pipeline") / "profiles" / f"{name_or_path}.yaml"))
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"config {name_or_path!r} is neither a profile {PROFILES} nor a YAML file")
    return path


def parse_override(text: str) -> tuple[list[str], Any]:
    """'annotators.ocr.enabled=false' -> (['annotators', 'ocr', 'enabled'], False) (YAML-typed)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.path=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_override(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise ValueError(f"override {'.'.join(keys)}: {key!r} is not a section of the config")
        node = node[key]
    node[keys[-1]] = value


def load_config(profile: str = "moai", overrides: list[str] = (), **values: Any) -> RunConfig:
    """A profile's YAML, then `key.path=value` overrides, then keyword values (CLI flags)."""
    tree = yaml.safe_load(profile_path(profile).read_text()) or {}
    tree = copy.deepcopy(tree)
    for text in overrides:
        apply_override(tree, *parse_override(text))
    tree.update({k: v for k, v in values.items() if v is not None})
    known = {f.name for f in fields(RunConfig)}
    unknown = set(tree) - known
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
    return RunConfig(**tree)
