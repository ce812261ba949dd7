"""Questions and answers about a scene, in LLaVA conversation format, one question per entry.

Types: existence, position, relation, text, counting. Every answer is derived from the scene's
ground truth; an entry also carries `question_type` (LLaVA readers ignore unknown keys).
"""
from __future__ import annotations

import numpy as np

from .scenes import OBJECT_KINDS, Scene

QUESTION_TYPES = ("existence", "position", "relation", "text", "counting")
PLURALS = {name: plural for name, _, plural in OBJECT_KINDS}
KINDS = tuple(name for name, _, _ in OBJECT_KINDS)


def scene_questions(scene: Scene, seed: int) -> list[tuple[str, str, str]]:
    """(question_type, question, answer) triples for one scene, deterministic in (scene, seed)."""
    rng = np.random.default_rng([seed, int(scene.scene_id.split("_")[-1]), 7])
    present = sorted({o.kind for o in scene.objects})
    absent = [k for k in KINDS if k not in present]
    unique = [k for k in present if scene.count(k) == 1]
    out = [("existence", f"Is there a {_pick(rng, present)} in the image?", "yes")]
    if absent:
        out.append(("existence", f"Is there a {_pick(rng, absent)} in the image?", "no"))
    if unique:
        kind = _pick(rng, unique)
        obj = next(o for o in scene.objects if o.kind == kind)
        out.append(("position", f"Where is the {kind}?", obj.position))
    # The object asked about must be the only one of its kind; the answer's kind may repeat.
    asks = [(i, j, "below") for i, j in scene.over_pairs() if scene.count(scene.objects[j].kind) == 1]
    asks += [(i, j, "above") for i, j in scene.over_pairs() if scene.count(scene.objects[i].kind) == 1]
    if asks:
        i, j, which = asks[int(rng.integers(len(asks)))]
        upper, lower = scene.objects[i].kind, scene.objects[j].kind
        if which == "below":
            out.append(("relation", f"What is over the {lower}?", upper))
        else:
            out.append(("relation", f"What is the {upper} over?", lower))
    out.append(("text", "What does the sign say?", scene.sign_word))
    kind = _pick(rng, KINDS)
    out.append(("counting", f"How many {PLURALS[kind]} are there?", str(scene.count(kind))))
    return out


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def conversation(scene: Scene, index: int, question_type: str, question: str, answer: str) -> dict:
    """One LLaVA entry: `<image>` then the question in the human turn, the answer in the gpt turn."""
    return {
        "id": f"{scene.scene_id}-q{index}",
        "image": f"{scene.scene_id}.png",
        "question_type": question_type,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def scene_conversations(scene: Scene, seed: int) -> list[dict]:
    return [conversation(scene, i, *qa) for i, qa in enumerate(scene_questions(scene, seed))]


def question_of(entry: dict) -> str:
    """The question text of an entry, without the `<image>` placeholder."""
    return entry["conversations"][0]["value"].replace("<image>", "").strip()


def answer_of(entry: dict) -> str:
    return entry["conversations"][1]["value"]
