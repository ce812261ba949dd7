"""Backbones: CLIP at 490 px, the LM families MoAI hooks into, clear errors, the 7B shapes on meta."""
import json

import pytest
import torch
from torch.testing import assert_close

from tests.trainer.test_model_moai import first_answer, make_batch, run
from trainer.model import MoAIConfig, MoAIModel
from trainer.model.tiny import build_tiny_backbones, build_tokenizer, tiny_config
from trainer.model.vision import interpolate_position_grid


pytestmark = pytest.mark.usefixtures("one_thread")



def test_clip_grid_is_interpolated_like_transformers_does(tiny_root):
    from transformers import CLIPVisionModel

    paths = build_tiny_backbones(tiny_root)
    original = CLIPVisionModel.from_pretrained(paths["vision"], local_files_only=True).eval()
    assert original.config.image_size == 70  # saved at 5 x 5 patches, like CLIP-L/14-336's 24 x 24
    model = MoAIModel.from_config(tiny_config(tiny_root))
    assert model.vision.embeddings.position_embedding.num_embeddings == 35 * 35 + 1
    assert model.num_image_tokens == 1225
    pixels = torch.randn(2, 3, 490, 490)
    with torch.no_grad():
        expected = original(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
    assert_close(model.encode_vision(pixels), expected, atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in model.vision.parameters())
    with pytest.raises(ValueError, match="not a multiple of the CLIP patch size 14"):
        interpolate_position_grid(original, 500)


def test_vision_tower_loads_from_a_full_clip_checkpoint(tmp_path):
    """Published CLIP checkpoints (e.g. ViT-L/14-336) hold both towers: the vision one must load exactly."""
    from transformers import CLIPConfig, CLIPModel

    from trainer.model.vision import load_clip_vision

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=70, patch_size=14), projection_dim=16)).eval()
    clip.save_pretrained(tmp_path / "clip")
    vision = load_clip_vision(str(tmp_path / "clip"), 70, torch.float32)
    pixels = torch.randn(1, 3, 70, 70)
    with torch.no_grad():
        assert_close(vision(pixel_values=pixels).last_hidden_state,
                     clip.vision_model(pixel_values=pixels).last_hidden_state)


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral"])
def test_other_llama_family_lms_are_batched_and_leak_free(tiny_root, family):
    model = MoAIModel.from_config(tiny_config(tiny_root, family=family)).eval()
    assert model.lm.config.model_type == family
    both = run(model, make_batch(model), stage=2)
    for r in range(2):
        single = run(model, make_batch(model, rows=(r,)), stage=2)
        assert_close(both.logits[r, both.attention_mask[r].bool()], single.logits[0], atol=1e-4, rtol=1e-4)
    other = run(model, make_batch(model, answers=[" Two green apples, yes.", " Pink."]), stage=2)
    cut = first_answer(both.labels[0])
    assert_close(both.logits[0, :cut], other.logits[0, :cut], atol=1e-5, rtol=1e-5)
    assert sorted(both.gate_weights) == [1, 3]


def test_unsupported_layout_is_a_clear_error(tmp_path, tiny_root):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=260, bos_token_id=1, eos_token_id=2))
    gpt2.save_pretrained(tmp_path / "gpt2")
    build_tokenizer().save_pretrained(tmp_path / "gpt2")
    cfg = tiny_config(tiny_root, lm=str(tmp_path / "gpt2"), mixer_layers=(1,))
    with pytest.raises(ValueError, match=r"unsupported LM layout: GPT2LMHeadModel \(model_type 'gpt2'\)"):
        MoAIModel.from_config(cfg)


def test_remote_code_needs_the_explicit_flag_and_paths_must_exist(tmp_path, tiny_root):
    (tmp_path / "internlm2").mkdir()
    (tmp_path / "internlm2" / "config.json").write_text(json.dumps(
        {"model_type": "internlm2", "auto_map": {"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"}}))
    with pytest.raises(ValueError, match="set MoAIConfig.trust_remote_code=True"):
        MoAIModel.from_config(tiny_config(tiny_root, lm=str(tmp_path / "internlm2")))
    with pytest.raises(FileNotFoundError, match="no language model at .*nowhere"):
        MoAIModel.from_config(tiny_config(tiny_root, lm=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="no CLIP vision model at .*nowhere"):
        MoAIModel.from_config(tiny_config(tiny_root, vision=str(tmp_path / "nowhere")))


def test_tiny_backbones_are_deterministic(tmp_path):
    first, second = build_tiny_backbones(tmp_path / "a"), build_tiny_backbones(tmp_path / "b")
    for key, name in (("lm", "model.safetensors"), ("vision", "model.safetensors"), ("lm", "tokenizer.json")):
        assert (tmp_path / "a" / first[key].split("/a/")[1] / name).read_bytes() == \
            (tmp_path / "b" / second[key].split("/b/")[1] / name).read_bytes()


def test_published_7b_shapes_on_the_meta_device():
    """MoAI-7B: InternLM2-7B's shape (d 4096, 32 layers, GQA 32/8) as a Llama layout, CLIP ViT-L/14-336."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        lm = LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                          num_attention_heads=32, num_key_value_heads=8, vocab_size=92544))
        vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                  num_attention_heads=16, image_size=336, patch_size=14))
        interpolate_position_grid(vision, 490)
        model = MoAIModel(MoAIConfig(lm="internlm2-7b", vision="clip-vit-large-patch14-336"), lm, vision,
                          build_tokenizer())
    d, r = 4096, 64
    assert model.mixer_layers == (7, 15, 23, 31) and model.num_image_tokens == 1225
    assert model.compressor.latents.shape == (64, d)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(model.connector) == 1024 * d + d + d * d + d
    attn = 2 * 2 * d + d * 256 + d * 512 + 256 * d  # two LayerNorms, q, kv, out (4 heads of 64, no bias)
    ff = 2 * d + d * d + d * d  # LayerNorm, Linear(d, d), Linear(d, d) (multiplier 1)
    assert count(model.compressor) == 64 * d + 4 * (attn + ff) + 2 * d
    expert = 4 * (d * r + r * d)
    assert count(model.mixers) == 4 * (6 * expert + 2 * (d * 3 + 3))
    model.set_stage(1)
    stage1 = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.set_stage(2)
    stage2 = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert stage2 - stage1 == 4 * 2 * (d * 3 + 3)
    print(f"MoAI-7B trainable: stage 1 {stage1:,}, stage 2 {stage2:,}")


def test_internlm2_layout_is_found_by_its_own_names():
    from types import SimpleNamespace

    from torch import nn

    from trainer.model.inject import pre_attention_norms

    class InternLM2Layer(nn.Module):  # InternLM2's remote code names (not importable offline)
        def __init__(self):
            super().__init__()
            self.attention_norm, self.attention, self.ffn_norm = nn.LayerNorm(8), nn.Linear(8, 8), nn.LayerNorm(8)

    class InternLM2Like(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(model_type="internlm2")
            self.model = nn.Module()
            self.model.layers = nn.ModuleList(InternLM2Layer() for _ in range(3))

    lm = InternLM2Like()
    assert pre_attention_norms(lm) == [layer.attention_norm for layer in lm.model.layers]
    lm.config.model_type = "llama"  # the same modules under a native type do not match its layout
    with pytest.raises(ValueError, match="unsupported LM layout"):
        pre_attention_norms(lm)


def mixed_precision_step(tiny_root, device):
    """bf16 frozen backbones, fp32 MoAI parts (as the trainer keeps AdamW's master weights)."""
    model = MoAIModel.from_config(tiny_config(tiny_root, torch_dtype="bfloat16"))
    assert model.lm.dtype == torch.bfloat16 and model.compressor.latents.dtype == torch.bfloat16
    for part in (model.connector, model.compressor, model.mixers):
        part.float()
    model.to(device).set_stage(2)
    batch = {k: v.to(device) for k, v in make_batch(model).items()}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    tokens = model.eval().generate(**{k: v for k, v in batch.items() if k != "labels"}, max_new_tokens=3)
    assert tokens.shape[0] == 2


def test_bf16_backbones_with_fp32_parts_on_cpu(tiny_root):
    mixed_precision_step(tiny_root, torch.device("cpu"))


@pytest.mark.gpu
def test_bf16_backbones_with_fp32_parts_on_cuda(tiny_root):
    mixed_precision_step(tiny_root, torch.device("cuda"))
