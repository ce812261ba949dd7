"""An independent batch-1 re-implementation of the published MoAI computation, on the published key names.

Written from what the published code computes (docs/published.md), in plain PyTorch: the computation
uses nothing of trainer/ and reads every tensor by its published name (so a wrong key list in
trainer/published/layout.py, from which the random checkpoints are built, fails here): grouped wqkv,
PLoRA on image rows, unmasked Mixer with float16 gates (eval mode), unmasked Compressor over
[BOS + aux text ; PS tokens], RoPE at buffer indices. Also builds random
published-format checkpoints at a tiny size, straight from the key list.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from trainer.published.layout import EXPERTS, PublishedSizes, published_shapes

TINY = PublishedSizes(dim=64, layers=8, heads=4, kv_heads=2, ffn=128, vocab=260, num_embeddings=261, plora_rank=8,
                      vision_dim=32, mixer_layers=(3, 7), expert_rank=16, latents=8, compressor_depth=2,
                      compressor_inner=32, ff_mult=1)
TINY_CONFIG = {"num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
               "max_position_embeddings": 32768, "rope_scaling": {"type": "dynamic", "factor": 1.0},
               "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
HEADS = 4  # expert and Compressor heads (not recorded in the weights)


def random_published(sizes: PublishedSizes = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for every published key: norms near 1, everything else small."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in published_shapes(sizes).items():
        norm = key.endswith("norm.weight") or (".norm_" in key or key.endswith(".1.0.weight")) and \
            key.startswith("moai_compressor.") and key.endswith("weight")
        if norm:  # RMSNorm / LayerNorm scales
            out[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key == "moai_compressor.latents":
            out[key] = torch.randn(shape, generator=g)
        elif ".moai_" in key:  # strong enough that the Mixer (and its gates' precision) shows in the logits
            out[key] = 0.3 * torch.randn(shape, generator=g)
        else:
            out[key] = 0.08 * torch.randn(shape, generator=g)
    return out


def write_published(folder: Path, tensors: dict, config: dict = TINY_CONFIG, tokenizer=None, fmt="safetensors"):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(tensors)
    halves = (keys[: len(keys) // 2], keys[len(keys) // 2:])  # two shards, as the published folders come
    for i, part in enumerate(halves):
        shard = {k: tensors[k].contiguous() for k in part}
        if fmt == "safetensors":
            save_file(shard, str(folder / f"model-{i:05d}.safetensors"))
        else:
            torch.save(shard, folder / f"pytorch_model-{i:05d}.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "internlm2", **config}))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def converted_tiny(root: Path, tiny_root: Path) -> tuple[dict, Path, Path]:
    """A random tiny MoAI-7B-layout folder and its conversion: (tensors, published folder, our folder)."""
    from trainer.model.tiny import build_tiny_backbones, build_tokenizer
    from trainer.published.convert import convert

    tensors = random_published(seed=0)
    write_published(root / "moai-7b", tensors, tokenizer=build_tokenizer())
    convert(root / "moai-7b", root / "ours", vision=build_tiny_backbones(tiny_root)["vision"])
    return tensors, root / "moai-7b", root / "ours"


# ---- the published computation -------------------------------------------------------------------
def rms(x, w, eps=1e-5):
    h = x.float()
    return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def plora(t, name, x, im):
    """x (T, in) -> (T, out); the LoRA (scaling 1) only on rows where im is True."""
    y = x @ t[name + ".Plora_main.weight"].T
    if im.any():
        y = y.clone()
        y[im] = y[im] + x[im] @ t[name + ".Plora_A.weight"].T @ t[name + ".Plora_B.weight"].T
    return y


def expert(t, name, q_in, kv_in):
    def proj(p, x):
        return F.gelu(x @ t[f"{name}.linear_{p}.0.weight"].T @ t[f"{name}.linear_{p}.1.weight"].T)

    d = q_in.shape[-1]
    sub = d // HEADS
    q = proj("q", q_in).view(-1, HEADS, sub).transpose(0, 1)  # (heads, Q, sub)
    k = proj("k", kv_in).view(-1, HEADS, sub).transpose(0, 1)
    v = proj("v", kv_in).view(-1, HEADS, sub).transpose(0, 1)
    y = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(sub), dim=-1) @ v  # (heads, Q, sub)
    return q_in + proj("o", y.transpose(0, 1).reshape(-1, d))


def compressor(t, aux, sizes: PublishedSizes = TINY):
    """aux (A, d) -> (latents, d); the Flamingo resampler with no mask."""
    lat = t["moai_compressor.latents"]
    dh = sizes.compressor_inner // HEADS
    ln = lambda x, p: F.layer_norm(x, x.shape[-1:], t[p + ".weight"], t[p + ".bias"])  # noqa: E731
    for L in range(sizes.compressor_depth):
        p = f"moai_compressor.layers.{L}."
        x, z = ln(aux, p + "0.norm_media"), ln(lat, p + "0.norm_latents")
        q = (z @ t[p + "0.to_q.weight"].T).view(-1, HEADS, dh).transpose(0, 1)
        k, v = (torch.cat([x, z]) @ t[p + "0.to_kv.weight"].T).chunk(2, dim=-1)
        k, v = (y.view(-1, HEADS, dh).transpose(0, 1) for y in (k, v))
        a = torch.softmax((q * dh ** -0.5) @ k.transpose(1, 2), dim=-1) @ v
        lat = a.transpose(0, 1).reshape(-1, HEADS * dh) @ t[p + "0.to_out.weight"].T + lat
        ff = F.gelu(ln(lat, p + "1.0") @ t[p + "1.1.weight"].T) @ t[p + "1.3.weight"].T
        lat = ff + lat
    return ln(lat, "moai_compressor.norm")


def vision_proj(t, feats):
    return F.gelu(feats @ t["vision_proj.0.weight"].T + t["vision_proj.0.bias"]) @ t["vision_proj.2.weight"].T \
        + t["vision_proj.2.bias"]


def mix(t, n, h, im, lang, aux):
    """The eval-mode Mixer of layer n: float16 gate softmax, every group mixed from the pre-mix states."""
    p = f"model.layers.{n}.attention.moai_"
    h_im, h_lang = h[im], h[lang]
    out = h.clone()
    groups = ((im, h_im, ("CA_img_aux", "CA_img_lang", "SA_img"), (aux, h_lang, h_im), "GA_img"),
              (lang, h_lang, ("CA_lang_aux", "CA_lang_img", "SA_lang"), (aux, h_im, h_lang), "GA_lang"))
    for rows, q, names, kvs, gate in groups:
        assert set(names) <= set(EXPERTS)
        w = torch.softmax(F.linear(q, t[p + gate + ".weight"], t[p + gate + ".bias"]), dim=-1, dtype=torch.float16)
        out[rows] = sum(w[:, j:j + 1] * expert(t, p + name, q, kv) for j, (name, kv) in enumerate(zip(names, kvs)))
    return out


def forward(t, embeds, im, lang, aux, sizes: PublishedSizes = TINY, theta=1e6):
    """embeds (T, d) merged sequence; im / lang (T,) bool; aux (N, d) compressed -> logits (T, V)."""
    T, d = embeds.shape
    H, Hkv, hd = sizes.heads, sizes.kv_heads, sizes.head_dim
    G = H // Hkv
    inv = theta ** (-torch.arange(0, hd, 2).float() / hd)
    f = torch.arange(T).float()[:, None] * inv
    emb = torch.cat([f, f], -1)
    cos, sin = emb.cos(), emb.sin()  # (T, hd), rows = buffer indices

    def rope(x):  # (heads, T, hd)
        return x * cos + torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1) * sin

    x = embeds
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for n in range(sizes.layers):
        p = f"model.layers.{n}."
        h = rms(x, t[p + "attention_norm.weight"])
        if n in sizes.mixer_layers:
            h = mix(t, n, h, im, lang, aux)
        qkv = plora(t, p + "attention.wqkv", h, im).view(T, Hkv, G + 2, hd)
        q = qkv[:, :, :G].reshape(T, H, hd).transpose(0, 1)  # query head j*G+g <- block j, slot g
        k = qkv[:, :, G].transpose(0, 1).repeat_interleave(G, dim=0)  # (H, T, hd)
        v = qkv[:, :, G + 1].transpose(0, 1).repeat_interleave(G, dim=0)
        s = rope(q) @ rope(k).transpose(1, 2) / math.sqrt(hd)
        a = torch.softmax(s.masked_fill(~causal, torch.finfo(s.dtype).min).float(), -1).to(q.dtype) @ v
        x = x + plora(t, p + "attention.wo", a.transpose(0, 1).reshape(T, H * hd), im)
        h2 = rms(x, t[p + "ffn_norm.weight"])
        g = F.silu(plora(t, p + "feed_forward.w1", h2, im)) * plora(t, p + "feed_forward.w3", h2, im)
        x = x + plora(t, p + "feed_forward.w2", g, im)
    return rms(x, t["model.norm.weight"]) @ t["output.weight"].T


def run(t, ids, image_token_id, image_feats, aux_ids, ps_feats, bos_id, new_tokens=0):
    """One sample, as published: merge, compress [BOS + aux ; PS], prefill, greedy decoding (generated
    tokens skip Mixer and PLoRA). ids (T,) with one image token; feats (1225, Dv) -> (prompt logits, tokens)."""
    emb = t["model.tok_embeddings.weight"]
    at = int((ids == image_token_id).nonzero())
    image = vision_proj(t, image_feats)
    merged = torch.cat([emb[ids[:at]], image, emb[ids[at + 1:]]])
    T = merged.shape[0]
    im = torch.zeros(T, dtype=torch.bool)
    im[at:at + image.shape[0]] = True
    aux = compressor(t, torch.cat([emb[torch.cat([torch.tensor([bos_id]), aux_ids])], vision_proj(t, ps_feats)]))
    logits, tokens = None, []
    for _ in range(new_tokens + 1):
        L = merged.shape[0]
        im_all = torch.cat([im, torch.zeros(L - T, dtype=torch.bool)])
        lang_all = torch.cat([~im, torch.zeros(L - T, dtype=torch.bool)])  # only prompt rows are mixed
        out = forward(t, merged, im_all, lang_all, aux)
        if logits is None:
            logits = out
        if len(tokens) == new_tokens:
            break
        tokens.append(int(out[-1].argmax()))
        merged = torch.cat([merged, emb[tokens[-1:]]])
    return logits, tokens
