"""POPE: yes/no questions about objects in COCO val2014 images, three splits (random, popular,
adversarial) of `coco_pope_<split>.json` (one JSON object per line: question_id, image, text, label).

Prompt (MoAI): "<text>\nAnswer the question using a single word or phrase."; 5 new tokens.
Scoring (POPE's / LLaVA's eval_pope): keep the first sentence (up to the first '.'), drop commas,
split on spaces; the answer is "no" if a word is exactly "no", "No" or "not", else "yes".
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import SUFFIX_SHORT, question

NAME = "pope"
MAX_NEW_TOKENS = 5
SPLITS = ("random", "popular", "adversarial")
METRICS = "per split and mean: accuracy, precision, recall, f1, yes_ratio (0-1)"


def _split_files(data: Path) -> list[tuple[str, Path]]:
    if data.is_file():
        split = next((s for s in SPLITS if s in data.name), data.stem)
        return [(split, data)]
    found = [(s, f) for s in SPLITS for f in (data / f"coco_pope_{s}.json", data / f"coco_pope_{s}.jsonl")
             if f.is_file()]
    if not found:
        raise FileNotFoundError(f"{data}: no coco_pope_{{random,popular,adversarial}}.json(l)")
    return found


def read(data: Path, image_root: Path | None):
    for split, path in _split_files(data):
        root = image_root or path.parent
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if not {"question_id", "image", "text", "label"} <= set(rec):
                raise ValueError(f"{path}:{n}: a POPE line needs question_id, image, text, label")
            record = question(f"{split}/{rec['question_id']}", rec["image"], f"{rec['text']}\n{SUFFIX_SHORT}",
                              answer=rec["label"].strip().lower(), split=split)
            yield record, root / rec["image"]


def parse_yes_no(answer: str) -> str:
    text = answer.lower()
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _metrics(pairs: list[tuple[str, str]]) -> dict[str, float]:
    tp = sum(p == "yes" and t == "yes" for p, t in pairs)
    fp = sum(p == "yes" and t == "no" for p, t in pairs)
    tn = sum(p == "no" and t == "no" for p, t in pairs)
    fn = sum(p == "no" and t == "yes" for p, t in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(pairs), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / len(pairs)}


def score(questions: list[dict], answers: dict[str, str]) -> dict[str, float]:
    by_split: dict[str, list[tuple[str, str]]] = {}
    for q in questions:
        by_split.setdefault(q["meta"]["split"], []).append(
            (parse_yes_no(answers.get(q["question_id"], "")), q["answer"]))
    scores = {}
    for split in sorted(by_split, key=lambda s: SPLITS.index(s) if s in SPLITS else len(SPLITS)):
        scores.update({f"{split}/{k}": v for k, v in _metrics(by_split[split]).items()})
    for metric in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
        scores[f"mean/{metric}"] = sum(scores[f"{s}/{metric}"] for s in by_split) / len(by_split)
    return scores
