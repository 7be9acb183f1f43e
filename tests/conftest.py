import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("TINYTHINKER_TEST_DATA", ROOT.parent / "shared" / "data"))

# One BLAS thread: on a 2-core machine shared with other processes, torch's default thread pool makes small-model
# generation several times slower (measured by bench/pipeline_speed.py). Set before torch is imported, and
# inherited by the tests' child processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tests never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared benchmark data not found at {SHARED_DATA}; set TINYTHINKER_TEST_DATA")
    return SHARED_DATA
