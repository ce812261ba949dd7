"""The VQA answer normalization TextVQA's evaluator applies to predictions and human answers alike:
lower case, commas / '?' dropped and "'s" split off, punctuation removed (or turned into a space
when it sits inside a word), periods removed unless they are a decimal point, number words zero to
ten turned into digits, the articles a/an/the dropped, and apostrophe-less contractions restored
("dont" -> "don't").
"""
from __future__ import annotations

import re
from itertools import combinations

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"\.(?!\d)")
# The contractions the evaluator restores; every spelling with some apostrophes left out maps to them.
# ("its", "were", "hell", "well", "id", "shell" are words in their own right: the evaluator leaves them.)
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll let's ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've she's should've shouldn't "
    "shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've someone'll "
    "someone's something'd something'd've something'll that's there'd there'd've there're there's they'd "
    "they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've "
    "when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've "
    "wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've").split()


def _spellings(word: str) -> set[str]:
    """Every spelling of `word` with one or more of its apostrophes left out."""
    spots = [i for i, c in enumerate(word) if c == "'"]
    out = set()
    for k in range(1, len(spots) + 1):
        for drop in combinations(spots, k):
            out.add("".join(c for i, c in enumerate(word) if i not in drop))
    return out


_CONTRACTIONS = {spelling: word for word in _CONTRACTED for spelling in _spellings(word)
                 if spelling not in {"its", "were", "hell", "well", "id", "shell", "wed", "ill", "cant", "wont"}}
_CONTRACTIONS.update({"cant": "can't", "wont": "won't", "wed": "we'd"})  # the evaluator does restore these


def normalize(answer: str) -> str:
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _punctuation(text)
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def _punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if f"{p} " in text or f" {p}" in text or _DIGIT_COMMA.search(text):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    """min(#humans who gave the answer / 3, 1), averaged over the 10 leave-one-out subsets of 9."""
    humans = [normalize(a) for a in human_answers]
    pred = normalize(prediction)
    accs = []
    for k in range(len(humans)):
        others = humans[:k] + humans[k + 1:]
        accs.append(min(1.0, sum(a == pred for a in others) / 3))
    return sum(accs) / len(accs) if accs else 0.0
