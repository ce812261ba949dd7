"""The two silent data corruptions the trainer had: a killed `trainer cache` over an old cache, and two
annotation files holding the same image_id. Each test fails on the old code."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from schemas import SchemaError, read_annotations, reverbalize_files
from trainer.synthetic import tiny_recipe, write_corpus
from trainer import cache as cache_module
from trainer.cache import CacheError, CachedDataset, build_cache
from trainer.data import ANNOTATION_COLUMNS, load_conversations
from trainer.recipe import build_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    paths = write_corpus(root / "corpus")
    recipe = tiny_recipe(root / "corpus", root / "backbones", max_steps=2)
    return root, paths, recipe, build_model(recipe["model"])


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_killed_cache_run_leaves_the_old_cache_whole(corpus, tmp_path, monkeypatch):
    root, paths, _, model = corpus
    table = read_annotations(paths["annotations"], columns=ANNOTATION_COLUMNS)
    conversations = load_conversations(paths["conversations"])
    out = tmp_path / "features"
    build_cache(model, table, conversations, out, dtype="float32", batch_size=2, shard_size=2, progress=False)
    before, old = digests(out), CachedDataset(out)
    old_items = [old[i] for i in range(len(old))]

    # the same corpus with its rows reversed: other images land in every (shard, slot)
    reversed_table = table.take(list(reversed(range(table.num_rows))))
    calls = []
    original = cache_module._write_shard

    def killed_after_first_shard(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return original(*args)
    monkeypatch.setattr(cache_module, "_write_shard", killed_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        build_cache(model, reversed_table, conversations, out, dtype="float32", batch_size=2, shard_size=2,
                    progress=False)
    assert digests(out) == before  # not one file of the old cache touched
    again = CachedDataset(out)
    for i, item in enumerate(old_items):  # every sample still reads its own image's features
        assert again.record(i)["image_id"] == old.record(i)["image_id"]
        assert torch.equal(again[i]["image_features"], item["image_features"])

    monkeypatch.setattr(cache_module, "_write_shard", original)
    build_cache(model, reversed_table, conversations, out, dtype="float32", batch_size=2, shard_size=2,
                progress=False)  # the rerun starts over cleanly and swaps the new cache in
    assert not cache_module.staging_dir(out).exists()
    new = CachedDataset(out)
    assert sorted(new.record(i)["image_id"] for i in range(len(new))) == \
        sorted(old.record(i)["image_id"] for i in range(len(old)))
    by_id = {old.record(i)["image_id"]: old_items[i]["image_features"] for i in range(len(old))}
    for i in range(len(new)):
        assert torch.equal(new[i]["image_features"], by_id[new.record(i)["image_id"]])
    assert json.loads((out / "join_report.json").read_text())["samples"] == len(new)


def test_a_directory_that_is_not_a_cache_is_refused(corpus, tmp_path):
    _, paths, recipe, model = corpus
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    table = read_annotations(paths["annotations"], columns=ANNOTATION_COLUMNS)
    with pytest.raises(CacheError, match="is not a feature cache"):
        build_cache(model, table, load_conversations(paths["conversations"]), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    recipe_file = tmp_path / "recipe.yaml"
    import yaml
    recipe_file.write_text(yaml.safe_dump(recipe))
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "cache", "--annotations", str(paths["annotations"]),
                             "--conversations", str(paths["conversations"]), "--out", str(tmp_path / "mine"),
                             "--recipe", str(recipe_file)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "is not a feature cache" in result.stderr
    assert "Traceback" not in result.stderr


def duplicated(paths, tmp_path):
    """The corpus's annotations plus a second file that holds img0.png again, with img1.png's photo."""
    folder = tmp_path / "annotations"
    shutil.copytree(paths["annotations"], folder)
    table = pq.read_table(next(folder.glob("*.parquet")))
    ids = table.column("image_id").to_pylist()
    impostor = table.take([ids.index("img1.png")])
    impostor = impostor.set_column(0, "image_id", [["img0.png"]])
    pq.write_table(impostor, folder / "part-9.parquet")
    return folder


def test_two_files_with_one_image_id_are_refused_whatever_columns_are_read(corpus, tmp_path):
    _, paths, _, _ = corpus
    folder = duplicated(paths, tmp_path)
    for columns in (None, ANNOTATION_COLUMNS, ["source"]):
        with pytest.raises(SchemaError, match=r"image_id must be unique; duplicated: \['img0.png'\]"):
            read_annotations(folder, columns=columns)


def test_trainer_commands_refuse_duplicate_ids_in_one_line(corpus, tmp_path):
    _, paths, recipe, _ = corpus
    folder = duplicated(paths, tmp_path)
    result = subprocess.run([sys.executable, "-m", "trainer.cli", "generate", "--model", str(tmp_path / "none"),
                             "--annotations", str(folder), "--image", "img0.png", "--question", "?"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "image_id must be unique" in result.stderr and "Traceback" not in result.stderr


def test_reverbalize_checks_ids_across_files_and_never_leaves_half_an_output(corpus, tmp_path):
    _, paths, _, _ = corpus
    folder = duplicated(paths, tmp_path)
    with pytest.raises(SchemaError, match="image_id must be unique"):
        reverbalize_files(folder, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.parquet")) if (tmp_path / "out").exists() else True

    (folder / "part-9.parquet").unlink()
    pq.write_table(pq.read_table(next(folder.glob("*.parquet"))).drop_columns(["ocr"]), folder / "part-9.parquet")
    with pytest.raises(SchemaError, match="column 'ocr' is missing"):
        reverbalize_files(folder, tmp_path / "out2")  # the later file fails: nothing of the earlier one stays
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").rglob("*.parquet"))


def test_online_training_counts_unreadable_images_instead_of_crashing(corpus, tmp_path):
    from trainer.train import run
    root, paths, recipe, _ = corpus
    images = tmp_path / "corpus"
    shutil.copytree(paths["annotations"].parent, images)
    table = pq.read_table(next((images / "annotations").glob("*.parquet")))
    sources = [s.replace(str(paths["annotations"].parent), str(images)) for s in table.column("source").to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("source"), "source", [sources]),
                   next((images / "annotations").glob("*.parquet")))
    (images / "images" / "img0.png").unlink()                   # deleted after annotation
    (images / "images" / "img1.png").write_bytes(b"")           # 0 bytes
    (images / "images" / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # corrupt
    recipe = {**recipe, "data": {**recipe["data"], "annotations": str(images / "annotations"),
                                 "conversations": str(images / "conversations.json")},
              "train": {**recipe["train"], "output_dir": str(tmp_path / "run"), "max_steps": 1}}
    result = run(recipe, 1)
    report = json.loads((tmp_path / "run" / "stage1" / "join_report.json").read_text())
    assert report["unreadable_image"] == 3 and report["samples"] == 3
    assert sorted(e.split(":")[0] for e in report["examples"]["unreadable_image"]) == ["c0", "c1", "c2"]
    assert result["step"] == 1
