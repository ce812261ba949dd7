import pytest


@pytest.fixture(scope="module")
def ray_here():
    """The session's local Ray when the pipeline tests already started it, else one of our own
    (same settings: 127.0.0.1, 2 CPUs), stopped after the module."""
    import ray
    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", include_dashboard=False, num_cpus=2, _node_ip_address="127.0.0.1",
             object_store_memory=200 * 1024**2, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
