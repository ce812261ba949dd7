"""ScienceQA-IMG: `problems.json` ({pid: {question, choices, answer (index), hint, image, split, ...}})
+ `pid_splits.json`; the test split's questions that have an image; images `<split>/<pid>/image.png`
under --image-root (default: `images/` beside the JSON files).

Prompt (MoAI, on LLaVA's CQM-A form): "[Context: <hint>\n]<question>\nA. <a>\nB. <b>...\nAnswer
with the option's letter from the given choices directly."; 128 new tokens.
Scoring: choice accuracy with the shared option extraction (options.py), and per subject.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import SUFFIX_CHOICE, lettered, question
from .options import choice_scores

NAME = "scienceqa"
MAX_NEW_TOKENS = 128
METRICS = "accuracy (0-1), subject/<name>"


def read(data: Path, image_root: Path | None, split: str = "test"):
    problems_file, splits_file = data / "problems.json", data / "pid_splits.json"
    for f in (problems_file, splits_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} does not exist (ScienceQA's problems.json + pid_splits.json)")
    problems = json.loads(problems_file.read_text())
    root = image_root or data / "images"
    for pid in json.loads(splits_file.read_text())[split]:
        p = problems[str(pid)]
        if not p.get("image"):
            continue
        options = lettered(p["choices"])
        context = f"Context: {p['hint']}\n" if p.get("hint") else ""
        text = context + p["question"] + "".join(f"\n{c}. {t}" for c, t in options.items())
        image = root / split / str(pid) / p["image"]
        yield question(pid, f"{pid}_{p['image']}", f"{text}\n{SUFFIX_CHOICE}", answer="ABCDE"[p["answer"]],
                       options=options, subject=p.get("subject")), image


def score(questions: list[dict], answers: dict[str, str]) -> dict[str, float]:
    return choice_scores(questions, answers, by="subject")
