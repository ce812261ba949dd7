"""MME: two yes/no questions per image over 14 subtasks, from `MME_Benchmark_release_version/`:
one folder per subtask holding either `images/` + `questions_answers_YN/` or the images and their
same-named `.txt` side by side; each `.txt` line is "question<TAB>Yes|No".

Prompt (MoAI, which reads LLaVA's `llava_mme.json`): the question without its closing "Please answer
yes or no.", then "\nAnswer the question using a single word or phrase."; 5 new tokens. (MoAI's
scorer strips that suffix and puts "Please answer yes or no." back to find the answer key.)
Scoring (MME's `calculation.py`): the lower-cased answer is yes/no if it is exactly that, else the
first of "yes" / "no" found in its first 4 characters, else "other" (wrong). Per subtask: acc =
right questions, acc+ = images with both questions right, both x100; score = acc + acc+;
perception = the sum of the 10 perception scores (max 2000), cognition of the 4 others (max 800).
"""
from __future__ import annotations

from pathlib import Path

from .common import SUFFIX_SHORT, question

NAME = "mme"
MAX_NEW_TOKENS = 5
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
METRICS = "perception, cognition (sums of scores); per subtask acc, acc_plus, score (points, x100)"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read(data: Path, image_root: Path | None):
    tasks = [d for d in sorted(data.iterdir()) if d.is_dir() and d.name in PERCEPTION + COGNITION]
    if not tasks:
        raise FileNotFoundError(f"{data}: no MME subtask folders ({', '.join(PERCEPTION + COGNITION)})")
    for task in tasks:
        split = (task / "images", task / "questions_answers_YN")
        image_dir, text_dir = split if split[0].is_dir() else (task, task)
        for text in sorted(text_dir.glob("*.txt")):
            image = next((image_dir / f"{text.stem}{s}" for s in IMAGE_SUFFIXES
                          if (image_dir / f"{text.stem}{s}").is_file()), None)
            if image is None:
                raise FileNotFoundError(f"{text}: no image {text.stem}.jpg/.png beside it")
            for k, line in enumerate(l for l in text.read_text().splitlines() if l.strip()):
                q, _, ans = line.rpartition("\t")
                if not q:
                    raise ValueError(f"{text}: line {line!r} is not 'question<TAB>answer'")
                prompt = q.strip().removesuffix("Please answer yes or no.").strip()
                yield question(f"{task.name}/{image.name}/{k}", f"{task.name}__{image.name}", f"{prompt}\n{SUFFIX_SHORT}",
                               answer=ans.strip().lower(), task=task.name, image=image.name), image


def parse_yes_no(answer: str) -> str:
    answer = answer.lower()
    if answer in ("yes", "no"):
        return answer
    return "yes" if "yes" in answer[:4] else "no" if "no" in answer[:4] else "other"


def score(questions: list[dict], answers: dict[str, str]) -> dict[str, float]:
    tasks: dict[str, dict[str, list[bool]]] = {}
    for q in questions:
        ok = parse_yes_no(answers.get(q["question_id"], "")) == q["answer"]
        tasks.setdefault(q["meta"]["task"], {}).setdefault(q["meta"]["image"], []).append(ok)
    scores = {"perception": 0.0, "cognition": 0.0}
    for task in [t for t in PERCEPTION + COGNITION if t in tasks]:
        images = tasks[task].values()
        acc = 100 * sum(map(sum, images)) / sum(map(len, images))
        acc_plus = 100 * sum(all(v) for v in images) / len(images)
        scores.update({f"{task}/acc": acc, f"{task}/acc_plus": acc_plus, f"{task}/score": acc + acc_plus})
        scores["perception" if task in PERCEPTION else "cognition"] += acc + acc_plus
    return scores
