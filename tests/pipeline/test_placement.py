"""The device follows the resources; a profile that cannot be placed never hangs (pipeline/placement.py)."""
import subprocess
import time

import pytest

from annotators.mask2former import Mask2FormerAnnotator
from annotators.ocr import PaddleOCRAnnotator
from annotators.owlv2 import OWLv2Annotator
from annotators.psgtr.annotator import PSGTRAnnotator
from annotators.yolo_world import YOLOWorldAnnotator
from pipeline.config import AnnotatorStage, load_config
from pipeline.placement import (device_for_gpu_ids, fit_to_machine, on_cpu, placed_options, requests,
                                unplaceable)

from .conftest import BIN, REPO

GPU_STAGE = AnnotatorStage(kind="panoptic", num_gpus=0.25)
CPU_STAGE = AnnotatorStage(kind="panoptic", num_gpus=0)


@pytest.mark.parametrize("gpu_ids, visible, device", [
    ([], "", "cpu"),
    ([3], "3", "cuda:0"),          # Ray set CUDA_VISIBLE_DEVICES to the actor's GPU: it is cuda:0
    (["1"], "0,1", "cuda:1"),      # several visible: the assigned one's index
    ([2], "", "cuda:2"),           # Ray told not to set CUDA_VISIBLE_DEVICES: the id is the device
])
def test_assigned_gpu_ids_give_the_device(gpu_ids, visible, device):
    assert device_for_gpu_ids(gpu_ids, visible) == device


@pytest.mark.parametrize("cls, gpu_dtype", [
    (Mask2FormerAnnotator, "bfloat16"), (OWLv2Annotator, "bfloat16"), (PSGTRAnnotator, "bfloat16"),
    (YOLOWorldAnnotator, "float16"),
])
def test_a_gpu_actor_runs_on_its_gpu_in_the_annotators_dtype(cls, gpu_dtype, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    placed = placed_options({"batch_size": 2}, cls, GPU_STAGE, [5])
    assert placed == {"batch_size": 2, "device": "cuda:0", "dtype": gpu_dtype}
    cls.Config(**placed)  # the Config accepts what placement chose


def test_num_gpus_zero_gives_cpu_float32():
    for cls in (Mask2FormerAnnotator, OWLv2Annotator, PSGTRAnnotator, YOLOWorldAnnotator):
        assert placed_options({}, cls, CPU_STAGE, []) == {"device": "cpu", "dtype": "float32"}
    assert placed_options({}, PaddleOCRAnnotator, CPU_STAGE, []) == {"device": "cpu"}  # no dtype to set


def test_the_stage_gpu_dtype_and_explicit_options_win():
    stage = AnnotatorStage(kind="panoptic", num_gpus=1, gpu_dtype="float16")
    assert placed_options({}, Mask2FormerAnnotator, stage, [0])["dtype"] == "float16"
    assert placed_options({"dtype": "float32"}, Mask2FormerAnnotator, stage, [0])["dtype"] == "float32"
    explicit = {"device": "cpu", "dtype": "bfloat16"}
    assert placed_options(explicit, Mask2FormerAnnotator, stage, [0]) == explicit


def test_ocr_takes_cuda_as_paddles_gpu():
    assert PaddleOCRAnnotator.Config(device="cuda:1").device == "gpu:1"
    assert PaddleOCRAnnotator.Config(device="gpu").device == "gpu"
    with pytest.raises(ValueError, match="cuda:N"):
        PaddleOCRAnnotator.Config(device="tpu")


def test_a_gpu_profile_on_a_machine_without_gpu_runs_on_cpu_and_fits_its_cpus():
    cfg = load_config("moai")
    fitted, warning = fit_to_machine(cfg, cpus=2, gpus=0)
    assert warning.startswith("warning: no GPU on this machine: ocr, owod, panoptic, sgg run on the CPU")
    assert "--cpu" in warning and "\n" not in warning
    assert all(s.num_gpus == 0 for s in fitted.enabled.values())
    # one image per batch and per decode block: on CPUs the stages overlap instead of taking turns
    assert all(s.batch_size == 1 for s in fitted.enabled.values()) and fitted.decode_batch_size == 1
    # every stage's minimum actors and one decode task fit the 2 CPUs, else Ray Data waits forever
    need = fitted.decode_num_cpus + sum(s.min_actors * s.num_cpus for s in fitted.enabled.values())
    assert need <= 2 and not unplaceable(requests(fitted), [{"CPU": 2.0}])
    assert fit_to_machine(on_cpu(cfg), cpus=2, gpus=0)[1] is None  # --cpu: said so, no warning
    kept, warning = fit_to_machine(cfg, cpus=64, gpus=1)
    assert warning is None and kept.annotators == cfg.annotators  # a machine that fits keeps the profile


def test_unplaceable_names_the_stage_and_request():
    cfg = load_config("moai", ["annotators.ocr.enabled=false"])
    missing = unplaceable(requests(cfg), [{"CPU": 16.0}, {"CPU": 4.0, "memory": 1e9}])
    assert missing == {name: {"CPU": 1.0, "GPU": 0.25} for name in ("panoptic", "owod", "sgg")}
    assert not unplaceable(requests(cfg), [{"CPU": 4.0}, {"CPU": 16.0, "GPU": 1.0}])


def test_a_cluster_that_cannot_host_a_stage_stops_the_job_with_its_name(head, tmp_path):
    """A loopback head with no GPU and no autoscaler: the job ends after resource_wait_s, exit 2."""
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image
    Image.new("RGB", (32, 32), "red").save(images / "a.png")
    start = time.monotonic()
    result = subprocess.run(
        [str(BIN / "python"), "-m", "pipeline", "run", "--config", "tiny", "--only", "panoptic",
         "--address", head.gcs, "--input", str(images), "--output", str(tmp_path / "out"),
         "--set", "annotators.panoptic.num_gpus=1", "--set", "resource_wait_s=3",
         "--set", f"tiny_workdir={tmp_path / 'models'}"],
        cwd=REPO, env=head.env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "stage 'panoptic' asks for {'CPU': 0.25, 'GPU': 1.0} per actor" in result.stderr
    assert "after 3 s" in result.stderr and "--cpu" in result.stderr
    assert time.monotonic() - start < 200
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.parquet"))
