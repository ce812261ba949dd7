"""One local Ray for the whole pipeline test session, on 127.0.0.1, 2 CPUs."""
import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", include_dashboard=False, num_cpus=2, _node_ip_address="127.0.0.1",
             object_store_memory=200 * 1024**2, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
