"""Tiny benchmark files in each benchmark's official layout, images drawn by code (trainer.synthetic.render)."""
from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from trainer.synthetic import render


def photo(path: Path, shape: str = "circle", colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    render(shape, colour)[0].save(path)
    return path


def write_pope(root: Path) -> tuple[Path, Path]:
    """(questions folder, image root): the three split files apart from the COCO images."""
    images = root / "val2014"
    names = [f"COCO_val2014_{i:012d}.jpg" for i in (1, 2)]
    for name, shape in zip(names, ("circle", "square")):
        photo(images / name, shape)
    for split in ("random", "popular", "adversarial"):
        lines = [{"question_id": k + 1, "image": names[k % 2], "text": f"Is there a {obj} in the image?",
                  "label": label} for k, (obj, label) in enumerate([("circle", "yes"), ("circle", "no"),
                                                                   ("square", "no"), ("square", "yes")])]
        (root / "pope").mkdir(parents=True, exist_ok=True)
        (root / "pope" / f"coco_pope_{split}.json").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return root / "pope", images


def write_mme(root: Path) -> Path:
    base = root / "MME_Benchmark_release_version"
    photo(base / "existence" / "000000006040.jpg")          # images and texts side by side
    (base / "existence" / "000000006040.txt").write_text(
        "Is there a circle in this image? Please answer yes or no.\tYes\n"
        "Is there a dog in this image? Please answer yes or no.\tNo\n")
    photo(base / "artwork" / "images" / "10002.jpg", "square")  # images/ + questions_answers_YN/
    (base / "artwork" / "questions_answers_YN").mkdir(parents=True)
    (base / "artwork" / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork a square? Please answer yes or no.\tYes\n"
        "Is this artwork a circle? Please answer yes or no.\tNo\n")
    photo(base / "code_reasoning" / "0001.png", "triangle", "blue")
    (base / "code_reasoning" / "0001.txt").write_text(
        "Is the output 3? Please answer yes or no.\tNo\nIs the output 4? Please answer yes or no.\tYes\n")
    return base


def write_textvqa(root: Path) -> tuple[Path, Path]:
    images = root / "train_images"
    photo(images / "003a8ae2ef43b901.jpg")
    data = {"dataset_name": "textvqa", "dataset_type": "val", "data": [
        {"question_id": 34602, "image_id": "003a8ae2ef43b901", "question": "what is written on the sign?",
         "answers": ["stop"] * 7 + ["stop sign"] * 3},
        {"question_id": 34603, "image_id": "003a8ae2ef43b901", "question": "how many shapes?",
         "answers": ["one"] * 5 + ["1"] * 5}]}
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    return root / "TextVQA_0.5.1_val.json", images


def _b64(shape: str, colour: str) -> str:
    buffer = io.BytesIO()
    render(shape, colour)[0].save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_mmbench(root: Path) -> Path:
    """One question asked twice: the original (index 7) and a circular copy (index 1000007) with the
    options rotated, whose `image` names the original's index as the circular TSVs do; plus a
    question with a hint and three options."""
    rows = [{"index": 7, "question": "What shape is shown?", "hint": "nan", "A": "circle", "B": "square",
             "C": "triangle", "D": "star", "answer": "A", "category": "shape", "image": _b64("circle", "red")},
            {"index": 1000007, "question": "What shape is shown?", "hint": "nan", "A": "square", "B": "triangle",
             "C": "star", "D": "circle", "answer": "D", "category": "shape", "image": "7"},
            {"index": 9, "question": "Which colour?", "hint": "Look at the shape.", "A": "red", "B": "green",
             "C": "blue", "D": "nan", "answer": "C", "category": "colour", "image": _b64("square", "blue")}]
    path = root / "mmbench_dev_20230712.tsv"
    root.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_seed(root: Path) -> tuple[Path, Path]:
    photo(root / "SEED-Bench-image" / "1454426_2591111986.jpg")
    data = {"questions": [
        {"question_id": "101669", "data_id": "1454426_2591111986.jpg", "data_type": "image",
         "question": "What shape is in the image?", "choice_a": "circle", "choice_b": "square",
         "choice_c": "triangle", "choice_d": "star", "answer": "A", "question_type_id": 1},
        {"question_id": "v1", "data_id": "clip.mp4", "data_type": "video", "question": "What happens?",
         "choice_a": "a", "choice_b": "b", "choice_c": "c", "choice_d": "d", "answer": "B",
         "question_type_id": 10}]}
    (root / "SEED-Bench.json").write_text(json.dumps(data))
    return root / "SEED-Bench.json", root / "SEED-Bench-image"


def write_scienceqa(root: Path) -> Path:
    problems = {
        "5": {"question": "Which shape is this?", "choices": ["square", "circle"], "answer": 1,
              "hint": "A child drew a shape.", "image": "image.png", "split": "test", "subject": "natural science"},
        "6": {"question": "Which word rhymes with cat?", "choices": ["hat", "dog", "sun"], "answer": 0,
              "hint": "", "image": None, "split": "test", "subject": "language science"},   # no image: skipped
        "8": {"question": "Which colour?", "choices": ["red", "blue"], "answer": 0, "hint": "",
              "image": "image.png", "split": "val", "subject": "natural science"}}          # not test
    root.mkdir(parents=True, exist_ok=True)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"test": ["5", "6"], "val": ["8"], "train": []}))
    photo(root / "images" / "test" / "5" / "image.png")
    return root


def write_ai2d(root: Path) -> Path:
    photo(root / "images" / "4.png", "triangle")
    data = [{"imageName": "4.png", "question": "Which shape is drawn?",
             "metadata": {"questionId": "4.png-0", "answerTexts": ["circle", "square", "triangle", "star"],
                          "correctAnswer": 2}}]
    (root / "ai2d_test.json").write_text(json.dumps(data))
    return root / "ai2d_test.json"
