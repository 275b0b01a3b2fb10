"""The comparison protocol (issue 16): every reasoner at its own learning rate, seeds with spread, equal
budgets in updates; accuracy against updates, wall time and training compute; a size axis for scaling.

    # lr sweep: 4 reasoners x 3 lrs x 2 seeds at 2,000 updates each, two runs side by side (1 thread each)
    python bench/compare_reasoners.py --experiment laptop_sudoku --models trm,hrm,attractor,eqr \\
        --lrs 1e-3,2e-3,4e-3 --seeds 0,1 --updates 2000 --jobs 2 --out runs/compare/laptop_sudoku
    # the scaling study: a width axis (every value crossed with every lr and seed)
    python bench/compare_reasoners.py --models trm,attractor --lrs 1e-3,2e-3 --seeds 0,1 --updates 2000 \\
        --axis +model.arch.d_model=32,64,128 --out runs/compare/scaling
    # extra Hydra overrides for every run go after --; --report-only re-reads a finished sweep
    python bench/compare_reasoners.py --report-only --out runs/compare/laptop_sudoku
    # one report (and figure) of several sweeps' runs, written to --out
    python bench/compare_reasoners.py --report-only --axis +model.arch.d_model=32 --out runs/figure \\
        --include runs/compare/laptop_sudoku --include runs/compare/scaling

Every run is ``python -m reasoners.train experiment=E model=M trainer.lr=LR trainer.seed=S
trainer.max_steps=U trainer.threads=1 trainer.progress=false <axis values> <extra>`` into
``OUT/runs/<model>[-<axis values>]-lr<LR>-s<S>``, up to ``--jobs`` at once, each on one thread (so runs
side by side get the same share of the machine). The budget is in updates, so the same command gives
the same weights on any machine (wall time is reported beside, as measured here). A run whose
``summary.json`` says it trained the whole budget is kept, and every run starts with
``trainer.resume=auto`` (after it, ``trainer.resume=null`` in the extra overrides restarts from scratch), so
running the command again finishes an interrupted sweep: a run stopped part way (killed, or by
``trainer.stop_at_step``) continues from its last checkpoint, exactly as if it had not stopped. A run that
fails is reported (its log, appended to on every start, is ``OUT/logs/<name>.log``) and the others go on.

The report (``OUT/sweep.md``, ``sweep.csv``, ``chosen.json``, ``sweep.png``): per *recipe* (model, axis
values, lr) the mean and range over its seeds of exact accuracy (read as ``reasoners.compare`` reads
it: the run's evaluation.json when ``reasoners.evaluate`` wrote one, else the trainer's final evaluation)
at the last supervision step (the reference's figure) and at the reasoner's own halting step, with the
updates, wall time and forward network calls of training; per (model, axis values) the chosen lr:
the highest mean over seeds of ``--select`` (``worst``, default: the lower of the two accuracies of each
run, so a recipe must be right at both; ``last``; ``halt``), then of cell accuracy (a short budget can leave
every lr at 0 exact); ties go to the smaller lr. The figure
draws each chosen recipe's evaluation curve (mean over seeds, min-max band) against updates, against
training time and against training's network calls; with more than one parameter count per model (a
size axis) a fourth panel gives final exact accuracy against parameters.

Runs are grouped with :func:`reasoners.compare.seed_groups` (configs equal but for the seed), so a
recipe's seeds are exactly the runs that differ in nothing else.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere without installing

from data_gen.format import OneLineParser, atomic_write_bytes, atomic_write_text  # noqa: E402
from reasoners.compare import (  # noqa: E402
    Run,
    at_halting_step,
    budgets_note,
    load_runs,
    positive_int,
    range_cell,
    seed_groups,
    seed_rows,
    spread,
    to_csv,
)

SELECT = ("worst", "last", "halt")


@dataclass(frozen=True)
class Job:
    model: str
    axes: tuple[tuple[str, str], ...]  # (override key, value) of every --axis
    lr: float
    seed: int

    @property
    def name(self) -> str:
        parts = [self.model] + [f"{_short(k)}{v}" for k, v in self.axes] + [f"lr{self.lr:g}", f"s{self.seed}"]
        return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)

    def overrides(self, experiment: str, updates: int, run_dir: Path, extra: list[str]) -> list[str]:
        return [
            f"experiment={experiment}", f"model={self.model}", f"trainer.lr={self.lr:g}",
            f"trainer.seed={self.seed}", f"trainer.max_steps={updates}", "trainer.threads=1",
            "trainer.progress=false", "trainer.resume=auto", *(f"{k}={v}" for k, v in self.axes), *extra,
            f"hydra.run.dir={run_dir}",
        ]  # fmt: skip


def _short(key: str) -> str:
    return key.lstrip("+").split(".")[-1]


def plan(
    models: list[str], axes: list[tuple[str, list[str]]], lrs: list[float], seeds: list[int]
) -> list[Job]:
    """Every (model, axis values, lr, seed), seeds innermost (a recipe's runs are neighbours)."""
    combos: list[tuple[tuple[str, str], ...]] = [()]
    for key, values in axes:
        combos = [c + ((key, v),) for c in combos for v in values]
    return [Job(m, c, lr, s) for m in models for c in combos for lr in lrs for s in seeds]


def _finished(run_dir: Path, updates: int) -> bool:
    """Whether a run's ``summary.json`` says it trained ``updates`` updates (a run stopped earlier, or
    with an unreadable summary, is resumed)."""
    try:
        return int(json.loads((run_dir / "summary.json").read_text())["steps"]) >= updates
    except (OSError, ValueError, KeyError, TypeError):
        return False


def run_all(
    jobs: list[Job], out: Path, experiment: str, updates: int, extra: list[str], n_parallel: int, log=print
) -> dict[str, int]:
    """Train every job that has no ``summary.json`` yet, ``n_parallel`` at a time; returns the exit code of
    every job started (0 = finished)."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not _finished(out / "runs" / j.name, updates)]
    if len(todo) < len(jobs):
        log(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished: kept")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    running: list[tuple[Job, subprocess.Popen, object, float]] = []
    codes: dict[str, int] = {}
    while todo or running:
        while todo and len(running) < n_parallel:
            job = todo.pop(0)
            cmd = [
                sys.executable,
                "-m",
                "reasoners.train",
                *job.overrides(experiment, updates, out / "runs" / job.name, extra),
            ]
            handle = open(out / "logs" / f"{job.name}.log", "a")  # noqa: SIM115 - closed when it ends
            running.append(
                (
                    job,
                    subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT),
                    handle,
                    time.time(),
                )
            )
            log(f"started {job.name}")
        time.sleep(0.2)
        for entry in list(running):
            job, proc, handle, t0 = entry
            if proc.poll() is None:
                continue
            handle.close()
            running.remove(entry)
            codes[job.name] = proc.returncode
            state = (
                "finished"
                if proc.returncode == 0
                else f"FAILED (exit {proc.returncode}; see logs/{job.name}.log)"
            )
            log(f"{state} {job.name} in {time.time() - t0:.0f} s")
    return codes


# ----------------------------------------------------------------------------- the report


def _score(run: Run, select: str) -> float | None:
    """The figure the lr is chosen by, read as :mod:`reasoners.compare` reads a run's final figures."""
    last, halt = run.final.get("exact"), at_halting_step(run).get("exact")
    if select == "worst":
        return None if None in (last, halt) else min(last, halt)
    return last if select == "last" else halt


def _lr(run: Run) -> float:
    return float(((run.config or {}).get("trainer") or {}).get("lr", math.nan))


def _axis_label(run: Run, axes: list[str]) -> str:
    """The axis values of a run, read back from its config (``+model.arch.d_model`` ->
    ``model.arch.d_model``); a ``model.arch`` field the run did not override is its preset's value, so a
    run at the preset's width (an lr sweep's) is the same point of a width axis as one that named it."""
    parts = []
    config = run.config or {}
    for key in axes:
        node = config
        path = key.lstrip("+").split(".")
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None and path[:2] == ["model", "arch"] and len(path) == 3:
            node = _preset_value(config, path[2])
        parts.append(f"{_short(key)}={node}")
    return " ".join(parts)


def _preset_value(config: dict, field: str):
    from reasoners.presets import preset_config

    try:
        preset = preset_config(config["model"]["name"], config["size"]["name"], config["data"]["puzzle"])
    except (KeyError, TypeError, ValueError):
        return None
    return getattr(preset, field, None)


def recipe_rows(groups: list[list[Run]], axes: list[str], select: str) -> list[dict]:
    """:func:`reasoners.compare.seed_rows` of the recipes (seed groups, in that order) with each one's lr,
    axis values, selection score and training calls, and the chosen lr of each (model, axis values)."""
    rows = seed_rows(groups)
    for row, group in zip(rows, groups, strict=True):
        row.update(axes=_axis_label(group[0], axes), lr=_lr(group[0]))
        for key, values in (
            ("score", [_score(r, select) for r in group]),
            ("cell", [r.final.get("cell") for r in group]),
            ("train_calls", [r.history[-1].calls if r.history else None for r in group]),
        ):
            for stat, value in spread(values).items():
                row[f"{key}_{stat}"] = value
        row["chosen"] = False
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row["model"], row["size"], row["axes"])
        # exact accuracy first; cell accuracy breaks its ties (a short budget can leave every lr at 0 exact)
        score = tuple(-1.0 if row[f"{k}_mean"] is None else row[f"{k}_mean"] for k in ("score", "cell"))
        have = best.get(key)
        if have is None or score > have[0] or (score == have[0] and row["lr"] < have[1]["lr"]):
            best[key] = (score, row)
    for _, row in best.values():
        row["chosen"] = True
    return rows


def markdown(rows: list[dict], select: str, failed: list[str]) -> str:
    head = "| reasoner | size | axes | lr | parameters | seeds | updates | exact, last step "
    head += "| exact, halting step | cell | training calls | wall time (mean) | chosen |"
    lines = [head, "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        updates = f"{int(r['steps_min']):,}" + (
            f"-{int(r['steps_max']):,}" if r["steps_max"] != r["steps_min"] else ""
        )
        calls = "-" if r["train_calls_mean"] is None else f"{r['train_calls_mean']:.3g}"
        cells = [r["model"], r["size"], r["axes"] or "-", f"{r['lr']:g}", f"{r['parameters']:,}", r["seeds"]]
        cells += [updates, *(range_cell(r, k) for k in ("exact", "exact_at_halt", "cell")), calls]
        cells += [f"{r['wall_s_mean'] / 60:.1f} min", "**chosen**" if r["chosen"] else ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    rule = {
        "worst": "the lower of its last-step and halting-step exact accuracy",
        "last": "its last-step exact accuracy",
        "halt": "its halting-step exact accuracy",
    }[select]
    note = (
        "\nMean over seeds (range in brackets) of each run's final figures (its evaluation.json, else the "
        f"trainer's final evaluation; EMA weights). {budgets_note(rows)} "
        f"The chosen lr of each reasoner (and axis values) has the highest mean over seeds of {rule}, then "
        "of cell accuracy; ties go to the smaller lr. Wall times are this machine's, runs side by side on "
        "one thread each."
    )
    if failed:
        note += "\n\nFailed runs (see OUT/logs): " + ", ".join(failed)
    return "\n".join(lines) + "\n" + note + "\n"


def _mean_curve(group: list[Run], field: str) -> tuple[list, list, list, list]:
    """(x, mean, min, max) of the evaluation curve over the seeds of a recipe, at the evaluation steps
    every seed has; x is the mean over seeds of ``field`` (step, wall_s or calls) at that step."""
    by_step = [{p.step: p for p in r.history} for r in group]
    steps = sorted(set.intersection(*(set(b) for b in by_step))) if by_step else []
    xs, means, los, his = [], [], [], []
    for s in steps:
        points = [b[s] for b in by_step]
        x = [getattr(p, field) for p in points]
        if None in x:
            continue
        acc = [p.exact for p in points]
        xs.append(sum(x) / len(x))
        means.append(sum(acc) / len(acc))
        los.append(min(acc))
        his.append(max(acc))
    return xs, means, los, his


def plot(groups: list[list[Run]], rows: list[dict]) -> bytes:
    from matplotlib.figure import Figure

    chosen = [(row, group) for row, group in zip(rows, groups, strict=True) if row["chosen"]]
    params = {}
    for row in rows:
        if row["chosen"]:
            params.setdefault(row["model"], set()).add(row["parameters"])
    scaling = any(len(p) > 1 for p in params.values())
    fig = Figure(figsize=(18 if scaling else 14, 4.6), layout="constrained")
    axes = fig.subplots(1, 4 if scaling else 3)
    fields = (
        ("step", "updates", 1.0),
        ("wall_s", "training time (min)", 1 / 60),
        ("calls", "forward network calls of training", 1.0),
    )
    # one colour per reasoner in every panel; its sizes by line style, smallest solid
    models = list(dict.fromkeys(r["model"] for r, _ in chosen))
    sizes = {m: sorted({r["parameters"] for r, _ in chosen if r["model"] == m}) for m in models}
    styles = ("-", "--", ":", "-.")
    for row, group in chosen:
        label = f"{row['model']} {row['axes']} lr {row['lr']:g} ({row['n']} seeds)".replace("  ", " ")
        color = f"C{models.index(row['model']) % 10}"
        style = styles[sizes[row["model"]].index(row["parameters"]) % len(styles)]
        for ax, (field, _, scale) in zip(axes, fields, strict=False):
            xs, mean, lo, hi = _mean_curve(group, field)
            if not xs:
                continue
            xs = [x * scale for x in xs]
            ax.plot(xs, mean, marker=".", linestyle=style, color=color, label=label)
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
    for ax, (field, xlabel, _) in zip(axes, fields, strict=False):
        ax.set(xlabel=xlabel, ylabel="exact accuracy (trainer's eval, last step)", ylim=(-0.02, 1.02))
        if field == "calls":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_title("by updates (the budget)")
    axes[1].set_title("by wall time (this machine)")
    axes[2].set_title("by training compute")
    if chosen:
        axes[0].legend(fontsize="x-small")
    if scaling:
        ax = axes[3]
        for i, model in enumerate(models):
            pts = sorted((r["parameters"], r) for r, _ in chosen if r["model"] == model)
            x = [p for p, _ in pts]
            mean = [r["exact_mean"] for _, r in pts]
            err = [
                [r["exact_mean"] - r["exact_min"] for _, r in pts],
                [r["exact_max"] - r["exact_mean"] for _, r in pts],
            ]
            ax.errorbar(x, mean, yerr=err, fmt="o-", capsize=3, color=f"C{i % 10}", label=model)
        ax.set(
            xscale="log", xlabel="parameters", ylabel="final exact accuracy (last step)", ylim=(-0.02, 1.02)
        )
        ax.set_title("by size (chosen lr; min-max over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def report(
    out: Path, axes: list[str], select: str, failed: list[str], log=print, include: list[Path] = ()
) -> dict:
    """The report of the runs under ``out/runs`` and under each ``include`` folder (another sweep's
    folder, its ``runs/`` read, or any folder of runs), written to ``out``; a run found twice counts once."""
    dirs = [out / "runs"] if (out / "runs").is_dir() or not include else []
    for d in map(Path, include):
        dirs.append(d / "runs" if (d / "runs").is_dir() else d)
    groups = seed_groups(load_runs(dirs, log=log))
    out.mkdir(parents=True, exist_ok=True)
    rows = recipe_rows(groups, axes, select)
    md = markdown(rows, select, failed)
    atomic_write_text(out / "sweep.md", md)
    atomic_write_text(out / "sweep.csv", to_csv(rows))
    chosen = [
        {
            k: r[k]
            for k in (
                "model",
                "size",
                "axes",
                "lr",
                "parameters",
                "seeds",
                "exact_mean",
                "exact_at_halt_mean",
            )
        }
        for r in rows
        if r["chosen"]
    ]
    atomic_write_text(out / "chosen.json", json.dumps({"select": select, "chosen": chosen}, indent=2) + "\n")
    atomic_write_bytes(out / "sweep.png", plot(groups, rows))
    return {"rows": rows, "markdown": md, "chosen": chosen}


# ----------------------------------------------------------------------------- command line


def _list(kind):
    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or (kind is float and not all(v > 0 and math.isfinite(v) for v in values)):
            what = f"positive {kind.__name__}s"
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        return values

    return parse


def _axis(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    parts = [v for v in values.split(",") if v]
    if not sep or not key or not parts:
        raise argparse.ArgumentTypeError(f"an axis is KEY=V1,V2,... (a Hydra override), got {text!r}")
    return key, parts


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = OneLineParser(prog="python bench/compare_reasoners.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="laptop_sudoku")
    p.add_argument("--models", type=_list(str), default=["trm", "hrm", "attractor", "eqr"])
    p.add_argument("--lrs", type=_list(float), default=[1e-3, 2e-3, 4e-3])
    p.add_argument("--seeds", type=_list(int), default=[0, 1])
    p.add_argument("--updates", type=positive_int, default=2000, help="the budget of every run, in updates")
    p.add_argument("--axis", type=_axis, action="append", default=[], help="KEY=V1,V2 (repeatable)")
    p.add_argument("--jobs", type=positive_int, default=2, help="runs side by side, one thread each")
    p.add_argument("--select", choices=SELECT, default="worst")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report-only", action="store_true", help="no training: report the runs under --out")
    p.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="another sweep folder whose runs join the report (repeatable: one figure of several sweeps)",
    )
    args = p.parse_args(argv)
    failed = []
    if not args.report_only:
        jobs = plan(args.models, args.axis, args.lrs, args.seeds)
        codes = run_all(jobs, args.out, args.experiment, args.updates, extra, args.jobs)
        failed = [name for name, code in codes.items() if code != 0]
    try:
        result = report(args.out, [k for k, _ in args.axis], args.select, failed, include=args.include)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"wrote {args.out / 'sweep.md'}, sweep.csv, chosen.json, sweep.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
