"""An image that kills its worker on every attempt ends as its own error row; the run completes."""
import numpy as np
import pytest
from PIL import Image

from pipeline.run import run
from schemas import read_annotations

from .test_run import toy_config


@pytest.mark.timeout(240)
def test_crash_looping_image_becomes_one_error_row(ray_local, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(7):
        Image.fromarray(rng.integers(0, 200, (40, 48, 3), dtype=np.uint8)).save(images / f"photo{i}.png")
    Image.new("RGB", (32, 32), (255, 255, 255)).save(images / "photo3b-white.png")  # mid-corpus, in a full batch
    summary = run(toy_config(images, tmp_path / "out", crash_above_mean=250))
    table = read_annotations(tmp_path / "out")  # validates unique ids, error iff status error
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert table.num_rows == 8 and len(rows) == 8
    bad = rows.pop("photo3b-white.png")
    assert bad["status"] == "error" and bad["error"]["stage"] == "owod", bad["error"]
    assert bad["error"]["message"].startswith("worker process died while annotating this image (crashed ")
    assert all(r["status"] == "ok" and len(r["detections"]) == 1 for r in rows.values())
    assert summary["ok"] == 7 and summary["error"] == 1 and summary["lost"] == 0
