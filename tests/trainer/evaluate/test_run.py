"""`trainer evaluate run`: batched answers equal one-at-a-time answers, reruns resume, and questions
whose image has no usable annotation are counted, not dropped silently."""
import json

import pytest
import torch

from trainer.synthetic import write_corpus
from trainer.evaluate.common import question, read_jsonl
from trainer.evaluate.run import run
from trainer.recipe import build_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_root):
    root = tmp_path_factory.mktemp("evaluate-run")
    write_corpus(root, n_images=3)  # img0..img2.png annotated, broken.png an error row
    model_dir = root / "model"
    model = build_model({"tiny": str(tiny_root), "image_size": 112})
    model.set_stage(2)  # as `trainer train --stage 2` leaves it: deterministic answers
    model.save_pretrained(model_dir)
    prompts = ["Is there a circle in the image?", "Is there a red square in the image? Look closely.", "Is it?"]
    qs = [question(f"random/{i}", f"img{i % 3}.png", f"{prompts[i % 3]}\nAnswer briefly.", answer="yes",
                   split="random") for i in range(5)]
    qs += [question("random/err", "broken.png", "Is there a dog?", answer="no", split="random"),
           question("random/gone", "not_annotated.png", "Is there a dog?", answer="no", split="random")]
    (root / "questions.jsonl").write_text("".join(json.dumps({**q, "benchmark": "pope"}) + "\n" for q in qs))
    return root, model_dir


def answers(path):
    return {r["question_id"]: r["text"] for r in read_jsonl(path)}


def test_batched_answers_equal_single_answers(setup, tiny_root, one_thread):
    from schemas import read_annotations
    from trainer.data import ANNOTATION_COLUMNS, PromptFormat
    from trainer.evaluate.run import answer_batch, plan
    root, _ = setup
    model = build_model({"tiny": str(tiny_root), "image_size": 112}).eval()
    model.set_stage(2)  # stage 1 draws its experts at random on every call
    todo, _ = plan(read_jsonl(root / "questions.jsonl"), read_annotations(root / "annotations",
                                                                         columns=ANNOTATION_COLUMNS), set())
    scores, generate = [], model.lm.generate

    def keep_scores(**kwargs):  # the first step's logits too
        out = generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        scores.append(out.scores[0])
        return out.sequences
    model.lm.generate = keep_scores
    single = [answer_batch(model, [it], PromptFormat(), 4)[0] for it in todo]
    batched = answer_batch(model, todo, PromptFormat(), 4)
    alone, together = torch.cat(scores[:-1]), scores[-1]                   # (5, V) each
    assert (alone[0] - alone[2]).abs().max() > 1e-3  # other image and prompt, other logits: the check has teeth
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)  # left / aux padding change nothing
    assert batched == single


def test_run_answers_in_batches_and_reports_skips(setup, tmp_path, one_thread):
    root, model = setup
    one = run("pope", root / "questions.jsonl", str(root / "annotations"), str(model), tmp_path / "one",
              batch_size=1, max_new_tokens=6)
    four = run("pope", root / "questions.jsonl", str(root / "annotations"), str(model), tmp_path / "four",
               batch_size=4, max_new_tokens=6)
    assert one["answered_now"] == four["answered_now"] == 5
    assert four["skipped"] == {"error_row": 1, "missing_annotation": 1, "missing_ps_map": 0}
    assert four["skipped_examples"]["error_row"] == ["random/err:broken.png"]
    single, batched = answers(tmp_path / "one" / "predictions.jsonl"), answers(tmp_path / "four" / "predictions.jsonl")
    assert set(batched) == {f"random/{i}" for i in range(5)}
    assert batched == single  # left padding and aux padding change no answer
    assert json.loads((tmp_path / "four" / "run_report.json").read_text())["skipped"]["error_row"] == 1


def test_a_rerun_answers_only_what_is_missing(setup, tmp_path, one_thread):
    root, model = setup
    args = ("pope", root / "questions.jsonl", str(root / "annotations"), str(model), tmp_path)
    run(*args, batch_size=2, max_new_tokens=3)
    predictions = tmp_path / "predictions.jsonl"
    full = predictions.read_text().splitlines()
    predictions.write_text("\n".join(full[:2]) + "\n")  # as if cut off after the first batch
    again = run(*args, batch_size=2, max_new_tokens=3)
    assert again["answered_before"] == 2 and again["answered_now"] == 3
    assert sorted(predictions.read_text().splitlines()) == sorted(full)
    assert run(*args, batch_size=2, max_new_tokens=3)["answered_now"] == 0


def test_cli_run_scores_and_refuses_bad_input(setup, tmp_path, capsys):
    from trainer.cli import main as cli
    root, model = setup
    base = ["evaluate", "run", "--benchmark", "pope", "--questions", str(root / "questions.jsonl"),
            "--annotations", str(root / "annotations")]
    assert cli([*base, "--model", str(model), "--out", str(tmp_path), "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 without a usable annotation" in out and "random/accuracy" in out
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["questions"] == 7 and scores["missing_predictions"] == 2
    assert cli([*base, "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert cli(["evaluate", "run", "--benchmark", "mme", *base[4:], "--model", str(model), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a folder written by `trainer train`" in err and "prepared for ['pope'], not 'mme'" in err


def test_run_reads_cached_features_and_answers_alike(setup, tmp_path, one_thread, capsys):
    """`--cache`: images the `trainer cache` folder holds take their features from it, the others are
    encoded online, in separate batches; the answers are those of the all-online run."""
    from schemas import read_annotations
    from trainer.cache import build_cache
    from trainer.cli import main as cli
    from trainer.conversations import describe_conversations
    from trainer.data import ANNOTATION_COLUMNS
    from trainer.model import MoAIModel
    root, model_dir = setup
    table = read_annotations(root / "annotations", columns=ANNOTATION_COLUMNS)
    conversations = [c for c in describe_conversations(read_annotations(root / "annotations"))
                     if c["image"] in ("img0.png", "img1.png")]
    model = MoAIModel.from_pretrained(model_dir)
    build_cache(model, table, conversations, tmp_path / "cache", dtype="float32", progress=False)
    args = ("pope", root / "questions.jsonl", str(root / "annotations"), str(model_dir))
    online = run(*args, tmp_path / "online", batch_size=4, max_new_tokens=6)
    cached = run(*args, tmp_path / "cached", batch_size=4, max_new_tokens=6, cache=str(tmp_path / "cache"))
    assert online["features_from_cache"] == 0 and cached["features_from_cache"] == 4  # random/0,1,3,4
    assert answers(tmp_path / "cached" / "predictions.jsonl") == answers(tmp_path / "online" / "predictions.jsonl")

    import trainer.evaluate.run as run_module
    calls, real = [], run_module.answer_batch
    run_module.answer_batch = lambda m, batch, p, n, vision=None: calls.append(
        (len(batch), vision is not None)) or real(m, batch, p, n, vision)
    try:
        run(*args, tmp_path / "spy", batch_size=4, max_new_tokens=2, cache=str(tmp_path / "cache"))
    finally:
        run_module.answer_batch = real
    assert sorted(calls) == [(1, False), (4, True)]  # never a batch mixing cached and online images

    other = json.loads((tmp_path / "cache" / "meta.json").read_text())
    other["model"]["image_size"] += 14  # a cache made for another vision tower is refused
    (tmp_path / "cache" / "meta.json").write_text(json.dumps(other))
    base = ["evaluate", "run", "--benchmark", "pope", "--questions", str(root / "questions.jsonl"),
            "--annotations", str(root / "annotations"), "--model", str(model_dir), "--out", str(tmp_path / "x")]
    assert cli([*base, "--cache", str(tmp_path / "cache")]) == 2
    assert "feature cache was made with image_size" in capsys.readouterr().err
    assert cli([*base, "--cache", str(tmp_path / "nowhere")]) == 2
    assert "is not a feature cache" in capsys.readouterr().err
