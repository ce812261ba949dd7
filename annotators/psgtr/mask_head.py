"""PSGTR's mask branch: a per-query attention map over the encoder memory, then a small
FPN-style conv head on [src, attention maps] fed by C4/C3/C2. Run once for subjects, once for objects.

Every query's mask is computed independently (GroupNorm is per sample), so the queries are
processed in chunks: memory grows with the chunk, not with the 100 queries (at 800x800 one
[100, 32, 200, 200] fp32 activation alone is 512 MB).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionMap(nn.Module):
    """Multi-head attention *weights* of queries over a feature map, softmax jointly over
    (head, y, x) as in DETR's MHAttentionMap (`q_linear`, `k_linear` names kept for the checkpoint)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.k_linear = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """queries (B, Q, D), memory (B, D, h, w), padding (B, h, w) True = pad -> (B, Q, heads, h, w)."""
        b, q, d = queries.shape
        h, w = memory.shape[-2:]
        head_dim = d // self.num_heads
        qh = self.q_linear(queries).view(b, q, self.num_heads, head_dim) * head_dim ** -0.5  # (B, Q, n, c)
        k = F.conv2d(memory, self.k_linear.weight.view(d, d, 1, 1), self.k_linear.bias)
        kh = k.view(b, self.num_heads, head_dim, h, w)  # (B, n, c, h, w)
        logits = torch.einsum("bqnc,bnchw->bqnhw", qh, kh)  # (B, Q, n, h, w)
        logits = logits.masked_fill(padding[:, None, None], float("-inf"))
        return logits.flatten(2).softmax(-1).view(b, q, self.num_heads, h, w)


class MaskHead(nn.Module):
    """DETR's MaskHeadSmallConv: (src ++ attention maps) at stride 32 -> mask logits at stride 4."""

    def __init__(self, d_model: int, num_heads: int, fpn_channels: tuple[int, int, int]):
        super().__init__()
        dim = d_model + num_heads
        inter = (dim, d_model // 2, d_model // 4, d_model // 8, d_model // 16)
        self.lay1, self.gn1 = nn.Conv2d(dim, inter[0], 3, padding=1), nn.GroupNorm(8, inter[0])
        self.lay2, self.gn2 = nn.Conv2d(inter[0], inter[1], 3, padding=1), nn.GroupNorm(8, inter[1])
        self.lay3, self.gn3 = nn.Conv2d(inter[1], inter[2], 3, padding=1), nn.GroupNorm(8, inter[2])
        self.lay4, self.gn4 = nn.Conv2d(inter[2], inter[3], 3, padding=1), nn.GroupNorm(8, inter[3])
        self.lay5, self.gn5 = nn.Conv2d(inter[3], inter[4], 3, padding=1), nn.GroupNorm(8, inter[4])
        self.out_lay = nn.Conv2d(inter[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_channels[0], inter[1], 1)  # C4
        self.adapter2 = nn.Conv2d(fpn_channels[1], inter[2], 1)  # C3
        self.adapter3 = nn.Conv2d(fpn_channels[2], inter[3], 1)  # C2

    def forward(self, src: torch.Tensor, attention: torch.Tensor, fpn: tuple[torch.Tensor, ...],
                chunk_size: int) -> torch.Tensor:
        """src (B, D, h, w), attention (B, Q, n, h, w), fpn = (C4, C3, C2) -> logits (B, Q, H/4, W/4)."""
        b, q = attention.shape[:2]
        adapted = (self.adapter1(fpn[0]), self.adapter2(fpn[1]), self.adapter3(fpn[2]))
        chunks = []
        for start in range(0, q, chunk_size):
            att = attention[:, start:start + chunk_size]
            chunks.append(self._masks(src, att, adapted).view(b, att.shape[1], *adapted[2].shape[-2:]))
        return torch.cat(chunks, dim=1)

    def _masks(self, src, attention, adapted) -> torch.Tensor:
        b, q = attention.shape[:2]

        def repeat(x):  # (B, C, h, w) -> (B*q, C, h, w), batch-major
            return x.unsqueeze(1).expand(-1, q, -1, -1, -1).flatten(0, 1)

        x = torch.cat([repeat(src), attention.flatten(0, 1)], dim=1)  # (B*q, D+n, h, w)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        for feature, conv, norm in zip(adapted, (self.lay3, self.lay4, self.lay5), (self.gn3, self.gn4, self.gn5)):
            x = repeat(feature) + F.interpolate(x, size=feature.shape[-2:], mode="nearest")
            x = F.relu(norm(conv(x)))
        return self.out_lay(x)  # (B*q, 1, H/4, W/4)
