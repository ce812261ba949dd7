"""One local Ray for the whole pipeline test session, on 127.0.0.1, 2 CPUs; a private head node."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def ray_local():
    import ray
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", include_dashboard=False, num_cpus=2, _node_ip_address="127.0.0.1",
             object_store_memory=200 * 1024**2, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port not handed out before in this process: the socket is closed on return, so the
    kernel may offer the same port to the next call, and Ray refuses one port for two components."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


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
        yield SimpleNamespace(dashboard=address, gcs=f"127.0.0.1:{ports['port']}", env=env)
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
