"""MoAIConfig: validation with actionable errors, the every-8th-layer default, JSON round trip."""
import pytest

from trainer.model import MoAIConfig


def test_defaults_are_the_published_sizes():
    cfg = MoAIConfig(lm="lm", vision="clip")
    assert (cfg.num_latents, cfg.compressor_depth, cfg.compressor_heads, cfg.compressor_head_dim, cfg.ff_mult) == \
        (64, 4, 4, 64, 1)
    assert (cfg.expert_rank, cfg.expert_heads, cfg.image_size, str(cfg.compat)) == (64, 4, 490, "none")
    assert not cfg.compat.quirks and cfg.connector_init is None
    assert cfg.resolve_mixer_layers(32) == (7, 15, 23, 31)
    assert cfg.trust_remote_code is False


def test_explicit_mixer_layers_are_sorted_and_checked():
    cfg = MoAIConfig(lm="lm", vision="clip", mixer_layers=[3, 1])
    assert cfg.mixer_layers == (1, 3)
    assert cfg.resolve_mixer_layers(4) == (1, 3)
    with pytest.raises(ValueError, match=r"\[3\] out of range for an LM with 2 layers"):
        cfg.resolve_mixer_layers(2)
    with pytest.raises(ValueError, match="fewer than 8"):
        MoAIConfig(lm="lm", vision="clip").resolve_mixer_layers(4)
    assert MoAIConfig(lm="lm", vision="clip", mixer_layers=[]).resolve_mixer_layers(4) == ()  # the baseline


@pytest.mark.parametrize("field, value, message", [
    ("num_latents", 0, "num_latents must be a positive int"),
    ("expert_rank", 1.5, "expert_rank must be a positive int"),
    ("compat", "published", r"compat must be 'none', 'moai' or quirk names .*unknown: \['published'\]"),
    ("compat", 3, "compat must be 'none', 'moai'"),
    ("connector_init", "", "connector_init must be a file path"),
    ("torch_dtype", "float64", "torch_dtype must be one of"),
    ("mixer_layers", (1, 1), "duplicates"),
    ("mixer_layers", (-1,), "non-negative"),
    ("lm", "", "lm must be a non-empty string"),
    ("trust_remote_code", "yes", "trust_remote_code must be a bool"),
])
def test_bad_values_raise_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        MoAIConfig(**{"lm": "lm", "vision": "clip", field: value})


def test_json_round_trip(tmp_path):
    cfg = MoAIConfig(lm="/models/lm", vision="/models/clip", mixer_layers=(1, 3), compat="moai",
                     torch_dtype="bfloat16")
    cfg.save(tmp_path / "c.json")
    assert MoAIConfig.load(tmp_path / "c.json") == cfg
    assert MoAIConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown MoAIConfig fields"):
        MoAIConfig.from_dict({**cfg.to_dict(), "latents": 3})


def test_compat_is_parsed_once_and_round_trips():
    from trainer.model.config import QUIRKS, ModelCompat

    assert MoAIConfig(lm="lm", vision="clip", compat="moai").compat.quirks == frozenset(QUIRKS)
    some = MoAIConfig(lm="lm", vision="clip", compat="gate_half, buffer_positions")
    assert some.compat.has("gate_half") and not some.compat.has("ps_range")
    assert some.to_dict()["compat"] == "buffer_positions,gate_half"
    assert MoAIConfig.from_dict(some.to_dict()) == some
    assert MoAIConfig(lm="lm", vision="clip", compat=["ps_range"]).compat == ModelCompat.parse("ps_range")
    for old in ("none", "moai"):  # what existing checkpoints hold
        assert MoAIConfig.from_dict({"lm": "lm", "vision": "clip", "compat": old}).to_dict()["compat"] == old
    with pytest.raises(KeyError, match="no compat quirk 'gates'"):
        some.compat.has("gates")
