"""Tiny random backbones for tests, the tiny recipe, the demo and ablations: built here, offline.

A byte-level tokenizer (every string encodes, nothing to download), a small causal LM of a chosen
family, and a small CLIP vision tower with 14 px patches (490 px -> 35 x 35 = 1,225 tokens).
"""
from __future__ import annotations

from pathlib import Path

import torch

from schemas.files import replaced_atomically
from trainer.model.config import MoAIConfig

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<image>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}USER: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}ASSISTANT: {{ m['content'] }}{{ eos_token }}\n"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}")
LM_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def build_tokenizer():
    """A byte-level BPE tokenizer without merges: ids 0-3 special, then the 256 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_lm_config(family: str, vocab_size: int):
    import transformers

    if family not in LM_FAMILIES:
        raise ValueError(f"tiny LM family must be one of {LM_FAMILIES}, got {family!r}")
    config_class = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
                    "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[family]
    return config_class(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def build_tiny_backbones(out_dir: str | Path, family: str = "llama", seed: int = 0) -> dict[str, str]:
    """Write a tiny LM + tokenizer and a tiny CLIP vision model under out_dir; returns dict(lm=, vision=)."""
    from transformers import AutoModelForCausalLM, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    out_dir = Path(out_dir)
    lm_dir, vision_dir = out_dir / f"lm-{family}", out_dir / "vision"
    with torch.random.fork_rng(devices=[]):
        if not (lm_dir / "config.json").is_file():
            torch.manual_seed(seed)
            tokenizer = build_tokenizer()
            lm = AutoModelForCausalLM.from_config(tiny_lm_config(family, len(tokenizer)))
            lm.generation_config.pad_token_id = tokenizer.pad_token_id
            with replaced_atomically(lm_dir, keep_existing=True) as tmp:
                lm.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
        if not (vision_dir / "config.json").is_file():
            torch.manual_seed(seed)
            # 5 x 5 patches as saved, like CLIP-L/14-336's 24 x 24: MoAI interpolates them to 35 x 35.
            vision = CLIPVisionModel(CLIPVisionConfig(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                image_size=70, patch_size=14, projection_dim=32))
            with replaced_atomically(vision_dir, keep_existing=True) as tmp:
                vision.save_pretrained(tmp)
                CLIPImageProcessor(size={"shortest_edge": 70}, crop_size={"height": 70, "width": 70}
                                   ).save_pretrained(tmp)
    return {"lm": str(lm_dir), "vision": str(vision_dir)}


def tiny_config(out_dir: str | Path, family: str = "llama", **overrides) -> MoAIConfig:
    """A MoAIConfig over tiny backbones (built under out_dir if missing), with small MoAI parts."""
    paths = build_tiny_backbones(out_dir, family)
    settings = dict(lm=paths["lm"], vision=paths["vision"], num_latents=8, compressor_depth=2, compressor_heads=2,
                    compressor_head_dim=16, ff_mult=1,
                    expert_rank=8, expert_heads=4, mixer_layers=(1, 3), image_size=490)
    settings.update(overrides)
    return MoAIConfig(**settings)
