"""Which option a free-text answer picks, shared by MMBench, SEED, ScienceQA and AI2D.

MMBench's rule (its `can_infer`): strip the punctuation `.()[],:;!*#{}`, split on spaces, and if
exactly one option letter appears as a word, that is the answer; else, if exactly one option's text
appears in the lower-cased answer, that one. MMBench then asks ChatGPT about what is left; we do not
call a remote model, and instead accept a whole answer that is one letter in either case ("b."), so
the score is deterministic and offline. Anything else (two letters, two option texts, nothing) is
unparsed and counts as wrong.
"""
from __future__ import annotations

import re

_PUNCT = re.compile(r"[.()\[\],:;!*#{}]")


def extract_option(answer: str, options: dict[str, str]) -> str | None:
    """The letter `answer` picks among `options` ({"A": text, ...}), or None when it cannot tell.

    >>> extract_option("I think it is (B)", {"A": "dog", "B": "cat"})
    'B'
    """
    words = _PUNCT.sub(" ", answer).split()
    letters = [letter for letter in options if letter in words]
    if len(letters) == 1:
        return letters[0]
    if len(words) == 1 and words[0].upper() in options:  # "b." / "b": a bare letter
        return words[0].upper()
    if not letters:
        lower = answer.lower()
        texts = [letter for letter, text in options.items() if str(text).lower() in lower]
        if len(texts) == 1:
            return texts[0]
    return None


def choice_scores(questions: list[dict], answers: dict[str, str], by: str | None = None) -> dict[str, float]:
    """Accuracy of the extracted option against `answer`, plus per-`meta[by]` accuracies and the
    count of unparsed answers. Questions without a prediction are scored as an empty answer."""
    right, unparsed, groups = 0, 0, {}
    for q in questions:
        pick = extract_option(answers.get(q["question_id"], ""), q["options"])
        unparsed += pick is None
        ok = pick == q["answer"]
        right += ok
        if by:
            key = str(q["meta"].get(by))
            hits, total = groups.get(key, (0, 0))
            groups[key] = (hits + ok, total + 1)
    scores = {"accuracy": right / max(len(questions), 1), "unparsed": float(unparsed)}
    scores.update({f"{by}/{key}": hits / total for key, (hits, total) in sorted(groups.items())})
    return scores
