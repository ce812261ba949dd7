"""Session-wide test settings: offline everywhere, Ray on loopback, the shared reference data."""
import os
from pathlib import Path

import pytest

for key, value in {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false",
    "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; the same feature has a CPU test")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared reference data (vocabularies, PSGTR fixtures): ../shared or $MOAI_SHARED."""
    path = Path(os.environ.get("MOAI_SHARED", REPO.parent / "shared"))
    if not (path / "vocab").is_dir():
        raise FileNotFoundError(f"shared reference data not found at {path}; set MOAI_SHARED")
    return path
