"""`ray job submit --working-dir . -- python -m pipeline run ...` against a real head on 127.0.0.1."""
import json
import re
import subprocess
import time

from schemas import read_annotations

from .conftest import BIN, REPO
from .hostile import PIXEL_LIMIT, write_hostile
from .toy_annotator import toy_stage


def test_job_submit_to_local_head(head, tmp_path):
    address, env = head.dashboard, head.env
    expected = write_hostile(tmp_path / "images")
    out = tmp_path / "out"
    sets = [a for s in toy_stage() + ["working_size=64", f"max_pixels={PIXEL_LIMIT}"] for a in ("--set", s)]
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
               "--runtime-env-json", json.dumps({"excludes": [".venv", "runs", "demo"]}),
               "--", "python", "-m", "pipeline", "run", "--config", "tiny", "--input", str(tmp_path / "images"),
               "--output", str(out), *sets]
    for _ in range(5):  # the dashboard answers a little before its job agent does
        submit = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if "No available agent" not in submit.stdout + submit.stderr:
            break
        time.sleep(3)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    job_id = re.search(r"raysubmit_\w+", submit.stdout + submit.stderr).group(0)
    from ray.job_submission import JobStatus, JobSubmissionClient
    assert JobSubmissionClient(address).get_job_status(job_id) == JobStatus.SUCCEEDED
    logs = JobSubmissionClient(address).get_job_logs(job_id)
    assert "summary: ok=7 error=4 skipped=0" in logs, logs[-3000:]  # the job's own summary line
    table = read_annotations(out)
    assert sorted(table.column("image_id").to_pylist()) == sorted(expected)
