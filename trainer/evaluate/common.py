"""What every benchmark plug-in shares: the normalized question record, the prepared folder's
writer (images + `id,path` manifest + questions.jsonl) and the answer-file reader.

A plug-in is a module with:
    NAME: str, MAX_NEW_TOKENS: int (MoAI's setting for it), METRICS: str (one line, for the README)
    read(data: Path, image_root: Path | None) -> Iterator[tuple[dict, Path | bytes]]
        (question record, its image as a file or encoded bytes), in the benchmark's official layout
    score(questions: list[dict], answers: dict[str, str]) -> dict[str, float]
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

QUESTIONS = "questions.jsonl"
MANIFEST = "manifest.csv"
IMAGES = "images"
SUFFIX_CHOICE = "Answer with the option's letter from the given choices directly."
SUFFIX_SHORT = "Answer the question using a single word or phrase."
LETTERS = "ABCDEFGHI"


def question(question_id, image_id: str, prompt: str, answer=None, options: dict | None = None, **meta) -> dict:
    """One normalized question: ids as strings (predictions are matched on them), the prompt exactly
    as MoAI phrases it, the answer key, the lettered options of a choice question, scoring metadata."""
    return {"question_id": str(question_id), "image_id": str(image_id), "prompt": prompt, "answer": answer,
            "options": options, "meta": meta}


def lettered(choices: list[str]) -> dict[str, str]:
    return {LETTERS[i]: str(c) for i, c in enumerate(choices)}


def image_id_for(data: bytes) -> str:
    """A content id for images that come as bytes (MMBench's base64 column repeats one image for
    every circular copy; the pipeline annotates it once)."""
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        ext = {"JPEG": ".jpg", "PNG": ".png"}.get(im.format or "", f".{(im.format or 'img').lower()}")
    return hashlib.sha1(data).hexdigest()[:16] + ext


class PreparedWriter:
    """Writes DIR/images/<image_id>, DIR/manifest.csv (`id,path`) and DIR/questions.jsonl."""

    def __init__(self, out: Path):
        self.out = Path(out)
        (self.out / IMAGES).mkdir(parents=True, exist_ok=True)
        self.images: dict[str, str] = {}
        self.questions: list[dict] = []

    def add(self, record: dict, image: Path | bytes) -> None:
        image_id = record["image_id"]
        if image_id not in self.images:
            target = self.out / IMAGES / image_id
            if isinstance(image, bytes):
                target.write_bytes(image)
            else:
                if not Path(image).is_file():
                    raise FileNotFoundError(f"image {image} of question {record['question_id']} does not exist")
                if not target.exists():
                    try:  # a hard link costs nothing and survives the original being moved
                        os.link(image, target)
                    except OSError:
                        shutil.copyfile(image, target)
            self.images[image_id] = f"{IMAGES}/{image_id}"
        self.questions.append(record)

    def close(self) -> None:
        ids = [q["question_id"] for q in self.questions]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"question id {dup!r} occurs more than once")
        with open(self.out / MANIFEST, "w") as f:
            f.write("id,path\n")
            for image_id, path in sorted(self.images.items()):
                f.write(f"{_csv(image_id)},{_csv(path)}\n")
        with open(self.out / QUESTIONS, "w") as f:
            for q in self.questions:
                f.write(json.dumps(q, ensure_ascii=False) + "\n")


def _csv(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON object per line: {err}") from err
    return records


def read_answers(path: str | os.PathLike) -> dict[str, str]:
    """LLaVA's answer-file convention: JSONL with at least `question_id` and `text` (the raw answer);
    a JSON list of the same objects is read too. The last answer of a repeated id wins."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    text = path.read_text()
    records = json.loads(text) if text.lstrip().startswith("[") else read_jsonl(path)
    answers = {}
    for n, rec in enumerate(records, 1):
        if not isinstance(rec, dict) or "question_id" not in rec or "text" not in rec:
            raise ValueError(f"{path}: record {n} needs 'question_id' and 'text', got {str(rec)[:80]}")
        answers[str(rec["question_id"])] = str(rec["text"])
    return answers
