"""A state dict in the published checkpoint's naming, built from its key table (OpenPSG's mmcv-1.x
names, in saved order; not from our module), with random values: what the converter must accept."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision


def _attention(prefix: str, d: int = 256) -> dict:
    return {f"{prefix}.attn.in_proj_weight": (3 * d, d), f"{prefix}.attn.in_proj_bias": (3 * d,),
            f"{prefix}.attn.out_proj.weight": (d, d), f"{prefix}.attn.out_proj.bias": (d,)}


def _ffn_norms(prefix: str, num_norms: int) -> dict:
    shapes = {f"{prefix}.ffns.0.layers.0.0.weight": (2048, 256), f"{prefix}.ffns.0.layers.0.0.bias": (2048,),
              f"{prefix}.ffns.0.layers.1.weight": (256, 2048), f"{prefix}.ffns.0.layers.1.bias": (256,)}
    for k in range(num_norms):
        shapes |= {f"{prefix}.norms.{k}.weight": (256,), f"{prefix}.norms.{k}.bias": (256,)}
    return shapes


def head_shapes(num_classes: int = 133, num_predicates: int = 56) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    for n in range(6):
        p = f"bbox_head.transformer.encoder.layers.{n}"
        shapes |= _attention(f"{p}.attentions.0") | _ffn_norms(p, 2)
    for n in range(6):
        p = f"bbox_head.transformer.decoder.layers.{n}"
        shapes |= _attention(f"{p}.attentions.0") | _attention(f"{p}.attentions.1") | _ffn_norms(p, 3)
    shapes |= {"bbox_head.transformer.decoder.post_norm.weight": (256,),
               "bbox_head.transformer.decoder.post_norm.bias": (256,),
               "bbox_head.input_proj.weight": (256, 2048, 1, 1), "bbox_head.input_proj.bias": (256,),
               "bbox_head.query_embed.weight": (100, 256)}
    for r in ("obj", "sub"):
        shapes |= {f"bbox_head.{r}_cls_embed.weight": (num_classes + 1, 256),
                   f"bbox_head.{r}_cls_embed.bias": (num_classes + 1,)}
        for i, out in enumerate((256, 256, 4)):
            shapes |= {f"bbox_head.{r}_box_embed.layers.{i}.weight": (out, 256),
                       f"bbox_head.{r}_box_embed.layers.{i}.bias": (out,)}
    shapes |= {"bbox_head.rel_cls_embed.weight": (num_predicates + 1, 256),
               "bbox_head.rel_cls_embed.bias": (num_predicates + 1,)}
    for r in ("sub", "obj"):
        for lin in ("q_linear", "k_linear"):
            shapes |= {f"bbox_head.{r}_bbox_attention.{lin}.weight": (256, 256),
                       f"bbox_head.{r}_bbox_attention.{lin}.bias": (256,)}
        p = f"bbox_head.{r}_mask_head"
        for i, (cout, cin) in enumerate(((264, 264), (128, 264), (64, 128), (32, 64), (16, 32)), start=1):
            shapes |= {f"{p}.lay{i}.weight": (cout, cin, 3, 3), f"{p}.lay{i}.bias": (cout,),
                       f"{p}.gn{i}.weight": (cout,), f"{p}.gn{i}.bias": (cout,)}
        shapes |= {f"{p}.out_lay.weight": (1, 16, 3, 3), f"{p}.out_lay.bias": (1,)}
        for i, (cout, cin) in enumerate(((128, 1024), (64, 512), (32, 256)), start=1):
            shapes |= {f"{p}.adapter{i}.weight": (cout, cin, 1, 1), f"{p}.adapter{i}.bias": (cout,)}
    return shapes


def published_state_dict(naming: str = "mmcv", seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """585 tensors: torchvision ResNet-50 minus fc under `backbone.`, the head under `bbox_head.`.
    naming 'moai' applies MoAI's load-time renaming (attentions.0 -> self_attn, ...)."""
    gen = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    with torch.device("meta"):
        backbone = torchvision.models.resnet50(weights=None).state_dict()
    for key, value in backbone.items():
        if key.endswith("num_batches_tracked"):
            state[f"backbone.{key}"] = torch.tensor(0)
        elif not key.startswith("fc."):
            offset = 0.5 if "running_var" in key else -0.05  # variances stay positive
            state[f"backbone.{key}"] = torch.rand(value.shape, generator=gen) * 0.1 + offset
    for key, shape in head_shapes().items():
        state[key] = torch.rand(shape, generator=gen) * 0.1 - 0.05
    return moai_names(state) if naming == "moai" else state


def moai_names(state: dict) -> "OrderedDict[str, torch.Tensor]":
    """MoAI's load-time renaming of the mmcv-1.x names (mmcv 1.x -> 2.x)."""
    return OrderedDict((k.replace(".attentions.0.", ".self_attn.").replace(".ffns.0.", ".ffn.")
                        .replace(".attentions.1.", ".cross_attn."), v) for k, v in state.items())
