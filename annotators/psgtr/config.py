"""The PSGTR architecture's sizes (R50 as published by default), validated, and stored beside converted weights."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

BACKBONES = {"resnet50": (256, 512, 1024, 2048), "resnet18": (64, 128, 256, 512)}


@dataclass(frozen=True)
class PSGTRConfig:
    """Defaults are the published `psgtr_r50_psg` model: 133 classes, 56 predicates, 100 queries."""
    num_classes: int = 133          # object classes; the class heads add a background column (last)
    num_predicates: int = 56        # predicates; the relation head adds a background column (first)
    num_things: int = 80            # labels below this are things (merged by mask IoU), the rest stuff
    num_queries: int = 100
    d_model: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 6
    backbone: str = "resnet50"      # torchvision name; resnet18 only for tiny test models
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}")
        for name in ("num_classes", "num_predicates", "num_queries", "d_model", "num_heads", "ffn_dim",
                     "encoder_layers", "decoder_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.num_things <= self.num_classes:
            raise ValueError(f"num_things must lie in [0, num_classes={self.num_classes}], got {self.num_things}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        if self.d_model % 128 or (self.d_model + self.num_heads) % 8:
            raise ValueError("the mask head's GroupNorm(8) needs d_model % 128 == 0 and "
                             f"(d_model + num_heads) % 8 == 0; got d_model={self.d_model}, num_heads={self.num_heads}")
        if self.d_model % 2 or (self.d_model // 2) % 2:
            raise ValueError(f"the sine positional encoding needs d_model divisible by 4, got {self.d_model}")
        object.__setattr__(self, "pixel_mean", tuple(float(v) for v in self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(float(v) for v in self.pixel_std))

    @property
    def feature_channels(self) -> tuple[int, int, int, int]:
        """Channels of C2..C5 (stride 4, 8, 16, 32)."""
        return BACKBONES[self.backbone]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "PSGTRConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PSGTR config keys {unknown}; known: {sorted(known)}")
        return cls(**data)
