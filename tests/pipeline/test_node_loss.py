"""A worker node dies mid-run, on Ray's own multi-node test harness (`ray.cluster_utils.Cluster`: a
head and two worker raylets on 127.0.0.1, each with its own resources): the run completes, or the
same command run again finishes it, with every input exactly once and nothing half-written visible."""
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from schemas import parquet_files, read_annotations

from .conftest import REPO, free_port
from .toy_annotator import toy_stage

IMAGES = 48


def node_args(**extra) -> dict:
    ports = {name: free_port() for name in ("object_manager_port", "metrics_agent_port", "metrics_export_port",
                                            "runtime_env_agent_port", "dashboard_agent_listen_port")}
    return {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024 ** 2, **ports, **extra}


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args=node_args(
        num_cpus=0, gcs_server_port=free_port(), include_dashboard=False,
        ray_client_server_port=free_port()))  # the head schedules nothing, as in the KubeRay manifests
    workers = [cluster.add_node(**node_args(num_cpus=1)) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def command(address: str, images, out, *extra) -> list[str]:
    sets = toy_stage(sleep_s=0.4) + [
        "working_size=64", "decode_batch_size=2", "decode_num_cpus=0.25", "rows_per_file=4",
        "annotators.owod.batch_size=2", "annotators.owod.num_cpus=0.6", "annotators.owod.min_actors=2",
        "annotators.owod.max_actors=2", "annotators.owod.max_restarts=4", "annotators.owod.max_task_retries=4",
        "resource_wait_s=20", *extra]
    return [sys.executable, "-m", "pipeline", "run", "--config", "tiny", "--address", address,
            "--input", str(images), "--output", str(out), *[a for s in sets for a in ("--set", s)]]


@pytest.mark.timeout(600)
def test_a_worker_node_killed_mid_run_loses_and_doubles_nothing(cluster, tmp_path):
    cluster, workers = cluster
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 200, (40, 48, 3), dtype=np.uint8)).save(images / f"p{i:03d}.png")
    out = tmp_path / "out"
    run = subprocess.Popen(command(cluster.address, images, out), cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not (out.exists() and list(out.glob("*.parquet"))) and run.poll() is None:
        assert time.monotonic() < deadline, "no file written in time"
        time.sleep(0.2)
    assert run.poll() is None, "the run ended before the node could be killed"
    # 0.6 CPU per toy actor on 1-CPU nodes: one actor per node, so the lost node takes one with it
    cluster.remove_node(workers[1], allow_graceful=False)  # the raylet and its workers die at once
    try:
        first_log, _ = run.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
        first_log, _ = run.communicate()
    runs = [run.returncode]
    if run.returncode != 0 or len(read_annotations(out)) < IMAGES:
        again = subprocess.run(command(cluster.address, images, out), cwd=REPO, capture_output=True, text=True,
                               timeout=300)
        runs.append(again.returncode)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    table = read_annotations(out)  # unique ids across every file, error iff status
    table_ids = sorted(table.column("image_id").to_pylist())
    assert table_ids == sorted(p.name for p in images.iterdir()), (runs, first_log[-3000:])
    statuses = table.column("status").to_pylist()
    # a block lost with the node is redone, or (after max_task_retries) written as its own error rows
    assert statuses.count("ok") + statuses.count("error") == IMAGES
    assert all(not part.name.startswith(("_", ".")) for part in parquet_files(out))
    assert not (out / "_tmp").exists() or not any((out / "_tmp").iterdir())
