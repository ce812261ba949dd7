"""The published checkpoints' layout and the converters: round trips, refusals, the 7B dry run.

Random-weight checkpoints in the published layout are built at a tiny size
(tests/trainer/published_reference.py) and converted (trainer/published/convert.py).
"""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from tests.trainer import published_reference as ref
from tests.trainer.test_published import load
from trainer.model import MoAIModel
from trainer.model.tiny import build_tiny_backbones, build_tokenizer
from trainer.published.convert import convert, read_checkpoint, to_published
from trainer.published.layout import fuse_wqkv, split_wqkv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_root):
    return ref.converted_tiny(tmp_path_factory.mktemp("published"), tiny_root)


def test_wqkv_split_follows_the_kv_head_groups():
    H, Hkv, hd = 4, 2, 3  # G = 2: rows [q0 q1 k0 v0 | q2 q3 k1 v1], each hd rows
    names = ["q0", "q1", "k0", "v0", "q2", "q3", "k1", "v1"]
    code = {name: i for i, name in enumerate(["q0", "q1", "q2", "q3", "k0", "k1", "v0", "v1"])}
    w = torch.tensor([[code[n] * 10 + c] for n in names for c in range(hd)], dtype=torch.float32)  # (24, 1)
    q, k, v = split_wqkv(w, H, Hkv)
    assert q.flatten().tolist() == [h * 10 + c for h in range(4) for c in range(hd)]
    assert k.flatten().tolist() == [(4 + j) * 10 + c for j in range(2) for c in range(hd)]
    assert v.flatten().tolist() == [(6 + j) * 10 + c for j in range(2) for c in range(hd)]
    assert torch.equal(fuse_wqkv(q, k, v, H, Hkv), w)
    naive_q = w[:H * hd]  # a contiguous [q | k | v] split takes k0, v0 as queries
    assert not torch.equal(naive_q, q)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_moai_checkpoint_converts_and_round_trips(published, tmp_path, fmt, tiny_root):
    tensors, _, ours = published
    if fmt == "bin":  # the same checkpoint as .bin shards converts to the same tensors
        ref.write_published(tmp_path / "bin", tensors, tokenizer=build_tokenizer(), fmt="bin")
        convert(tmp_path / "bin", tmp_path / "ours", vision=build_tiny_backbones(tiny_root)["vision"])
        ours = tmp_path / "ours"
    model = load(ours)
    assert model.mixer_layers == (3, 7) and model.config.num_latents == 8 and model.config.expert_rank == 16
    assert model.config.compressor_head_dim == 8 and model.config.compressor_depth == 2
    sizes = ref.TINY
    back = to_published(model.lm.state_dict(), model.trainable_state_dict(), None, sizes)
    assert sorted(back) == sorted(tensors)
    for key, value in tensors.items():
        assert torch.equal(back[key], value), key


def test_xcomposer2_backbone_converts_to_a_recipe_start(tmp_path, tiny_root):
    sizes = dataclasses.replace(ref.TINY, moai=False, num_embeddings=ref.TINY.vocab)
    tensors = ref.random_published(sizes, seed=1)
    ref.write_published(tmp_path / "xc2", tensors, tokenizer=build_tokenizer())
    vision = build_tiny_backbones(tiny_root)["vision"]
    summary = convert(tmp_path / "xc2", tmp_path / "backbone", vision=vision)
    assert summary["kind"] == "InternLM-XComposer2-VL" and not (tmp_path / "backbone" / "moai_config.json").exists()
    from trainer.model import MoAIConfig
    model = MoAIModel.from_config(MoAIConfig(lm=summary["lm"], vision=vision, mixer_layers=(3, 7), num_latents=8,
                                             connector_init=str(tmp_path / "backbone" / "vision_proj.safetensors")))
    assert type(model.lm).__name__ == "InternLM2PLoRAForCausalLM"
    assert torch.equal(model.connector[0].weight, tensors["vision_proj.0.weight"])
    assert torch.equal(model.connector[2].bias, tensors["vision_proj.2.bias"])
    back = to_published(model.lm.state_dict(), None, dict(model.connector.state_dict()), sizes)
    assert all(torch.equal(back[k], v) for k, v in tensors.items()) and sorted(back) == sorted(tensors)


def test_converter_refuses_a_mismatch_listing_every_kind(published, tmp_path):
    tensors, _, _ = published
    bad = dict(tensors)
    del bad["model.layers.2.feed_forward.w3.Plora_B.weight"]
    bad["model.layers.0.attention.extra.weight"] = torch.zeros(2)
    bad["model.layers.1.ffn_norm.weight"] = torch.zeros(65)
    ref.write_published(tmp_path / "bad", bad)
    with pytest.raises(ValueError, match=r"1 missing \(model\.layers\.2\.feed_forward\.w3\.Plora_B\.weight\); "
                                         r"1 unexpected \(model\.layers\.0\.attention\.extra\.weight\); "
                                         r"1 mis-shaped \(model\.layers\.1\.ffn_norm\.weight \(65,\) "
                                         r"\(expected \(64,\)\)\)"):
        convert(tmp_path / "bad", tmp_path / "out", vision="unused")
    ref.write_published(tmp_path / "good", tensors)
    with pytest.raises(ValueError, match="holds no vit.* .*pass --vision DIR"):
        convert(tmp_path / "good", tmp_path / "out")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(ValueError, match="busy exists and is not empty"):
        convert(tmp_path / "good", tmp_path / "busy", vision=published[2] / "lm")
    ref.write_published(tmp_path / "noheads", tensors, config={})
    with pytest.raises(ValueError, match="no integer 'num_attention_heads'"):
        convert(tmp_path / "noheads", tmp_path / "out2", vision="unused")
    cli = subprocess.run([sys.executable, "-m", "trainer.published", "convert", str(tmp_path / "bad"),
                          str(tmp_path / "out3"), "--vision", "unused"], capture_output=True, text=True)
    assert cli.returncode == 2 and "error: not a MoAI-7B checkpoint as published: 1 missing" in cli.stderr


def test_converted_folder_holds_only_safetensors(published):
    _, _, ours = published
    files = {p.name for p in ours.rglob("*") if p.is_file()}
    assert {"moai.safetensors", "moai_config.json", "vision_proj.safetensors", "model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    tensors, _ = read_checkpoint(ours / "lm")
    assert "model.layers.0.self_attn.qkv_proj.lora_A.weight" in tensors
    from trainer.data import PromptFormat  # trainer generate / evaluate run read MoAI's prompt from here
    state = json.loads((ours / "state.json").read_text())
    assert PromptFormat.from_dict(state["recipe"]["data"]["prompt"]).user_end == "[UNUSED_TOKEN_145]\n"


def test_7b_dry_run_matches_the_published_layout(capsys):
    from trainer.published.__main__ import dryrun

    assert dryrun() == 0
    out = capsys.readouterr().out
    assert "trainable: stage 1 222,674,944, stage 2 222,773,272" in out
    assert "LM PLoRA (image path)        603,979,776" in out and "every LM and MoAI tensor matches" in out


def test_a_checkpoint_holding_the_clip_tower_gets_its_own_vision_folder(tmp_path, tiny_root):
    from transformers import CLIPVisionModel

    from trainer.model.vision import interpolate_position_grid, load_clip_vision
    from trainer.published.layout import VIT_PREFIX

    clip = CLIPVisionModel.from_pretrained(build_tiny_backbones(tiny_root)["vision"], local_files_only=True)
    interpolate_position_grid(clip, 490)  # stored as published: 1,226 positions for 490 px
    vit = {VIT_PREFIX + k: v.clone() for k, v in clip.state_dict().items()}
    tensors = dict(ref.random_published(seed=2), **vit)
    ref.write_published(tmp_path / "with-vit", tensors, tokenizer=build_tokenizer())
    summary = convert(tmp_path / "with-vit", tmp_path / "ours", clip_heads=2)  # no --vision needed
    assert summary["vision"] == str((tmp_path / "ours" / "vision").resolve())
    vision = load_clip_vision(summary["vision"], 490, torch.float32)
    for key, value in vision.state_dict().items():
        assert torch.equal(value, vit[VIT_PREFIX + key]), key
    assert load(tmp_path / "ours").num_image_tokens == 1225
    bad = dict(tensors, **{VIT_PREFIX + "encoder.layers.0.mlp.fc1.bias": torch.zeros(3)})
    ref.write_published(tmp_path / "bad-vit", bad, tokenizer=build_tokenizer())
    with pytest.raises(ValueError, match="(?s)do not fit a CLIP vision tower: .*fc1.bias"):
        convert(tmp_path / "bad-vit", tmp_path / "out", clip_heads=2)
    assert not (tmp_path / "out").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="CLIP width 32 cannot be split into 0 heads; pass --clip-heads"):
        convert(tmp_path / "with-vit", tmp_path / "out2")
