"""Evaluate a trained reasoner on its test split: ``python -m reasoners.evaluate checkpoint=RUN_DIR``.

    python -m reasoners.evaluate checkpoint=runs/trm-sudoku                  # a run dir or a .pt file
    python -m reasoners.evaluate checkpoint=runs/x data=sudoku_extreme eval.max_puzzles=1000
    python -m reasoners.evaluate checkpoint=runs/x data_dir=data/sudoku-3x3-1000 eval.steps=[1,4,16]

What it measures, on the first ``eval.max_puzzles`` test puzzles (all by default):

- ``final``: exact accuracy (every cell equals the label), rule-valid accuracy (a correct answer by
  the puzzle's own rules: any valid Sudoku solution keeping the givens, any shortest maze path) and
  cell accuracy, after ``halt_max_steps`` supervision steps: what the trainer's evaluation reports;
- ``halting``: the step where the reasoner's own halting head would stop (TRM, Attractor: the first
  step with ``q_halt > 0``; HRM and other ``q_continue`` models: ``q_halt > q_continue``; steps
  ``1..halt_max_steps``, and ``halt_max_steps`` where it never fires, as training does), its mean,
  and the accuracy of the answer at that step;
- ``curve``: the test-time-compute curve, accuracy after each of ``eval.steps`` supervision steps
  (steps past ``halt_max_steps`` extrapolate: the reasoner simply keeps going). One rollout of the
  largest step count gives every point (:mod:`reasoners.test_time` runs it);
- ``buckets``: accuracy by difficulty, from the ``rating`` column of the dataset's ``test.csv``
  (Sudoku: the public guess-count buckets of :mod:`puzzles.sudoku`; maze: shortest-path length,
  split at its quartiles over the evaluated puzzles). gridloop's builders write ``test.csv`` in the
  test split's order and never augment the test split; the ratings are used only when every
  evaluated row equals its CSV question, and skipped with a note otherwise;
- ``breadth``: test-time breadth on the first ``eval.breadth.max_puzzles`` puzzles: K trajectories
  per puzzle (``eval.breadth.trajectories``, one run of the largest K, each smaller K its first
  trajectories), trajectory 0 plain and the others from an initial state with
  ``eval.breadth.init_noise`` Gaussian noise and/or ``eval.breadth.step_noise`` noise on the carried
  state after every step, one answer per puzzle chosen at each depth of ``eval.breadth.steps`` by
  every selector of ``eval.breadth.selectors`` (convergence, q_head, first_halt, majority), beside the
  plain trajectory and pass@K (see :mod:`reasoners.test_time`); ``eval.breadth=null`` skips it;
- ``attractor`` (Attractor only, not ``solver="unroll"``): final accuracy re-measured for each
  ``(max_iter, tol)`` of ``eval.attractor`` on the first ``eval.attractor.max_puzzles`` puzzles, with
  the solver's map evaluations per supervision step and its relative residual at the last step.

Every table gives the compute beside the accuracy: network calls per puzzle, counted by hooks on the
reasoner's networks (:class:`reasoners.test_time.CallCounter`), so the strategies can be read as
accuracy against compute.

Writes ``evaluation.json`` and ``evaluation.md`` into the run directory (or ``out=``), atomically,
and prints the markdown. :func:`evaluate` is the same without Hydra.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from data_gen.format import Split, atomic_write_json, atomic_write_text, read_public_csv
from reasoners.checkpoint import latest_checkpoint, load_reasoner
from reasoners.cli import run_hydra, user_errors
from reasoners.data import ensure_dataset, load_dataset
from reasoners.device import pick_device
from reasoners.presets import count_parameters
from reasoners.supervision import halting_rule, unwrap
from reasoners.tasks import Task
from reasoners.test_time import (
    SELECTORS,
    Breadth,
    attractor_grid,
    breadth_rollout,
    has_solver_grid,
    means,
    score_rollout,
)

FORMAT = "gridloop-evaluation/1"


@dataclass
class EvalConfig:
    """What to measure; field names follow ``eval.*`` in ``conf/evaluate.yaml``."""

    max_puzzles: int | None = None  # the first N test puzzles; None = all
    batch_size: int = 256
    steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)  # test-time-compute curve (supervision steps)
    ema: bool = True  # evaluate the EMA weights when the checkpoint has them
    # test-time breadth (None: skip); one run of the largest K, the smaller ones are its first rows
    breadth_trajectories: tuple[int, ...] | None = (1, 4, 16)
    breadth_steps: tuple[int, ...] = (16, 64)  # depths at which the selectors choose
    breadth_init_noise: float = 0.5
    breadth_step_noise: float = 0.0
    breadth_seed: int = 0
    breadth_selectors: tuple[str, ...] = SELECTORS
    breadth_max_puzzles: int | None = 256
    attractor_max_iter: tuple[int, ...] = (2, 4, 8, 16, 32)
    attractor_tol: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    attractor_max_puzzles: int | None = 256  # the grid re-runs the model per point: keep it small

    def __post_init__(self):
        def positive_int(key: str, v, allow_none: bool = False) -> None:
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                extra = " or null (all)" if allow_none else ""
                raise ValueError(f"{key} must be a positive integer{extra}, got {v!r}")

        def int_list(key: str, vals) -> tuple[int, ...]:
            vals = _as_list(key, vals)
            for v in vals:
                positive_int(f"every entry of {key}", v)
            return tuple(int(v) for v in vals)

        positive_int("eval.max_puzzles", self.max_puzzles, allow_none=True)
        positive_int("eval.batch_size", self.batch_size)
        positive_int("eval.attractor.max_puzzles", self.attractor_max_puzzles, allow_none=True)
        self.steps = int_list("eval.steps", self.steps)
        self.attractor_max_iter = int_list("eval.attractor.max_iter", self.attractor_max_iter)
        tols = _as_list("eval.attractor.tol", self.attractor_tol)
        for t in tols:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0 < t < math.inf):
                raise ValueError(f"every entry of eval.attractor.tol must be a positive number, got {t!r}")
        self.attractor_tol = tuple(float(t) for t in tols)
        if self.breadth_trajectories is not None:
            self.breadth_trajectories = int_list("eval.breadth.trajectories", self.breadth_trajectories)
            self.breadth_steps = int_list("eval.breadth.steps", self.breadth_steps)
            positive_int("eval.breadth.max_puzzles", self.breadth_max_puzzles, allow_none=True)
            sels = _as_list("eval.breadth.selectors", self.breadth_selectors)
            for sel in sels:
                if sel not in SELECTORS:
                    raise ValueError(
                        f"unknown selector {sel!r} in eval.breadth.selectors: "
                        f"expected some of {', '.join(SELECTORS)}"
                    )
            self.breadth_selectors = tuple(sels)
            for key in ("init_noise", "step_noise", "seed"):
                try:  # Breadth checks the values; the message names the eval key
                    Breadth(**{key: getattr(self, f"breadth_{key}")})
                except ValueError as e:
                    raise ValueError(f"eval.breadth.{e}") from None
        if not isinstance(self.ema, bool):
            raise ValueError(f"eval.ema must be true or false, got {self.ema!r}")


def _as_list(key: str, vals) -> list:
    if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence):
        raise ValueError(f"{key} must be a list, e.g. {key}=[1,2,4], got {vals!r}")
    if not vals:
        raise ValueError(f"{key} must not be empty")
    return list(vals)


# ----------------------------------------------------------------------------- data


def resolve_dataset(
    ckpt: dict, data: dict | None = None, data_dir: str | os.PathLike | None = None, log=print
) -> Path:
    """The dataset folder to evaluate on: ``data_dir``, else the ``data`` config's ``dir``, else the
    checkpoint's own data config. A missing dataset is built only where that data config says
    ``auto_build``; otherwise the error gives its build command."""
    if data_dir is not None:
        root = Path(data_dir)
        if not (root / "test" / "dataset.json").is_file():
            raise FileNotFoundError(
                f"data_dir={root}: no dataset there ({root / 'test' / 'dataset.json'} not found); "
                "pass the folder a data_gen builder wrote (it holds train/ and test/)"
            )
        return root
    where = "the data config"
    if data is None:
        data = (ckpt.get("config") or {}).get("data")
        where = "the checkpoint's data config"
    if not isinstance(data, dict) or not data.get("dir"):
        raise ValueError(
            f"{where} names no dataset folder (data.dir): pass data_dir=PATH to the test set, "
            "or data=NAME (a data config, as in training)"
        )
    try:
        return ensure_dataset(data["dir"], data.get("build"), bool(data.get("auto_build")), log=log)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}\n(or point at another copy with data_dir=PATH)") from None


def load_test_split(root: str | os.PathLike, task: Task) -> Split:
    """The test split of ``root``, checked to hold puzzles of ``task``'s kind and size."""
    root = Path(root)
    fix = f"the checkpoint was trained on {task.side}x{task.side} {task.kind}: pass its dataset with "
    fix += "data=NAME or data_dir=PATH"
    data = load_dataset(root, task.kind, need_train=False, fix=fix[0].upper() + fix[1:])
    found = data.task
    if found != task:
        raise ValueError(
            f"{root} holds {found.side}x{found.side} grids (seq_len {found.seq_len}, vocab_size "
            f"{found.vocab_size}), but {fix}"
        )
    return data.test


# ----------------------------------------------------------------------------- difficulty


def _quartile_buckets(ratings: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Up to four buckets split at the quartiles (each upper bound is a rating that occurs)."""
    uppers = np.unique(np.quantile(ratings, [0.25, 0.5, 0.75, 1.0], method="inverted_cdf")).astype(np.int64)
    which = np.searchsorted(uppers, ratings, side="left")
    lowers = np.concatenate([[int(ratings.min())], uppers[:-1] + 1])
    names = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in zip(lowers, uppers, strict=True)]
    return which, names


def difficulty_buckets(root: Path, task: Task, split: Split, rows: np.ndarray, final: dict) -> dict:
    """Final accuracy per difficulty bucket, or ``{"skipped": why}``."""
    path = Path(root) / "test.csv"
    if not path.is_file():
        return {"skipped": f"{path} not found (no ratings); gridloop's data_gen builders write it"}
    csv_rows = read_public_csv(path)
    puzzle_of = np.searchsorted(split.puzzle_indices, rows, side="right") - 1
    group_of = np.searchsorted(split.group_indices, puzzle_of, side="right") - 1
    if len(csv_rows) != split.num_groups:
        return {
            "skipped": f"{path} has {len(csv_rows)} rows but the test split has {split.num_groups} "
            "puzzles, so its ratings cannot be matched to them"
        }
    for i, g in zip(rows, group_of, strict=True):
        question = csv_rows[g][1]
        try:
            same = np.array_equal(task.encode(question), split.inputs[i])
        except ValueError:
            same = False
        if not same:
            return {
                "skipped": f"{path} row {g + 1} is not the test split's puzzle {g} (augmented or "
                "reordered test split), so its ratings cannot be matched"
            }
    ratings = np.array([csv_rows[g][3] for g in group_of], dtype=np.int64)
    buckets = task.rating_buckets(ratings)
    if buckets is not None:
        which, names, what = buckets
        what = f"test.csv rating: {what}"
    else:
        which, names = _quartile_buckets(ratings)
        what = "test.csv rating: shortest-path length, split at its quartiles"
    table = [
        {"bucket": name, "puzzles": int((which == b).sum()), **means(final, which == b)}
        for b, name in enumerate(names)
    ]
    return {"rating": what, "rows": table}


# ----------------------------------------------------------------------------- evaluation


def evaluate_model(
    model: nn.Module,
    task: Task,
    split: Split,
    config: EvalConfig | None = None,
    *,
    data_root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> dict:
    """Every figure of the module docstring for ``model`` on ``split`` (a plain dict, JSON-ready)."""
    config = config or EvalConfig()
    t0 = time.perf_counter()
    cfg = unwrap(model).config
    halt_max = cfg.halt_max_steps
    n_total = int(split.inputs.shape[0])
    n = n_total if config.max_puzzles is None else min(n_total, config.max_puzzles)
    rows = np.arange(n)
    record = sorted(set(config.steps) | {halt_max})
    log(f"evaluating {n} of {n_total} test puzzles for up to {max(record)} supervision steps")
    r = score_rollout(model, task, split, rows, record, batch_size=config.batch_size, device=device)
    final_scores = r.steps[halt_max]
    result = {
        "puzzles": n,
        "test_puzzles": n_total,
        "halt_max_steps": halt_max,
        "final": means(final_scores),
        "calls_per_puzzle": r.calls.get(halt_max),  # network calls for the final answer
        "halting": {
            "rule": halting_rule(cfg),
            "mean_step": float(r.halt_step.mean()) if n else None,
            "never_fired": float((r.halt_step == halt_max).mean()) if n else None,
            **means(r.at_halt),
        },
        "curve": [
            {"steps": s, **means(r.steps[s]), "calls_per_puzzle": r.calls.get(s)}
            for s in sorted(config.steps)
        ],
        "buckets": (
            difficulty_buckets(Path(data_root), task, split, rows, final_scores)
            if data_root is not None
            else {"skipped": "no dataset folder given"}
        ),
        "solver": r.solver,
        "breadth": run_breadth(model, task, split, rows, config, device=device, log=log),
        "attractor": None,
    }
    if has_solver_grid(model):
        m = n if config.attractor_max_puzzles is None else min(n, config.attractor_max_puzzles)
        log(f"attractor grid: max_iter {list(config.attractor_max_iter)} x tol {list(config.attractor_tol)}")
        result["attractor"] = {
            "puzzles": m,
            "configured": {"max_iter": cfg.max_iter, "tol": cfg.tol},
            "grid": attractor_grid(
                model,
                task,
                split,
                rows[:m],
                config.attractor_max_iter,
                config.attractor_tol,
                batch_size=config.batch_size,
                device=device,
            ),
        }
    result["eval_wall_s"] = time.perf_counter() - t0
    return result


def run_breadth(
    model: nn.Module,
    task: Task,
    split: Split,
    rows: np.ndarray,
    config: EvalConfig,
    *,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> dict:
    """The ``breadth`` section: every selector at every depth and breadth, or ``{"skipped": why}``."""
    if config.breadth_trajectories is None:
        return {"skipped": "eval.breadth=null"}
    core = unwrap(model)
    if not hasattr(core, "State"):
        return {"skipped": f"{type(core).__name__} has no State to perturb"}
    m = len(rows) if config.breadth_max_puzzles is None else min(len(rows), config.breadth_max_puzzles)
    breadth = Breadth(
        trajectories=max(config.breadth_trajectories),
        init_noise=config.breadth_init_noise,
        step_noise=config.breadth_step_noise,
        seed=config.breadth_seed,
    )
    log(
        f"breadth: {breadth.trajectories} trajectories x {m} puzzles for {max(config.breadth_steps)} steps "
        f"(init_noise {breadth.init_noise:g}, step_noise {breadth.step_noise:g}, seed {breadth.seed})"
    )
    r = breadth_rollout(
        model,
        task,
        split,
        rows[:m],
        config.breadth_steps,
        breadth,
        ks=config.breadth_trajectories,
        selectors=config.breadth_selectors,
        batch_size=config.batch_size,
        device=device,
    )
    return {
        "puzzles": m,
        "trajectories": list(r.ks),
        "init_noise": breadth.init_noise,
        "step_noise": breadth.step_noise,
        "seed": breadth.seed,
        "selectors": list(r.selectors),
        "rows": r.table(),
    }


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The run directory of a checkpoint path: the path itself for a folder, else the folder
    above ``checkpoints/`` (or the file's own folder)."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def evaluate(
    checkpoint: str | os.PathLike,
    config: EvalConfig | None = None,
    *,
    data: dict | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Load ``checkpoint`` (a ``.pt`` or a run dir), find its dataset (see :func:`resolve_dataset`)
    and evaluate it. Returns the dict that ``evaluation.json`` holds."""
    config = config or EvalConfig()
    device = pick_device(device)[0] if device is None or isinstance(device, str) else device
    if checkpoint is None or str(checkpoint) == "":
        raise ValueError("no checkpoint given: pass checkpoint=RUN_DIR or checkpoint=PATH.pt")
    path = Path(checkpoint)
    if path.is_dir():
        path = latest_checkpoint(path) or path  # load_reasoner names the missing file
    model, task, ckpt = load_reasoner(path, ema=config.ema, device=device)
    root = resolve_dataset(ckpt, data, data_dir, log=log)
    split = load_test_split(root, task)
    run_cfg = ckpt.get("config") or {}
    result = {
        "format": FORMAT,
        "checkpoint": str(path),
        "model": ckpt["model_name"],
        "size": (run_cfg.get("size") or {}).get("name"),
        "task": dataclasses.asdict(task),
        "parameters": count_parameters(model),
        "step": ckpt.get("step"),
        "weights": "ema" if config.ema and ckpt.get("ema") else "live",
        "data_dir": str(root),
        "eval": dataclasses.asdict(config),
    }
    result.update(evaluate_model(model, task, split, config, data_root=root, device=device, log=log))
    return result


# ----------------------------------------------------------------------------- reporting


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _calls(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


SELECTOR_NAMES = {
    "single": "trajectory 0",
    "convergence": "convergence",
    "q_head": "q-head",
    "first_halt": "first to halt",
    "majority": "majority",
    "pass_at_k": "pass@K",
}


def _breadth_markdown(b: dict | None) -> list[str]:
    if not b:
        return []
    if "skipped" in b:
        return ["", "### Test-time breadth", "", f"Skipped: {b['skipped']}."]
    strategies = ["single", *b["selectors"], "pass_at_k"]
    lines = [
        "",
        "### Test-time breadth",
        "",
        f"First {b['puzzles']} puzzles, K trajectories each: trajectory 0 plain, the others with "
        f"initial-state noise {b['init_noise']:g} and step noise {b['step_noise']:g} (seed {b['seed']}). "
        "Exact accuracy of the answer each selector picks; pass@K (any trajectory right) bounds them all.",
        "",
        "| steps | K | network calls / puzzle | " + " | ".join(SELECTOR_NAMES[s] for s in strategies) + " |",
        "|---:|---:|---:|" + "---:|" * len(strategies),
    ]
    for row in b["rows"]:
        cells = " | ".join(_pct(row[s]["exact"]) for s in strategies)
        lines.append(
            f"| {row['steps']} | {row['trajectories']} | {_calls(row['calls_per_puzzle'])} | {cells} |"
        )
    return lines


def to_markdown(result: dict) -> str:
    """The evaluation as markdown tables."""
    task = result.get("task", {})
    title = f"{result.get('model', '?')}" + (f" {result['size']}" if result.get("size") else "")
    where = f"{task.get('side')}x{task.get('side')} {task.get('kind')}" if task else "?"
    step = result.get("step")
    lines = [
        f"## {title} on {where}" + (f", checkpoint step {step}" if step is not None else ""),
        "",
        f"{result['puzzles']} of {result['test_puzzles']} test puzzles"
        + (f" from `{result['data_dir']}`" if result.get("data_dir") else "")
        + (f", {result['weights']} weights" if result.get("weights") else "")
        + f", {result['halt_max_steps']} supervision steps.",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| exact accuracy | {_pct(result['final']['exact'])} |",
        f"| rule-valid accuracy | {_pct(result['final']['valid'])} |",
        f"| cell accuracy | {_pct(result['final']['cell'])} |",
    ]
    h = result["halting"]
    if h["mean_step"] is not None:
        lines += [
            f"| mean halting step ({h['rule']}) | {h['mean_step']:.2f} of {result['halt_max_steps']} |",
            f"| exact / valid at the halting step | {_pct(h['exact'])} / {_pct(h['valid'])} |",
        ]
    if result.get("solver"):
        s = result["solver"]
        res = "-" if s["rel_residual"] is None else f"{s['rel_residual']:.2e}"
        lines += [
            f"| solver map evaluations per step | {s['map_evals_per_step']:.2f} |",
            f"| solver relative residual, last step | {res} ({_pct(s['converged'])} converged) |",
        ]
    lines += [
        "",
        "### Test-time depth",
        "",
        "One trajectory per puzzle; network calls per puzzle counted by hooks on the reasoner's networks.",
        "",
        "| supervision steps | network calls / puzzle | exact | valid | cell |",
        "|---:|---:|---:|---:|---:|",
    ]
    for p in result["curve"]:
        lines.append(
            f"| {p['steps']} | {_calls(p.get('calls_per_puzzle'))} | {_pct(p['exact'])} | {_pct(p['valid'])} "
            f"| {_pct(p['cell'])} |"
        )
    lines += _breadth_markdown(result.get("breadth"))
    b = result["buckets"]
    lines += ["", "### By difficulty", ""]
    if "skipped" in b:
        lines.append(f"Skipped: {b['skipped']}.")
    else:
        lines += [
            f"{b['rating']}.",
            "",
            "| rating | puzzles | exact | valid | cell |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in b["rows"]:
            lines.append(
                f"| {row['bucket']} | {row['puzzles']} | {_pct(row['exact'])} | {_pct(row['valid'])} "
                f"| {_pct(row['cell'])} |"
            )
    a = result.get("attractor")
    if a:
        c = a["configured"]
        lines += [
            "",
            "### Attractor solver budget",
            "",
            f"First {a['puzzles']} puzzles; trained with max_iter {c['max_iter']}, tol {c['tol']:g}.",
            "",
            "| max_iter | tol | network calls / puzzle | exact | valid | cell | map evals / step "
            "| rel. residual | converged |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for g in a["grid"]:
            res = "-" if g["rel_residual"] is None else f"{g['rel_residual']:.2e}"
            lines.append(
                f"| {g['max_iter']} | {g['tol']:g} | {_calls(g.get('calls_per_puzzle'))} "
                f"| {_pct(g['exact'])} | {_pct(g['valid'])} | {_pct(g['cell'])} "
                f"| {g['map_evals_per_step']:.2f} | {res} | {_pct(g['converged'])} |"
            )
    return "\n".join(lines) + "\n"


def output_paths(result: dict, out: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(json, md)``: ``out`` ending in ``.json`` names the JSON file (the markdown goes beside
    it); any other ``out`` is a folder; by default the checkpoint's run directory."""
    if out is None:
        folder = run_dir_of(result["checkpoint"])
        return folder / "evaluation.json", folder / "evaluation.md"
    out = Path(out)
    if out.suffix == ".json":
        return out, out.with_suffix(".md")
    return out / "evaluation.json", out / "evaluation.md"


def write_outputs(result: dict, out: str | os.PathLike | None = None) -> tuple[Path, Path]:
    json_path, md_path = output_paths(result, out)
    atomic_write_json(json_path, result)
    atomic_write_text(md_path, to_markdown(result))
    return json_path, md_path


# ----------------------------------------------------------------------------- entry point


def config_from_cfg(cfg: DictConfig) -> EvalConfig:
    """An :class:`EvalConfig` from ``cfg.eval``; unknown keys are refused by name."""
    ev = OmegaConf.to_container(cfg.get("eval") or {}, resolve=True)
    att = ev.pop("attractor", None) or {}
    # nested groups (eval.attractor.*, eval.breadth.*) are the only spelling of their fields
    known = {
        f.name for f in dataclasses.fields(EvalConfig) if not f.name.startswith(("breadth_", "attractor_"))
    }
    fields = {k: v for k, v in ev.items() if k in known}
    has_breadth = "breadth" in ev
    breadth = ev.pop("breadth", None)
    breadth_keys = ("trajectories", "steps", "init_noise", "step_noise", "seed", "selectors", "max_puzzles")
    unknown = sorted(set(ev) - known) + sorted(
        f"attractor.{k}" for k in att if k not in ("max_iter", "tol", "max_puzzles")
    )
    if isinstance(breadth, dict):
        unknown += sorted(f"breadth.{k}" for k in breadth if k not in breadth_keys)
    elif breadth is not None:
        raise ValueError(f"eval.breadth must be a group of keys or null (skip), got {breadth!r}")
    if unknown:
        raise ValueError(f"unknown eval keys: {', '.join('eval.' + k for k in unknown)}")
    for k in ("max_iter", "tol", "max_puzzles"):
        if k in att:
            fields[f"attractor_{k}"] = att[k]
    if has_breadth and breadth is None:
        fields["breadth_trajectories"] = None
    for k in breadth or {}:
        fields[f"breadth_{k}"] = breadth[k]
    return EvalConfig(**fields)


def run(cfg: DictConfig, log: Callable[[str], None] = print) -> dict:
    """What ``python -m reasoners.evaluate`` does with a composed config: evaluate, write, print."""
    data = cfg.get("data")
    if data is not None:
        try:
            data = OmegaConf.to_container(data, resolve=True)
        except Exception as e:  # noqa: BLE001 - OmegaConf raises several types for a bad interpolation
            raise ValueError(f"the data config does not resolve on its own ({e}): use data_dir=PATH") from e
    result = evaluate(
        cfg.get("checkpoint"),
        config_from_cfg(cfg),
        data=data,
        data_dir=cfg.get("data_dir"),
        device=cfg.get("device"),
        log=log,
    )
    json_path, md_path = write_outputs(result, cfg.get("out"))
    print(to_markdown(result))
    log(f"wrote {json_path} and {md_path}")
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@user_errors()
def main(cfg: DictConfig) -> None:
    run(cfg)


def cli() -> None:
    """``python -m reasoners.evaluate`` / ``gridloop evaluate``: user errors end in one line, exit 2."""
    run_hydra(main)


if __name__ == "__main__":
    cli()
