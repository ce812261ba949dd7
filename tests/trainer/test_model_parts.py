"""Compressor, experts and Mixer on their own: shapes, masks, residuals, stage-1 draws, stage-2 gates."""
import pytest
import torch
from torch.testing import assert_close

from trainer.model.compressor import Compressor
from trainer.model.experts import LowRankAttentionExpert
from trainer.model.mixer import Mixer, draw_experts

D = 32


def test_compressor_shapes_init_and_no_attention_biases():
    torch.manual_seed(0)
    comp = Compressor(D, num_latents=256, depth=2, heads=2, head_dim=8, ff_mult=1)
    assert comp.latents.shape == (256, D)
    assert abs(comp.latents.mean().item()) < 0.1 and abs(comp.latents.std().item() - 1) < 0.1  # N(0, 1)
    for attn, ff in comp.layers:
        for lin in (attn.to_q, attn.to_kv, attn.to_out):
            assert lin.bias is None
        assert (attn.to_q.out_features, attn.to_kv.out_features) == (16, 32)
        assert ff[1].out_features == D  # ff_mult 1
    out = comp(torch.randn(3, 10, D), torch.ones(3, 10))
    assert out.shape == (3, 256, D)
    # final LayerNorm (weight 1, bias 0 at init): each latent has zero mean, unit variance
    assert_close(out.mean(-1), torch.zeros(3, 256), atol=1e-5, rtol=0)


def test_compressor_ignores_padded_aux_and_batches_like_single_rows():
    torch.manual_seed(0)
    comp = Compressor(D, num_latents=4, depth=2, heads=2, head_dim=8)
    short, long = torch.randn(1, 5, D), torch.randn(1, 9, D)
    padded = torch.cat([torch.cat([short, torch.randn(1, 4, D) * 100], 1), long])  # junk in the padding
    mask = torch.tensor([[1] * 5 + [0] * 4, [1] * 9])
    batched = comp(padded, mask)
    assert_close(batched[0], comp(short, torch.ones(1, 5))[0], atol=1e-5, rtol=1e-5)
    assert_close(batched[1], comp(long, torch.ones(1, 9))[0], atol=1e-5, rtol=1e-5)
    unmasked = comp(padded, torch.ones(2, 9))
    assert not torch.allclose(unmasked[0], batched[0], atol=1e-3)  # the mask is what made them equal
    # padding in the middle (aux text padded, then PS tokens) is masked just as well
    middle = torch.cat([short[:, :3], torch.randn(1, 2, D) * 50, short[:, 3:]], 1)
    assert_close(comp(middle, torch.tensor([[1, 1, 1, 0, 0, 1, 1]])), comp(short, torch.ones(1, 5)),
                 atol=1e-5, rtol=1e-5)


def test_expert_structure_residual_and_masks():
    torch.manual_seed(0)
    expert = LowRankAttentionExpert(D, rank=4, heads=4)
    for proj in (expert.q, expert.k, expert.v, expert.o):
        assert [tuple(m.weight.shape) for m in proj[:2]] == [(4, D), (D, 4)]
        assert proj[0].bias is None and proj[1].bias is None
        assert isinstance(proj[2], torch.nn.GELU)
    query, context = torch.randn(2, 6, D), torch.randn(2, 5, D)
    out = expert(query, context)
    assert out.shape == (2, 6, D)
    with torch.no_grad():
        expert.o[1].weight.zero_()
    assert_close(expert(query, context), query)  # output = query + GELU(o(attn)); o = 0 leaves the query
    torch.manual_seed(1)
    expert = LowRankAttentionExpert(D, rank=4, heads=4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    junk = context.clone()
    junk[0, 3:] = 1e3
    assert_close(expert(query, junk, mask)[0], expert(query[:1], context[:1, :3])[0], atol=1e-5, rtol=1e-5)
    # a row without any real context attends to nothing: no NaN, the query passes through
    empty = expert(query, context, torch.tensor([[0] * 5, [1] * 5]).bool())
    assert_close(empty[0], query[0])
    assert torch.isfinite(empty).all()


def test_stage1_draws_are_seeded_and_independent_per_side():
    draws = [draw_experts(torch.Generator().manual_seed(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    gen = torch.Generator().manual_seed(0)
    many = [draw_experts(gen) for _ in range(60)]
    assert {i for i, _ in many} == {0, 1, 2} and {j for _, j in many} == {0, 1, 2}
    assert any(i != j for i, j in many)  # image and language are drawn independently


def mixer_inputs():
    torch.manual_seed(0)
    return (torch.randn(2, 7, D), torch.randn(2, 4, D), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool(),
            torch.randn(2, 3, D))


def test_mixer_stage1_uses_exactly_the_drawn_expert():
    torch.manual_seed(0)
    mixer = Mixer(D, rank=4, heads=4)
    image, language, lmask, aux = mixer_inputs()
    out = mixer(image, language, lmask, aux, stage=1, experts=(2, 0))
    assert_close(out.image, mixer.image_experts["self"](image, image))
    assert_close(out.language, mixer.language_experts["aux"](language, aux))
    assert (out.image_weights[..., 2] == 1).all() and (out.language_weights[..., 0] == 1).all()
    out = mixer(image, language, lmask, aux, stage=1, experts=(1, 1))
    assert_close(out.image, mixer.image_experts["lang"](image, language, lmask))
    assert_close(out.language, mixer.language_experts["img"](language, image))


def test_mixer_stage2_gates_mix_all_three():
    torch.manual_seed(0)
    mixer = Mixer(D, rank=4, heads=4)
    image, language, lmask, aux = mixer_inputs()
    out = mixer(image, language, lmask, aux, stage=2)
    assert out.image_weights.shape == (2, 7, 3) and out.language_weights.shape == (2, 4, 3)
    assert_close(out.image_weights.sum(-1), torch.ones(2, 7))
    assert (out.image_weights > 0).all() and out.image_weights.std(dim=1).min() > 0  # per token
    experts = mixer.image_experts
    expected = (out.image_weights[..., :1] * experts["aux"](image, aux)
                + out.image_weights[..., 1:2] * experts["lang"](image, language, lmask)
                + out.image_weights[..., 2:] * experts["self"](image, image))
    assert_close(out.image, expected)
    assert_close(out.language_weights, torch.softmax(mixer.language_gate(language), -1))
    assert mixer.image_gate.bias is not None and mixer.image_gate.out_features == 3
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        mixer(image, language, lmask, aux, stage=3)
