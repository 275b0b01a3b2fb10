import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """64 4x4 Sudoku puzzles x 3 (2 augmentations) for training, 16 for test: built by the real builder
    once per session, for the tests that run the trainer."""
    out = tmp_path_factory.mktemp("data") / "sudoku-4x4"
    subprocess.run(
        [sys.executable, "-m", "data_gen.sudoku", "--box", "2x2", "--n", "64", "--test-n", "16",
         "--num-aug", "2", "--seed", "3", "--out", str(out), "--quiet"],
        check=True, cwd=REPO,
    )  # fmt: skip
    return out
