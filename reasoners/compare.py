"""Compare trained runs: one table (markdown + CSV) and one figure across reasoners and sizes.

    python -m reasoners.train -m experiment=laptop_sudoku model=hrm,trm,attractor   # a sweep
    python -m reasoners.compare multirun/2025-01-31/12-00-00 --evaluate
    python -m reasoners.compare runs/trm-tiny runs/hrm-tiny --out reports/tiny

Every folder under the given ones that holds a ``summary.json`` (written by the trainer when a run
finishes) is a run; folders with ``metrics.csv`` but no summary yet are listed as unfinished and left
out. A run's row gives its reasoner, size, dataset, parameters, training time and steps, and the
final exact and rule-valid accuracy, from the run's ``evaluation.json`` when it has one (the
deliberate measurement of :mod:`reasoners.evaluate`; ``from`` says ``eval``), else from
``summary.json`` (``train``). The test-time-compute curve (exact accuracy after 1, 2, 4, ...
supervision steps) comes from ``evaluation.json``; ``--evaluate`` first evaluates the runs that have
none, or whose evaluation is of an older checkpoint.

Runs whose configurations differ only in ``trainer.seed`` (and in settings that do not change what is
computed: threads, progress bar, resume, logger, evaluation batch size) form a *seed group*; when any
group has two or more runs, a second table gives each group's mean and range (min-max) over its seeds
(``comparison_seeds.csv`` too) and says whether every group was trained for the same number of updates.

Test-time compute, from each run's ``evaluation.json``: the depth curve carries the network calls
per puzzle of each point, and the ``breadth`` section (K trajectories per puzzle, one answer chosen by
each selector; see :mod:`reasoners.test_time`) the calls of each (depth, K). A third table (and
``comparison_breadth.csv``) gives per run, at the largest depth of its breadth rows, the selector with
the highest exact accuracy over the breadths K > 1 (ties: the smaller K, then the selector listed
first), its calls per puzzle, trajectory 0 alone at that depth and pass@K at that K. Evaluations
written before calls or breadth were measured (or with breadth skipped) are kept, with a note under
that table saying what is missing and how to measure it.

The figure (``comparison.png``) has five panels. Top: exact accuracy against supervision steps
(test-time depth) per run, a dotted line at the steps the runs were trained with; and exact accuracy
against network calls per puzzle (log x): per run (one colour) the depth curve (one trajectory,
``o-``) and one line per selector over the breadths K at the largest breadth depth (pass@K dashed),
the depth named in the title (in each run's label where runs differ). Bottom: the trainer's
evaluation accuracy (``metrics.csv``) against updates, against training time and against the forward
network calls of training (``train_calls``, log x).
Outputs go to ``<first dir>/comparison.{md,csv,png}`` or ``--out DIR``, written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from data_gen.format import OneLineParser, atomic_write_bytes, atomic_write_text

SUMMARY_KEYS = ("model", "size", "data", "parameters", "steps", "wall_s", "final")
METRICS = ("exact", "valid", "cell")


# A run's recipe (its seed-group key) is its resolved model, size, data and trainer sections. Other
# top-level keys are not: the logger, and an experiment's lookup tables (laptop_steps, laptop_lr), whose
# effect on this run is already in its resolved trainer section.
RECIPE_SECTIONS = ("model", "size", "data", "trainer")
# Fields of those sections that select how a run is executed or reported, not what it computes (left out
# of the key together with the seed itself).
NOT_THE_RECIPE = {
    "trainer": ("seed", "threads", "progress", "resume", "eval_batch_size", "device", "stop_at_step"),
}


class Point(NamedTuple):
    """One evaluation of a run during training (a row of its ``metrics.csv``)."""

    step: int  # updates
    wall_s: float  # training time
    exact: float  # the trainer's evaluation: exact accuracy at the last supervision step
    calls: float | None = None  # forward network calls of training so far (None: not logged)


@dataclass
class Run:
    path: Path
    name: str  # the run's path relative to the parent of the folder it was found under
    summary: dict
    evaluation: dict | None = None
    history: list[Point] = field(default_factory=list)  # every evaluation row of metrics.csv
    config: dict | None = None  # config.yaml, when the run has one

    @property
    def seed(self):
        return ((self.config or {}).get("trainer") or {}).get("seed")

    @property
    def recipe(self) -> str:
        """What the run computes, less its seed: equal for runs that differ only in seed."""
        if not self.config:
            return f"run:{self.path}"  # unknown recipe: a group of its own
        recipe = {}
        for key, value in self.config.items():
            if key not in RECIPE_SECTIONS:
                continue
            drop = NOT_THE_RECIPE.get(key, ())
            recipe[key] = (
                {k: v for k, v in value.items() if k not in drop} if isinstance(value, dict) else value
            )
        return json.dumps(recipe, sort_keys=True, default=str)

    @property
    def final(self) -> dict:
        return (self.evaluation or self.summary)["final"]

    @property
    def curve(self) -> dict[int, dict]:
        return {p["steps"]: p for p in (self.evaluation or {}).get("curve", [])}


# ----------------------------------------------------------------------------- reading


def find_runs(
    dirs: Sequence[str | os.PathLike], log: Callable[[str], None] = print
) -> list[tuple[Path, str]]:
    """``(run dir, name)`` of every run under ``dirs`` (each a run or a sweep folder), in order."""
    if not dirs:
        raise ValueError("no folders given: pass run directories or a sweep directory (multirun/...)")
    found, seen, unfinished = [], set(), []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise FileNotFoundError(f"{d} is not a directory: pass run directories or a sweep directory")
        for summary in sorted(d.rglob("summary.json")):
            run = summary.parent
            if run.resolve() in seen:
                continue
            seen.add(run.resolve())
            found.append((run, str(run.relative_to(d.parent)) if run != d else d.name))
        unfinished += [
            m.parent for m in sorted(d.rglob("metrics.csv")) if not (m.parent / "summary.json").is_file()
        ]
    for run in dict.fromkeys(unfinished):
        log(f"skipped {run}: no summary.json (still training, or stopped before the end)")
    if not found:
        names = ", ".join(str(d) for d in dirs)
        raise ValueError(
            f"no runs under {names}: a run directory holds summary.json, written by "
            "`python -m reasoners.train` when the run finishes"
        )
    return found


def read_summary(run: Path) -> dict:
    path = run / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}); rerun or delete that run") from None
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    missing += [f"final.{k}" for k in ("exact", "valid") if k not in summary.get("final", {})]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: was it written by reasoners.train?")
    return summary


def read_evaluation(run: Path, log: Callable[[str], None] = print) -> dict | None:
    path = run / "evaluation.json"
    if not path.is_file():
        return None
    try:
        evaluation = json.loads(path.read_text())
        if not ({"final", "curve"} <= set(evaluation)):
            raise ValueError("no final/curve")
    except (OSError, ValueError) as e:
        log(f"ignored {path}: not an evaluation written by reasoners.evaluate ({e}); rerun it")
        return None
    return evaluation


def read_history(run: Path) -> list[Point]:
    """A :class:`Point` per evaluation row of ``metrics.csv`` (empty when absent); ``calls`` is None in
    runs trained before the trainer logged ``train_calls``."""
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    points = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                calls = float(row["train_calls"]) if row.get("train_calls") else None
                points.append(Point(int(row["step"]), float(row["wall_s"]), float(row["eval_exact"]), calls))
            except (KeyError, TypeError, ValueError):
                continue  # a training row (eval columns empty) or a foreign file
    return points


def read_config(run: Path) -> dict | None:
    path = run / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def stale(run: Run) -> bool:
    """The run has no evaluation, or it is of another checkpoint step than the summary's."""
    return run.evaluation is None or run.evaluation.get("step") != run.summary.get("steps")


def load_runs(dirs: Sequence[str | os.PathLike], log: Callable[[str], None] = print) -> list[Run]:
    runs = []
    for path, name in find_runs(dirs, log):
        run = Run(
            path, name, read_summary(path), read_evaluation(path, log), read_history(path), read_config(path)
        )
        if run.evaluation is not None and stale(run):
            log(
                f"note: {path / 'evaluation.json'} is of step {run.evaluation.get('step')}, the run ended at "
                f"step {run.summary['steps']}: rerun with --evaluate"
            )
        runs.append(run)
    runs.sort(
        key=lambda r: (str(r.summary["data"]), str(r.summary["model"]), r.summary["parameters"], r.name)
    )
    return runs


def evaluate_runs(runs: list[Run], max_puzzles: int | None, device: str | None, log=print) -> None:
    """Evaluate (and write ``evaluation.json`` for) every run whose evaluation is missing or stale."""
    from reasoners.evaluate import EvalConfig, evaluate, write_outputs

    config = EvalConfig(max_puzzles=max_puzzles)
    for run in runs:
        if stale(run):
            log(f"evaluating {run.path}")
            result = evaluate(run.path, config, device=device, log=log)
            write_outputs(result)
            run.evaluation = result


# ----------------------------------------------------------------------------- table


def curve_steps(runs: Sequence[Run]) -> list[int]:
    return sorted({s for r in runs for s in r.curve})


def at_halting_step(run: Run) -> dict:
    """``{"exact", "mean_step"}`` at the step where the reasoner's own halting head stops: from the run's
    evaluation.json when it has one, else from the trainer's final evaluation (summary.json); empty
    for runs written before either measured it."""
    if run.evaluation is not None:
        halting = run.evaluation.get("halting") or {}
        return {k: halting.get(k) for k in ("exact", "mean_step") if halting.get(k) is not None}
    final = run.summary.get("final") or {}
    out = {"exact": final.get("halt_exact"), "mean_step": final.get("halt_step")}
    return {k: v for k, v in out.items() if v is not None}


def table_rows(runs: Sequence[Run]) -> list[dict]:
    """One flat dict per run: what the CSV holds."""
    steps = curve_steps(runs)
    rows = []
    for r in runs:
        s, final, curve = r.summary, r.final, r.curve
        task = s.get("task") or {}
        halting = at_halting_step(r)
        row = {
            "run": r.name,
            "model": s["model"],
            "size": s["size"],
            "data": s["data"],
            "task": f"{task.get('side')}x{task.get('side')} {task.get('kind')}" if task else "",
            "parameters": s["parameters"],
            "wall_s": s["wall_s"],
            "steps": s["steps"],
            "exact": final.get("exact"),
            "valid": final.get("valid"),
            "cell": final.get("cell"),
            "from": "eval" if r.evaluation else "train",
            "exact_at_halt": halting.get("exact"),
            "halting_mean_step": halting.get("mean_step"),
        }
        for k in steps:
            row[f"exact@{k}"] = curve[k]["exact"] if k in curve else None
        for k in steps:
            row[f"valid@{k}"] = curve[k]["valid"] if k in curve else None
        row["path"] = str(r.path)
        rows.append(row)
    return rows


def to_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def to_markdown(rows: Sequence[dict]) -> str:
    steps = [int(k.split("@")[1]) for k in rows[0] if k.startswith("exact@")]
    head = [
        "run",
        "reasoner",
        "size",
        "data",
        "parameters",
        "training time",
        "steps",
        "exact",
        "valid",
        "exact at its halting step (mean step)",
        "from",
    ]
    head += [f"exact@{k}" for k in steps]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * 6 + ["---"]) + "|"]
    lines[1] += "---:|" * len(steps)
    for r in rows:
        cells = [
            r["run"],
            r["model"],
            r["size"],
            r["data"],
            _count(r["parameters"]),
            _duration(r["wall_s"]),
            f"{r['steps']:,}",
            _pct(r["exact"]),
            _pct(r["valid"]),
            _pct(r["exact_at_halt"])
            + ("" if r["halting_mean_step"] is None else f" ({r['halting_mean_step']:.1f})"),
            r["from"],
        ]
        cells += [_pct(r[f"exact@{k}"]) for k in steps]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    note = (
        "\n`from`: `eval` = the run's evaluation.json (python -m reasoners.evaluate), `train` = the "
        "trainer's final evaluation (summary.json). `exact` and `valid` are at the last supervision step "
        "(as the reference evaluates); `exact at its halting step` where the reasoner's own q-head stops. "
        "`exact@k`: exact accuracy after k supervision steps."
    )
    return "\n".join(lines) + "\n" + note + "\n"


# ----------------------------------------------------------------------------- fixed points

# The trainer's fixed-point telemetry (the Attractor's metrics.csv columns), read for compare's table
SOLVE_KEYS = ("solver_converged", "solver_rel_residual", "solver_iters_p50", "solver_iters_p90")
PROBE_KEYS = tuple(f"eval_{w}rho_{k}" for w in ("", "ema_") for k in ("median", "below_1")) + (
    "eval_warm_start_residual",
)


def _float(text) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# Every fixed-point column of metrics.csv, for the training-telemetry figure of `reasoners.visualize`
SERIES_KEYS = (
    "solver_converged", "solver_rel_residual", "solver_nstep", "solver_evals_per_sample",
    "solver_iters_p50", "solver_iters_p90", "solver_iters_max",
    "solver_converged_cold", "solver_converged_warm",
    "eval_rho_median", "eval_rho_q95", "eval_rho_below_1", "eval_warm_start_residual",
    "eval_ema_rho_median", "eval_ema_rho_q95", "eval_ema_rho_below_1", "eval_ema_warm_start_residual",
)  # fmt: skip


def fixed_point_series(path: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """``{column: (updates, values)}`` for every fixed-point column of a run's ``metrics.csv`` that has
    at least one finite value (training windows and evaluation rows each keep their own updates); empty
    when the file is missing or the run logged no fixed-point solve."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    series: dict[str, tuple[list[int], list[float]]] = {}
    if not path.is_file():
        return series
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(row["step"])
            except (KeyError, TypeError, ValueError):
                continue
            for key in SERIES_KEYS:
                v = _float(row.get(key))
                if v is not None:
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(v)
    return series


def fixed_point_rows(runs: Sequence[Run]) -> list[dict]:
    """Per run that logged a fixed-point solve: its last logged window of training solves (converged
    share, mean exit residual, the median and 90th percentile of a sample's iterations) and its last
    contraction probe (spectral radius median and share below 1, training and EMA weights; the warm
    start's residual), plus the lowest share below 1 over every evaluation. Empty when no run solves."""
    rows = []
    for r in runs:
        path = r.path / "metrics.csv"
        if not path.is_file():
            continue
        solve, probe, worst = {}, {}, {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if _float(row.get("solver_converged")) is not None:
                    solve = {k: _float(row.get(k)) for k in SOLVE_KEYS} | {"solve_step": int(row["step"])}
                if _float(row.get("eval_rho_median")) is not None:
                    probe = {k: _float(row.get(k)) for k in PROBE_KEYS} | {"probe_step": int(row["step"])}
                    for w in ("", "ema_"):
                        v = _float(row.get(f"eval_{w}rho_below_1"))
                        key = f"worst_{w}rho_below_1"
                        if v is not None:
                            worst[key] = min(worst.get(key, 1.0), v)
        if solve or probe:
            rows.append({"run": r.name, **solve, **probe, **worst})
    return rows


def fixed_point_markdown(rows: Sequence[dict]) -> str:
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [
        "| run | training solves converged (update) | exit residual | iterations p50 / p90 "
        "| rho median, share < 1 (eval update) | EMA: rho median, share < 1 | lowest share < 1, any eval "
        "(training / EMA) | warm-start residual |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        g = r.get
        lines.append(
            f"| {r['run']} | {_pct(g('solver_converged'))} ({g('solve_step', '-')}) "
            f"| {num(g('solver_rel_residual'), '.1e')} "
            f"| {num(g('solver_iters_p50'), '.1f')} / {num(g('solver_iters_p90'), '.1f')} "
            f"| {num(g('eval_rho_median'), '.2f')}, {_pct(g('eval_rho_below_1'))} ({g('probe_step', '-')}) "
            f"| {num(g('eval_ema_rho_median'), '.2f')}, {_pct(g('eval_ema_rho_below_1'))} "
            f"| {_pct(g('worst_rho_below_1'))} / {_pct(g('worst_ema_rho_below_1'))} "
            f"| {num(g('eval_warm_start_residual'), '.1e')} |"
        )
    note = (
        "\nFixed-point telemetry (metrics.csv): the last logged window of training solves, and the "
        "contraction probe of the last evaluation (power-method spectral radius of the map's Jacobian at "
        "the fixed point; rho < 1 is what makes the fixed point an attractor; Anderson also converges on "
        "expansive maps, so the converged share alone does not show it)."
    )
    return "\n".join(lines) + "\n" + note + "\n"


# ----------------------------------------------------------------------------- seeds


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs grouped by recipe (everything but the seed), in the order of their first run."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.recipe, []).append(r)
    return list(groups.values())


def spread(values: list) -> dict:
    """``{mean, min, max}`` of the values that are not None (all None when none is)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def seed_rows(groups: Sequence[Sequence[Run]]) -> list[dict]:
    """One flat dict per seed group: mean, min and max over its runs of the final accuracies (and of
    exact accuracy at the reasoner's own halting step, where measured: :func:`at_halting_step`),
    updates and wall time."""
    rows = []
    for group in groups:
        first = group[0].summary
        row = {
            "model": first["model"],
            "size": first["size"],
            "data": first["data"],
            "parameters": first["parameters"],
            "seeds": " ".join(str(r.seed) for r in group),
            "n": len(group),
        }
        halting = [at_halting_step(r).get("exact") for r in group]
        for key, values in (
            ("exact", [r.final.get("exact") for r in group]),
            ("valid", [r.final.get("valid") for r in group]),
            ("exact_at_halt", halting),
            ("steps", [r.summary["steps"] for r in group]),
            ("wall_s", [r.summary["wall_s"] for r in group]),
        ):
            for stat, value in spread(values).items():
                row[f"{key}_{stat}"] = value
        row["runs"] = " ".join(r.name for r in group)
        rows.append(row)
    return rows


def budgets_note(rows: Sequence[dict]) -> str:
    """Whether every run of every group trained for the same number of updates, and if not, whose differ."""
    counts = {c for r in rows for c in (r["steps_min"], r["steps_max"])}
    if len(counts) == 1:
        return f"Equal budgets: every run trained for {counts.pop():,} updates."
    parts = [
        f"{r['model']} {r['size']}: {r['steps_min']:,}"
        + (f"-{r['steps_max']:,}" if r["steps_max"] != r["steps_min"] else "")
        for r in rows
    ]
    return "Budgets differ (updates): " + "; ".join(parts) + "."


def range_cell(row: dict, key: str) -> str:
    """A seed row's ``key`` as a table cell: ``mean% (min-max)``, the mean alone for one run, ``-``."""
    if row[f"{key}_mean"] is None:
        return "-"
    mean, lo, hi = (100 * row[f"{key}_{s}"] for s in ("mean", "min", "max"))
    return f"{mean:.1f}% ({lo:.1f}-{hi:.1f})" if row["n"] > 1 else f"{mean:.1f}%"


def seeds_markdown(rows: Sequence[dict]) -> str:
    head = ["reasoner", "size", "data", "seeds", "updates", "exact (min-max)", "valid (min-max)"]
    head += ["exact at its halting step", "training time"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        updates = f"{r['steps_min']:,}" + (f"-{r['steps_max']:,}" if r["steps_max"] != r["steps_min"] else "")
        cells = [r["model"], r["size"], r["data"], r["seeds"], updates]
        cells += [range_cell(r, "exact"), range_cell(r, "valid"), range_cell(r, "exact_at_halt")]
        cells.append(_duration(r["wall_s_mean"]))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    note = (
        "\nMean over the seeds of each recipe (runs whose configs differ only in trainer.seed), range in "
        "brackets. `exact` is at the last supervision step; `exact at its halting step` at the step where "
        "the reasoner's own q-head halts (evaluation.json, else the trainer's final evaluation). "
        + budgets_note(rows)
    )
    return "\n".join(lines) + "\n" + note + "\n"


# ----------------------------------------------------------------------------- test-time compute

STRATEGY_NAMES = {"single": "trajectory 0", "pass_at_k": "pass@K"}  # selectors keep their config names


@dataclass
class Compute:
    """One run's accuracy against test-time compute, from its ``evaluation.json``.

    ``depth``: ``(calls per puzzle, exact, supervision steps)`` of the one-trajectory curve;
    ``breadth``: strategy (every selector, ``single``, ``pass_at_k``) -> ``(K, calls per puzzle,
    exact)`` over the breadths at ``breadth_steps``, the largest depth of the breadth rows; ``notes``
    say what is missing and why."""

    depth: list[tuple[float, float, int]] = field(default_factory=list)
    breadth_steps: int | None = None
    breadth_puzzles: int | None = None
    selectors: list[str] = field(default_factory=list)
    breadth: dict[str, list[tuple[int, float | None, float | None]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rerun: bool = False  # a new evaluation would measure what is missing


def compute_of(run: Run) -> Compute:
    """What :func:`plot` and :func:`breadth_rows` draw from: old evaluations without call counts or a
    breadth section give what they have, with a note."""
    c = Compute()
    ev = run.evaluation
    if ev is None:
        return c
    counted = [(p.get("calls_per_puzzle"), p.get("exact"), p["steps"]) for p in ev.get("curve", [])]
    c.depth = sorted(p for p in counted if p[0] is not None and p[1] is not None)
    if ev.get("curve") and not c.depth:
        c.notes.append(
            "its depth curve has no network-call counts (an evaluation.json from before they were "
            "counted, or a reasoner without network stacks)"
        )
        c.rerun = True
    b = ev.get("breadth")
    if b is None:
        c.notes.append("no test-time breadth in its evaluation.json (written before breadth was measured)")
        c.rerun = True
        return c
    if "skipped" in b:
        c.notes.append(f"test-time breadth skipped: {b['skipped']}")
        return c
    rows = b.get("rows") or []
    if not rows:
        c.notes.append("its breadth section has no rows")
        return c
    c.breadth_steps = max(r["steps"] for r in rows)
    c.breadth_puzzles = b.get("puzzles")
    c.selectors = list(b.get("selectors") or [])
    at = sorted((r for r in rows if r["steps"] == c.breadth_steps), key=lambda r: r["trajectories"])
    for strategy in ("single", *c.selectors, "pass_at_k"):
        c.breadth[strategy] = [
            (r["trajectories"], r.get("calls_per_puzzle"), (r.get(strategy) or {}).get("exact")) for r in at
        ]
    if all(r.get("calls_per_puzzle") is None for r in at):
        c.notes.append("its breadth rows have no network-call counts (a reasoner without network stacks)")
    return c


def compute_note(run: Run) -> str:
    """One line: what the run's evaluation lacks for the compute table and figure, and the fix."""
    c = compute_of(run)
    fix = f" (rerun python -m reasoners.evaluate checkpoint={run.path})" if c.rerun else ""
    return f"{run.name}: " + "; ".join(c.notes) + fix


def best_selector(c: Compute) -> tuple[str, int] | None:
    """``(selector, K)`` with the highest exact accuracy at ``c.breadth_steps`` over the breadths
    K > 1 (K = 1 where none was run: every selector is then trajectory 0); ties go to the smaller K,
    then to the selector listed first."""
    if not c.selectors:
        return None
    candidates = [
        (exact, -k, -i, sel)
        for i, sel in enumerate(c.selectors)
        for k, _, exact in c.breadth[sel]
        if exact is not None
    ]
    wide = [x for x in candidates if -x[1] > 1]
    if not (wide or candidates):
        return None
    _, neg_k, _, sel = max(wide or candidates)
    return sel, -neg_k


def breadth_rows(runs: Sequence[Run]) -> list[dict]:
    """One flat dict per run with a breadth section: the best selector (:func:`best_selector`), its
    exact accuracy and calls per puzzle, trajectory 0 alone at the same depth (calls of one
    trajectory) and pass@K at the same K; what ``comparison_breadth.csv`` holds."""
    out = []
    for r in runs:
        c = compute_of(r)
        best = best_selector(c)
        if best is None:
            continue
        sel, k = best
        row = {p[0]: p for p in c.breadth[sel]}[k]
        calls = row[1]
        single = {p[0]: p for p in c.breadth["single"]}[k][2]
        pass_k = {p[0]: p for p in c.breadth["pass_at_k"]}[k][2]
        out.append(
            {
                "run": r.name,
                "model": r.summary["model"],
                "size": r.summary["size"],
                "puzzles": c.breadth_puzzles,
                "steps": c.breadth_steps,
                "selector": sel,
                "trajectories": k,
                "exact": row[2],
                "calls_per_puzzle": calls,
                "single_exact": single,
                "single_calls_per_puzzle": None if calls is None else calls / k,
                "pass_at_k_exact": pass_k,
            }
        )
    return out


def _calls(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def breadth_markdown(rows: Sequence[dict], notes: Sequence[str] = ()) -> str:
    lines = ["### Test-time compute: breadth", ""]
    if rows:
        head = ["run", "reasoner", "size", "puzzles", "steps", "best selector", "K", "exact"]
        head += ["network calls / puzzle", "trajectory 0", "its calls / puzzle", "pass@K"]
        lines += ["| " + " | ".join(head) + " |", "|---|---|---|---:|---:|---|" + "---:|" * 6]
        for r in rows:
            cells = [r["run"], r["model"], r["size"], r["puzzles"], r["steps"], r["selector"]]
            cells += [r["trajectories"], _pct(r["exact"]), _calls(r["calls_per_puzzle"])]
            cells += [_pct(r["single_exact"]), _calls(r["single_calls_per_puzzle"])]
            cells.append(_pct(r["pass_at_k_exact"]))
            lines.append("| " + " | ".join(str(x) for x in cells) + " |")
        lines += [
            "",
            "K trajectories per puzzle on the first `puzzles` test puzzles (evaluation.json's breadth "
            "section), at `steps`, the largest depth it measured: the selector with the highest exact "
            "accuracy over the breadths K > 1 (ties: the smaller K), beside trajectory 0 alone (no noise, "
            "one trajectory's calls) and pass@K (any of the K right: the bound no selector can beat).",
        ]
    else:
        lines.append("No run's evaluation.json has a test-time breadth section.")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figure


def labels(runs: Sequence[Run]) -> list[str]:
    """Legend labels: reasoner, size and parameters, with the dataset when runs differ in it, and
    the run name where that still leaves two alike."""
    datasets = {r.summary["data"] for r in runs}
    base = [
        f"{r.summary['model']} {r.summary['size']} ({_count(r.summary['parameters'])}"
        + (f", {r.summary['data']})" if len(datasets) > 1 else ")")
        for r in runs
    ]
    return [f"{b} [{r.name}]" if base.count(b) > 1 else b for b, r in zip(base, runs, strict=True)]


BREADTH_STYLES = {  # marker and line of each strategy's line in the compute panel
    "convergence": dict(marker="s", linestyle="-"),
    "q_head": dict(marker="^", linestyle="-"),
    "first_halt": dict(marker="v", linestyle="-"),
    "majority": dict(marker="D", linestyle="-"),
    "pass_at_k": dict(marker="x", linestyle="--"),
}
DEPTH_STYLE = dict(marker="o", linestyle="-", linewidth=2.0)


def plot(runs: Sequence[Run]) -> bytes:
    """The five-panel figure as PNG bytes (matplotlib's Agg canvas, no pyplot state). Top: exact
    accuracy against supervision steps, and against network calls per puzzle (test-time compute: the
    depth curve and each selector's breadth line); bottom: the trainer's evaluation accuracy against
    updates (the budget, machine-independent), against training time (this machine's) and against
    training's forward network calls (compute)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8.6), layout="constrained")
    top, bottom = ["steps"] * 3 + ["compute"] * 3, ["updates"] * 2 + ["time"] * 2 + ["calls"] * 2
    axes = fig.subplot_mosaic([top, bottom])
    ax_steps, ax_compute = axes["steps"], axes["compute"]
    ax_updates, ax_time, ax_calls = axes["updates"], axes["time"], axes["calls"]
    names = labels(runs)
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        color = f"C{i % 10}"
        curve = sorted(run.curve.items())
        if curve:
            ax_steps.plot(
                [k for k, _ in curve], [p["exact"] for _, p in curve], "o-", color=color, label=name
            )
        if run.history:  # markers too: a run evaluated once is a single point
            steps, walls, exact, calls = zip(*run.history, strict=True)
            ax_updates.plot(steps, exact, ".-", ms=4, color=color, label=name)
            ax_time.plot([t / 60 for t in walls], exact, ".-", ms=4, color=color, label=name)
            counted = [(c, e) for c, e in zip(calls, exact, strict=True) if c is not None]
            if counted:
                ax_calls.plot(*zip(*counted, strict=True), ".-", ms=4, color=color, label=name)
    ax_steps.set(
        xlabel="supervision steps (test-time compute)", ylabel="exact accuracy", title="Test-time depth"
    )
    trainer_eval = "exact accuracy (trainer's eval)"
    ax_updates.set(xlabel="updates", ylabel=trainer_eval, title="Training, by updates")
    ax_time.set(xlabel="training time (min)", ylabel=trainer_eval, title="Training, by time")
    ax_calls.set(
        xlabel="forward network calls of training (rows x calls)", ylabel=trainer_eval,
        title="Training, by compute", xscale="log",
    )  # fmt: skip
    for ax, empty in (
        (ax_steps, "no evaluation.json:\nrun compare with --evaluate"),
        (ax_updates, "no evaluation rows in metrics.csv"),
        (ax_time, "no evaluation rows in metrics.csv"),
        (ax_calls, "no train_calls in metrics.csv\n(runs trained before it was logged)"),
    ):
        if ax.lines:
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    if ax_steps.lines:
        # the supervision steps the runs were trained (and are evaluated) with
        for k in sorted({(r.evaluation or {}).get("halt_max_steps") for r in runs} - {None}):
            ax_steps.axvline(k, color="grey", linestyle=":", linewidth=1)
        ax_steps.set_xscale("log", base=2)
        steps = curve_steps(runs)
        ax_steps.set_xticks(steps, [str(s) for s in steps])
    plot_compute(ax_compute, runs, names)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def plot_compute(ax, runs: Sequence[Run], names: Sequence[str]) -> None:
    """Exact accuracy against network calls per puzzle (log x): per run (one colour) the depth curve
    (one trajectory, more supervision steps) and, where its evaluation has a breadth section, one line
    per selector (pass@K dashed) over the breadths K at the largest depth of its breadth rows."""
    from matplotlib.lines import Line2D

    computes = [compute_of(r) for r in runs]
    drawn = []  # per run: (depth points, {strategy: breadth points}) with call counts
    for c in computes:
        lines = {
            strategy: [(x, y) for _, x, y in points if x is not None and y is not None]
            for strategy, points in c.breadth.items()
            if strategy != "single"  # trajectory 0 is each line's K = 1 point
        }
        drawn.append(({k: v for k, v in lines.items() if v}, [(x, y) for x, y, _ in c.depth]))
    depths = {c.breadth_steps for c, (lines, _) in zip(computes, drawn, strict=True) if lines}
    handles, strategies = [], []
    for i, (c, (lines, depth), name) in enumerate(zip(computes, drawn, names, strict=True)):
        color = f"C{i % 10}"
        if depth:
            ax.plot(*zip(*depth, strict=True), color=color, **DEPTH_STYLE)
        for strategy, pts in lines.items():
            style = BREADTH_STYLES.get(strategy, dict(marker=".", linestyle="-"))
            ax.plot(*zip(*pts, strict=True), color=color, linewidth=1.0, markersize=5, alpha=0.85, **style)
            strategies.append(strategy)
        if depth or lines:
            label = name + (f", breadth at {c.breadth_steps} steps" if len(depths) > 1 and lines else "")
            handles.append(Line2D([], [], color=color, linewidth=2.0, label=label))
    title = "Test-time compute"
    if len(depths) == 1:
        title += f": depth, and breadth K at {depths.pop()} steps"
    ax.set(xlabel="network calls per puzzle (log scale)", ylabel="exact accuracy", title=title)
    if not ax.lines:
        ax.text(
            0.5,
            0.5,
            "no network-call counts in evaluation.json:\nrerun python -m reasoners.evaluate",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        return
    handles.append(Line2D([], [], color="0.2", label="depth: 1 trajectory, more steps", **DEPTH_STYLE))
    for strategy in dict.fromkeys(strategies):
        style = BREADTH_STYLES.get(strategy, dict(marker=".", linestyle="-"))
        label = f"breadth: {STRATEGY_NAMES.get(strategy, strategy)}"
        handles.append(Line2D([], [], color="0.2", label=label, **style))
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, fontsize="x-small")


# ----------------------------------------------------------------------------- entry point


def compare(
    dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    *,
    evaluate: bool = False,
    max_puzzles: int | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Read the runs under ``dirs``, write ``comparison.{md,csv,png}`` into ``out`` (default: the
    first dir) and return ``{"runs", "rows", "markdown", "paths"}``."""
    runs = load_runs(dirs, log)
    if evaluate:
        evaluate_runs(runs, max_puzzles, device, log)
    rows = table_rows(runs)
    markdown = to_markdown(rows)
    groups = seed_groups(runs)
    seeds = seed_rows(groups) if any(len(g) > 1 for g in groups) else []
    if seeds:
        markdown += "\n" + seeds_markdown(seeds)
    breadth = breadth_rows(runs)
    notes = [compute_note(r) for r in runs if compute_of(r).notes]
    if breadth or notes:
        markdown += "\n" + breadth_markdown(breadth, notes)
    fixed = fixed_point_rows(runs)
    if fixed:
        markdown += "\n" + fixed_point_markdown(fixed)
    folder = Path(out) if out is not None else Path(dirs[0])
    paths = {ext: folder / f"comparison.{ext}" for ext in ("md", "csv", "png")}
    atomic_write_text(paths["md"], markdown)
    atomic_write_text(paths["csv"], to_csv(rows))
    if seeds:
        paths["seeds_csv"] = folder / "comparison_seeds.csv"
        atomic_write_text(paths["seeds_csv"], to_csv(seeds))
    if breadth:
        paths["breadth_csv"] = folder / "comparison_breadth.csv"
        atomic_write_text(paths["breadth_csv"], to_csv(breadth))
    atomic_write_bytes(paths["png"], plot(runs))
    return {
        "runs": runs,
        "rows": rows,
        "seed_rows": seeds,
        "breadth_rows": breadth,
        "fixed_point_rows": fixed,
        "markdown": markdown,
        "paths": paths,
    }


def positive_int(text: str) -> int:
    """argparse type: a positive integer, else a one-line error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m reasoners.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", metavar="RUN_OR_SWEEP_DIR", help="run folders or sweep folders")
    parser.add_argument("--out", default=None, help="output folder (default: the first folder given)")
    parser.add_argument(
        "--evaluate", action="store_true", help="evaluate runs without an up-to-date evaluation.json first"
    )
    parser.add_argument(
        "--max-puzzles", type=positive_int, default=None, help="with --evaluate: the first N test puzzles"
    )
    parser.add_argument(
        "--device", default=None, help="with --evaluate: cuda, mps or cpu (default: the best)"
    )
    args = parser.parse_args(argv)
    if (args.max_puzzles is not None or args.device is not None) and not args.evaluate:
        parser.error("--max-puzzles and --device apply to --evaluate only")
    try:
        result = compare(
            args.dirs, args.out, evaluate=args.evaluate, max_puzzles=args.max_puzzles, device=args.device
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"wrote {', '.join(str(p) for p in result['paths'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
