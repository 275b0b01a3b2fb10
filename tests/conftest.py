import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GRIDLOOP_SHARED", REPO.parent / "shared"))
BENCH_SUDOKU = SHARED / "benchmarks" / "sudoku"


@pytest.fixture(scope="session")
def bench_sudoku_dir() -> Path:
    if not BENCH_SUDOKU.is_dir():
        pytest.fail(f"{BENCH_SUDOKU} not found: clone with ../shared beside the repo or set GRIDLOOP_SHARED")
    return BENCH_SUDOKU


@pytest.fixture
def torch_one_thread():
    """One intra-op thread for tests of small tensors: on a busy 2-core machine extra threads only add
    contention (measured 17x slower per solver iteration); the caller's setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
