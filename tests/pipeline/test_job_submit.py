"""`ray job submit --working-dir . -- python -m pipeline run ...` against a real head on 127.0.0.1."""
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas import read_annotations

from .hostile import PIXEL_LIMIT, write_hostile
from .toy_annotator import toy_stage

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    """A private head node (own ports, own process group: stopping it never touches other Ray instances)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # Every port free and our own: the agents' defaults (52365, ...) are taken by any other Ray on
    # this machine, e.g. the session's local Ray, and then the head never accepts a job.
    ports = {name: free_port() for name in ("port", "dashboard-port", "ray-client-server-port",
                                            "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                            "metrics-export-port", "runtime-env-agent-port")}
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", *[f"--{name}={port}" for name, port in ports.items()], "--num-cpus=2", "--object-store-memory=150000000", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        from ray.job_submission import JobSubmissionClient
        deadline = time.time() + 90
        while True:
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError("the Ray head did not come up")
                time.sleep(1)
        yield address, env
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def test_job_submit_to_local_head(head, tmp_path):
    address, env = head
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
