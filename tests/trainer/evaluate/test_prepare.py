"""`trainer evaluate prepare` reads each benchmark's official layout into images, manifest, questions."""
import csv
import json

import pytest
from PIL import Image

from tests.trainer.evaluate import layouts
from trainer.cli import main as cli
from trainer.evaluate.common import read_jsonl

CHOICE = "Answer with the option's letter from the given choices directly."
SHORT = "Answer the question using a single word or phrase."


def prep(benchmark, data, out, *extra):
    return cli(["evaluate", "prepare", "--benchmark", benchmark, "--data", str(data), "--out", str(out), *extra])


def prepared(out):
    manifest = list(csv.DictReader(open(out / "manifest.csv")))
    for row in manifest:  # every image the pipeline will read is a decodable file
        Image.open(out / row["path"]).verify()
    return {q["question_id"]: q for q in read_jsonl(out / "questions.jsonl")}, {r["id"] for r in manifest}


def test_pope(tmp_path, capsys):
    data, images = layouts.write_pope(tmp_path)
    assert cli(["evaluate", "prepare", "--benchmark", "pope", "--data", str(data), "--image-root", str(images),
                "--out", str(tmp_path / "out")]) == 0
    assert "python -m pipeline run" in capsys.readouterr().out
    qs, ids = prepared(tmp_path / "out")
    assert len(qs) == 12 and ids == {"COCO_val2014_000000000001.jpg", "COCO_val2014_000000000002.jpg"}
    q = qs["adversarial/2"]
    assert q["prompt"] == f"Is there a circle in the image?\n{SHORT}" and q["answer"] == "no"
    assert q["image_id"] == "COCO_val2014_000000000002.jpg" and q["meta"] == {"split": "adversarial"}


def test_mme_both_folder_layouts(tmp_path):
    base = layouts.write_mme(tmp_path)
    assert prep("mme", base, tmp_path / "o") == 0
    qs, ids = prepared(tmp_path / "o")
    assert len(qs) == 6 and ids == {"existence__000000006040.jpg", "artwork__10002.jpg", "code_reasoning__0001.png"}
    q = qs["artwork/10002.jpg/1"]
    assert q["prompt"] == f"Is this artwork a circle?\n{SHORT}" and q["answer"] == "no"


def test_textvqa(tmp_path):
    data, images = layouts.write_textvqa(tmp_path)
    assert prep("textvqa", data, tmp_path / "o") == 0
    qs, ids = prepared(tmp_path / "o")
    assert ids == {"003a8ae2ef43b901.jpg"}
    assert qs["34602"]["prompt"] == f"what is written on the sign?\n{SHORT}" and len(qs["34602"]["answer"]) == 10


def test_mmbench_circular_copies_share_one_image(tmp_path):
    data = layouts.write_mmbench(tmp_path)
    assert prep("mmbench", data, tmp_path / "o") == 0
    qs, ids = prepared(tmp_path / "o")
    assert len(qs) == 3 and len(ids) == 2  # the copy points at index 7's image
    assert qs["7"]["image_id"] == qs["1000007"]["image_id"]
    assert qs["1000007"]["meta"]["group"] == 7 and qs["1000007"]["answer"] == "D"
    assert qs["9"]["prompt"] == f"Look at the shape.\nWhich colour?\nA. red\nB. green\nC. blue\n{CHOICE}"
    assert qs["9"]["options"] == {"A": "red", "B": "green", "C": "blue"}


def test_seed_image_questions_only(tmp_path):
    data, images = layouts.write_seed(tmp_path)
    assert prep("seed", data, tmp_path / "o") == 0
    qs, _ = prepared(tmp_path / "o")
    assert list(qs) == ["101669"]
    assert qs["101669"]["prompt"] == ("What shape is in the image?\nA. circle B. square C. triangle D. star\n"
                                      + CHOICE)


def test_scienceqa_test_questions_with_an_image(tmp_path):
    root = layouts.write_scienceqa(tmp_path / "sqa")
    assert prep("scienceqa", root, tmp_path / "o") == 0
    qs, ids = prepared(tmp_path / "o")
    assert list(qs) == ["5"] and ids == {"5_image.png"}
    assert qs["5"]["prompt"] == f"Context: A child drew a shape.\nWhich shape is this?\nA. square\nB. circle\n{CHOICE}"
    assert qs["5"]["answer"] == "B"


def test_ai2d(tmp_path):
    data = layouts.write_ai2d(tmp_path)
    assert prep("ai2d", data, tmp_path / "o") == 0
    qs, _ = prepared(tmp_path / "o")
    assert qs["4.png-0"]["prompt"] == (f"Which shape is drawn?\nA. circle\nB. square\nC. triangle\nD. star\n\n{CHOICE}")
    assert qs["4.png-0"]["answer"] == "C"


@pytest.mark.parametrize("args, message", [
    (["--benchmark", "pope", "--data", "nowhere"], "does not exist"),
    (["--benchmark", "mme", "--data", "."], "no MME subtask folders")])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert cli(["evaluate", "prepare", *args, "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_field_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "ai2d_test.json").write_text(json.dumps([{"imageName": "x.png", "question": "?"}]))
    assert prep("ai2d", tmp_path, tmp_path / "o") == 2
    assert "not ai2d's official layout" in capsys.readouterr().err


def test_demo_benchmark_is_pope_layout_over_the_demo_images_present(tmp_path):
    from trainer.evaluate.demo import main as demo
    for name in ("bus.jpg", "chelsea.jpg", "sign_exit.png"):  # zidane.jpg etc. absent: left out
        layouts.photo(tmp_path / "corpus" / name)
    assert demo(["--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "pope")]) == 0
    assert cli(["evaluate", "prepare", "--benchmark", "pope", "--data", str(tmp_path / "pope"),
                "--image-root", str(tmp_path / "corpus"), "--out", str(tmp_path / "o")]) == 0
    qs, ids = prepared(tmp_path / "o")
    assert ids == {"bus.jpg", "chelsea.jpg", "sign_exit.png"} and len(qs) == 6
    assert [q["answer"] for q in qs.values()] == ["yes", "no"] * 3
    assert qs["random/1"]["prompt"].startswith("Is there a cat in the image?")
    assert qs["random/1"]["image_id"] == "chelsea.jpg"
