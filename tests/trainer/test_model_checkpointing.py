"""Gradient checkpointing (non-reentrant) with MoAI's Mixer hooks: a recomputed layer mixes with its
own forward's routing and draws, and never with a finished forward's (see MixerRouter)."""
import pytest
import torch
from torch.testing import assert_close

from trainer.model import MoAIModel
from trainer.model.tiny import tiny_config

from .test_model_moai import make_batch, spliced_plain_call

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_root):
    torch.manual_seed(0)
    return MoAIModel.from_config(tiny_config(tiny_root)).eval()


def grads_without_and_with_checkpointing(model, loss) -> tuple[dict, dict]:
    """The trainable weights' gradients of loss() (a fresh forward), plain and LM-checkpointed."""
    def grads():
        model.zero_grad(set_to_none=True)
        loss().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.train()
    try:
        plain = grads()
        model.lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        checkpointed = grads()
    finally:
        model.lm.activation_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        model.eval()
    return plain, checkpointed


@pytest.mark.parametrize("stage", [1, 2])
def test_gradient_checkpointing_recomputes_the_same_mixer(model, stage):
    """A checkpointed layer re-runs its norm hook in backward: it must mix with the same routing and draws."""
    batch = make_batch(model)
    model.set_stage(stage)

    plain, checkpointed = grads_without_and_with_checkpointing(
        model, lambda: model(**batch, generator=torch.Generator().manual_seed(5)).loss)
    assert plain.keys() == checkpointed.keys() and any(n.startswith("mixers.") for n in plain)
    for name in plain:
        assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4)


def test_checkpointed_forward_leaves_no_mixer_for_later_lm_calls(tiny_root):
    """After a checkpointed MoAI forward (before and after its backward), a plain LM call of the same
    length runs no Mixer, in its forward or in its own recompute, while the MoAI backward still does."""
    torch.manual_seed(0)
    fresh = MoAIModel.from_config(tiny_config(tiny_root)).train()
    torch.manual_seed(0)
    used = MoAIModel.from_config(tiny_config(tiny_root)).train()
    batch = make_batch(used)
    for m in (fresh, used):
        m.set_stage(2)
        m.lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    def plain(m):  # loss, logits and the gradient its checkpointed backward gives the embeddings
        out, embeds = spliced_plain_call(m, batch, requires_grad=True)
        out.loss.backward()
        return out.logits.detach(), embeds.grad

    expected_logits, expected_grad = plain(fresh)
    moai = used(**batch)
    assert not torch.allclose(moai.logits, expected_logits, atol=1e-3)  # a stale Mixer would show
    for _ in range(2):  # with the MoAI graph alive, then after its backward
        logits, grad = plain(used)
        assert_close(logits, expected_logits, atol=0, rtol=0)
        assert_close(grad, expected_grad, atol=0, rtol=0)
        if moai is not None:
            used.zero_grad(set_to_none=True)
            moai.loss.backward()  # its recompute still mixes: the Mixer's weights get gradients
            assert all(p.grad is not None for p in used.mixers.parameters())
            moai = None
    assert used.router.awaiting_recompute == []  # nothing kept once the forward's graph is gone


def test_two_checkpointed_forwards_then_one_backward_match_no_checkpointing(model):
    """Gradient accumulation over two forwards before one backward: each recompute finds its own routing."""
    batch, other = make_batch(model), make_batch(model, answers=[" Two green apples, yes.", " Pink."])
    model.set_stage(1)

    def loss():
        first = model(**batch, generator=torch.Generator().manual_seed(1)).loss
        second = model(**other, generator=torch.Generator().manual_seed(2)).loss
        return first + second
    plain, checkpointed = grads_without_and_with_checkpointing(model, loss)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4)
