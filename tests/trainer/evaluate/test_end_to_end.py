"""The README's evaluation flow on the tiny model: prepare -> pipeline run (tiny profile) ->
evaluate run -> evaluate score, on a POPE benchmark written in its official layout."""
import json

from pipeline.run import main as pipeline_run
from schemas import read_annotations
from tests.trainer.evaluate import layouts
from trainer.cli import main as cli
from trainer.recipe import build_model


def test_prepare_annotate_run_score(ray_here, tiny_root, tmp_path, capsys):
    data, images = layouts.write_pope(tmp_path / "pope-official")
    prepared = tmp_path / "pope"
    assert cli(["evaluate", "prepare", "--benchmark", "pope", "--data", str(data), "--image-root", str(images),
                "--out", str(prepared)]) == 0
    assert pipeline_run(["--config", "tiny", "--input", str(prepared / "manifest.csv"),
                         "--output", str(prepared / "annotations"),
                         "--set", f"tiny_workdir={tmp_path / 'tiny-models'}"]) == 0
    assert set(read_annotations(prepared / "annotations").column("status").to_pylist()) == {"ok"}
    model = tmp_path / "model"
    tiny = build_model({"tiny": str(tiny_root), "image_size": 112})
    tiny.set_stage(2)  # a stage-2 checkpoint, as `trainer train --stage 2` writes
    tiny.save_pretrained(model)

    results = tmp_path / "results"
    assert cli(["evaluate", "run", "--benchmark", "pope", "--questions", str(prepared / "questions.jsonl"),
                "--annotations", str(prepared / "annotations"), "--model", str(model), "--out", str(results),
                "--batch-size", "4"]) == 0
    predictions = [json.loads(line) for line in (results / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 12 and all(isinstance(p["text"], str) for p in predictions)
    report = json.loads((results / "run_report.json").read_text())
    assert report["answered_now"] == 12 and report["max_new_tokens"] == 5 and sum(report["skipped"].values()) == 0

    # score the same file again elsewhere, as one would another model's answers
    capsys.readouterr()
    assert cli(["evaluate", "score", "--benchmark", "pope", "--questions", str(prepared / "questions.jsonl"),
                "--predictions", str(results / "predictions.jsonl"), "--out", str(tmp_path / "rescored")]) == 0
    assert "mean/f1" in capsys.readouterr().out
    scores = json.loads((tmp_path / "rescored" / "scores.json").read_text())
    assert scores == json.loads((results / "scores.json").read_text())
    for split in ("random", "popular", "adversarial"):
        assert 0.0 <= scores[f"{split}/accuracy"] <= 1.0 and 0.0 <= scores[f"{split}/yes_ratio"] <= 1.0
    assert scores["questions"] == 12 and scores["missing_predictions"] == 0
