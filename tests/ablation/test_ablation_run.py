"""The ablation runner end to end on a handful of scenes, and the pieces that keep its arms comparable."""
import json
from types import SimpleNamespace

import pytest
import torch

from trainer.ablation.arm import WithoutMixers, clean_answer, step_plan
from trainer.ablation.run import ARMS, AblationConfig, main


def test_step_plan_is_shared_by_arms_and_covers_epochs():
    lengths = [5 + i % 7 for i in range(50)]
    plan = step_plan(lengths, 8, 1.5, seed=3, stage=1)
    assert plan == step_plan(lengths, 8, 1.5, seed=3, stage=1)
    assert len(plan) == round(1.5 * (50 // 8))
    first_epoch = [i for batch in plan[:50 // 8] for i in batch]
    assert len(first_epoch) == len(set(first_epoch)) == 48
    assert plan != step_plan(lengths, 8, 1.5, seed=3, stage=2)


def test_clean_answer_stops_at_end_of_turn():
    tokenizer = SimpleNamespace(eos_token="</s>", pad_token="<pad>")
    assert clean_answer(" top left</s><pad><pad>", tokenizer) == "top left"
    assert clean_answer("yes\nUSER: no") == "yes"
    assert clean_answer("PIZZA<|im_end|>\n") == "PIZZA"


def test_config_rejects_unknown_arms():
    with pytest.raises(ValueError, match="arms"):
        AblationConfig(arms=("moai", "vision-only"))


def test_ablation_runs_end_to_end(tmp_path, capsys):
    """Tiny corpus and budget: every arm trains, answers every held-out question, and is scored;
    the no-mixer arm leaves the Compressor and Mixers untouched, the moai arm's gates are softmaxes."""
    rc = main(["--out", str(tmp_path), "--train-scenes", "12", "--heldout-scenes", "4", "--batch-size", "4",
               "--image-size", "42", "--stage1-epochs", "1", "--stage2-epochs", "1"])
    assert rc == 0
    table = capsys.readouterr().out
    for arm in ARMS:
        assert f"| {arm} " in table.splitlines()[4] + " "
    heldout = json.loads((tmp_path / "corpus" / "heldout.json").read_text())
    for arm in ARMS:
        answers = [json.loads(line) for line in (tmp_path / "answers" / f"{arm}.jsonl").read_text().splitlines()]
        assert sorted(a["id"] for a in answers) == sorted(e["id"] for e in heldout)
    assert f"| all | {len(heldout)} |" in table
    results = json.loads((tmp_path / "results.json").read_text())
    gates = results["moai"]["gates"]
    assert sorted(int(k) for k in gates) == [1, 3]
    for sides in gates.values():
        for side in ("image", "language"):
            assert sum(sides[side]) == pytest.approx(1.0, abs=1e-4)
    assert results["no-mixer"]["gates"] == {} == results["no-mixer"]["mixer_effect"]
    assert all(0 < v < 10 for v in results["moai"]["mixer_effect"].values())
    header = next(line for line in table.splitlines() if line.startswith("| question type |"))
    assert header.endswith(" | answer prior |")  # the prior is a column of the table, not just a footnote
    all_row = next(line for line in table.splitlines() if line.startswith("| all |"))
    assert all_row.count("|") == header.count("|") and all_row.rstrip(" |").endswith("%")
    assert main(["--out", str(tmp_path), "--report"]) == 0
    assert capsys.readouterr().out == table


def test_without_mixers_trains_only_connector_and_lm(tmp_path):
    from trainer.model import MoAIModel
    from trainer.model.tiny import tiny_config

    torch.manual_seed(0)
    moai = MoAIModel.from_config(tiny_config(tmp_path, image_size=42))
    model = WithoutMixers(moai)
    model.set_stage(1)
    model.lm.requires_grad_(True)
    before = {k: v.clone() for k, v in moai.state_dict().items()}
    tok = moai.tokenizer
    ids = tok("<s>USER: ", add_special_tokens=False)["input_ids"] + [moai.image_token_id] + \
        tok("\nWhat?\nASSISTANT: yes</s>", add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([ids, ids])
    labels = input_ids.clone()
    labels[:, :-4] = -100
    batch = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels,
                 image_features=torch.randn(2, 9, 32))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(**batch)
    assert out.gate_weights == {}
    out.loss.backward()
    optimizer.step()
    changed = {k for k, v in moai.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("connector.") for k in changed) and any(k.startswith("lm.") for k in changed)
    assert not any(k.startswith(("compressor.", "mixers.", "vision.")) for k in changed)
    tokens = model.generate(max_new_tokens=3, **{k: v for k, v in batch.items() if k != "labels"})
    assert tokens.shape[0] == 2 and tokens.shape[1] <= 3
