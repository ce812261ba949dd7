"""The MLP connector from CLIP features to the LM's width (docs/moai.md §7): Linear, GELU, Linear."""
from __future__ import annotations

import torch
from torch import nn


class Connector(nn.Sequential):
    def __init__(self, vision_dim: int, dim: int):
        super().__init__(nn.Linear(vision_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, N, Dv) -> tokens (B, N, D) in the connector's dtype."""
        return super().forward(features.to(self[0].weight.dtype))
