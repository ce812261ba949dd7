"""The ablation's data: deterministic scenes, schema-valid oracle rows, answers that match the truth."""
import json

import numpy as np
import pytest

from schemas import decode_ps_map, read_annotations
from schemas.verbalize import verbalize_row
from trainer.ablation.corpus import CorpusConfig, write_corpus
from trainer.ablation.evaluate import read_answers, score, score_files, write_answers
from trainer.ablation.oracle import PREDICATE_IDS, blank_row, oracle_row, write_rows
from trainer.ablation.questions import QUESTION_TYPES, answer_of, question_of, scene_questions
from trainer.ablation.scenes import OBJECT_KINDS, SceneConfig, make_scene, render

SMALL = SceneConfig(size=120)


def test_generator_is_deterministic_and_seeded():
    a, b = make_scene(3, 17, SMALL), make_scene(3, 17, SMALL)
    assert a == b
    image_a, ids_a = render(a)
    image_b, ids_b = render(b)
    assert np.array_equal(np.asarray(image_a), np.asarray(image_b))
    assert np.array_equal(ids_a, ids_b)
    others = [make_scene(4, 17, SMALL), make_scene(3, 18, SMALL)]
    assert all(o != a for o in others)


def test_scene_config_rejects_impossible_layouts():
    with pytest.raises(ValueError, match="max_objects"):
        SceneConfig(max_objects=9)


def test_oracle_rows_follow_the_contract(tmp_path, shared_dir):
    scenes = [make_scene(0, i, SMALL) for i in range(6)]
    rows = []
    for scene in scenes:
        image, ids = render(scene)
        rows.append(oracle_row(scene, ids, f"/data/{scene.scene_id}.png"))
    rows.append(blank_row(scenes[0], "/data/blank.png") | {"image_id": "blank.png"})
    table = read_annotations(write_rows(rows, tmp_path / "oracle.parquet", {"annotator": "test"}))
    assert table.num_rows == len(rows)
    coco = json.loads((shared_dir / "vocab" / "coco_panoptic_133.json").read_text())
    predicates = json.loads((shared_dir / "vocab" / "psg_predicates_56.json").read_text())
    for name, predicate_id in PREDICATE_IDS.items():
        assert predicates[predicate_id - 1] == name
    for row, scene in zip(table.to_pylist(), scenes):
        assert row["text_aux"] == verbalize_row(row)["text_aux"]
        assert all(coco[s["label_id"]] == s["label"] for s in row["panoptic"])
        ids = decode_ps_map(row["ps_map"])
        assert {s["segment_id"] for s in row["panoptic"]} == set(np.unique(ids).tolist())
        for s in row["panoptic"]:
            assert s["area"] == int((ids == s["segment_id"]).sum())
        assert scene.sign_word in row["text_ocr"]
    blank = table.to_pylist()[-1]
    assert blank["text_aux"].strip() == "" and not decode_ps_map(blank["ps_map"]).any()


def _truth_from_row(row):
    """Facts recomputed from the oracle's annotation row alone (not from the Scene object)."""
    things = [s for s in row["panoptic"] if s["is_thing"]]
    centers = [((s["box"][0] + s["box"][2]) / 2, (s["box"][1] + s["box"][3]) / 2) for s in things]
    return things, centers


def _position(center):
    col = ("left", "center", "right")[min(int(center[0] * 3), 2)]
    row = ("top", "middle", "bottom")[min(int(center[1] * 3), 2)]
    if row == "middle":
        return col
    return row if col == "center" else f"{row} {col}"


def test_answers_agree_with_the_ground_truth():
    plural_to_kind = {plural: name for name, _, plural in OBJECT_KINDS}
    seen = set()
    for index in range(40):
        scene = make_scene(1, index, SMALL)
        _, ids = render(scene)
        row = oracle_row(scene, ids, "x.png")
        things, centers = _truth_from_row(row)
        labels = [s["label"] for s in things]
        graph = row["scene_graph"]
        for kind, question, answer in scene_questions(scene, seed=1):
            seen.add(kind)
            if kind == "existence":
                name = question.removeprefix("Is there a ").removesuffix(" in the image?")
                assert answer == ("yes" if name in labels else "no")
            elif kind == "counting":
                name = plural_to_kind[question.removeprefix("How many ").removesuffix(" are there?")]
                assert answer == str(labels.count(name))
            elif kind == "position":
                name = question.removeprefix("Where is the ").removesuffix("?")
                assert labels.count(name) == 1
                assert answer == _position(centers[labels.index(name)])
            elif kind == "text":
                assert [line["text"] for line in row["ocr"]] == [answer]
            elif kind == "relation":
                over = {(labels[r["subject"]], labels[r["object"]]) for r in graph["relations"]
                        if r["predicate"] == "over"}
                if question.startswith("What is over the "):
                    upper, lower = answer, question.removeprefix("What is over the ").removesuffix("?")
                else:
                    upper, lower = question.removeprefix("What is the ").removesuffix(" over?"), answer
                assert (upper, lower) in over
                asked = lower if question.startswith("What is over the ") else upper
                assert labels.count(asked) == 1
                if asked == lower:
                    assert [u for u, l in over if l == lower] == [upper]
                else:
                    assert [l for u, l in over if u == upper] == [lower]
                # geometry agrees: some object of the answer's kind sits in the same column,
                # one row away, on the right side of the asked (unique) object
                ask_center, ask_box = centers[labels.index(asked)], things[labels.index(asked)]["box"]
                candidates = [(c, s["box"]) for c, s in zip(centers, things) if s["label"] == answer]
                ask_col, ask_row = int(ask_center[0] * 3), int(ask_center[1] * 3)
                step = -1 if asked == lower else 1
                assert any(int(c[0] * 3) == ask_col and int(c[1] * 3) == ask_row + step
                           and (box[3] <= ask_box[1] if step < 0 else ask_box[3] <= box[1])
                           for c, box in candidates)
    assert seen == set(QUESTION_TYPES)


def test_corpus_splits_are_disjoint_and_evaluation_scores_perfect_and_wrong(tmp_path):
    paths = write_corpus(tmp_path, CorpusConfig(seed=2, train_scenes=8, heldout_scenes=4, scene=SMALL))
    train, heldout = json.loads(paths.train.read_text()), json.loads(paths.heldout.read_text())
    assert {e["image"] for e in train}.isdisjoint({e["image"] for e in heldout})
    assert read_annotations(paths.oracle).num_rows == read_annotations(paths.blank).num_rows == 12
    assert all((paths.images / e["image"]).is_file() for e in heldout)
    assert all(question_of(e) and "<image>" not in question_of(e) for e in heldout)

    perfect = write_answers({e["id"]: " " + answer_of(e).upper() + ". " for e in heldout}, tmp_path / "good.jsonl")
    scores = score_files(paths.heldout, perfect)
    assert scores["all"].accuracy == 1.0 and scores["all"].total == len(heldout)
    wrong = {e["id"]: answer_of(e) + " not" for e in heldout}
    assert score(heldout, wrong)["all"].accuracy == 0.0
    assert score(heldout, {})["all"].correct == 0  # missing answers count as wrong
    assert read_answers(perfect) == {e["id"]: " " + answer_of(e).upper() + ". " for e in heldout}
