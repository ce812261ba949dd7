"""AI2D (test): the test JSON MoAI reads (a list of {imageName, question, metadata: {questionId,
answerTexts, correctAnswer (index)}}); images `<imageName>` under --image-root (default: `images/`
beside the JSON).

Prompt (MoAI): "<question>\nA. <a>\nB. <b>\nC. <c>\nD. <d>\n\nAnswer with the option's letter from
the given choices directly." (a blank line before the instruction); 128 new tokens.
Scoring: choice accuracy with the shared option extraction (options.py).
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import SUFFIX_CHOICE, lettered, question
from .options import choice_scores

NAME = "ai2d"
MAX_NEW_TOKENS = 128
METRICS = "accuracy (0-1)"


def read(data: Path, image_root: Path | None):
    path = data / "ai2d_test.json" if data.is_dir() else data
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    root = image_root or path.parent / "images"
    for rec in json.loads(path.read_text()):
        meta = rec["metadata"]
        options = lettered(meta["answerTexts"])
        listed = "".join(f"{c}. {t}\n" for c, t in options.items())
        yield question(meta["questionId"], rec["imageName"], f"{rec['question']}\n{listed}\n{SUFFIX_CHOICE}",
                       answer="ABCDEFGH"[int(meta["correctAnswer"])], options=options), root / rec["imageName"]


def score(questions: list[dict], answers: dict[str, str]) -> dict[str, float]:
    return choice_scores(questions, answers)
