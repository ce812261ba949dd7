"""MixerRouter alone: which routing a Mixer hook call gets, with no LM and no backward pass."""
import gc

import torch

from trainer.model.inject import MixerRouter, MixerRouting


def routing(seq_len: int = 5) -> MixerRouting:
    empty = torch.zeros(1, 0, dtype=torch.long)
    return MixerRouting(seq_len, empty, empty, empty.bool(), torch.zeros(1, 2, 4), stage=2, experts={})


def forward(router: MixerRouter, r: MixerRouting, inputs: dict[int, torch.Tensor], recompute: bool) -> None:
    """What MoAIModel.forward does: start, one hook call per Mixer layer, finish."""
    router.start(r)
    for layer, x in inputs.items():
        assert router.routing_for(layer, x) is r
        router.mixing(layer, r, x)
    router.finish(recompute)


def test_running_forward_gets_its_routing_and_nothing_after():
    router, r, x = MixerRouter(), routing(), torch.randn(1, 5, 4)
    forward(router, r, {1: x}, recompute=False)
    assert router.current is None and router.awaiting_recompute == []
    assert router.routing_for(1, x) is None  # no checkpointing expected: a later call mixes nothing


def test_recompute_finds_the_forward_by_the_input_it_saved():
    router, r, x = MixerRouter(), routing(), torch.randn(1, 5, 4)
    forward(router, r, {1: x, 3: x + 1}, recompute=True)
    assert router.routing_for(1, x) is r
    assert router.routing_for(1, x.detach()) is r  # checkpointing may hand back a detached alias
    assert router.routing_for(3, x) is None  # layer 3 read another tensor
    assert router.routing_for(1, x.clone()) is None  # same values, another tensor: not a recompute
    assert router.routing_for(1, x[:, :4]) is None  # a view of other shape over the same storage
    assert router.routing_for(1, None) is None


def test_two_finished_forwards_each_find_their_own():
    router = MixerRouter()
    (r1, x1), (r2, x2) = (routing(), torch.randn(1, 5, 4)), (routing(), torch.randn(1, 5, 4))
    forward(router, r1, {1: x1}, recompute=True)
    forward(router, r2, {1: x2}, recompute=True)
    assert router.routing_for(1, x1) is r1 and router.routing_for(1, x2) is r2


def test_a_routing_is_forgotten_with_the_inputs_its_forward_saved():
    router, r = MixerRouter(), routing()
    x = torch.randn(1, 5, 4)
    forward(router, r, {1: x}, recompute=True)
    assert router.awaiting_recompute == [r]
    del x
    gc.collect()
    assert router.routing_for(1, torch.randn(1, 5, 4)) is None
    assert router.awaiting_recompute == []


def test_a_forward_that_mixed_nothing_is_not_kept():
    router = MixerRouter()
    forward(router, routing(), {}, recompute=True)
    assert router.awaiting_recompute == []


def test_mixing_is_recorded_for_the_running_forward_only():
    router, running, finished, x = MixerRouter(), routing(), routing(), torch.randn(1, 5, 4)
    router.start(running)
    router.mixing(1, finished, x)  # a recomputed layer of an older forward: nothing new to note
    assert finished.layer_inputs == {}
    router.mixing(1, running, x)
    assert running.layer_inputs[1]() is x
