"""One MoAI expert: multi-head attention whose projections are low-rank, with the residual inside.

docs/moai.md §6: q, k, v, o are each Linear(d -> r) -> Linear(r -> d) without bias; GELU after q, k, v
and after o; softmax attention; output = query + attention output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def low_rank(dim: int, rank: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim, bias=False), nn.GELU())


class LowRankAttentionExpert(nn.Module):
    def __init__(self, dim: int, rank: int = 64, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"expert width {dim} is not divisible by expert_heads={heads}")
        self.heads = heads
        self.q, self.k, self.v, self.o = (low_rank(dim, rank) for _ in range(4))

    def forward(self, query: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Q, D), context (B, K, D), context_mask (B, K) bool (True = real) -> (B, Q, D).

        A row whose context is entirely padding attends to nothing: its output is the query itself.
        """
        B, Q, D = query.shape
        K = context.shape[1]
        hd = D // self.heads
        q = self.q(query).view(B, Q, self.heads, hd).transpose(1, 2)  # (B, H, Q, hd)
        k = self.k(context).view(B, K, self.heads, hd).transpose(1, 2)  # (B, H, K, hd)
        v = self.v(context).view(B, K, self.heads, hd).transpose(1, 2)  # (B, H, K, hd)
        if context_mask is None or K == 0:
            has_context = None
            attn_mask = None
        else:
            context_mask = context_mask.bool()
            has_context = context_mask.any(dim=1)  # (B,)
            # Let empty rows attend everywhere (no NaN from an all -inf softmax), then zero them.
            attn_mask = (context_mask | ~has_context[:, None])[:, None, None, :]  # (B, 1, 1, K)
        if K == 0:
            out = q.new_zeros(B, self.heads, Q, hd)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, Q, hd)
        out = out.transpose(1, 2).reshape(B, Q, D)  # (B, Q, D)
        if has_context is not None:
            out = out * has_context[:, None, None].to(out.dtype)
        return query + self.o(out)
