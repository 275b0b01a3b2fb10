import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GRIDLOOP_SHARED", REPO.parent / "shared"))
BENCH_SUDOKU = SHARED / "benchmarks" / "sudoku"


@pytest.fixture(scope="session")
def bench_sudoku_dir() -> Path:
    if not BENCH_SUDOKU.is_dir():
        pytest.fail(f"{BENCH_SUDOKU} not found: clone with ../shared beside the repo or set GRIDLOOP_SHARED")
    return BENCH_SUDOKU
