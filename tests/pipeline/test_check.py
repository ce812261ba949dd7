"""Checked before Ray starts: every option and every named file of every enabled annotator."""
import subprocess

import pytest

from pipeline.check import check_stages, problems_of
from pipeline.config import load_config
from pipeline.run import stage_options

from ..annotators import use_hf_cache
from .conftest import BIN, REPO


@pytest.fixture
def nothing_here(tmp_path, monkeypatch):
    """An empty Hugging Face cache and an empty models root."""
    use_hf_cache(monkeypatch, tmp_path / "hub")
    monkeypatch.setenv("MOAI_MODELS", str(tmp_path / "models"))
    return tmp_path


def problems(profile="moai", overrides=()):
    cfg = load_config(profile, list(overrides))
    return problems_of(check_stages(cfg, stage_options(cfg), gpu_here=False))


def test_moai_without_weights_names_each_missing_model_and_the_fix(nothing_here):
    found = problems()
    assert len(found) == 3, found  # OCR is not a problem: it is prepared from the installed wheels
    panoptic, owod, sgg = found
    assert panoptic.startswith("annotators.panoptic.options.model: Mask2Former checkpoint "
                               "facebook/mask2former-swin-base-coco-panoptic not found at ")
    assert "hf download facebook/mask2former-swin-base-coco-panoptic" in panoptic
    assert owod.startswith("annotators.owod.options.model: OWLv2 checkpoint google/owlv2-base-patch16-ensemble")
    models = nothing_here / "models"
    assert sgg.startswith(f"annotators.sgg.options.model_dir: PSGTR R50 (converted psgtr_r50_epoch_60.pth) "
                          f"not found at {models / 'psgtr_r50'}")
    assert sgg.endswith(f"python -m annotators.psgtr.convert psgtr_r50_epoch_60.pth {models / 'psgtr_r50'} "
                        "--sha256 published")


@pytest.mark.parametrize("override, expected", [
    ("annotators.owod.options.vocabulary=[/nowhere/queries.json]",
     "annotators.owod.options.vocabulary: vocabulary file queries.json not found at /nowhere/queries.json"),
    ("annotators.owod.options.vocabulary=[moai:nothing]",
     "annotators.owod.options.vocabulary: vocabulary moai:nothing not found"),
    ("annotators.ocr.options.det_model_dir=/nowhere/det",
     "annotators.ocr.options.det_model_dir: PP-OCR detection model PP-OCRv6_small_det not found at /nowhere/det"),
    ("annotators.ocr.options.rec_model_dir=/nowhere/rec",
     "annotators.ocr.options.rec_model_dir: PP-OCR recognition model PP-OCRv6_small_rec not found at /nowhere/rec"),
    ("annotators.sgg.options.model_dir=/nowhere/psgtr",
     "annotators.sgg.options.model_dir: PSGTR R50 (converted psgtr_r50_epoch_60.pth) not found at /nowhere/psgtr"),
    ("annotators.panoptic.options.model=/nowhere/m2f",
     "annotators.panoptic.options.model: Mask2Former checkpoint /nowhere/m2f not found at /nowhere/m2f"),
    ("annotators.panoptic.options.threshold=2", "annotators.panoptic.options: threshold must lie in [0, 1]"),
    ("annotators.sgg.options.device=tpu", "annotators.sgg.options: device 'tpu'"),
    ("annotators.owod.options.no_such_option=1", "annotators.owod.options: "),
])
def test_each_option_and_file_is_checked(nothing_here, override, expected):
    assert any(p.startswith(expected) for p in problems("moai", [override])), problems("moai", [override])


def test_yolo_world_needs_its_checkpoint(nothing_here):
    found = problems("moai", ["annotators.owod.enabled=false", "annotators.owod_yolo.enabled=true"])
    yolo = [p for p in found if p.startswith("annotators.owod_yolo.")]
    assert yolo[0].startswith("annotators.owod_yolo.options.model: YOLO-World checkpoint not found at "
                              f"{nothing_here / 'models' / 'yolov8s-worldv2.pt'}")
    assert yolo[1].startswith("annotators.owod_yolo.options.text_model: CLIP text tower openai/clip-vit-base-patch32")


def test_tiny_profile_has_everything(tmp_path):
    assert problems("tiny", [f"tiny_workdir={tmp_path}"]) == []


def test_run_exits_2_before_ray_with_one_line_per_problem(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image
    Image.new("RGB", (32, 32), "red").save(images / "a.png")
    env_models = {"HF_HOME": str(tmp_path / "hf"), "MOAI_MODELS": str(tmp_path / "models")}
    import os
    result = subprocess.run([str(BIN / "python"), "-m", "pipeline", "run", "--input", str(images),
                             "--output", str(tmp_path / "out")], cwd=REPO, env={**os.environ, **env_models},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert [e.split(":")[1].strip() for e in errors] == [
        "annotators.panoptic.options.model", "annotators.owod.options.model", "annotators.sgg.options.model_dir"]
    assert "Started a local Ray" not in result.stdout + result.stderr  # nothing of Ray ran
    assert not (tmp_path / "out").exists()


def test_check_command_reports_found_files_with_size_and_hash(tmp_path):
    import os
    result = subprocess.run([str(BIN / "python"), "-m", "pipeline", "check", "--config", "tiny",
                             "--only", "panoptic,sgg", "--set", f"tiny_workdir={tmp_path}"],
                            cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "panoptic (panoptic): runs on cpu float32" in result.stdout
    assert f"at {tmp_path / 'sgg' / 'psgtr_tiny'}" in result.stdout
    assert result.stdout.count("sha256 ") == 2 and "every model is here" in result.stdout
