"""The feature cache: what it stores, that it streams, and that training from it equals training online."""
import json

import pytest
import torch

from schemas import read_annotations
from trainer.synthetic import tiny_recipe, write_corpus
from trainer.cache import CachedDataset, build_cache, check_compatible, main as cache_main
from trainer.data import ANNOTATION_COLUMNS, load_conversations, load_image, load_ps_ids
from trainer.recipe import build_model
from trainer.train import run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    paths = write_corpus(root / "corpus")
    recipe = tiny_recipe(root / "corpus", root / "backbones", max_steps=2)
    model = build_model(recipe["model"])
    table = read_annotations(paths["annotations"], columns=ANNOTATION_COLUMNS)
    report = build_cache(model, table, load_conversations(paths["conversations"]), root / "features",
                         dtype="float32", batch_size=4, shard_size=4, progress=False)
    return root, paths, recipe, model, table, report


def test_cache_layout_and_report(setup):
    root, _, _, model, _, report = setup
    meta = json.loads((root / "features" / "meta.json").read_text())
    assert meta["images"] == 6 and meta["samples"] == 6 and report.samples == 6
    assert sorted(p.name for p in (root / "features").glob("features-*.safetensors")) == [
        "features-00000.safetensors", "features-00001.safetensors"]  # 4 + 2 images
    assert meta["feature_shape"] == [64, 32] and meta["bytes_per_image"] == 2 * 64 * 32 * 4
    assert meta["join_report"]["error_rows"] == 1 and meta["join_report"]["no_image"] == 1
    check_compatible(meta, model.config.to_dict())
    with pytest.raises(ValueError, match="feature cache was made with vision="):
        check_compatible(meta, {**model.config.to_dict(), "vision": "elsewhere"})


def test_cached_item_equals_online_features(setup):
    root, _, _, model, table, _ = setup
    dataset = CachedDataset(root / "features")
    item = dataset[5]
    record = dataset.record(5)
    assert torch.equal(item["input_ids"], torch.tensor(record["input_ids"]))
    assert dataset.lengths[5] == len(record["input_ids"]) + len(record["aux_input_ids"]) == record["length"]
    assert dataset.samples[5] == record
    row = table.column("image_id").to_pylist().index(record["image_id"])
    image = torch.from_numpy(load_image(table.column("source")[row].as_py(), 112).copy())[None]
    ps = torch.from_numpy(load_ps_ids(table.column("ps_map")[row].as_py(), 112).copy())[None]
    with torch.no_grad():
        torch.testing.assert_close(item["image_features"], model.encode_vision(model.image_pixel_values(image))[0])
        torch.testing.assert_close(item["ps_features"], model.encode_vision(model.ps_pixel_values(ps))[0])
    assert item["image_features"].shape == (64, 32)


def test_training_from_cache_equals_online(setup, tmp_path):
    root, _, recipe, _, _, _ = setup
    online = run({**recipe, "train": {**recipe["train"], "output_dir": str(tmp_path / "online")}}, 1)
    cached = run({**recipe, "data": {**recipe["data"], "cache": str(root / "features")},
                  "train": {**recipe["train"], "output_dir": str(tmp_path / "cached")}}, 1)
    assert len(online["losses"]) == 2
    torch.testing.assert_close(torch.tensor(cached["losses"]), torch.tensor(online["losses"]))


def test_unreadable_images_are_counted_by_the_cli(setup, tmp_path, capsys):
    root, paths, recipe, *_ = setup
    broken = write_corpus(tmp_path / "corpus")
    (tmp_path / "corpus" / "images" / "img2.png").write_bytes(b"not a png")
    recipe_file = tmp_path / "recipe.yaml"
    import yaml
    recipe_file.write_text(yaml.safe_dump(recipe))
    assert cache_main(["--annotations", str(broken["annotations"]), "--conversations", str(broken["conversations"]),
                       "--out", str(tmp_path / "out"), "--recipe", str(recipe_file), "--dtype", "bfloat16",
                       "--device", "cpu"]) == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["samples"] == 5 and meta["unreadable_image"] == 1 and meta["dtype"] == "bfloat16"
    saved = json.loads((tmp_path / "out" / "join_report.json").read_text())
    assert "c2" in saved["examples"]["unreadable_image"][0]
    assert CachedDataset(tmp_path / "out")[0]["image_features"].dtype == torch.bfloat16
    captured = capsys.readouterr()
    assert "5 samples" in captured.out and "unreadable_image=1" in captured.err


def test_cache_streams_through_dataloader_workers(setup):
    from functools import partial

    from trainer.data import collate
    root = setup[0]
    dataset = CachedDataset(root / "features")
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2,
                                         collate_fn=partial(collate, pad_token_id=0))
    batches = list(loader)
    assert [b["image_features"].shape for b in batches] == [(3, 64, 32)] * 2
    torch.testing.assert_close(batches[1]["ps_features"][2], dataset[5]["ps_features"], rtol=0, atol=0)
