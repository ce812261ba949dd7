"""MoAIConfig: what the MoAI wrapper needs to build itself around two local backbones.

Sizes default to the published MoAI-7B (docs/moai.md §5-§7); `tiny_config` in tiny.py shrinks them.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from schemas.dtypes import DTYPE_NAMES

TORCH_DTYPES = DTYPE_NAMES

# The published model's numerical artefacts that `compat` can reproduce one by one (docs/published.md §5).
QUIRKS = {
    "ps_range": "PS colour map in [0, 1] normalized as if 0-255 (docs/moai.md §4)",
    "gate_half": "gate softmax in float16 at inference, bfloat16 in training",
    "clip_fp16_positions": "CLIP's interpolated position table rounded through float16",
    "aux_bos_nomask": "aux text starts with BOS and its padding is not masked in the Compressor",
    "buffer_positions": "RoPE positions are buffer indices, so left padding shifts them",
}

FEATURE_QUIRKS = frozenset({"ps_range", "clip_fp16_positions"})  # those that change cached CLIP features


@dataclass(frozen=True)
class ModelCompat:
    """Which published quirks to reproduce: `none` (the correct behaviour), `moai` (all of them), or
    named ones, e.g. "gate_half,buffer_positions". Ask with `has(name)`; `str()` gives the JSON form."""

    quirks: frozenset = frozenset()

    def __post_init__(self):
        unknown = sorted(set(self.quirks) - set(QUIRKS))
        if unknown:
            raise ValueError(f"compat must be 'none', 'moai' or quirk names from {sorted(QUIRKS)}; "
                             f"unknown: {unknown}")
        object.__setattr__(self, "quirks", frozenset(self.quirks))

    @classmethod
    def parse(cls, value) -> "ModelCompat":
        """A ModelCompat, 'none', 'moai', comma-separated quirk names, or a list of them."""
        if isinstance(value, ModelCompat):
            return value
        if isinstance(value, str):
            value = value.strip()
            if value == "none" or not value:
                return cls()
            if value == "moai":
                return cls(frozenset(QUIRKS))
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"compat must be 'none', 'moai' or quirk names from {sorted(QUIRKS)}, got {value!r}")
        return cls(frozenset(value))

    def has(self, quirk: str) -> bool:
        if quirk not in QUIRKS:
            raise KeyError(f"no compat quirk {quirk!r}; known: {sorted(QUIRKS)}")
        return quirk in self.quirks

    def __str__(self) -> str:
        if not self.quirks:
            return "none"
        return "moai" if self.quirks == frozenset(QUIRKS) else ",".join(sorted(self.quirks))


@dataclass(frozen=True)
class MoAIConfig:
    """Frozen, validated settings of a MoAI model.

    lm / vision: local folders holding a Hugging Face causal LM (+ tokenizer) and a CLIP vision model.
    mixer_layers: 0-based decoder layers that get a Mixer; None = every 8th (7, 15, 23, 31 of 32);
        () = no Mixer and no Compressor: the LLaVA-style baseline (CLIP -> connector -> LM).
    compat: which published quirks to reproduce (ModelCompat: 'none', 'moai' = all, or named ones);
        given as a string or list, stored parsed.
    connector_init: a safetensors file of the published vision projector (keys 0.weight, 0.bias,
        2.weight, 2.bias) to start the connector from; None = a fresh MLP (docs/published.md §4).
    trust_remote_code: only for LMs or tokenizers shipped as remote code (plain InternLM2, InternLM2's
        tokenizer); never turned on implicitly. MoAI's own backbone (internlm2_plora) needs none.
    """

    lm: str
    vision: str
    num_latents: int = 64
    compressor_depth: int = 4
    compressor_heads: int = 4
    compressor_head_dim: int = 64
    ff_mult: int = 1
    expert_rank: int = 64
    expert_heads: int = 4
    mixer_layers: tuple[int, ...] | None = None
    image_size: int = 490
    compat: ModelCompat | str = "none"
    connector_init: str | None = None
    image_token: str = "<image>"
    trust_remote_code: bool = False
    torch_dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("lm", "vision", "image_token"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"MoAIConfig.{name} must be a non-empty string, got {value!r}")
        for name in ("num_latents", "compressor_depth", "compressor_heads", "compressor_head_dim",
                     "ff_mult", "expert_rank", "expert_heads", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MoAIConfig.{name} must be a positive int, got {value!r}")
        if self.mixer_layers is not None:
            layers = tuple(self.mixer_layers)
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers):
                raise ValueError(f"MoAIConfig.mixer_layers must hold non-negative ints, got {layers!r}")
            if len(set(layers)) != len(layers):
                raise ValueError(f"MoAIConfig.mixer_layers has duplicates: {layers!r}")
            object.__setattr__(self, "mixer_layers", tuple(sorted(layers)))
        try:
            object.__setattr__(self, "compat", ModelCompat.parse(self.compat))
        except ValueError as err:
            raise ValueError(f"MoAIConfig.{err}") from None
        if self.connector_init is not None and (not isinstance(self.connector_init, str) or not self.connector_init):
            raise ValueError(f"MoAIConfig.connector_init must be a file path or None, got {self.connector_init!r}")
        if self.torch_dtype not in TORCH_DTYPES:
            raise ValueError(f"MoAIConfig.torch_dtype must be one of {TORCH_DTYPES}, got {self.torch_dtype!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"MoAIConfig.trust_remote_code must be a bool, got {self.trust_remote_code!r}")

    def resolve_mixer_layers(self, num_layers: int) -> tuple[int, ...]:
        """The Mixer layers for an LM with `num_layers` decoder layers, checked against it."""
        layers = self.mixer_layers
        if layers is None:
            layers = tuple(range(7, num_layers, 8))
            if not layers:
                raise ValueError(f"the LM has {num_layers} decoder layers, fewer than 8, so 'every 8th layer' "
                                 "selects none; set MoAIConfig.mixer_layers explicitly")
        bad = [i for i in layers if i >= num_layers]
        if bad:
            raise ValueError(f"MoAIConfig.mixer_layers {bad} out of range for an LM with {num_layers} layers")
        return tuple(layers)

    @property
    def dtype(self):
        import torch
        return getattr(torch, self.torch_dtype)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["compat"] = str(self.compat)
        if out["mixer_layers"] is not None:
            out["mixer_layers"] = list(out["mixer_layers"])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "MoAIConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MoAIConfig fields {unknown}; known: {sorted(known)}")
        data = dict(data)
        if data.get("mixer_layers") is not None:
            data["mixer_layers"] = tuple(data["mixer_layers"])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "MoAIConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
