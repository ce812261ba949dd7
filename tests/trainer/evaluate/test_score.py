"""Scoring as the official scripts score, on crafted answers with hand-computed expectations."""
import json

import pytest

from trainer.evaluate import mme, mmbench, pope
from trainer.evaluate.common import question
from trainer.evaluate.options import choice_scores, extract_option
from trainer.evaluate.score import score
from trainer.evaluate.vqa_answer import normalize, vqa_accuracy

OPTIONS = {"A": "dog", "B": "cat", "C": "bird", "D": "red fish"}


@pytest.mark.parametrize("answer, expected", [
    ("B", "B"), ("b.", "B"), ("b", "B"), ("(C)", "C"), ("I think it is (B)", "B"),
    ("The answer is B) cat", "B"), ("D. red fish", "D"), ("It is a bird.", "C"),  # the text names one option
    ("A or B", None),                 # a tie between two letters: unparsed
    ("a cat or a dog", None),         # a tie between two option texts
    ("I cannot tell", None), ("", None), ("E", None)])
def test_option_extraction(answer, expected):
    assert extract_option(answer, OPTIONS) == expected


def test_choice_accuracy_counts_unparsed_and_missing_answers_as_wrong():
    qs = [question(i, "img.png", "?", answer=a, options=OPTIONS, subject=s)
          for i, (a, s) in enumerate(zip("BBCAD", "xxyyy"))]
    answers = {"0": "I think it is (B)", "1": "A or B", "2": "c.", "3": "The answer is B) cat"}  # "4": none
    scores = choice_scores(qs, answers, by="subject")
    # right: 0 (B), 2 (C); wrong: 1 (tie), 3 (B != A), 4 (missing)
    assert scores == {"accuracy": 2 / 5, "unparsed": 2.0, "subject/x": 1 / 2, "subject/y": 1 / 3}


def test_pope_yes_no_rule_and_metrics():
    labels = ["yes", "yes", "yes", "no", "no", "no"]
    answers = ["Yes.", "No, there is not.", "YES", "No.", "There is no dog", "not sure"]
    assert [pope.parse_yes_no(a) for a in answers] == ["yes", "no", "yes", "no", "no", "no"]
    # the rule looks at the first sentence's words only: "No!" keeps its '!' and reads as yes
    assert pope.parse_yes_no("No!") == "yes" and pope.parse_yes_no("I see a cat. No dog.") == "yes"
    qs = [question(f"random/{i}", "x.jpg", "?", answer=l, split="random") for i, l in enumerate(labels)]
    qs += [question("popular/0", "x.jpg", "?", answer="no", split="popular"),
           question("popular/1", "x.jpg", "?", answer="yes", split="popular")]
    got = pope.score(qs, {**{f"random/{i}": a for i, a in enumerate(answers)},
                          "popular/0": "Yes", "popular/1": "yes"})
    # random: TP=2 (0, 2), FN=1 (1), TN=3 -> acc 5/6, precision 1, recall 2/3, f1 0.8, yes ratio 2/6
    assert got["random/accuracy"] == pytest.approx(5 / 6) and got["random/precision"] == 1.0
    assert got["random/recall"] == pytest.approx(2 / 3) and got["random/f1"] == pytest.approx(0.8)
    assert got["random/yes_ratio"] == pytest.approx(1 / 3)
    # popular: TP=1, FP=1 -> acc 1/2, precision 1/2, recall 1, f1 2/3, yes ratio 1
    assert got["popular/f1"] == pytest.approx(2 / 3) and got["popular/yes_ratio"] == 1.0
    assert got["mean/f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert got["mean/accuracy"] == pytest.approx((5 / 6 + 1 / 2) / 2)


def test_mme_acc_plus_needs_both_questions_of_an_image_right():
    qs = [question(f"{t}/{img}/{k}", img, "?", answer=a, task=t, image=img)
          for t, img, k, a in [("existence", "1.jpg", 0, "yes"), ("existence", "1.jpg", 1, "no"),
                               ("existence", "2.jpg", 0, "yes"), ("existence", "2.jpg", 1, "no"),
                               ("code_reasoning", "3.png", 0, "yes"), ("code_reasoning", "3.png", 1, "no")]]
    answers = {"existence/1.jpg/0": "Yes", "existence/1.jpg/1": "No.",        # image 1: both right
               "existence/2.jpg/0": "yes, it is", "existence/2.jpg/1": "Yes",  # image 2: one right
               "code_reasoning/3.png/0": "Maybe", "code_reasoning/3.png/1": "no"}  # "other", right
    got = mme.score(qs, answers)
    # existence: 3/4 questions right -> 75, 1/2 images -> 50, score 125
    assert got["existence/acc"] == 75.0 and got["existence/acc_plus"] == 50.0 and got["existence/score"] == 125.0
    # code_reasoning: 1/2 right -> 50, 0/1 images -> 0
    assert got["code_reasoning/score"] == 50.0
    assert got["perception"] == 125.0 and got["cognition"] == 50.0
    assert mme.parse_yes_no("The answer is yes") == "other" and mme.parse_yes_no("Nope") == "no"


@pytest.mark.parametrize("a, b", [("two", "2"), ("the dog", "dog"), ("don't", "dont"), ("Yes.", "yes"),
                                  ("A Cat!", "cat"), ("10,000", "10000"), ("3.5", "3.5")])
def test_textvqa_normalization(a, b):
    assert normalize(a) == normalize(b)


def test_textvqa_accuracy_over_the_ten_leave_one_out_subsets():
    humans = ["two"] * 2 + ["dog"] * 8
    # the 2 subsets leaving out a "two" hold one "2" (1/3), the 8 others hold two (2/3): (2/3 + 16/3) / 10
    assert vqa_accuracy("2", humans) == pytest.approx(0.6)
    assert vqa_accuracy("The dog.", humans) == 1.0       # 7 or 8 matches: capped at 1
    assert vqa_accuracy("don't", ["dont"] * 3 + ["x"] * 7) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("cat", humans) == 0.0


def test_mmbench_circular_group_with_one_rotation_wrong_fails():
    def rotations(group, answers):  # one question asked with its options rotated: answer letter moves
        return [question(group + k * mmbench.GROUP, "i.png", "?", answer=a, options=OPTIONS, group=group,
                         category="cat1" if group == 1 else "cat2") for k, a in enumerate(answers)]
    qs = rotations(1, "ABCD") + rotations(2, "BCDA")
    answers = {"1": "A", "1000001": "B.", "2000001": "(C)", "3000001": "D",          # group 1: all right
               "2": "B", "1000002": "C", "2000002": "D", "3000002": "B"}             # group 2: last wrong
    got = mmbench.score(qs, answers)
    assert got["accuracy"] == 0.5 and got["vanilla"] == 7 / 8
    assert got["category/cat1"] == 1.0 and got["category/cat2"] == 0.0


def test_score_file_reports_missing_predictions_and_refuses_another_benchmark(tmp_path):
    from trainer.evaluate.score import write_scores
    qs = [{**question(f"random/{i}", "x.jpg", "?", answer=l, split="random"), "benchmark": "pope"}
          for i, l in enumerate(["yes", "no"])]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    (tmp_path / "p.jsonl").write_text(json.dumps({"question_id": "random/0", "text": "Yes"}) + "\n")
    path = write_scores("pope", tmp_path / "q.jsonl", tmp_path / "p.jsonl")
    got = json.loads(path.read_text())
    # the missing answer is "" -> yes: TP=1, FP=1
    assert got["missing_predictions"] == 1.0 and got["random/accuracy"] == 0.5 and got["questions"] == 2.0
    with pytest.raises(ValueError, match="prepared for"):
        score("mme", qs, {})


def test_questions_without_an_answer_key_are_not_scored():
    qs = [{**question(7, "i.png", "?", answer=None, options=OPTIONS, group=7), "benchmark": "mmbench"}]
    with pytest.raises(ValueError, match="no answer key"):
        score("mmbench", qs, {"7": "A"})


def test_predictions_for_other_ids_are_an_error_not_a_zero():
    qs = [{**question("random/1", "x.jpg", "?", answer="yes", split="random"), "benchmark": "pope"}]
    with pytest.raises(ValueError, match="ids look like '1', the questions' like 'random/1'"):
        score("pope", qs, {"1": "yes"})
