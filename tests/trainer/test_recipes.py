"""Every recipe YAML loads and validates; the launch command is in its header; bad values are named."""
from pathlib import Path

import pytest

from trainer.model import MoAIConfig
from trainer.recipe import build_model, load_recipe, parse_overrides, stage_config

RECIPES = sorted((Path(__file__).resolve().parents[2] / "trainer" / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert {p.name for p in RECIPES} >= {"tiny.yaml", "moai_7b.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(path):
    recipe = load_recipe(path)
    header = path.read_text().split("\nmodel:")[0]
    assert " train --recipe" in header and f"recipes/{path.name}" in header
    for stage in (1, 2):
        cfg = stage_config(recipe, stage)
        assert cfg.lr > 0 and cfg.output_dir
    if "tiny" not in recipe["model"]:
        MoAIConfig.from_dict(recipe["model"])  # every model key is a real MoAIConfig field


def test_published_7b_settings():
    recipe = load_recipe(next(p for p in RECIPES if p.name == "moai_7b.yaml"))
    cfg = stage_config(recipe, 1)
    assert (cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.max_grad_norm, cfg.epochs) == (2e-5, 1e-6, 0.0, 10.0, 1)
    assert cfg.precision == "bf16" and cfg.distributed == "fsdp"
    assert recipe["model"]["mixer_layers"] == [7, 15, 23, 31] and recipe["model"]["num_latents"] == 64
    assert stage_config(recipe, 2).init_from == "runs/moai-7b/stage1/final"
    # MoAI's own backbone, converted from InternLM-XComposer2-VL-7B (python -m trainer.published convert)
    assert recipe["model"]["lm"] == "checkpoints/xcomposer2-backbone/lm"
    assert recipe["model"]["connector_init"] == "checkpoints/xcomposer2-backbone/vision_proj.safetensors"


def test_tiny_recipe_builds_its_model(tmp_path):
    recipe = parse_overrides(load_recipe(next(p for p in RECIPES if p.name == "tiny.yaml")),
                             [f"model.tiny={tmp_path}", "model.image_size=112"])
    model = build_model(recipe["model"])
    assert model.num_image_tokens == 64 and model.image_token_id is not None


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr must be a positive number"),
    ("train.distributed=deepspeed", "train.distributed must be 'ddp' or 'fsdp'"),
    ("train.micro_batch_size=0", "train.micro_batch_size must be a positive int"),
    ("train.bogus=1", "unknown train settings ['bogus']"),
    ("data.images=x", "unknown data keys ['images']"),
    ("stage2.min_lr=1", "train.min_lr must lie in"),
    ("lr=1", "must look like section.key=value"),
])
def test_bad_values_are_named(override, message):
    recipe = load_recipe(next(p for p in RECIPES if p.name == "tiny.yaml"))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_overrides(recipe, [override])
