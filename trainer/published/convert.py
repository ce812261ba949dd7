"""Converters: InternLM-XComposer2-VL-7B -> a backbone folder; MoAI-7B -> a MoAIModel.from_pretrained folder.

docs/published.md §6. Both read safetensors, or .bin with torch.load(weights_only=True); both check
every key and shape against what the sizes read from the tensors imply, and refuse (listing missing,
unexpected and mis-shaped keys) rather than guess; both write safetensors. Output layout:

    OUT/lm/                     config.json (internlm2_plora), model*.safetensors, tokenizer files
    OUT/vision/                 CLIP vision folder (when the source holds the tower's weights)
    OUT/vision_proj.safetensors the published vision projector (MoAIConfig.connector_init)
    OUT/moai_config.json, OUT/moai.safetensors   (MoAI-7B only: connector, Compressor, Mixers)
    OUT/state.json              (MoAI-7B only: MoAI's prompt format, for `trainer generate` / `evaluate run`)
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from trainer.published.layout import (EXPERTS, GATES, PLORA_PARTS, VIT_IGNORED, VIT_PREFIX, PublishedSizes,
                                      fuse_wqkv, published_shapes, read_sizes, split_wqkv)

OURS = {"attention.wqkv": "self_attn.qkv_proj", "attention.wo": "self_attn.o_proj",
        "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj", "feed_forward.w2": "mlp.down_proj"}
NORMS = {"attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
SHARD_BYTES = 5 * 2**30
# MoAI's eval prompt as our PromptFormat writes it (docs/published.md §7): `trainer generate` and
# `trainer evaluate run` read it from state.json. Ours puts <image> after the user markup, not before.
MOAI_PROMPT = {"system": "AI assistant should give helpful and detailed answers to user after fully "
                         "understanding an image. ",
               "user_start": " [UNUSED_TOKEN_146]user\n", "user_end": "[UNUSED_TOKEN_145]\n",
               "assistant_start": "[UNUSED_TOKEN_146]assistant\n", "assistant_end": "[UNUSED_TOKEN_145]\n"}
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenization_internlm2.py", "tokenization_internlm2_fast.py")


# ---- reading -------------------------------------------------------------------------------------
def read_checkpoint(src: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors of a published folder (*.safetensors, else *.bin) and its config.json (or {})."""
    from safetensors.torch import load_file

    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"no published checkpoint folder at {str(src)!r}")
    tensors: dict[str, torch.Tensor] = {}
    files = sorted(src.glob("*.safetensors")) or sorted(src.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{src} holds no *.safetensors or *.bin weights")
    for file in files:
        part = load_file(str(file)) if file.suffix == ".safetensors" else \
            torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        clash = sorted(set(part) & set(tensors))
        if clash:
            raise ValueError(f"{file.name} repeats keys of another shard: {clash[:5]}")
        tensors.update(part)
    config_file = src / "config.json"
    return tensors, json.loads(config_file.read_text()) if config_file.is_file() else {}


def check_keys(tensors: dict[str, torch.Tensor], sizes: PublishedSizes, kind: str) -> None:
    """Refuse unless the keys and shapes (CLIP's aside) are exactly those the sizes imply."""
    expected = published_shapes(sizes)
    found = {k: tuple(v.shape) for k, v in tensors.items() if not k.startswith(VIT_PREFIX)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [f"{k} {found[k]} (expected {expected[k]})" for k in sorted(set(found) & set(expected))
                 if found[k] != expected[k]]
    if missing or unexpected or misshaped:
        def listing(name, items):
            return f"{len(items)} {name}" + (f" ({', '.join(items[:6])}{', ...' if len(items) > 6 else ''})"
                                             if items else "")
        raise ValueError(f"not a {kind} checkpoint as published: {listing('missing', missing)}; "
                         f"{listing('unexpected', unexpected)}; {listing('mis-shaped', misshaped)}")


# ---- published -> ours ---------------------------------------------------------------------------
def lm_state(tensors: dict[str, torch.Tensor], s: PublishedSizes) -> dict[str, torch.Tensor]:
    """The language model's tensors under InternLM2PLoRAForCausalLM's names (wqkv regrouped to [q | k | v])."""
    out = {"model.embed_tokens.weight": tensors["model.tok_embeddings.weight"],
           "model.norm.weight": tensors["model.norm.weight"], "lm_head.weight": tensors["output.weight"]}
    for n in range(s.layers):
        p = f"model.layers.{n}."
        for theirs, ours in NORMS.items():
            out[f"{p}{ours}.weight"] = tensors[f"{p}{theirs}.weight"]
        for theirs, ours in OURS.items():
            for part, name in list(PLORA_PARTS.items()) + [("Plora_main.bias", "bias")]:  # bias: checked present
                key = f"{p}{theirs}.{part}" + ("" if part.endswith(".bias") else ".weight")
                value = tensors.get(key)
                if value is None:
                    continue
                if theirs == "attention.wqkv" and part != "Plora_A":  # rows grouped per KV head
                    value = torch.cat(split_wqkv(value, s.heads, s.kv_heads))
                out[f"{p}{ours}.{name}"] = value
    return out


def connector_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("vision_proj."):]: tensors[k] for k in
            ("vision_proj.0.weight", "vision_proj.0.bias", "vision_proj.2.weight", "vision_proj.2.bias")}


def moai_state(tensors: dict[str, torch.Tensor], s: PublishedSizes) -> dict[str, torch.Tensor]:
    """MoAIModel.trainable_state_dict names: connector, Compressor (same structure) and Mixers."""
    out = {f"connector.{k}": v for k, v in connector_state(tensors).items()}
    out.update({"compressor." + k[len("moai_compressor."):]: v for k, v in tensors.items()
                if k.startswith("moai_compressor.")})
    out.update({ours: tensors[theirs] for theirs, ours in mixer_keys(s)})
    return out


def mixer_keys(s: PublishedSizes):
    """(published key, our key) of every expert and gate weight of every Mixer layer."""
    for n in s.mixer_layers:
        p, m = f"model.layers.{n}.attention.moai_", f"mixers.{n}."
        for expert, (side, name) in EXPERTS.items():
            for proj in "qkvo":
                for i in "01":
                    yield f"{p}{expert}.linear_{proj}.{i}.weight", f"{m}{side}.{name}.{proj}.{i}.weight"
        for gate, ours in GATES.items():
            for part in ("weight", "bias"):
                yield f"{p}{gate}.{part}", f"{m}{ours}.{part}"


# ---- ours -> published (round trips, and the 7B dry run's check) -----------------------------------
def to_published(lm: dict[str, torch.Tensor], trainable: dict[str, torch.Tensor] | None,
                 connector: dict[str, torch.Tensor] | None, s: PublishedSizes) -> dict[str, torch.Tensor]:
    """The inverse mapping: our LM state (+ MoAI's trainable state, or a bare connector) -> published keys."""
    out = {"model.tok_embeddings.weight": lm["model.embed_tokens.weight"], "model.norm.weight": lm["model.norm.weight"],
           "output.weight": lm["lm_head.weight"]}
    q_rows, kv_rows = s.heads * s.head_dim, s.kv_heads * s.head_dim
    for n in range(s.layers):
        p = f"model.layers.{n}."
        for theirs, ours in NORMS.items():
            out[f"{p}{theirs}.weight"] = lm[f"{p}{ours}.weight"]
        for theirs, ours in OURS.items():
            for part, name in list(PLORA_PARTS.items()) + [("Plora_main.bias", "bias")]:
                value = lm.get(f"{p}{ours}.{name}")
                if value is None:
                    continue
                if theirs == "attention.wqkv" and part != "Plora_A":
                    value = fuse_wqkv(*value.split([q_rows, kv_rows, kv_rows]), s.heads, s.kv_heads)
                out[f"{p}{theirs}.{part}" + ("" if part.endswith(".bias") else ".weight")] = value
    if trainable is not None:
        connector = {k[len("connector."):]: v for k, v in trainable.items() if k.startswith("connector.")}
        out.update({"moai_compressor." + k[len("compressor."):]: v for k, v in trainable.items()
                    if k.startswith("compressor.")})
        out.update({theirs: trainable[ours] for theirs, ours in mixer_keys(s)})
    out.update({f"vision_proj.{k}": v for k, v in (connector or {}).items()})
    return out


# ---- writing -------------------------------------------------------------------------------------
def lm_config(s: PublishedSizes, config: dict, plora_alpha: float | None = None):
    from trainer.model.internlm2 import InternLM2PLoRAConfig

    rope_scaling = config.get("rope_scaling") or {}
    if rope_scaling and (rope_scaling.get("type") != "dynamic" or float(rope_scaling.get("factor", 1.0)) != 1.0):
        raise ValueError(f"rope_scaling {rope_scaling} is not InternLM2's dynamic x1.0 (inactive below "
                         "max_position_embeddings), the only one this backbone reproduces")
    return InternLM2PLoRAConfig(
        vocab_size=s.vocab, num_embeddings=s.num_embeddings, hidden_size=s.dim, intermediate_size=s.ffn,
        num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)), rope_theta=float(config.get("rope_theta", 1e6)),
        max_position_embeddings=int(config.get("max_position_embeddings", 32768)), attention_bias=s.bias,
        # The checkpoints do not record alpha; both published models use alpha = r (scaling 1).
        plora_rank=s.plora_rank, plora_alpha=float(plora_alpha or s.plora_rank),
        pad_token_id=config.get("pad_token_id", 2), bos_token_id=config.get("bos_token_id", 1),
        eos_token_id=config.get("eos_token_id", 2))


def save_sharded(tensors: dict[str, torch.Tensor], out: Path, name: str = "model") -> None:
    """safetensors shards of <= 5 GiB (+ an index when more than one), as transformers reads them."""
    from safetensors.torch import save_file

    shards, current, size = [], {}, 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size()
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[key], size = value.contiguous(), size + nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(out / f"{name}.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"{name}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    (out / f"{name}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def clip_tower(vit: dict[str, torch.Tensor], heads: int | None = None):
    """The CLIP tower's `vit.*` tensors -> a CLIPVisionModel holding them (loaded strictly).
    heads: not recorded in the weights; default width / 64, as in every OpenAI CLIP (ViT-L/14: 16)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    state = {k[len(VIT_PREFIX):]: v for k, v in vit.items() if k not in VIT_IGNORED}
    try:
        hidden = state["embeddings.class_embedding"].shape[0]
        patch = state["embeddings.patch_embedding.weight"].shape[-1]
        grid = int(round((state["embeddings.position_embedding.weight"].shape[0] - 1) ** 0.5))
        layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
        ffn = state["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError) as err:
        raise ValueError(f"the vit.* tensors are not a CLIP vision tower ({err!r} missing)") from None
    heads = heads or hidden // 64
    if not heads or hidden % heads:
        raise ValueError(f"CLIP width {hidden} cannot be split into {heads} heads; pass --clip-heads")
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                              num_attention_heads=heads, image_size=grid * patch, patch_size=patch)
    vision = CLIPVisionModel(config)
    try:
        vision.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"the vit.* tensors do not fit a CLIP vision tower: {err}") from None
    return vision


def write_vision(vision, out: Path) -> None:
    from transformers import CLIPImageProcessor

    size = vision.config.image_size
    vision.save_pretrained(out)
    CLIPImageProcessor(size={"height": size, "width": size}, do_center_crop=False).save_pretrained(out)


def copy_tokenizer(src: Path, out: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)


def tokenizer_is_remote(src: Path) -> bool:
    """True when the tokenizer ships as remote code (InternLM2's does)."""
    config = src / "tokenizer_config.json"
    return config.is_file() and "auto_map" in json.loads(config.read_text())


def convert(src: str | Path, out: str | Path, vision: str | None = None, dtype: str = "bfloat16",
            expert_heads: int = 4, compressor_heads: int = 4, plora_alpha: float | None = None,
            clip_heads: int | None = None) -> dict:
    """Convert a published XComposer2-VL or MoAI folder into OUT (see the module docstring).
    vision: a local CLIP ViT-L/14-336 folder, needed only when the source holds no `vit.*` tensors."""
    from safetensors.torch import save_file

    from trainer.model.config import MoAIConfig
    from trainer.model.moai import CONFIG_FILE, WEIGHTS_FILE

    src, out = Path(src), Path(out)
    tensors, config = read_checkpoint(src)
    sizes = read_sizes({k: tuple(v.shape) for k, v in tensors.items()}, config)
    kind = "MoAI-7B" if sizes.moai else "InternLM-XComposer2-VL"
    # Everything is checked before anything is written.
    check_keys(tensors, sizes, kind)
    lm = lm_config(sizes, config, plora_alpha)
    vit = {k: v for k, v in tensors.items() if k.startswith(VIT_PREFIX)}
    tower = clip_tower(vit, clip_heads) if vit else None
    if tower is None and vision is None:
        raise ValueError(f"{src} holds no vit.* (CLIP tower) tensors: pass --vision DIR, a local "
                         "CLIP ViT-L/14-336 folder")
    if tower is None and not Path(vision, "config.json").is_file():
        raise FileNotFoundError(f"no CLIP vision model at {vision!r} (config.json missing)")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; converting writes a fresh folder")
    remote_tokenizer = tokenizer_is_remote(src)
    summary = {"kind": kind, "sizes": sizes, "lm": str((out / "lm").resolve()),
               "vision": str((out / "vision").resolve() if tower is not None else Path(vision).resolve()),
               "remote_tokenizer": remote_tokenizer}
    moai = None
    if sizes.moai:
        if sizes.compressor_inner % compressor_heads:
            raise ValueError(f"Compressor width {sizes.compressor_inner} is not divisible by {compressor_heads} heads")
        moai = MoAIConfig(lm=summary["lm"], vision=summary["vision"], num_latents=sizes.latents,
                          compressor_depth=sizes.compressor_depth, compressor_heads=compressor_heads,
                          compressor_head_dim=sizes.compressor_inner // compressor_heads, ff_mult=sizes.ff_mult,
                          expert_rank=sizes.expert_rank, expert_heads=expert_heads, mixer_layers=sizes.mixer_layers,
                          image_size=tower.config.image_size if tower is not None else 490,
                          trust_remote_code=remote_tokenizer, torch_dtype=dtype)

    (out / "lm").mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(out / "lm")
    save_sharded(lm_state(tensors, sizes), out / "lm")
    copy_tokenizer(src, out / "lm")
    save_file({k: v.contiguous() for k, v in connector_state(tensors).items()}, str(out / "vision_proj.safetensors"))
    if tower is not None:
        write_vision(tower, out / "vision")
    if moai is not None:
        moai.save(out / CONFIG_FILE)
        save_file({k: v.contiguous() for k, v in moai_state(tensors, sizes).items()}, str(out / WEIGHTS_FILE),
                  metadata={"stage": "2"})
        (out / "state.json").write_text(json.dumps({"converted_from": str(src), "recipe": {
            "model": moai.to_dict(), "data": {"prompt": MOAI_PROMPT}}}, indent=2) + "\n")
    return summary
