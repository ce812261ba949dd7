"""TextVQA (val): `TextVQA_0.5.1_val.json` ({"data": [{question_id, image_id, question, answers (10)}]}),
images `<image_id>.jpg` under --image-root (its `train_images/`; the val images live there).

Prompt (MoAI): "<question>\nAnswer the question using a single word or phrase."; 128 new tokens.
MoAI reads LLaVA's question file, whose questions also carry a "Reference OCR token: ..." line from
TextVQA's own OCR; we leave it out: our OCR annotator's text reaches the model as auxiliary text.
Scoring (TextVQA's evaluator): VQA accuracy, see vqa_answer.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import SUFFIX_SHORT, question
from .vqa_answer import vqa_accuracy

NAME = "textvqa"
MAX_NEW_TOKENS = 128
METRICS = "accuracy (VQA accuracy, 0-1)"


def read(data: Path, image_root: Path | None):
    path = data / "TextVQA_0.5.1_val.json" if data.is_dir() else data
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    root = image_root or path.parent / "train_images"
    for rec in json.loads(path.read_text())["data"]:
        image = f"{rec['image_id']}.jpg"
        yield question(rec["question_id"], image, f"{rec['question']}\n{SUFFIX_SHORT}",
                       answer=list(rec["answers"])), root / image


def score(questions: list[dict], answers: dict[str, str]) -> dict[str, float]:
    total = sum(vqa_accuracy(answers.get(q["question_id"], ""), q["answer"]) for q in questions)
    return {"accuracy": total / max(len(questions), 1)}
