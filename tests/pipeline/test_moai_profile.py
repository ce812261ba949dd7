"""The `moai` profile as shipped, on a full-size twin of the published models (random weights at the
published sizes, under the published ids): `python -m pipeline run` on 3 images, CPU only."""
import os
import subprocess

import pytest

from annotators.fake_weights import write_twin
from annotators.vocab import load_vocabulary
from pipeline.demo_corpus import write_demo_corpus
from schemas import read_annotations
from schemas.io import read_provenance
from schemas.psmap import decode_ps_map

from .conftest import BIN, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin")
    write_twin(root)
    env = {**os.environ, "HF_HOME": str(root / "hf"), "MOAI_MODELS": str(root)}
    env.pop("HF_HUB_CACHE", None)
    return root, env


def test_check_finds_every_published_model_in_the_twin(twin):
    root, env = twin
    result = subprocess.run([str(BIN / "python"), "-m", "pipeline", "check", "--no-hash"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every model is here" in result.stdout
    for where in ("models--facebook--mask2former-swin-base-coco-panoptic", "models--google--owlv2-base-patch16-ensemble",
                  str(root / "psgtr_r50"), str(root / "ppocr" / "PP-OCRv6_small_det")):
        assert where in result.stdout


def test_the_unchanged_moai_profile_annotates_on_cpu(twin, tmp_path):
    root, env = twin
    images = tmp_path / "images"
    for photo in write_demo_corpus(tmp_path / "corpus"):
        if photo.name in ("bus.jpg", "chelsea.jpg", "sign_hello.png"):
            images.mkdir(exist_ok=True)
            (images / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    result = subprocess.run([str(BIN / "python"), "-m", "pipeline", "run", "--input", str(images), "--output", str(out)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert log.count("warning: no GPU on this machine") == 1  # one line, then it runs on the CPU
    assert "summary: ok=3 error=0" in result.stdout

    table = read_annotations(out)
    assert table.num_rows == 3 and set(table.column("status").to_pylist()) == {"ok"}
    for png in table.column("ps_map").to_pylist():
        assert decode_ps_map(png).shape == (490, 490)
    assert all(isinstance(t, str) for t in table.column("text_aux").to_pylist())

    provenance = read_provenance(out)["annotators"]
    assert provenance["panoptic"]["model"] == "facebook/mask2former-swin-base-coco-panoptic"
    assert provenance["owod"]["model"] == "google/owlv2-base-patch16-ensemble"
    queries = load_vocabulary("moai:owlv2")
    assert provenance["owod"]["vocabulary"] == {"name": "moai:owlv2", "size": 1847, "sha256": queries.sha256}
    assert provenance["sgg"]["model"] == "psgtr_resnet50" and provenance["sgg"]["source"]["num_keys"] == 585
    assert provenance["ocr"]["models"]["det"]["dir"] == str(root / "ppocr" / "PP-OCRv6_small_det")
    for stage in ("panoptic", "owod", "sgg"):
        assert (provenance[stage]["device"], provenance[stage]["dtype"]) == ("cpu", "float32")
    assert provenance["ocr"]["device"] == "cpu"
    assert provenance["panoptic"]["weights_sha256"]["model.safetensors"]  # hashed where it was loaded
