"""The ablation runner end to end on a handful of scenes, and the pieces that keep its arms comparable."""
import json
from types import SimpleNamespace

import pytest
import torch

from trainer.ablation.arm import TrainBudget, WithoutMixers, clean_answer, model_inputs, step_plan, train_stage
from trainer.ablation.run import ARMS, AblationConfig, main
from trainer.data import collate


def test_step_plan_is_shared_by_arms_and_covers_epochs():
    lengths = [5 + i % 7 for i in range(50)]
    plan = step_plan(lengths, 8, 1.5, seed=3, stage=1)
    assert plan == step_plan(lengths, 8, 1.5, seed=3, stage=1)
    assert len(plan) == round(1.5 * (50 // 8))
    first_epoch = [i for batch in plan[:50 // 8] for i in batch]
    assert len(first_epoch) == len(set(first_epoch)) == 48
    assert plan != step_plan(lengths, 8, 1.5, seed=3, stage=2)


def test_text_warmup_draws_the_first_steps_from_text_questions_only():
    """--text-warmup-steps: a stage's first batches hold text questions only; the plan keeps its
    length and then goes on as without the warm-up (the same for every arm: it depends on no arm)."""
    lengths = [5 + i % 7 for i in range(100)]
    text = list(range(0, 100, 5))
    plain = step_plan(lengths, 8, 2, seed=0, stage=1)
    plan = step_plan(lengths, 8, 2, seed=0, stage=1, warmup=text, warmup_steps=6)
    assert len(plan) == len(plain) == 24
    assert all(i in text for batch in plan[:6] for i in batch)
    assert plan[6:] == plain[:18]
    assert step_plan(lengths, 8, 2, seed=0, stage=1, warmup=text, warmup_steps=0) == plain
    with pytest.raises(ValueError, match="text_warmup_steps"):
        TrainBudget(text_warmup_steps=-1)


def test_clean_answer_stops_at_end_of_turn():
    tokenizer = SimpleNamespace(eos_token="</s>", pad_token="<pad>")
    assert clean_answer(" top left</s><pad><pad>", tokenizer) == "top left"
    assert clean_answer("yes\nUSER: no") == "yes"
    assert clean_answer("PIZZA<|im_end|>\n") == "PIZZA"


def test_config_rejects_unknown_arms():
    with pytest.raises(ValueError, match="arms"):
        AblationConfig(arms=("moai", "vision-only"))


TINY = ["--train-scenes", "12", "--heldout-scenes", "4", "--batch-size", "4", "--image-size", "42",
        "--stage1-epochs", "1", "--stage2-epochs", "1", "--lm-width", "32", "--lm-layers", "2", "--lm-steps", "5",
        "--mixer-layers", "0", "1", "--num-latents", "8", "--text-warmup-steps", "2"]


def test_ablation_runs_end_to_end(tmp_path, capsys):
    """Tiny corpus and budget: phase 0, then every arm trains on the frozen LM, answers every
    held-out question, and is scored; arms run in separate commands merge into one report; arms
    run one after another (--jobs 1) or side by side in worker processes (--jobs 2)."""
    rc = main(["--out", str(tmp_path), *TINY, "--arms", "moai", "no-aux", "--jobs", "1"])
    assert rc == 0
    lm_files = {p.name: p.read_bytes() for p in (tmp_path / "lm").iterdir() if p.is_file()}
    capsys.readouterr()
    rc = main(["--out", str(tmp_path), *TINY, "--arms", "no-mixer", "aux-in-prompt", "--no-probes", "--jobs", "2"])
    assert rc == 0
    table = capsys.readouterr().out
    # phase 0 ran once (cached) and no arm changed the LM: it is frozen
    assert {p.name: p.read_bytes() for p in (tmp_path / "lm").iterdir() if p.is_file()} == lm_files
    header = next(line for line in table.splitlines() if line.startswith("| question type |"))
    assert header.endswith(" | answer prior |")  # the prior is a column of the table, not just a footnote
    for column in ("text LM + aux (phase 0)", *ARMS):
        assert f"| {column} |" in header
    heldout = json.loads((tmp_path / "corpus" / "heldout.json").read_text())
    for arm in ARMS:
        answers = [json.loads(line) for line in (tmp_path / "answers" / f"{arm}.jsonl").read_text().splitlines()]
        assert sorted(a["id"] for a in answers) == sorted(e["id"] for e in heldout)
    assert f"| all | {len(heldout)} |" in table
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["arms"]) == list(ARMS)  # canonical order, whichever arm finished first
    gates = results["arms"]["moai"]["gates"]
    assert sorted(int(k) for k in gates) == [0, 1]
    for sides in gates.values():
        for side in ("image", "language"):
            assert sum(sides[side]) == pytest.approx(1.0, abs=1e-4)
    assert "gates" not in results["arms"]["no-mixer"] and "probes" not in results["arms"]["aux-in-prompt"]
    for arm in ("moai", "no-aux"):
        assert all(0 < v < 10 for v in results["arms"][arm]["mixer_effect"].values())
        assert 0 <= results["arms"][arm]["probes"]["heldout"] <= 1
        assert 0 <= results["arms"][arm]["probes_before"]["heldout"] <= 1
    assert set(results["arms"]["aux-in-prompt"]["answer_loss"]) >= {"text", "all"}
    for arm in ARMS:  # the logit lens: one reading per LM layer (2 here)
        lens = results["arms"][arm]["answer_lens"]
        assert sorted(lens) == ["0", "1"] and all(0 <= v["top1"] <= 1 and v["mean_rank"] >= 0 for v in lens.values())
    assert sorted(results["phase0_reading"]) == ["0", "1"]
    assert "after layer 1" in table and "reads the sign word" in table
    all_row = next(line for line in table.splitlines() if line.startswith("| all |"))
    assert all_row.count("|") == header.count("|") and all_row.rstrip(" |").endswith("%")
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["--out", str(tmp_path), "--report"]) == 0
    assert capsys.readouterr().out == table


def test_aux_in_prompt_puts_the_aux_text_before_the_question():
    from trainer.ablation.run import with_aux_in_prompt

    entry = {"id": "s-q0", "image": "s.png", "question_type": "text",
             "conversations": [{"from": "human", "value": "<image>\nWhat does the sign say?"},
                               {"from": "gpt", "value": "CAFE"}]}
    out = with_aux_in_prompt([entry], {"s.png": "The image includes text descriptions: CAFE."})[0]
    assert out["conversations"][0]["value"] == \
        "<image>\nThe image includes text descriptions: CAFE.\nWhat does the sign say?"
    assert out["conversations"][1] == entry["conversations"][1] and entry["conversations"][0]["value"].count("\n") == 1


class ListDataset:
    """What train_stage reads from a feature cache: items and their sample records."""

    def __init__(self, items):
        self.items = items
        self.samples = [{"sample_id": f"s{i}", "input_ids": it["input_ids"].tolist()} for i, it in enumerate(items)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def tiny_items(moai, n=8):
    tok = moai.tokenizer
    ids = tok("<s>USER: ", add_special_tokens=False)["input_ids"] + [moai.image_token_id] + \
        tok("\nWhat?\nASSISTANT: yes</s>", add_special_tokens=False)["input_ids"]
    labels = torch.tensor(ids)
    labels[:-4] = -100
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.tensor(ids), "labels": labels, "aux_input_ids": torch.tensor(ids[:5]),
             "image_features": torch.randn(9, 32, generator=g), "ps_features": torch.randn(9, 32, generator=g)}
            for _ in range(n)]


@pytest.mark.parametrize("arm", ["moai", "no-mixer"])
def test_arms_train_their_parts_and_never_the_lm(tmp_path, arm):
    """train_stage on the frozen LM: no-mixer (and aux-in-prompt) train the connector only, moai
    also the Compressor and Mixers (gates in stage 2); the LM and CLIP never change."""
    from trainer.model import MoAIModel
    from trainer.model.tiny import tiny_config

    torch.manual_seed(0)
    moai = MoAIModel.from_config(tiny_config(tmp_path, image_size=42))
    model = WithoutMixers(moai) if arm == "no-mixer" else moai
    before = {k: v.clone() for k, v in moai.state_dict().items()}
    dataset = ListDataset(tiny_items(moai))
    budget = TrainBudget(batch_size=4, stage1_epochs=1, stage2_epochs=1)
    for stage in (1, 2):
        losses = train_stage(model, dataset, stage, budget, 0, [10] * len(dataset), log=lambda m: None)
        assert len(losses) == 2
    changed = {k for k, v in moai.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("connector.") for k in changed)
    assert not any(k.startswith(("lm.", "vision.")) for k in changed)
    moai_parts = {k for k in changed if k.startswith(("compressor.", "mixers."))}
    if arm == "no-mixer":
        assert not moai_parts
        assert model(**model_inputs(collate(dataset.items[:2], 0))).gate_weights == {}
    else:
        assert any(k.startswith("compressor.") for k in moai_parts) and any("_gate." in k for k in moai_parts)
    with pytest.raises(ValueError, match="lengths"):
        train_stage(model, dataset, 1, budget, 0, [10], log=lambda m: None)
    batch = model_inputs(collate(dataset.items[:2], 0))
    batch.pop("labels")
    tokens = model.generate(max_new_tokens=3, **batch)
    assert tokens.shape[0] == 2 and tokens.shape[1] <= 3


def test_expert_output_scale_is_opt_in_and_learns(tmp_path):
    """--expert-output-scale (not MoAI): off by default; on, every expert gets a trainable gain,
    at 0 the Mixers are the identity, at 1 the model computes exactly what it did without it."""
    from trainer.ablation.arm import add_expert_output_gains
    from trainer.model import MoAIModel
    from trainer.model.tiny import tiny_config

    assert AblationConfig().expert_output_scale is False
    torch.manual_seed(0)
    moai = MoAIModel.from_config(tiny_config(tmp_path, image_size=42))
    dataset = ListDataset(tiny_items(moai))
    batch = model_inputs(collate(dataset.items[:2], 0))
    moai.set_stage(2)
    plain = moai(**batch).loss.item()
    assert add_expert_output_gains(moai) == 6 * len(moai.mixers)
    gains = [p for n, p in moai.named_parameters() if n.endswith(".gain")]
    assert len(gains) == 6 * len(moai.mixers) and all(".mixers." in f".{n}" for n, _ in moai.named_parameters()
                                                      if n.endswith(".gain"))
    zero = moai(**batch).loss.item()
    assert zero != plain  # the gain changes the output: the experts' attention is switched off
    with torch.no_grad():
        for g in gains:
            g.fill_(1.0)
    assert moai(**batch).loss.item() == pytest.approx(plain, abs=1e-6)
    with torch.no_grad():
        for g in gains:
            g.zero_()
    budget = TrainBudget(batch_size=4, stage1_epochs=1, stage2_epochs=1)
    for stage in (1, 2):
        train_stage(moai, dataset, stage, budget, 0, [10] * len(dataset), log=lambda m: None)
        assert all(g.requires_grad for g in gains)
    assert any(g.item() != 0 for g in gains)  # they learn from 0


def test_question_types_restrict_training_and_scoring(tmp_path, capsys):
    """`--question-types text`: the arm trains and answers on text questions only, and the table
    shows its other types as not asked."""
    rc = main(["--out", str(tmp_path), *TINY, "--arms", "no-mixer", "--question-types", "text", "--no-probes",
               "--jobs", "1", "--stage2-epochs", "0"])
    assert rc == 0
    table = capsys.readouterr().out
    heldout = json.loads((tmp_path / "corpus" / "heldout.json").read_text())
    answers = [json.loads(line) for line in (tmp_path / "answers" / "no-mixer.jsonl").read_text().splitlines()]
    assert sorted(a["id"] for a in answers) == sorted(e["id"] for e in heldout if e["question_type"] == "text")
    header = next(line for line in table.splitlines() if line.startswith("| question type |")).split("|")
    existence = next(line for line in table.splitlines() if line.startswith("| existence |")).split("|")
    assert existence[header.index(" no-mixer ")].strip() == "–"
    with pytest.raises(ValueError, match="question_types"):
        AblationConfig(question_types=("colour",))


def test_of_types_keeps_the_samples_of_those_types():
    from trainer.ablation.arm import of_types

    class Records(list):
        samples = property(lambda self: list(self))

    dataset = Records({"sample_id": f"q{i}"} for i in range(5))
    entries = [{"id": f"q{i}", "question_type": "text" if i % 2 else "counting"} for i in range(5)]
    subset = of_types(dataset, entries, ("text",))
    assert [s["sample_id"] for s in subset.samples] == ["q1", "q3"] and subset.indices == [1, 3]
    assert of_types(dataset, entries, ("text", "counting")) is dataset


def test_a_new_image_size_rebuilds_the_caches_and_keeps_the_corpus_and_lm(tmp_path):
    """The image size is the caches' alone: changing it re-encodes the images, not the scenes or phase 0."""
    from trainer.cache import META_FILE

    args = ["--out", str(tmp_path), *TINY, "--arms", "no-mixer", "--question-types", "text", "--no-probes",
            "--jobs", "1", "--stage2-epochs", "0"]
    assert main(args) == 0
    kept = {p: p.read_bytes() for p in [tmp_path / "lm" / "model.safetensors", tmp_path / "corpus" / "train.json"]}
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    assert main([*args, "--image-size", "28"]) == 0  # 2 x 2 patches instead of 3 x 3
    assert {p: p.read_bytes() for p in kept} == kept and {p: p.stat().st_mtime_ns for p in kept} == stamps
    for cache in (tmp_path / "cache").iterdir():
        assert json.loads((cache / META_FILE).read_text())["model"]["image_size"] == 28
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["image_size"] == 28
