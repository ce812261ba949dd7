"""`trainer evaluate score`: any answer file (LLaVA's JSONL: question_id, text) -> scores.json + table."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import BENCHMARKS, benchmark
from .common import read_answers, read_jsonl

SCORES = "scores.json"


def score(name: str, questions: list[dict], answers: dict[str, str]) -> dict[str, float]:
    """The benchmark's metrics, plus how many questions there were and how many had no answer
    (scored as an empty answer, so a partial run never looks better than it is)."""
    other = {q.get("benchmark", name) for q in questions} - {name}
    if other:
        raise ValueError(f"the questions were prepared for {sorted(other)}, not {name!r}")
    keyless = [q["question_id"] for q in questions if q.get("answer") is None]
    if keyless:
        raise ValueError(f"{len(keyless)} questions have no answer key (e.g. {keyless[0]!r}: a test split?); "
                         "score those on the benchmark's own server")
    ids = {q["question_id"] for q in questions}
    if answers and not ids & set(answers):
        raise ValueError(f"none of the {len(answers)} predictions is for a question here (their ids look like "
                         f"{next(iter(answers))!r}, the questions' like {next(iter(ids))!r})")
    scores = benchmark(name).score(questions, answers)
    scores["questions"] = float(len(questions))
    scores["missing_predictions"] = float(sum(q["question_id"] not in answers for q in questions))
    return scores


def table(name: str, scores: dict[str, float]) -> str:
    width = max(len(k) for k in scores)
    lines = [f"{name} scores", "-" * (width + 12)]
    for key, value in scores.items():
        text = f"{value:.0f}" if key in ("questions", "missing_predictions", "unparsed") else f"{value:.4f}"
        if name == "mme" and key not in ("questions", "missing_predictions"):
            text = f"{value:.2f}"
        lines.append(f"{key:<{width}}  {text:>10}")
    return "\n".join(lines)


def write_scores(name: str, questions_file: Path, predictions: Path, out: Path | None = None) -> Path:
    scores = score(name, read_jsonl(questions_file), read_answers(predictions))
    path = Path(out or predictions.parent) / SCORES
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores, indent=2) + "\n")
    print(table(name, scores))
    print(f"scores: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainer evaluate score", description=__doc__)
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument("--questions", required=True, help="questions.jsonl written by `prepare`")
    parser.add_argument("--predictions", required=True, help="JSONL answers: question_id, text")
    parser.add_argument("--out", help="folder for scores.json (default: beside the predictions)")
    args = parser.parse_args(argv)
    write_scores(args.benchmark, Path(args.questions), Path(args.predictions), args.out and Path(args.out))
    return 0
