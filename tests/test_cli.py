"""Every entry point ends a user error in one line and exit code 2 (a traceback only when debugging is
asked for), and ``gridloop`` dispatches to each of them. Each case runs the real command in a fresh
process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from _tiny_runs import make_run, sudoku4_dataset


class NotWeights:
    """Pickled into a checkpoint, it makes the file one that only ``weights_only=False`` could load."""


def _run(args: list[str], cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=300,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    sudoku4_dataset(data, n=6)
    make_run(root / "run", "trm", data)
    torch.save({"format": "gridloop-checkpoint/1", "model": NotWeights()}, root / "pickled.pt")
    return root


CASES = {
    "unknown command": (["gridloop.cli", "nope"], "unknown command 'nope'"),
    "unknown config key": (["gridloop.cli", "train", "trainer.lrr=1"], "Key 'lrr' not in 'TrainerConfig'"),
    "unknown config choice": (["reasoners.train", "model=trmm"], "Available options in 'model': attractor"),
    "bad config value": (["gridloop.cli", "train", "trainer.lr=-1"], "trainer.lr must be a positive number"),
    "missing dataset": (
        ["reasoners.train", "data.dir={root}/none", "data.auto_build=false", "hydra.run.dir={root}/t"],
        "python -m data_gen.sudoku",
    ),
    "missing checkpoint": (["gridloop.cli", "evaluate", "checkpoint={root}/none"], "not found"),
    "pickled checkpoint": (
        ["reasoners.evaluate", "checkpoint={root}/pickled.pt"],
        "refuses to run code from a checkpoint",
    ),
    "malformed puzzle": (
        ["gridloop.cli", "visualize", "checkpoint={root}/run", "puzzle='1..4'", "out={root}/x.png"],
        "puzzle",
    ),
    "index out of range": (
        ["reasoners.visualize", "checkpoint={root}/run", "data={root}/data", "index=99", "out={root}/x.png"],
        "index=99 is out of range",
    ),
    "wrong kind of dataset": (
        ["reasoners.visualize", "checkpoint={root}/run", "data={root}/run"],
        "does not hold",
    ),
    "visualize bad breadth": (
        ["reasoners.visualize", "checkpoint={root}/run", "data={root}/data", "breadth.trajectories=0"],
        "breadth.trajectories: the number of trajectories K must be an integer >= 1, got 0",
    ),
    "quickstart bad budget": (["gridloop.cli", "quickstart", "trainer.max_steps=0"], "trainer.max_steps"),
    "sudoku builder bad value": (["gridloop.cli", "sudoku", "--box", "5x5"], "--box"),
    "maze builder bad value": (["data_gen.maze", "--size", "1"], "--size must be in 3..1000"),
    "compare missing folder": (["gridloop.cli", "compare", "{root}/none"], "is not a directory"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_end_in_one_line_with_exit_code_2(case, files):
    args, expected = CASES[case]
    res = _run([a.format(root=files) for a in args], cwd=files)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert expected in lines[0], lines[0]
    if case == "pickled checkpoint":
        assert "weights_only=False" not in res.stderr and "pickled" in lines[0]


def test_debugging_shows_the_traceback(files):
    for env in ({"HYDRA_FULL_ERROR": "1"}, {}):
        args = ["gridloop.cli"] + (["--debug"] if not env else []) + ["evaluate", f"checkpoint={files}/none"]
        res = _run(args, cwd=files, env=env)
        assert res.returncode != 0 and "Traceback" in res.stderr and "FileNotFoundError" in res.stderr


def test_gridloop_dispatches_and_lists_its_commands(files):
    res = _run(["gridloop.cli", "--help"], cwd=files)
    assert res.returncode == 0
    for name in ("quickstart", "sudoku", "maze", "train", "evaluate", "compare", "visualize"):
        assert f"  {name}" in res.stdout
    res = _run(["gridloop.cli", "summary", "--puzzle", "sudoku"], cwd=files)
    assert res.returncode == 0 and "| trm | 7m | sudoku | 6,828,034 |" in res.stdout


@pytest.mark.slow
def test_quickstart_trains_evaluates_and_draws(files):
    """The main job end to end on a tiny budget: a run folder with metrics, checkpoint, evaluation and
    trajectory, and the closing summary naming them."""
    out = files / "qs"
    res = _run(
        [
            "reasoners.quickstart",
            f"data.dir={files}/data",
            "data.auto_build=false",
            "trainer.max_steps=6",
            "trainer.batch_size=4",
            "trainer.eval_interval=3",
            "trainer.progress=false",
            "quickstart.gif=true",
            f"hydra.run.dir={out}",
        ],
        cwd=files,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("metrics.csv", "summary.json", "evaluation.json", "evaluation.md", "trajectory.png"):
        assert (out / name).is_file(), name
    assert (out / "trajectory.gif").is_file() and (out / "checkpoints" / "last.pt").is_file()
    assert "gridloop quickstart: trm tiny" in res.stdout and "6 updates" in res.stdout
    assert str(out / "trajectory.png") in res.stdout and "next:" in res.stdout
    # the main job keeps to its depth curve: breadth is evaluate's, and would outlast the training
    assert json.loads((out / "evaluation.json").read_text())["breadth"] == {"skipped": "eval.breadth=null"}
