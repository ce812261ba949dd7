"""Session-wide test settings: offline everywhere, Ray on loopback, the shared reference data."""
import os
import tempfile
from pathlib import Path

import pytest

for key, value in {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false",
    "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK": "True", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]
# The models root: never the checkout's ./models (OCR folders are prepared there on first use).
os.environ.setdefault("MOAI_MODELS", tempfile.mkdtemp(prefix="moai-models-"))
os.environ.setdefault("MOAI_CACHE", tempfile.mkdtemp(prefix="moai-cache-"))


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; the same feature has a CPU test")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def find_shared_dir() -> Path | None:
    """The project's shared reference data: $MOAI_SHARED, else a `shared/` beside a parent of the repo."""
    candidates = [Path(os.environ["MOAI_SHARED"])] if os.environ.get("MOAI_SHARED") else []
    candidates += [parent / "shared" for parent in REPO.parents]
    return next((c for c in candidates if (c / "vocab").is_dir()), None)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Vocabularies and PSGTR parity fixtures. They are reference data that is not ours to ship in
    the repo, so a checkout without them skips these tests and says where to point MOAI_SHARED."""
    path = find_shared_dir()
    if path is None:
        pytest.skip("shared reference data (vocab/, fixtures/psgtr/) not found beside the checkout; "
                    "set MOAI_SHARED to the folder")
    return path
