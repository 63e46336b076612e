import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def real_data_dir() -> Path | None:
    """The real benchmark data: $PTCORE_DATA_DIR, else ../shared/data beside the checkout."""
    env = os.environ.get("PTCORE_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def data_dir() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip("real benchmark data not found (set PTCORE_DATA_DIR or put it at ../shared/data)")
    return path
