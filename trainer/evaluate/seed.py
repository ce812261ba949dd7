"""SEED-Bench, image split: `SEED-Bench.json` ({"questions": [{question_id, data_id, data_type,
question, choice_a..choice_d, answer, question_type_id}]}); only `data_type == "image"` questions;
images `<data_id>` under --image-root (its `SEED-Bench-image/`).

Prompt (MoAI): "<question>\nA. <a> B. <b> C. <c> D. <d>\nAnswer with the option's letter from the
given choices directly." (options on one line); 128 new tokens.
Scoring: choice accuracy with the shared option extraction (options.py), and per question type.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import SUFFIX_CHOICE, question
from .options import choice_scores

NAME = "seed"
MAX_NEW_TOKENS = 128
METRICS = "accuracy (0-1), type/<question_type_id>"


def read(data: Path, image_root: Path | None):
    path = data / "SEED-Bench.json" if data.is_dir() else data
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    root = image_root or path.parent / "SEED-Bench-image"
    for rec in json.loads(path.read_text())["questions"]:
        if rec.get("data_type") != "image":
            continue
        options = {c.upper(): rec[f"choice_{c}"] for c in "abcde" if f"choice_{c}" in rec}
        listed = " ".join(f"{c}. {t}" for c, t in options.items())
        yield question(rec["question_id"], rec["data_id"], f"{rec['question']}\n{listed}\n{SUFFIX_CHOICE}",
                       answer=rec["answer"].strip().upper(), options=options,
                       type=rec.get("question_type_id")), root / rec["data_id"]


def score(questions: list[dict], answers: dict[str, str]) -> dict[str, float]:
    return choice_scores(questions, answers, by="type")
