"""bench/compare_reasoners.py end to end on a tiny budget: 2 learning rates x 2 seeds of real training
runs, aggregated per recipe against the runs' own summaries; a second call keeps the finished runs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import compare_reasoners as bench  # noqa: E402


def _extra(data: Path) -> list[str]:
    return [
        "--", f"data.dir={data}", "data.auto_build=false", "trainer.batch_size=8", "trainer.eval_interval=2",
        "trainer.log_interval=1", "trainer.lr_warmup_steps=1", "+model.arch.halt_max_steps=2",
    ]  # fmt: skip


@pytest.mark.slow
def test_sweep_trains_every_recipe_and_aggregates_its_seeds(tiny_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["--experiment", "laptop_smoke", "--models", "trm", "--lrs", "1e-3,3e-3", "--seeds", "0,1",
            "--updates", "4", "--jobs", "2", "--out", str(out)]  # fmt: skip
    assert bench.main(args + _extra(tiny_data)) == 0
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == ["trm-lr0.001-s0", "trm-lr0.001-s1", "trm-lr0.003-s0", "trm-lr0.003-s1"]
    summaries = {n: json.loads((out / "runs" / n / "summary.json").read_text()) for n in names}
    assert all(s["steps"] == 4 for s in summaries.values())  # the budget is the updates given
    with open(out / "sweep.csv", newline="") as f:
        rows = {float(r["lr"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == [0.001, 0.003]
    for lr, row in rows.items():
        runs = [summaries[f"trm-lr{lr:g}-s{s}"] for s in (0, 1)]
        exact = [r["final"]["exact"] for r in runs]
        halt = [r["final"]["halt_exact"] for r in runs]
        assert row["n"] == "2" and row["seeds"] == "0 1"
        assert float(row["exact_mean"]) == pytest.approx(np.mean(exact))
        assert (float(row["exact_min"]), float(row["exact_max"])) == pytest.approx((min(exact), max(exact)))
        assert float(row["exact_at_halt_mean"]) == pytest.approx(np.mean(halt))
        assert float(row["score_mean"]) == pytest.approx(np.mean(np.minimum(exact, halt)))
        calls = [float(_rows(out / "runs" / f"trm-lr{lr:g}-s{s}")[-1]["train_calls"]) for s in (0, 1)]
        assert float(row["train_calls_mean"]) == pytest.approx(np.mean(calls)) and calls[0] > 0
    for lr, row in rows.items():  # cell accuracy, the tie-break, is the runs' own
        cell = [summaries[f"trm-lr{lr:g}-s{s}"]["final"]["cell"] for s in (0, 1)]
        assert float(row["cell_mean"]) == pytest.approx(np.mean(cell))
    scores = {lr: (float(r["score_mean"]), float(r["cell_mean"])) for lr, r in rows.items()}
    best = max(scores, key=lambda lr: (*scores[lr], -lr))
    assert [lr for lr, r in rows.items() if r["chosen"] == "True"] == [best]
    chosen = json.loads((out / "chosen.json").read_text())["chosen"]
    assert [c["lr"] for c in chosen] == [best]
    assert imread(out / "sweep.png").shape[1] > 1000
    assert "Equal budgets: every run trained for 4 updates." in (out / "sweep.md").read_text()

    # again: nothing is retrained (the finished runs are kept), the report is the same
    before = {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in names}
    capsys.readouterr()
    assert bench.main(args + _extra(tiny_data)) == 0
    assert "4 of 4 runs already finished: kept" in capsys.readouterr().out
    assert {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in names} == before


@pytest.mark.slow
def test_a_run_stopped_part_way_is_resumed_to_the_uninterrupted_runs_weights(tiny_data, tmp_path, capsys):
    """A sweep whose run stopped before its budget (here by ``trainer.stop_at_step``, as a killed run
    would) is not counted as finished: the command again resumes it from its checkpoint, and it ends on
    the weights of the same recipe run straight through."""

    def args(out):
        return ["--experiment", "laptop_smoke", "--models", "trm", "--lrs", "3e-3", "--seeds", "0",
                "--updates", "4", "--jobs", "1", "--out", str(out)]  # fmt: skip

    straight, split = tmp_path / "straight", tmp_path / "split"
    assert bench.main(args(straight) + _extra(tiny_data)) == 0
    assert bench.main(args(split) + _extra(tiny_data) + ["trainer.stop_at_step=2"]) == 0
    run = split / "runs" / "trm-lr0.003-s0"
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    capsys.readouterr()
    assert bench.main(args(split) + _extra(tiny_data)) == 0
    assert "already finished" not in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert "resumed from" in (split / "logs" / "trm-lr0.003-s0.log").read_text()
    a = torch.load(straight / "runs" / "trm-lr0.003-s0" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6, msg=k)
    # a third call keeps it
    capsys.readouterr()
    assert bench.main(args(split) + _extra(tiny_data)) == 0
    assert "1 of 1 runs already finished: kept" in capsys.readouterr().out


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_axis_values_fall_back_to_the_preset_for_fields_a_run_did_not_override():
    from types import SimpleNamespace

    base = {"size": {"name": "tiny"}, "data": {"puzzle": "sudoku"}}
    named = SimpleNamespace(config={**base, "model": {"name": "trm_mlp", "arch": {"d_model": 128}}})
    plain = SimpleNamespace(config={**base, "model": {"name": "hrm", "arch": {}}})
    unknown = SimpleNamespace(config={**base, "model": {"name": "nope", "arch": {}}})
    axes = ["+model.arch.d_model", "trainer.lr"]
    assert bench._axis_label(named, axes) == "d_model=128 lr=None"
    assert bench._axis_label(plain, axes) == "d_model=64 lr=None"  # HRM tiny's width (presets, README)
    assert bench._axis_label(unknown, axes[:1]) == "d_model=None"


def test_plan_crosses_every_axis_and_names_runs_by_their_values():
    jobs = bench.plan(["trm", "hrm"], [("+model.arch.d_model", ["32", "64"])], [1e-3, 2e-3], [0, 1])
    assert len(jobs) == 2 * 2 * 2 * 2
    assert jobs[0].name == "trm-d_model32-lr0.001-s0" and jobs[1].seed == 1  # seeds innermost
    assert len({j.name for j in jobs}) == len(jobs)
    o = jobs[0].overrides("laptop_sudoku", 500, Path("r"), ["x=1"])
    assert "+model.arch.d_model=32" in o and "trainer.max_steps=500" in o and o[-1] == "hydra.run.dir=r"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lrs", "0,1e-3"], "positive floats"),
        (["--seeds", "a"], "positive ints"),
        (["--updates", "0"], "positive integer"),
        (["--axis", "size"], "KEY=V1,V2"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main([*args, "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_report_of_a_folder_without_runs_says_so(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert bench.main(["--report-only", "--out", str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().err


def test_include_reports_several_sweeps_as_one_and_counts_a_run_once(tmp_path, torch_one_thread):
    """Seeds of one recipe trained into two sweep folders are one recipe of the joint report (mean and
    range over both); a folder included twice, or also under --out, adds no run twice."""
    from _tiny_runs import make_run, sudoku4_dataset

    data = tmp_path / "data"
    sudoku4_dataset(data, n=6)
    exact = {0: 0.5, 1: 0.7, 3: 0.9}
    for seed, e in exact.items():
        folder = tmp_path / ("a" if seed == 0 else "b") / "runs" / f"trm-lr0.002-s{seed}"
        make_run(folder, "trm", data, steps=40, final=(e, e, 0.95))
        (folder / "config.yaml").write_text(
            f"model:\n  name: trm\nsize:\n  name: tiny\ntrainer:\n  lr: 0.002\n  seed: {seed}\n"
        )
    out = tmp_path / "joint"
    include = [tmp_path / "a", tmp_path / "b", tmp_path / "b" / "runs"]
    result = bench.report(out, [], "last", [], log=lambda s: None, include=include)
    (row,) = result["rows"]
    assert row["n"] == 3 and row["seeds"] == "0 1 3"
    assert row["exact_mean"] == pytest.approx(np.mean(list(exact.values())))
    assert (row["exact_min"], row["exact_max"]) == (0.5, 0.9)
    assert (out / "sweep.md").is_file() and imread(out / "sweep.png").shape[1] > 1000
    # the same through the command line, with --out holding nothing of its own
    cli = ["--report-only", "--select", "last", "--out", str(out)]
    assert bench.main(cli + ["--include", str(tmp_path / "a"), "--include", str(tmp_path / "b")]) == 0
    assert json.loads((out / "chosen.json").read_text())["chosen"][0]["seeds"] == "0 1 3"
