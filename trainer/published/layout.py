"""The published checkpoints' key names and shapes, the sizes read back from them, and the wqkv regrouping.

docs/published.md §1 lists the keys of InternLM-XComposer2-VL-7B and of MoAI-7B (which adds the
Compressor and, on every Mixer layer, six experts and two gates). Sizes are read from the tensors
(widths, layers, ranks, latents); what tensors cannot tell (head counts) comes from config.json.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

PLORA_PARTS = {"Plora_main": "weight", "Plora_A": "lora_A.weight", "Plora_B": "lora_B.weight"}
# published expert name -> (our Mixer side, our expert name); gates -> our gate
EXPERTS = {"CA_img_aux": ("image_experts", "aux"), "CA_img_lang": ("image_experts", "lang"),
           "SA_img": ("image_experts", "self"), "CA_lang_aux": ("language_experts", "aux"),
           "CA_lang_img": ("language_experts", "img"), "SA_lang": ("language_experts", "self")}
GATES = {"GA_img": "image_gate", "GA_lang": "language_gate"}
VIT_PREFIX = "vit.vision_tower.vision_model."
VIT_IGNORED = (VIT_PREFIX + "embeddings.position_ids",)  # a buffer older transformers saved


@dataclass(frozen=True)
class PublishedSizes:
    """Everything that fixes the published tensors' shapes (7B defaults; tests shrink them)."""

    dim: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 8
    ffn: int = 14336
    vocab: int = 92544
    num_embeddings: int = 92545  # MoAI-7B: + one row for <image>; XComposer2-VL-7B: = vocab
    plora_rank: int = 256
    bias: bool = False
    vision_dim: int = 1024
    moai: bool = True  # False: XComposer2 (no Compressor, no Mixer)
    mixer_layers: tuple[int, ...] = (7, 15, 23, 31)
    expert_rank: int = 64
    latents: int = 64
    compressor_depth: int = 4
    compressor_inner: int = 256
    ff_mult: int = 1

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


def published_shapes(s: PublishedSizes) -> dict[str, tuple[int, ...]]:
    """Every published key except the CLIP tower's (`vit.*`, checked against CLIP itself) -> its shape."""
    d, hd, r = s.dim, s.head_dim, s.plora_rank
    shapes = {"model.tok_embeddings.weight": (s.num_embeddings, d), "model.norm.weight": (d,),
              "output.weight": (s.vocab, d), "vision_proj.0.weight": (d, s.vision_dim), "vision_proj.0.bias": (d,),
              "vision_proj.2.weight": (d, d), "vision_proj.2.bias": (d,)}
    linears = {"attention.wqkv": ((s.heads + 2 * s.kv_heads) * hd, d, s.bias),
               "attention.wo": (d, s.heads * hd, s.bias),
               "feed_forward.w1": (s.ffn, d, False), "feed_forward.w3": (s.ffn, d, False),
               "feed_forward.w2": (d, s.ffn, False)}
    for n in range(s.layers):
        p = f"model.layers.{n}."
        shapes[p + "attention_norm.weight"] = shapes[p + "ffn_norm.weight"] = (d,)
        for name, (out, inp, bias) in linears.items():
            shapes[f"{p}{name}.Plora_main.weight"] = (out, inp)
            if bias:
                shapes[f"{p}{name}.Plora_main.bias"] = (out,)
            shapes[f"{p}{name}.Plora_A.weight"] = (r, inp)
            shapes[f"{p}{name}.Plora_B.weight"] = (out, r)
        if s.moai and n in s.mixer_layers:
            for expert in EXPERTS:
                for proj in "qkvo":
                    shapes[f"{p}attention.moai_{expert}.linear_{proj}.0.weight"] = (s.expert_rank, d)
                    shapes[f"{p}attention.moai_{expert}.linear_{proj}.1.weight"] = (d, s.expert_rank)
            for gate in GATES:
                shapes[f"{p}attention.moai_{gate}.weight"], shapes[f"{p}attention.moai_{gate}.bias"] = (3, d), (3,)
    if s.moai:
        c, inner = "moai_compressor.", s.compressor_inner
        shapes[c + "latents"] = (s.latents, d)
        shapes[c + "norm.weight"] = shapes[c + "norm.bias"] = (d,)
        for L in range(s.compressor_depth):
            p = f"{c}layers.{L}."
            for norm in ("0.norm_media", "0.norm_latents", "1.0"):
                shapes[f"{p}{norm}.weight"] = shapes[f"{p}{norm}.bias"] = (d,)
            shapes[p + "0.to_q.weight"], shapes[p + "0.to_kv.weight"] = (inner, d), (2 * inner, d)
            shapes[p + "0.to_out.weight"] = (d, inner)
            shapes[p + "1.1.weight"], shapes[p + "1.3.weight"] = (d * s.ff_mult, d), (d, d * s.ff_mult)
    return shapes


def read_sizes(shapes: dict[str, tuple[int, ...]], config: dict) -> PublishedSizes:
    """Sizes from the tensors' shapes; head counts from the published config.json (`config`)."""
    def shape(key):
        if key not in shapes:
            raise ValueError(f"not a published checkpoint: {key!r} is missing, so its sizes cannot be read")
        return shapes[key]

    for field in ("num_attention_heads", "num_key_value_heads"):
        if not isinstance(config.get(field), int):
            raise ValueError(f"the published config.json has no integer {field!r}: the head counts cannot be "
                             "read from the weights")
    num_embeddings, dim = shape("model.tok_embeddings.weight")
    layer_ids = {int(m.group(1)) for k in shapes if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    moai = any(k.startswith("moai_compressor.") for k in shapes)
    mixer_layers = tuple(sorted({int(m.group(1)) for k in shapes
                                 if (m := re.match(r"model\.layers\.(\d+)\.attention\.moai_", k))}))
    sizes = dict(dim=dim, layers=max(layer_ids) + 1 if layer_ids else 0, heads=config["num_attention_heads"],
                 kv_heads=config["num_key_value_heads"],
                 ffn=shape("model.layers.0.feed_forward.w1.Plora_main.weight")[0],
                 vocab=shape("output.weight")[0], num_embeddings=num_embeddings,
                 plora_rank=shape("model.layers.0.attention.wqkv.Plora_A.weight")[0],
                 bias="model.layers.0.attention.wqkv.Plora_main.bias" in shapes,
                 vision_dim=shape("vision_proj.0.weight")[1], moai=moai, mixer_layers=mixer_layers)
    if moai:
        first = f"model.layers.{mixer_layers[0]}.attention.moai_SA_img.linear_q.0.weight" if mixer_layers else "?"
        depth = {int(m.group(1)) for k in shapes if (m := re.match(r"moai_compressor\.layers\.(\d+)\.", k))}
        sizes.update(expert_rank=shape(first)[0], latents=shape("moai_compressor.latents")[0],
                     compressor_depth=max(depth) + 1 if depth else 0,
                     compressor_inner=shape("moai_compressor.layers.0.0.to_q.weight")[0],
                     ff_mult=shape("moai_compressor.layers.0.1.1.weight")[0] // dim)
    return PublishedSizes(**sizes)


def split_wqkv(w: torch.Tensor, heads: int, kv_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InternLM2's wqkv rows ((H + 2·Hkv)·hd, ...) -> q (H·hd, ...), k (Hkv·hd, ...), v (Hkv·hd, ...).

    The rows come in one block per KV head j: G = H / Hkv query heads (j·G .. j·G+G-1), then key
    head j, then value head j. A contiguous [q | k | v] split would be wrong."""
    G = heads // kv_heads
    hd = w.shape[0] // (heads + 2 * kv_heads)
    rest = w.shape[1:]
    blocks = w.reshape(kv_heads, G + 2, hd, *rest)  # (Hkv, G + 2, hd, ...)
    q = blocks[:, :G].reshape(heads * hd, *rest)
    return q, blocks[:, G].reshape(kv_heads * hd, *rest), blocks[:, G + 1].reshape(kv_heads * hd, *rest)


def fuse_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """The inverse of split_wqkv: q, k, v rows -> InternLM2's grouped wqkv rows."""
    G = heads // kv_heads
    hd = q.shape[0] // heads
    rest = q.shape[1:]
    blocks = torch.cat([q.reshape(kv_heads, G, hd, *rest), k.reshape(kv_heads, 1, hd, *rest),
                        v.reshape(kv_heads, 1, hd, *rest)], dim=1)  # (Hkv, G + 2, hd, ...)
    return blocks.reshape((heads + 2 * kv_heads) * hd, *rest)
