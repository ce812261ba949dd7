"""Training on CPU: the loss falls when overfitting, resume is exact, stage 2 starts from stage 1."""
import json

import pytest
import torch
from safetensors.torch import load_file

from trainer.synthetic import tiny_recipe, write_corpus
from trainer.checkpoint import latest_checkpoint, load_trainable
from trainer.model import MoAIModel
from trainer.train import MoAIRecipe, run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_corpus(root, n_images=4)
    return root


def recipe_at(corpus, out, **train):
    recipe = tiny_recipe(corpus, corpus / "backbones", **train)
    recipe["train"]["output_dir"] = str(out)
    return recipe


def test_loss_falls_when_overfitting(corpus, tmp_path):
    # One batch of all 4 samples, 8 times. Only MoAI's parts learn (the random LM stays frozen), so
    # the floor is high, but a broken update leaves the loss at its start (about ln(vocab) = 5.6).
    result = run(recipe_at(corpus, tmp_path, micro_batch_size=4, epochs=8, lr=1e-2, min_lr=1e-2,
                           warmup_steps=1), 1)
    losses = result["losses"]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < losses[0] - 0.15, losses
    lines = [json.loads(x) for x in (tmp_path / "stage1" / "losses.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in lines] == pytest.approx(losses) and all(x["tokens_per_s"] > 0 for x in lines)
    assert list((tmp_path / "stage1" / "tb").glob("events.out.tfevents.*"))
    final = result["checkpoint"]
    assert final.name == "final" and (final / "trainable.safetensors").is_file()
    # the final folder is also a MoAIModel.from_pretrained folder
    model = MoAIModel.from_pretrained(final)
    trained = load_trainable(final)
    for name, value in trained.items():
        torch.testing.assert_close(model.state_dict()[name], value)


def test_resume_continues_exactly(corpus, tmp_path):
    settings = dict(micro_batch_size=2, epochs=3, max_steps=5, save_every=0)
    straight = run(recipe_at(corpus, tmp_path / "straight", **settings), 1)["losses"]
    # stop after 1 step: some stage-1 experts were never drawn, so they have no optimizer state yet
    first = run(recipe_at(corpus, tmp_path / "split", stop_after=1, **settings), 1)
    assert not first["finished"] and first["checkpoint"].name == "step-000001"
    assert latest_checkpoint(tmp_path / "split" / "stage1") == first["checkpoint"]
    state = load_file(str(first["checkpoint"] / "optimizer.safetensors"))
    trained = {k.rsplit("/", 1)[0] for k in state}
    assert trained and trained < set(load_trainable(first["checkpoint"]))
    second = run(recipe_at(corpus, tmp_path / "split", **settings), 1, resume=True)
    assert second["finished"] and len(second["losses"]) == 4
    assert straight[3] != straight[4]
    torch.testing.assert_close(torch.tensor(first["losses"] + second["losses"]), torch.tensor(straight),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="global batch of 2, this run has 1"):
        run(recipe_at(corpus, tmp_path / "split", **{**settings, "micro_batch_size": 1}), 1, resume=True)
    # the resumed run ends at the same weights
    a = load_file(str(tmp_path / "straight" / "stage1" / "final" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "split" / "stage1" / "final" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_stage2_starts_from_stage1(corpus, tmp_path):
    settings = dict(micro_batch_size=2, max_steps=2, epochs=1)
    stage1 = run(recipe_at(corpus, tmp_path, **settings), 1)
    weights = load_trainable(stage1["checkpoint"])
    assert not any("gate" in k for k in weights)  # stage 1 does not train the gates
    job = MoAIRecipe(recipe_at(corpus, tmp_path, **settings), 2)
    job.setup()
    try:
        state = job.module.state_dict()
        for name, value in weights.items():
            torch.testing.assert_close(state[name], value, rtol=0, atol=0)
        trainable = {n for n, p in job.module.named_parameters() if p.requires_grad}
        assert any("gate" in n for n in trainable) and set(weights) < trainable
        result = job.train()
    finally:
        job.cleanup()
    assert len(result["losses"]) == 2
    stage2 = load_trainable(result["checkpoint"])
    assert any("gate" in k for k in stage2)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "stage2" / "tb"))
    events.Reload()
    gate_tags = [t for t in events.Tags()["scalars"] if t.startswith("gates/")]
    assert "gates/layer1/image_aux" in gate_tags and "gates/layer3/language_self" in gate_tags
    # and the result answers a question (greedy decoding through the trained Mixer)
    from trainer.cli import main
    assert main(["generate", "--model", str(result["checkpoint"]), "--annotations", str(corpus / "annotations"),
                 "--image", "img1.png", "--question", "What shape is shown?", "--max-new-tokens", "3",
                 "--device", "cpu"]) == 0
    assert main(["generate", "--model", str(result["checkpoint"]), "--annotations", str(corpus / "annotations"),
                 "--image", "broken.png", "--device", "cpu"]) == 2


def test_stage2_without_stage1_checkpoint_says_so(corpus, tmp_path):
    job = MoAIRecipe(recipe_at(corpus, tmp_path / "nothing", max_steps=1), 2)
    with pytest.raises(FileNotFoundError, match="no trainable weights at .*stage1/final"):
        job.setup()


def test_gradient_checkpointing_gives_the_same_steps(corpus, tmp_path):
    settings = dict(micro_batch_size=2, max_steps=2, save_every=0)
    plain = run(recipe_at(corpus, tmp_path / "plain", **settings), 1)
    job = MoAIRecipe(recipe_at(corpus, tmp_path / "gc", gradient_checkpointing=True, **settings), 1)
    job.setup()
    try:
        assert job.module.lm.is_activation_checkpointing
        checkpointed = job.train()
    finally:
        job.cleanup()
    torch.testing.assert_close(torch.tensor(checkpointed["losses"]), torch.tensor(plain["losses"]))
    a, b = load_trainable(plain["checkpoint"]), load_trainable(checkpointed["checkpoint"])
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
def test_bf16_autocast_on_gpu(corpus, tmp_path):
    result = run(recipe_at(corpus, tmp_path, micro_batch_size=2, max_steps=3, precision="bf16",
                           gradient_checkpointing=True, device="cuda"), 1)
    assert len(result["losses"]) == 3 and all(torch.isfinite(torch.tensor(result["losses"])))
    weights = load_trainable(result["checkpoint"])
    assert all(v.dtype == torch.float32 for v in weights.values())  # fp32 master weights under autocast
