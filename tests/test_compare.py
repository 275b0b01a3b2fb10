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
    # summaries written without the halting step's accuracy show "-" there
    assert "| 12-00-00/1 | trm | tiny | tiny |" in md and "| 50.0% | 55.0% | - | train |" in md
    assert all(r["exact_at_halt"] is None for r in rows)
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
        assert sorted(curve) == list(ev.EvalConfig().steps)  # evaluate's default depth curve
        # evaluate's breadth section is what the breadth table reads: at its largest depth, the best
        # selector's figures are that row's, trajectory 0 costs one K-th of the row's calls
        breadth = next(r for r in result["breadth_rows"] if r["run"] == row["run"])
        depth = max(r["steps"] for r in evaluation["breadth"]["rows"])
        (at,) = [
            r
            for r in evaluation["breadth"]["rows"]
            if (r["steps"], r["trajectories"]) == (depth, breadth["trajectories"])
        ]
        assert breadth["steps"] == depth and breadth["trajectories"] > 1
        assert breadth["exact"] == at[breadth["selector"]]["exact"]
        assert breadth["calls_per_puzzle"] == at["calls_per_puzzle"] > 0
        assert breadth["single_calls_per_puzzle"] == at["calls_per_puzzle"] / at["trajectories"]
        assert breadth["pass_at_k_exact"] == at["pass_at_k"]["exact"]
        assert [row[f"exact@{k}"] for k in sorted(curve)] == [curve[k]["exact"] for k in sorted(curve)]
        assert row["halting_mean_step"] == evaluation["halting"]["mean_step"]
        assert row["exact_at_halt"] == evaluation["halting"]["exact"]
    names = ["comparison.csv", "comparison.md", "comparison.png", "comparison_breadth.csv"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert "exact@32" in result["markdown"]

    # a later run of compare reads the evaluations; the attractor run without one shows no curve
    mtime = (root / "0" / "evaluation.json").stat().st_mtime_ns
    again = cmp.compare([root], out, **QUIET)
    assert (root / "0" / "evaluation.json").stat().st_mtime_ns == mtime
    by_run = {r["run"].split("/")[-1]: r for r in again["rows"]}
    assert by_run["2"]["from"] == "train" and by_run["2"]["exact@4"] is None
    assert by_run["1"]["exact@4"] == result["rows"][1]["exact@4"]


def test_exact_at_the_halting_step_comes_from_the_trainer_without_an_evaluation(tmp_path, torch_one_thread):
    data = tmp_path / "data"
    sudoku4_dataset(data, n=6)
    run = tmp_path / "r"
    make_run(run, "trm", data, steps=40, final=(0.9, 0.9, 0.95))
    summary = json.loads((run / "summary.json").read_text())
    summary["final"].update(halt_exact=0.875, halt_step=2.25)
    (run / "summary.json").write_text(json.dumps(summary))
    result = cmp.compare([run], tmp_path / "out", **QUIET)
    (row,) = result["rows"]
    assert (row["exact_at_halt"], row["halting_mean_step"], row["from"]) == (0.875, 2.25, "train")
    assert "| 90.0% | 90.0% | 87.5% (2.2) | train |" in result["markdown"]


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
        # an experiment's lookup table, edited between seeds (its effect is in trainer, resolved)
        f"laptop_steps:\n  hrm: {1000 * (seed + 1)}\n"
    )
    if evaluation_halt is not None:
        curve = [{"steps": 4, "exact": final[0], "valid": final[1], "cell": final[2]}]
        evaluation = {"final": dict(zip(("exact", "valid", "cell"), final, strict=True)), "curve": curve}
        evaluation.update(step=steps, halting={"exact": evaluation_halt, "mean_step": 2.0})
        (root / "evaluation.json").write_text(json.dumps(evaluation))


def test_seed_groups_give_mean_and_range(tmp_path, torch_one_thread):
    """Runs that differ only in seed (and in threads, progress bar, logger, an experiment's lookup table)
    are one group; another lr is another group; a run without config.yaml stands alone."""
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
    assert [p.step for p in run.history] == [10, 20, 30, 40]
    assert [p.exact for p in run.history] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert [p.wall_s for p in run.history] == pytest.approx([22.5, 45.0, 67.5, 90.0])
    assert [p.calls for p in run.history] == [None] * 4  # written without train_calls (older runs)


def test_history_reads_the_training_calls_of_each_evaluation(tmp_path, torch_one_thread):
    data = tmp_path / "data"
    sudoku4_dataset(data, n=6)
    run = tmp_path / "r"
    make_run(run, "trm", data, steps=40, final=(0.2, 0.3, 0.6))
    (run / "metrics.csv").write_text(
        "step,wall_s,train_calls,loss,eval_exact\n10,1.0,960,0.9,\n10,1.0,960,,0.25\n20,2.5,1920,,0.5\n"
    )
    (r,) = cmp.load_runs([run], **QUIET)
    assert r.history == [cmp.Point(10, 1.0, 0.25, 960.0), cmp.Point(20, 2.5, 0.5, 1920.0)]


def test_fixed_point_table_reads_the_last_window_the_last_probe_and_the_worst_share(
    tmp_path, torch_one_thread
):
    data = tmp_path / "data"
    sudoku4_dataset(data, n=6)
    att, trm = tmp_path / "att", tmp_path / "trm"
    make_run(att, "attractor", data, steps=30, final=(0.2, 0.3, 0.6))
    make_run(trm, "trm", data, steps=30, final=(0.4, 0.5, 0.7))
    cols = "step,wall_s,train_calls,loss,eval_exact,solver_converged,solver_rel_residual,solver_iters_p50,"
    cols += "solver_iters_p90,eval_rho_median,eval_rho_below_1,eval_ema_rho_median,eval_ema_rho_below_1,"
    cols += "eval_warm_start_residual\n"
    rows = [
        "10,1,96,0.9,,0.5,2e-3,4,16,,,,,",
        "10,1,96,,0.1,,,,,1.20,0.40,0.95,0.90,3e-2",
        "20,2,192,0.8,,0.97,4e-4,2,3,,,,,",
        "20,2,192,,0.2,,,,,0.80,0.97,0.70,1.00,5e-3",
    ]
    (att / "metrics.csv").write_text(cols + "\n".join(rows) + "\n")
    out = cmp.compare([att, trm], tmp_path / "out", **QUIET)
    (row,) = out["fixed_point_rows"]  # TRM solves nothing: no row
    assert row["run"].endswith("att") and row["solve_step"] == 20 and row["probe_step"] == 20
    assert row["solver_converged"] == 0.97 and row["solver_iters_p90"] == 3.0
    assert row["eval_rho_median"] == 0.8 and row["eval_ema_rho_below_1"] == 1.0
    # the lowest share below 1 over every evaluation, not the last one's
    assert row["worst_rho_below_1"] == 0.40 and row["worst_ema_rho_below_1"] == 0.90
    md = out["markdown"]
    assert "97.0% (20)" in md and "2.0 / 3.0" in md and "0.80, 97.0% (20)" in md and "40.0% / 90.0%" in md


# ----------------------------------------------------------------------------- test-time compute

SELECTORS = ["convergence", "q_head", "first_halt", "majority"]


def _scores(exact):
    return {"exact": exact, "valid": exact, "cell": 0.9}


def _breadth_row(steps, k, calls, single, picks, pass_at_k):
    """One row of evaluation.json's breadth section: ``picks`` is each selector's exact accuracy."""
    row = {"steps": steps, "trajectories": k, "calls_per_puzzle": calls, "single": _scores(single)}
    row.update({sel: _scores(e) for sel, e in zip(SELECTORS, picks, strict=True)})
    row["pass_at_k"] = _scores(pass_at_k)
    return row


def _write_evaluation(run, steps, curve, breadth=None, **extra):
    """A hand-made evaluation.json: ``curve`` holds (steps, exact, calls per puzzle or absent)."""
    points = []
    for point in curve:
        p = {"steps": point[0], **_scores(point[1])}
        if len(point) > 2:
            p["calls_per_puzzle"] = point[2]
        points.append(p)
    evaluation = {"step": steps, "final": _scores(curve[-1][1]), "curve": points, "halt_max_steps": 4}
    if breadth is not None:
        evaluation["breadth"] = breadth
    evaluation.update(extra)
    (run / "evaluation.json").write_text(json.dumps(evaluation))


@pytest.fixture
def compute_runs(tmp_path, torch_one_thread):
    """Four runs: ``a`` with depth calls and a breadth section of known numbers, ``b`` whose selectors
    tie, ``old`` with an evaluation.json from before calls and breadth, ``off`` with breadth skipped."""
    data = tmp_path / "data"
    sudoku4_dataset(data, n=6)
    root = tmp_path / "multirun" / "12-00-00"
    for name, model in (("a", "trm"), ("b", "hrm"), ("old", "attractor"), ("off", "trm")):
        make_run(root / name, model, data, steps=300, checkpoint=False)
    # a: TRM-like, 6 calls per supervision step; breadth at depths 2 and 4 over K = 1, 2, 4
    _write_evaluation(root / "a", 300, [(1, 0.1, 6.0), (2, 0.2, 12.0), (4, 0.3, 24.0)], {
        "puzzles": 8, "trajectories": [1, 2, 4], "init_noise": 0.5, "step_noise": 0.0, "seed": 0,
        "selectors": SELECTORS,
        "rows": [
            _breadth_row(2, 1, 12.0, 0.2, [0.2] * 4, 0.2),
            _breadth_row(2, 4, 48.0, 0.2, [0.3, 0.3, 0.3, 0.9], 0.95),  # not the largest depth: unused
            _breadth_row(4, 1, 24.0, 0.3, [0.3] * 4, 0.3),
            _breadth_row(4, 2, 48.0, 0.3, [0.4, 0.5, 0.35, 0.3], 0.6),
            _breadth_row(4, 4, 96.0, 0.3, [0.5, 0.5, 0.45, 0.4], 0.7),  # q_head ties K=2: the smaller K
        ],
    })  # fmt: skip
    # b: no call counts (a reasoner without network stacks); convergence and majority tie at K = 3
    _write_evaluation(root / "b", 300, [(1, 0.0, None), (8, 0.25, None)], {
        "puzzles": 5, "trajectories": [1, 3], "init_noise": 0.1, "step_noise": 0.2, "seed": 1,
        "selectors": SELECTORS,
        "rows": [
            _breadth_row(8, 1, None, 0.25, [0.25] * 4, 0.25),
            _breadth_row(8, 3, None, 0.25, [0.75, 0.5, 0.0, 0.75], 1.0),
        ],
    })  # fmt: skip
    _write_evaluation(root / "old", 300, [(1, 0.05), (4, 0.1)])
    _write_evaluation(root / "off", 300, [(1, 0.1, 6.0)], {"skipped": "eval.breadth=null"})
    return root


def test_breadth_table_gives_the_best_selector_beside_trajectory_0_and_pass_at_k(compute_runs):
    result = cmp.compare([compute_runs], **QUIET)
    rows = {r["run"].split("/")[-1]: r for r in result["breadth_rows"]}
    assert sorted(rows) == ["a", "b"]
    assert rows["a"] == {
        "run": "12-00-00/a",
        "model": "trm",
        "size": "tiny",
        "puzzles": 8,
        "steps": 4,  # the largest depth of the breadth rows
        "selector": "q_head",  # 50% at K = 2 and K = 4 (as convergence at K = 4): the smaller K first
        "trajectories": 2,
        "exact": 0.5,
        "calls_per_puzzle": 48.0,
        "single_exact": 0.3,
        "single_calls_per_puzzle": 24.0,  # one trajectory of depth 4
        "pass_at_k_exact": 0.6,  # at the same K
    }
    b = rows["b"]
    assert (b["selector"], b["trajectories"], b["exact"], b["pass_at_k_exact"]) == (
        "convergence",
        3,
        0.75,
        1.0,
    )
    assert b["calls_per_puzzle"] is None and b["single_calls_per_puzzle"] is None
    md = result["markdown"]
    assert "| 12-00-00/a | trm | tiny | 8 | 4 | q_head | 2 | 50.0% | 48 | 30.0% | 24 | 60.0% |" in md
    assert "| 12-00-00/b | hrm | tiny | 5 | 8 | convergence | 3 | 75.0% | - | 25.0% | - | 100.0% |" in md
    # old evaluations are kept, with a note saying what they lack and how to measure it
    old = compute_runs / "old"
    notes = {line.split(":")[0]: line for line in md.splitlines() if line.startswith("- 12-00-00/")}
    assert sorted(notes) == ["- 12-00-00/b", "- 12-00-00/off", "- 12-00-00/old"]  # a: nothing missing
    assert "its depth curve has no network-call counts" in notes["- 12-00-00/old"]
    assert "no test-time breadth in its evaluation.json" in notes["- 12-00-00/old"]
    assert notes["- 12-00-00/old"].endswith(f"(rerun python -m reasoners.evaluate checkpoint={old})")
    assert notes["- 12-00-00/off"] == "- 12-00-00/off: test-time breadth skipped: eval.breadth=null"
    assert "depth curve has no network-call counts" in notes["- 12-00-00/b"]
    assert "breadth rows have no network-call counts" in notes["- 12-00-00/b"]
    by_run = {r["run"].split("/")[-1]: r for r in result["rows"]}
    assert by_run["old"]["exact@4"] == 0.1 and by_run["old"]["from"] == "eval"
    with open(result["paths"]["breadth_csv"], newline="") as f:
        read = {r["run"]: r for r in csv.DictReader(f)}
    assert (
        float(read["12-00-00/a"]["calls_per_puzzle"]) == 48.0 and read["12-00-00/b"]["calls_per_puzzle"] == ""
    )
    image = imread(io.BytesIO(result["paths"]["png"].read_bytes()))
    assert image.ndim == 3 and image.shape[0] > 800 and image.shape[1] > 1400 and image.std() > 0


def test_compute_panel_draws_depth_and_every_selector_at_the_fixed_depth(compute_runs):
    """The compute panel's lines hold the evaluation's numbers: per run with counts, the depth curve
    (calls, exact) and one line per selector and pass@K over K at the largest breadth depth."""
    from matplotlib.figure import Figure

    runs = cmp.load_runs([compute_runs], **QUIET)
    ax = Figure().add_subplot()
    cmp.plot_compute(ax, runs, cmp.labels(runs))
    lines = [(list(line.get_xdata()), list(line.get_ydata()), line.get_linestyle()) for line in ax.lines]
    assert lines[0] == ([6.0, 12.0, 24.0], [0.1, 0.2, 0.3], "-")  # run a's depth curve
    calls = [24.0, 48.0, 96.0]
    assert lines[1:6] == [
        (calls, [0.3, 0.4, 0.5], "-"),  # convergence
        (calls, [0.3, 0.5, 0.5], "-"),  # q_head
        (calls, [0.3, 0.35, 0.45], "-"),  # first_halt
        (calls, [0.3, 0.3, 0.4], "-"),  # majority
        (calls, [0.3, 0.6, 0.7], "--"),  # pass@K, dashed
    ]
    assert lines[6] == ([6.0], [0.1], "-")  # run off: depth only; b (no counts) and old draw nothing
    assert len(lines) == 7
    assert ax.get_xscale() == "log" and "breadth K at 4 steps" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "breadth: pass@K" in legend and "depth: 1 trajectory, more steps" in legend
    # evaluations without counts at all: the panel says so instead of drawing
    ax = Figure().add_subplot()
    old = [r for r in runs if r.name.endswith(("old", "b"))]
    cmp.plot_compute(ax, old, cmp.labels(old))
    assert not ax.lines and "no network-call counts" in ax.texts[0].get_text()
