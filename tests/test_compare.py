import csv
import io
import json

import numpy as np
import pytest
from _tiny_runs import make_run, sudoku4_dataset
from matplotlib.image import imread

from reasoners import compare as cmp
from reasoners import evaluate as ev

QUIET = dict(log=lambda s: None)


@pytest.fixture
def sweep(tmp_path, torch_one_thread):
    """A sweep folder as ``python -m reasoners.train -m`` leaves it: three finished runs and one
    still running (metrics.csv, no summary.json), over one tiny 4x4 Sudoku dataset."""
    data = tmp_path / "data"
    sudoku4_dataset(data, n=6)
    root = tmp_path / "multirun" / "12-00-00"
    summaries = {
        "0": make_run(root / "0", "hrm", data, steps=300, wall_s=90.0, final=(0.2, 0.3, 0.6)),
        "1": make_run(root / "1", "trm", data, steps=300, wall_s=8000.0, final=(0.5, 0.55, 0.8)),
        "2": make_run(root / "2", "attractor", data, steps=200, wall_s=10.0, final=(0.1, 0.1, 0.5)),
    }
    (root / "3").mkdir()
    (root / "3" / "metrics.csv").write_text("step,wall_s,loss\n1,0.5,2.0\n")
    return root, summaries


def test_table_rows_match_the_summaries(sweep):
    root, summaries = sweep
    logged = []
    result = cmp.compare([root], log=logged.append)
    rows = result["rows"]
    assert [r["model"] for r in rows] == ["attractor", "hrm", "trm"]  # sorted by data, reasoner, size
    for row in rows:
        s = summaries[row["run"].split("/")[-1]]
        assert row["run"].startswith("12-00-00/")
        assert (row["model"], row["size"], row["data"], row["task"]) == (
            s["model"],
            "tiny",
            "tiny",
            "4x4 sudoku",
        )
        assert (row["parameters"], row["steps"], row["wall_s"]) == (s["parameters"], s["steps"], s["wall_s"])
        assert (row["exact"], row["valid"], row["cell"]) == (
            s["final"]["exact"],
            s["final"]["valid"],
            s["final"]["cell"],
        )
        assert row["from"] == "train" and row["halting_mean_step"] is None
        assert not any(k.startswith("exact@") for k in row)
    assert any("no summary.json" in line and str(root / "3") in line for line in logged)

    paths = result["paths"]
    assert paths == {ext: root / f"comparison.{ext}" for ext in ("md", "csv", "png")}
    with open(paths["csv"], newline="") as f:
        read = list(csv.DictReader(f))
    assert [r["run"] for r in read] == [r["run"] for r in rows]
    assert [float(r["exact"]) for r in read] == [r["exact"] for r in rows]
    assert [int(r["parameters"]) for r in read] == [r["parameters"] for r in rows]
    md = paths["md"].read_text()
    assert md == result["markdown"]
    assert "| 12-00-00/1 | trm | tiny | tiny |" in md and "| 50.0% | 55.0% | train |" in md
    assert "| 90 s |" in md and "| 2.2 h |" in md
    image = imread(io.BytesIO(paths["png"].read_bytes()))
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 800
    assert image.std() > 0  # something drawn


def test_evaluate_fills_the_curve(sweep, tmp_path):
    """--evaluate writes evaluation.json into runs that lack one; the rows then take final accuracy
    and the curve from it, and a later compare reads it back without evaluating."""
    root, _ = sweep
    runs = [root / "0", root / "1"]
    out = tmp_path / "report"
    result = cmp.compare(runs, out, evaluate=True, max_puzzles=3, device="cpu", **QUIET)
    for row in result["rows"]:
        evaluation = json.loads((root / row["run"] / "evaluation.json").read_text())
        assert evaluation["puzzles"] == 3 and evaluation["step"] == 300
        assert row["from"] == "eval"
        assert (row["exact"], row["valid"]) == (evaluation["final"]["exact"], evaluation["final"]["valid"])
        assert row["cell"] == evaluation["final"]["cell"] > 0  # untrained: no exact answers, some cells
        curve = {p["steps"]: p for p in evaluation["curve"]}
        assert sorted(curve) == [1, 2, 4, 8, 16, 32]
        assert [row[f"exact@{k}"] for k in sorted(curve)] == [curve[k]["exact"] for k in sorted(curve)]
        assert row["halting_mean_step"] == evaluation["halting"]["mean_step"]
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "comparison.png"]
    assert "exact@32" in result["markdown"]

    # a later run of compare reads the evaluations; the attractor run without one shows no curve
    mtime = (root / "0" / "evaluation.json").stat().st_mtime_ns
    again = cmp.compare([root], out, **QUIET)
    assert (root / "0" / "evaluation.json").stat().st_mtime_ns == mtime
    by_run = {r["run"].split("/")[-1]: r for r in again["rows"]}
    assert by_run["2"]["from"] == "train" and by_run["2"]["exact@4"] is None
    assert by_run["1"]["exact@4"] == result["rows"][1]["exact@4"]


def test_stale_evaluation_is_reported(sweep):
    root, _ = sweep
    (root / "1" / "evaluation.json").write_text(
        json.dumps({"step": 100, "final": {"exact": 1.0, "valid": 1.0, "cell": 1.0}, "curve": []})
    )
    logged = []
    runs = cmp.load_runs([root / "1"], log=logged.append)
    assert cmp.stale(runs[0])
    assert any("is of step 100" in line and "--evaluate" in line for line in logged)


def test_sweeps_and_runs_together_count_each_run_once(sweep):
    root, _ = sweep
    found = cmp.find_runs([root, root / "1"], **QUIET)
    assert [name for _, name in found] == ["12-00-00/0", "12-00-00/1", "12-00-00/2"]
    assert cmp.find_runs([root / "2"], **QUIET) == [(root / "2", "2")]


def test_legend_labels_disambiguate():
    def run(model, size, data, name, parameters=6_828_034):
        summary = {"model": model, "size": size, "data": data, "parameters": parameters}
        return cmp.Run(path=None, name=name, summary=summary)

    assert cmp.labels([run("trm", "7m", "a", "x"), run("hrm", "27m", "a", "y", 27_275_266)]) == [
        "trm 7m (6.83M)",
        "hrm 27m (27.28M)",
    ]
    assert cmp.labels([run("trm", "7m", "a", "x"), run("trm", "7m", "b", "y")]) == [
        "trm 7m (6.83M, a)",
        "trm 7m (6.83M, b)",
    ]
    assert cmp.labels([run("trm", "7m", "a", "x"), run("trm", "7m", "a", "y")]) == [
        "trm 7m (6.83M) [x]",
        "trm 7m (6.83M) [y]",
    ]


def test_errors_name_the_fix(tmp_path, sweep, capsys):
    root, _ = sweep
    assert cmp.main([str(tmp_path / "missing")]) == 2
    assert "missing is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cmp.main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no runs under" in err and "python -m reasoners.train" in err
    (root / "2" / "summary.json").write_text(json.dumps({"model": "trm"}))
    assert cmp.main([str(root)]) == 2
    err = capsys.readouterr().err
    assert "2/summary.json lacks size, data, parameters, steps, wall_s, final" in err
    (root / "2" / "summary.json").write_text("{not json")
    assert cmp.main([str(root)]) == 2
    assert "is not readable JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cmp.main([str(root), "--max-puzzles", "3"])
    assert "apply to --evaluate only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cmp.main([str(root), "--evaluate", "--max-puzzles", "0"])
    assert "must be a positive integer" in capsys.readouterr().err


def test_cli_prints_the_table(sweep, capsys):
    root, _ = sweep
    assert cmp.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "| run | reasoner | size | data |" in out and "comparison.png" in out
    assert np.isclose(float(next(csv.DictReader(open(root / "comparison.csv")))["exact"]), 0.1)


def test_evaluate_json_is_what_compare_reads(tmp_path, torch_one_thread):
    """The two modules agree on evaluation.json: evaluate's writer, compare's reader."""
    data = tmp_path / "data"
    sudoku4_dataset(data, n=4)
    make_run(tmp_path / "run", "trm", data, steps=0)
    result = ev.evaluate(tmp_path / "run", ev.EvalConfig(steps=(1, 2)), device="cpu", **QUIET)
    ev.write_outputs(result)
    (run,) = cmp.load_runs([tmp_path / "run"], **QUIET)
    assert not cmp.stale(run)
    assert run.final == result["final"] and sorted(run.curve) == [1, 2]


def _seeded_run(root, name, data, *, seed, lr, final, steps=300, evaluation_halt=None):
    make_run(root, name, data, steps=steps, final=final)
    (root / "config.yaml").write_text(
        f"model:\n  name: {name}\nsize:\n  name: tiny\ntrainer:\n  lr: {lr}\n  seed: {seed}\n"
        f"  threads: {seed + 1}\n  progress: {seed % 2 == 0}\nlogger:\n  name: csv{seed}\n"
    )
    if evaluation_halt is not None:
        curve = [{"steps": 4, "exact": final[0], "valid": final[1], "cell": final[2]}]
        evaluation = {"final": dict(zip(("exact", "valid", "cell"), final, strict=True)), "curve": curve}
        evaluation.update(step=steps, halting={"exact": evaluation_halt, "mean_step": 2.0})
        (root / "evaluation.json").write_text(json.dumps(evaluation))


def test_seed_groups_give_mean_and_range(tmp_path, torch_one_thread):
    """Runs that differ only in seed (and in threads, progress bar, logger) are one group; another lr
    is another group; a run without config.yaml stands alone."""
    data = tmp_path / "data"
    sudoku4_dataset(data, n=6)
    root = tmp_path / "sweep"
    exact = {0: 0.90, 1: 0.96, 2: 0.99}
    for seed, e in exact.items():
        _seeded_run(
            root / f"a{seed}", "trm", data, seed=seed, lr=0.002, final=(e, e, 0.99), evaluation_halt=e + 0.005
        )
    for seed in (0, 1):
        _seeded_run(root / f"b{seed}", "trm", data, seed=seed, lr=0.001, final=(0.5 + 0.1 * seed, 0.6, 0.9))
    make_run(root / "lone", "hrm", data, steps=300, final=(0.1, 0.1, 0.5))
    (root / "lone" / "config.yaml").unlink()
    result = cmp.compare([root], **QUIET)
    rows = {r["runs"]: r for r in result["seed_rows"]}
    a = rows["sweep/a0 sweep/a1 sweep/a2"]
    assert a["n"] == 3 and a["seeds"] == "0 1 2"
    assert a["exact_mean"] == pytest.approx(np.mean(list(exact.values())))
    assert (a["exact_min"], a["exact_max"]) == (0.90, 0.99)
    assert a["exact_at_halt_mean"] == pytest.approx(np.mean(list(exact.values())) + 0.005)
    b = rows["sweep/b0 sweep/b1"]
    assert b["n"] == 2 and (b["exact_min"], b["exact_max"]) == (0.5, pytest.approx(0.6))
    assert b["exact_at_halt_mean"] is None
    assert rows["sweep/lone"]["n"] == 1
    assert len(rows) == 3
    md = result["markdown"]
    assert "95.0% (90.0-99.0)" in md
    assert "Equal budgets: every run trained for 300 updates." in md
    with open(result["paths"]["seeds_csv"], newline="") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_seed_table_marks_unequal_budgets(tmp_path, torch_one_thread):
    data = tmp_path / "data"
    sudoku4_dataset(data, n=6)
    root = tmp_path / "sweep"
    _seeded_run(root / "s0", "trm", data, seed=0, lr=0.002, final=(0.9, 0.9, 0.9), steps=7000)
    _seeded_run(root / "s1", "trm", data, seed=1, lr=0.002, final=(0.8, 0.8, 0.9), steps=6500)
    _seeded_run(root / "h0", "hrm", data, seed=0, lr=0.002, final=(0.1, 0.1, 0.5), steps=7000)
    md = cmp.compare([root], **QUIET)["markdown"]
    assert "Budgets differ (updates): hrm tiny: 7,000; trm tiny: 6,500-7,000." in md
    # no group of two or more: no seed table
    solo = tmp_path / "solo"
    _seeded_run(solo / "s0", "trm", data, seed=0, lr=0.002, final=(0.9, 0.9, 0.9))
    result = cmp.compare([solo], **QUIET)
    assert result["seed_rows"] == [] and "seeds_csv" not in result["paths"]


def test_history_holds_updates_and_time_of_every_evaluation(sweep):
    """The figure's training panels read (update, wall time, exact) from each evaluation row of
    metrics.csv and skip the training rows."""
    root, _ = sweep
    run = next(r for r in cmp.load_runs([root], **QUIET) if r.name.endswith("/0"))
    assert [s for s, _, _ in run.history] == [10, 20, 30, 40]
    assert [a for _, _, a in run.history] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert [t for _, t, _ in run.history] == pytest.approx([22.5, 45.0, 67.5, 90.0])
