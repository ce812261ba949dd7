"""Kill the driver (and its embedded Ray) mid-run; the re-run finishes with no image lost or doubled."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.inputs import filesystem_for
from pipeline.resume import data_files
from pipeline.run import run
from schemas import read_annotations

from .test_run import toy_config
from .toy_annotator import toy_stage

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ["working_size=64", "rows_per_file=2", "decode_batch_size=2", "annotators.owod.batch_size=2",
            "decode_num_cpus=0.5", "annotators.owod.num_cpus=0.5", "num_cpus=2",
            "object_store_memory=100000000"]


def test_killed_driver_resumes_exactly_once(ray_local, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"img{i:02d}.png")
    out = tmp_path / "out"
    sets = [a for s in toy_stage(sleep_s=1.0) + SETTINGS for a in ("--set", s)]
    driver = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", "tiny", "--input", str(images),
                               "--output", str(out), *sets], cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fs, root = filesystem_for(str(out))
    deadline = time.time() + 120
    try:
        while not data_files(fs, root) and time.time() < deadline and driver.poll() is None:
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()
    written = read_annotations(out).num_rows
    assert 0 < written < 16, f"the kill should land mid-run, {written} rows were written"

    summary = run(toy_config(images, out, "rows_per_file=2"))
    assert summary["skipped"] == written and summary["ok"] == 16 - written
    table = read_annotations(out)  # raises on a doubled image_id
    assert sorted(table.column("image_id").to_pylist()) == [f"img{i:02d}.png" for i in range(16)]
