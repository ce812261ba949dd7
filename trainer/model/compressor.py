"""MoAI-Compressor: a Flamingo-style Perceiver Resampler with a padding mask over the aux tokens.

docs/moai.md §5: latents (init N(0,1)) attend to [LN(aux); LN(latents)]; no attention biases;
FF = LN -> Linear -> GELU -> Linear; a final LayerNorm. The published code has no mask (batch 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, media_mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """media (B, A, D), media_mask (B, A) bool (True = real token), latents (B, N, D) -> (B, N, D)."""
        B, N, _ = latents.shape
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        kv_input = torch.cat([media, latents], dim=1)  # (B, A + N, D)
        q = self.to_q(latents).view(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)
        k, v = self.to_kv(kv_input).chunk(2, dim=-1)
        k = k.view(B, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, H, A + N, hd)
        v = v.view(B, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, H, A + N, hd)
        # Latents are always valid keys, so no query row is ever fully masked.
        key_mask = torch.cat([media_mask, media_mask.new_ones(B, N)], dim=1)  # (B, A + N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        out = out.transpose(1, 2).reshape(B, N, self.heads * self.head_dim)  # (B, N, H * hd)
        return self.to_out(out)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class Compressor(nn.Module):
    """Compresses a variable-length, padded aux sequence to `num_latents` tokens."""

    def __init__(self, dim: int, num_latents: int = 64, depth: int = 4, heads: int = 4,
                 head_dim: int = 64, ff_mult: int = 1):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, head_dim), FeedForward(dim, ff_mult)])
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, aux: torch.Tensor, aux_mask: torch.Tensor) -> torch.Tensor:
        """aux (B, A, D), aux_mask (B, A) bool or 0/1 -> compressed aux (B, num_latents, D)."""
        if aux.shape[:2] != aux_mask.shape:
            raise ValueError(f"aux {tuple(aux.shape)} and aux_mask {tuple(aux_mask.shape)} disagree")
        aux = aux.to(self.latents.dtype)
        aux_mask = aux_mask.bool()
        latents = self.latents.unsqueeze(0).expand(aux.shape[0], -1, -1)  # (B, N, D)
        for attn, ff in self.layers:
            latents = latents + attn(aux, aux_mask, latents)
            latents = latents + ff(latents)
        return self.norm(latents)
