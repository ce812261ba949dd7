import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: thread start-up costs more than it saves, badly so on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "moai-tiny"  # shared by the test modules; built once
