"""Exact-match accuracy per question type.

Answers are compared after normalization (lower case, surrounding whitespace and a trailing
period removed, inner whitespace collapsed). A question without an answer counts as wrong.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .questions import QUESTION_TYPES, answer_of


@dataclass(frozen=True)
class TypeScore:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")


def normalize(answer: str) -> str:
    return " ".join(answer.strip().lower().rstrip(".").split())


def score(entries: list[dict], answers: dict[str, str]) -> dict[str, TypeScore]:
    """Per question type (plus 'all'): how many of `entries` `answers` (id -> text) gets right."""
    correct = {t: 0 for t in QUESTION_TYPES}
    total = {t: 0 for t in QUESTION_TYPES}
    for entry in entries:
        kind = entry["question_type"]
        if kind not in total:
            raise ValueError(f"entry {entry['id']!r} has unknown question_type {kind!r}; "
                             f"expected one of {QUESTION_TYPES}")
        total[kind] += 1
        given = answers.get(entry["id"])
        correct[kind] += given is not None and normalize(given) == normalize(answer_of(entry))
    scores = {t: TypeScore(correct[t], total[t]) for t in QUESTION_TYPES}
    scores["all"] = TypeScore(sum(correct.values()), sum(total.values()))
    return scores


def read_answers(path: str | Path) -> dict[str, str]:
    """An answers file: JSON lines of {"id": ..., "answer": ...}."""
    answers = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        if "id" not in item or "answer" not in item:
            raise ValueError(f"{path}:{n}: each line needs 'id' and 'answer', got keys {sorted(item)}")
        answers[item["id"]] = item["answer"]
    return answers


def write_answers(answers: dict[str, str], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": k, "answer": v}) + "\n" for k, v in answers.items()))
    return path


def score_files(questions: str | Path, answers: str | Path) -> dict[str, TypeScore]:
    return score(json.loads(Path(questions).read_text()), read_answers(answers))
