"""Profiles, overrides and their errors; inputs listing; cluster/ files point at the real job."""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import PROFILES, load_config
from pipeline.inputs import list_inputs
from pipeline.run import config_from_args, parse_args
from annotators.registry import ANNOTATORS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_load_and_name_registered_annotators(profile):
    cfg = load_config(profile)
    assert set(cfg.annotators) == set(ANNOTATORS)
    assert all(stage.kind in ANNOTATORS for stage in cfg.annotators.values())
    assert cfg.working_size == 490
    enabled = cfg.enabled
    assert not ("owod" in enabled and "owod_yolo" in enabled)  # they fill the same column


def test_moai_profile_uses_gpus_and_tiny_uses_none():
    assert all(0 < s.num_gpus <= 1 for s in load_config("moai").annotators.values())
    assert all(s.num_gpus == 0 and s.tiny for s in load_config("tiny").annotators.values())


def test_no_profile_names_a_device_and_cpu_flag_takes_every_gpu_off():
    for profile in ("moai", "tiny"):
        assert all("device" not in s.options for s in load_config(profile).annotators.values())
    cfg = config_from_args(parse_args(["--input", "x", "--output", "y", "--cpu"]))
    assert all(s.num_gpus == 0 for s in cfg.enabled.values())
    assert cfg.annotators["panoptic"].gpu_dtype == "bfloat16"  # what it would run in on a GPU


def test_cli_overrides_and_only():
    args = parse_args(["--input", "x", "--output", "y", "--config", "tiny", "--only", "ocr,panoptic",
                       "--set", "annotators.ocr.batch_size=2", "--set", "verbalize.owod_min_score=0.3"])
    cfg = config_from_args(args)
    assert sorted(cfg.enabled) == ["ocr", "panoptic"]
    assert cfg.annotators["ocr"].batch_size == 2 and cfg.verbalize.owod_min_score == 0.3
    assert (cfg.input, cfg.output) == ("x", "y")


@pytest.mark.parametrize("override, message", [
    ("annotators.ocr.batch_size=0", "batch_size must be >= 1"),
    ("annotators.ocr.min_actors=3", "min_actors <= max_actors"),
    ("verbalize.ocr_min_score=2", "ocr_min_score must lie in"),
    ("working_sise=10", "unknown config keys"),
    ("annotators.nope.enabled=false", "not a section"),
])
def test_bad_settings_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("tiny", [override])


def test_only_rejects_unknown_annotator():
    with pytest.raises(ValueError, match="unknown annotators"):
        config_from_args(parse_args(["--only", "panoptik"]))


def test_inputs_directory_glob_manifest_conversations(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.png", "notes.txt"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    by_dir = list_inputs(str(tmp_path / "imgs"))
    assert [(i.image_id, i.source) for i in by_dir] == [
        ("a.jpg", str(tmp_path / "imgs" / "a.jpg")), ("sub/b.png", str(tmp_path / "imgs" / "sub" / "b.png"))]
    assert [i.image_id for i in list_inputs(str(tmp_path / "imgs" / "**" / "*.png"))] == ["sub/b.png"]
    assert list_inputs(f"file://{tmp_path}/imgs")[1].image_id == "sub/b.png"  # a pyarrow URI lists the same ids

    pq.write_table(pa.table({"id": ["k1", "k2"], "path": ["imgs/a.jpg", "/abs/c.jpg"]}), tmp_path / "m.parquet")
    manifest = list_inputs(str(tmp_path / "m.parquet"))
    assert [(i.image_id, i.source) for i in manifest] == [("k1", f"{tmp_path}/imgs/a.jpg"), ("k2", "/abs/c.jpg")]

    conversations = [{"id": "1", "image": "coco/1.jpg", "conversations": []},
                     {"id": "2", "image": "coco/1.jpg", "conversations": []},  # same image twice
                     {"id": "3", "conversations": []},                          # text-only sample
                     {"id": "4", "image": "vg/2.jpg", "conversations": []}]
    (tmp_path / "llava.json").write_text(json.dumps(conversations))
    items = list_inputs(str(tmp_path / "llava.json"), image_root="/data")
    assert [(i.image_id, i.source) for i in items] == [("coco/1.jpg", "/data/coco/1.jpg"), ("vg/2.jpg", "/data/vg/2.jpg")]

    (tmp_path / "dup.csv").write_text("id,path\nsame,a.jpg\nsame,b.jpg\n")
    with pytest.raises(ValueError, match="appears twice"):
        list_inputs(str(tmp_path / "dup.csv"))


def test_cluster_files_point_at_the_job():
    docs = list(yaml.safe_load_all((REPO / "cluster" / "rayjob.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"RayJob", "RayCluster"}
    job = kinds["RayJob"]["spec"]
    assert job["entrypoint"].startswith("python -m pipeline run --config moai")
    for spec in (job["rayClusterSpec"], kinds["RayCluster"]["spec"]):
        assert spec["rayVersion"].startswith("2.60")
        gpu = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"][0]
        assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        # every pod sees the weights at the models root: the driver checks them, the workers load them
        for group in (spec["headGroupSpec"], *spec["workerGroupSpecs"]):
            (container,) = group["template"]["spec"]["containers"]
            assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    assert "--set annotators" not in job["entrypoint"]  # the moai profile as shipped
    launcher = yaml.safe_load((REPO / "cluster" / "launcher.yaml").read_text())
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert "python -m pipeline run --config moai" in (REPO / "cluster" / "launcher.yaml").read_text()
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    assert "ray:2.60" in dockerfile and "-c constraints.txt" in dockerfile
    assert "MOAI_MODELS=/models" in dockerfile and "HF_HOME=/models/hf" in dockerfile
