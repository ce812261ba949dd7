"""MMBench: a TSV (`index, question, hint, A..D, answer, category, image` = base64) as the official
release ships it. In the circular files every question is repeated with its options rotated; the
copies share `index % 1_000_000`, which is the question's group.

Prompt (MoAI): "[<hint>\n]<question>\nA. <a>\nB. <b>...\nAnswer with the option's letter from the
given choices directly."; 128 new tokens.
Scoring (MMBench's circular evaluation): the option is extracted from the free text (options.py);
a group counts only if every one of its rotations is right. `vanilla` is plain per-row accuracy.
"""
from __future__ import annotations

import base64
from pathlib import Path

from .common import LETTERS, SUFFIX_CHOICE, image_id_for, question
from .options import extract_option

NAME = "mmbench"
MAX_NEW_TOKENS = 128
METRICS = "accuracy (circular, 0-1), vanilla (per row), category/<name> (circular)"
GROUP = 1_000_000


def _missing(value) -> bool:
    return value is None or str(value).strip().lower() in ("", "nan", "none")


def read(data: Path, image_root: Path | None):
    import polars as pl

    if data.is_dir():
        files = sorted(data.glob("*.tsv"))
        if len(files) != 1:
            raise FileNotFoundError(f"{data}: expected one MMBench .tsv, found {[f.name for f in files]}")
        data = files[0]
    rows = pl.read_csv(data, separator="\t", infer_schema=False, quote_char='"').to_dicts()
    need = {"index", "question", "A", "B", "image"}
    if rows and not need <= set(rows[0]):
        raise ValueError(f"{data}: an MMBench TSV needs columns {sorted(need)}, got {sorted(rows[0])}")
    images = {str(r["index"]): r["image"] for r in rows}
    for r in rows:
        image = r["image"]
        if len(image) < 64 and image in images:  # circular copies may point at another row's image
            image = images[image]
        data_bytes = base64.b64decode(image)
        options = {c: str(r[c]) for c in LETTERS[:4] if c in r and not _missing(r[c])}
        text = r["question"] if _missing(r.get("hint")) else f"{r['hint']}\n{r['question']}"
        text += "".join(f"\n{c}. {t}" for c, t in options.items())
        index = int(float(r["index"]))
        answer = None if _missing(r.get("answer")) else r["answer"].strip()  # the test split has none
        yield question(index, image_id_for(data_bytes), f"{text}\n{SUFFIX_CHOICE}", answer=answer,
                       options=options, group=index % GROUP, category=r.get("category")), data_bytes


def score(questions: list[dict], answers: dict[str, str]) -> dict[str, float]:
    groups: dict[int, list[bool]] = {}
    category: dict[int, str] = {}
    unparsed = 0
    for q in questions:
        pick = extract_option(answers.get(q["question_id"], ""), q["options"])
        unparsed += pick is None
        groups.setdefault(q["meta"]["group"], []).append(pick == q["answer"])
        category[q["meta"]["group"]] = str(q["meta"].get("category"))
    rows = [ok for oks in groups.values() for ok in oks]
    scores = {"accuracy": sum(all(v) for v in groups.values()) / max(len(groups), 1),
              "vanilla": sum(rows) / max(len(rows), 1), "unparsed": float(unparsed)}
    for name in sorted(set(category.values())):
        members = [all(v) for g, v in groups.items() if category[g] == name]
        scores[f"category/{name}"] = sum(members) / len(members)
    return scores
