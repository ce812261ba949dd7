"""Checkpoint converter on a state dict in the published naming (OpenPSG's mmcv-1.x keys), random values."""
import json
import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from annotators.psgtr.annotator import PSGTRAnnotator
from annotators.base import sha256_file as file_sha256
from annotators.psgtr.checkpoint import load_model_dir
from annotators.psgtr.convert import ConversionError, convert, main, map_state_dict, rename_key
from schemas.schema import SCENE_GRAPH

from .checkpoint_names import moai_names, published_state_dict

SIDE_EFFECTS = []


def _record(*args):
    SIDE_EFFECTS.append(args)


class UnsafeMeta:
    """Unpickling this would call _record: the converter must never run it."""

    def __reduce__(self):
        return (_record, ("executed",))


@pytest.fixture(scope="module")
def vocab(shared_dir):
    return shared_dir / "vocab" / "coco_panoptic_133.json", shared_dir / "vocab" / "psg_predicates_56.json"


@pytest.fixture(scope="module")
def mmcv_checkpoint(tmp_path_factory):
    """What mmcv's save_checkpoint writes: meta + state_dict (+ optimizer)."""
    state = published_state_dict("mmcv")
    path = tmp_path_factory.mktemp("ckpt") / "psgtr_r50_epoch_60.pth"
    torch.save({"meta": {"mmcv_version": "1.4.3", "epoch": 60, "CLASSES": ("person", "bicycle")},
                "state_dict": state}, path)
    return path, state


@pytest.fixture(scope="module")
def converted(mmcv_checkpoint, vocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "psgtr_r50"
    path = mmcv_checkpoint[0]
    assert main([str(path), str(out), "--classes", str(vocab[0]), "--predicates", str(vocab[1])]) == 0
    return out


def test_round_trip_strict(mmcv_checkpoint, converted):
    _, state = mmcv_checkpoint
    model, info = load_model_dir(converted)  # strict load inside
    ours = model.state_dict()
    assert len(ours) == len(state) == 585
    for key, value in state.items():
        torch.testing.assert_close(ours[rename_key(key)], value, rtol=0, atol=0)
    assert info.class_names[131] == "wall-other-merged" and len(info.predicate_names) == 56
    meta = json.loads((converted / "config.json").read_text())
    assert meta["source"]["num_keys"] == 585 and meta["source"]["stubbed_metadata_globals"] == []
    assert meta["source"]["checkpoint_sha256"] == file_sha256(mmcv_checkpoint[0])


def test_moai_profile_runs_from_converted_checkpoint(converted):
    annotator = PSGTRAnnotator(PSGTRAnnotator.Config(model_dir=str(converted), device="cpu", compat="moai",
                                                     image_scale=(64, 64)))
    rows = annotator(np.zeros((1, 48, 48, 3), dtype=np.uint8))
    pa.array([rows[0]["scene_graph"]], type=SCENE_GRAPH)
    assert annotator.provenance()["model"] == "psgtr_resnet50" and annotator.post_cfg.class_131_quirk


def test_moai_naming_maps_identically(mmcv_checkpoint):
    mmcv = mmcv_checkpoint[1]
    moai = moai_names(mmcv)
    assert any(".self_attn.attn." in k for k in moai) and not any(".attentions." in k for k in moai)
    a, _ = map_state_dict(mmcv)
    b, _ = map_state_dict(moai)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_refuses_mismatching_checkpoint(mmcv_checkpoint):
    state = dict(mmcv_checkpoint[1])
    del state["bbox_head.transformer.decoder.post_norm.weight"]
    state["bbox_head.transformer.encoder.post_norm.weight"] = torch.zeros(256)
    state["bbox_head.rel_cls_embed.bias"] = torch.zeros(58)
    with pytest.raises(ConversionError) as err:
        map_state_dict(state)
    message = str(err.value)
    assert "missing keys, in our names (1): ['transformer.decoder.post_norm.weight']" in message
    assert "bbox_head.transformer.encoder.post_norm.weight" in message  # unexpected
    assert "bbox_head.rel_cls_embed.bias: checkpoint (58,) vs model (57,)" in message


def test_sha256_checked(mmcv_checkpoint, vocab, tmp_path):
    path, _ = mmcv_checkpoint
    with pytest.raises(ConversionError, match="does not match"):
        convert(path, tmp_path / "m", *vocab, sha256="published")
    assert not (tmp_path / "m").exists()


def test_metadata_objects_are_stubbed_never_run(mmcv_checkpoint, vocab, tmp_path):
    """weights_only refuses the unknown global in `meta`; the fallback loads tensors without running it."""
    state = mmcv_checkpoint[1]
    path = tmp_path / "with_meta.pth"
    torch.save({"meta": {"env": UnsafeMeta()}, "state_dict": state}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    out = convert(path, tmp_path / "model", *vocab)
    assert SIDE_EFFECTS == []
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["stubbed_metadata_globals"] == [f"{__name__}._record"]


class ConfigDict(dict):
    """Stands for mmcv's ConfigDict: a dict subclass pickle fills item by item."""


class ConfigList(list):
    pass


def test_dict_and_list_subclasses_in_meta_are_stubbed(mmcv_checkpoint, vocab, tmp_path, capsys):
    state = mmcv_checkpoint[1]
    path = tmp_path / "configdict.pth"
    meta = ConfigDict(model=ConfigDict(type="PSGTr", layers=ConfigList([1, 2, 3])), env=UnsafeMeta())
    torch.save({"meta": {"config": meta}, "state_dict": state}, path)
    out = convert(path, tmp_path / "model", *vocab)
    assert SIDE_EFFECTS == []
    stubbed = json.loads((out / "config.json").read_text())["source"]["stubbed_metadata_globals"]
    assert f"{__name__}.ConfigDict" in stubbed and f"{__name__}.ConfigList" in stubbed
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x04not a checkpoint at all")
    assert main([str(tmp_path / "garbage.pth"), str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
