"""PSGTR at inference, as OpenPSG builds it: torchvision ResNet, post-norm DETR encoder/decoder with
triplet queries, subject/object/predicate heads and both mask branches. Plain PyTorch, no mmdet.

Parameter names follow the published checkpoint after `convert.py`'s renaming; attention blocks
are `nn.MultiheadAttention` (in_proj/out_proj load unchanged, SDPA underneath).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .config import PSGTRConfig
from .mask_head import AttentionMap, MaskHead


@dataclass
class PSGTROutput:
    """Last decoder layer's predictions for B images and Q triplet queries."""
    sub_logits: torch.Tensor   # (B, Q, C+1), background last
    obj_logits: torch.Tensor   # (B, Q, C+1)
    rel_logits: torch.Tensor   # (B, Q, P+1), background first
    sub_boxes: torch.Tensor    # (B, Q, 4) sigmoid (cx, cy, w, h) of the unpadded resized image
    obj_boxes: torch.Tensor    # (B, Q, 4)
    sub_masks: torch.Tensor | None  # (B, Q, Hpad/4, Wpad/4) logits
    obj_masks: torch.Tensor | None


class ResNetBackbone(nn.Module):
    """torchvision ResNet without `fc`; returns C2..C5 (strides 4, 8, 16, 32). Eval-mode BN only."""

    def __init__(self, name: str):
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return c2, c3, c4, self.layer4(c4)


def sine_position_encoding(padding: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """mmdet SinePositionalEncoding(normalize=True, scale=2*pi, eps=1e-6): padding (B, h, w) -> (B, 2F, h, w),
    y channels first, sin/cos interleaved."""
    not_mask = (~padding).float()
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * (2 * math.pi)
    x = x / (x[:, :, -1:] + 1e-6) * (2 * math.pi)
    k = torch.arange(num_feats, dtype=torch.float32, device=padding.device)
    dim_t = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_feats)
    pos_x = x[..., None] / dim_t  # (B, h, w, F)
    pos_y = y[..., None] / dim_t
    b, h, w = padding.shape
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).view(b, h, w, -1)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).view(b, h, w, -1)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # (B, 2F, h, w)


class EncoderLayer(nn.Module):
    """Post-norm: x = LN(x + SelfAttn(x+pos, x+pos, x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: PSGTRConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(cfg.d_model, cfg.num_heads, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(cfg.d_model, cfg.ffn_dim), nn.Linear(cfg.ffn_dim, cfg.d_model)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)

    def forward(self, x, pos, key_padding_mask):
        q = x + pos
        x = self.norm1(x + self.self_attn(q, q, x, key_padding_mask=key_padding_mask, need_weights=False)[0])
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class DecoderLayer(nn.Module):
    """Post-norm: self-attention (no mask), cross-attention to memory+pos, FFN; each followed by LN."""

    def __init__(self, cfg: PSGTRConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(cfg.d_model, cfg.num_heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(cfg.d_model, cfg.num_heads, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(cfg.d_model, cfg.ffn_dim), nn.Linear(cfg.ffn_dim, cfg.d_model)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(cfg.d_model) for _ in range(3))

    def forward(self, t, query_pos, memory, pos, key_padding_mask):
        q = t + query_pos
        t = self.norm1(t + self.self_attn(q, q, t, need_weights=False)[0])
        t = self.norm2(t + self.cross_attn(t + query_pos, memory + pos, memory,
                                           key_padding_mask=key_padding_mask, need_weights=False)[0])
        return self.norm3(t + self.linear2(F.relu(self.linear1(t))))


class Encoder(nn.Module):
    def __init__(self, cfg: PSGTRConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))


class Decoder(nn.Module):
    def __init__(self, cfg: PSGTRConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.post_norm = nn.LayerNorm(cfg.d_model)  # shared by all layers' outputs; inference reads the last


class Transformer(nn.Module):
    def __init__(self, cfg: PSGTRConfig):
        super().__init__()
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)

    def forward(self, src, padding, pos, query_pos):
        """src/pos (B, D, h, w), padding (B, h, w), query_pos (Q, D) -> (memory (B, hw, D), hs (B, Q, D))."""
        b, d = src.shape[:2]
        x = src.flatten(2).transpose(1, 2)  # (B, hw, D)
        p = pos.flatten(2).transpose(1, 2)  # (B, hw, D)
        key_padding_mask = padding.flatten(1)  # (B, hw)
        for layer in self.encoder.layers:
            x = layer(x, p, key_padding_mask)
        query_pos = query_pos.unsqueeze(0).expand(b, -1, -1)  # (B, Q, D)
        t = torch.zeros_like(query_pos)
        for layer in self.decoder.layers:
            t = layer(t, query_pos, x, p, key_padding_mask)
        return x, self.decoder.post_norm(t)


class BoxMLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, 4)])

    def forward(self, x):
        x = F.relu(self.layers[1](F.relu(self.layers[0](x))))
        return self.layers[2](x).sigmoid()


class PSGTR(nn.Module):
    def __init__(self, cfg: PSGTRConfig):
        super().__init__()
        self.cfg = cfg
        d, channels = cfg.d_model, cfg.feature_channels
        self.backbone = ResNetBackbone(cfg.backbone)
        self.input_proj = nn.Conv2d(channels[3], d, 1)
        self.query_embed = nn.Embedding(cfg.num_queries, d)
        self.transformer = Transformer(cfg)
        self.sub_cls_embed = nn.Linear(d, cfg.num_classes + 1)
        self.obj_cls_embed = nn.Linear(d, cfg.num_classes + 1)
        self.rel_cls_embed = nn.Linear(d, cfg.num_predicates + 1)
        self.sub_box_embed, self.obj_box_embed = BoxMLP(d), BoxMLP(d)
        self.sub_bbox_attention = AttentionMap(d, cfg.num_heads)
        self.obj_bbox_attention = AttentionMap(d, cfg.num_heads)
        fpn = (channels[2], channels[1], channels[0])
        self.sub_mask_head = MaskHead(d, cfg.num_heads, fpn)
        self.obj_mask_head = MaskHead(d, cfg.num_heads, fpn)

    def forward(self, pixels: torch.Tensor, image_sizes: torch.Tensor, with_masks: bool = True,
                mask_chunk_size: int = 100) -> PSGTROutput:
        """pixels (B, 3, Hpad, Wpad) normalized, zero-padded bottom/right; image_sizes (B, 2) the valid
        (h', w') of each image. Padded cells are masked out of every attention."""
        c2, c3, c4, c5 = self.backbone(pixels)
        src = self.input_proj(c5)  # (B, D, h, w)
        padding = self.padding_mask(pixels, image_sizes, src.shape[-2:])
        pos = sine_position_encoding(padding, self.cfg.d_model // 2).to(src.dtype)
        memory, hs = self.transformer(src, padding, pos, self.query_embed.weight)
        out = PSGTROutput(
            sub_logits=self.sub_cls_embed(hs), obj_logits=self.obj_cls_embed(hs), rel_logits=self.rel_cls_embed(hs),
            sub_boxes=self.sub_box_embed(hs), obj_boxes=self.obj_box_embed(hs), sub_masks=None, obj_masks=None)
        if with_masks:
            memory_map = memory.transpose(1, 2).reshape(src.shape)  # (B, D, h, w)
            fpn = (c4, c3, c2)
            sub_attention = self.sub_bbox_attention(hs, memory_map, padding)
            out.sub_masks = self.sub_mask_head(src, sub_attention, fpn, mask_chunk_size)
            obj_attention = self.obj_bbox_attention(hs, memory_map, padding)
            out.obj_masks = self.obj_mask_head(src, obj_attention, fpn, mask_chunk_size)
        return out

    @staticmethod
    def padding_mask(pixels: torch.Tensor, image_sizes: torch.Tensor, size) -> torch.Tensor:
        """(B, h, w) bool, True = padding: image regions zeroed in a full-size map, nearest-downsampled."""
        b, _, hp, wp = pixels.shape
        full = torch.ones((b, hp, wp), device=pixels.device)
        for i, (h, w) in enumerate(image_sizes.tolist()):
            full[i, :h, :w] = 0
        return F.interpolate(full[None], size=tuple(size), mode="nearest")[0].bool()
