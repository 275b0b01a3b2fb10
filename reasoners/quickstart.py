"""The main job in one command: ``gridloop quickstart`` (or ``python -m reasoners.quickstart``).

1. trains a tiny TRM on 4x4 Sudoku for the ``laptop_smoke`` experiment's update budget (the data set
   builds itself first when missing, with the command its data config names);
2. evaluates the final (EMA) weights on every test puzzle: exact and rule-valid accuracy, the step
   where the reasoner's own halting head stops, the test-time-compute curve (``evaluation.json``);
3. draws the trajectory of one test puzzle (``trajectory.png``, and ``trajectory.gif`` with
   ``quickstart.gif=true``);
4. prints a short summary: accuracy, the curve, where every file is, and what to try next.

Its options are Hydra overrides, the trainer's included (``model=hrm``, ``trainer.seed=1``,
``trainer.max_steps=500``); ``conf/quickstart.yaml`` lists its own keys. Everything is the plain
functions the other entry points wrap: :func:`reasoners.train.train`,
:func:`reasoners.evaluate.evaluate` and :func:`reasoners.visualize.visualize`.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from reasoners.cli import user_errors
from reasoners.train import NonFiniteLossError

NEXT_STEPS = (
    "gridloop train experiment=laptop_sudoku model=trm            # 6x6 Sudoku, the laptop tier",
    "bash bench/laptop_tier.sh laptop_sudoku                     # HRM, TRM, Attractor side by side",
    "gridloop compare runs/quickstart                             # one table across your runs",
    "gridloop evaluate checkpoint=RUN_DIR                         # + test-time breadth and selectors",
    "gridloop sudoku --n 1000                                     # 9x9 Sudoku-Extreme-style data",
)


def quickstart(cfg: DictConfig, out_dir: str | Path, log=print) -> dict:
    """Train, evaluate and visualize into ``out_dir``; returns ``{"summary", "evaluation", "png",
    "gif"}`` and logs the closing summary."""
    from reasoners.evaluate import EvalConfig, evaluate, write_outputs
    from reasoners.train import train
    from reasoners.visualize import visualize

    out_dir = Path(out_dir)
    qs = cfg.quickstart
    start = time.perf_counter()
    summary = train(cfg, out_dir)
    trained = time.perf_counter() - start
    # the depth curve only: breadth (K trajectories per puzzle) is `gridloop evaluate`'s, and would
    # take longer than the training on a laptop
    config = EvalConfig(steps=tuple(qs.eval_steps), breadth_trajectories=None)
    evaluation = evaluate(out_dir, config, log=lambda s: None)
    eval_json, eval_md = write_outputs(evaluation)
    shown = visualize(
        {"checkpoint": str(out_dir), "data": cfg.data.dir, "index": qs.index, "gif": bool(qs.gif)},
        log=lambda s: None,
    )
    files = {
        "run": out_dir,
        "metrics": out_dir / "metrics.csv",
        "checkpoint": out_dir / "checkpoints" / "last.pt",
        "evaluation": eval_md,
        "trajectory": shown["png"],
    }
    if shown["gif"] is not None:
        files["animation"] = shown["gif"]
    log(closing_summary(cfg, summary, evaluation, files, trained, time.perf_counter() - start))
    return {"summary": summary, "evaluation": evaluation, "png": shown["png"], "gif": shown["gif"]}


def closing_summary(cfg, summary: dict, evaluation: dict, files: dict, trained: float, total: float) -> str:
    final, halting = evaluation["final"], evaluation.get("halting") or {}
    task = evaluation["task"]
    curve = ", ".join(f"{p['steps']}: {100 * p['exact']:.1f}%" for p in evaluation.get("curve", []))
    lines = [
        "",
        f"gridloop quickstart: {summary['model']} {summary['size']} ({summary['parameters']:,} "
        f"parameters) on {task['side']}x{task['side']} {task['kind']}, {summary['steps']:,} updates "
        f"({trained / 60:.1f} min training, {total / 60:.1f} min in all)",
        f"  exact {100 * final['exact']:.1f}%, rule-valid {100 * final['valid']:.1f}%, cells "
        f"{100 * final['cell']:.1f}% on {evaluation['puzzles']} test puzzles (after the last step)",
    ]
    if halting.get("exact") is not None:
        lines.append(
            f"  at the reasoner's own halting step (mean {halting['mean_step']:.1f}): exact "
            f"{100 * halting['exact']:.1f}%"
        )
    lines.append(f"  exact accuracy after N supervision steps: {curve}")
    lines.append("files:")
    lines += [f"  {name:11s} {path}" for name, path in files.items()]
    lines.append("next:")
    lines += [f"  {cmd}" for cmd in NEXT_STEPS]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="conf", config_name="quickstart")
@user_errors(extra=(NonFiniteLossError, ImportError))
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    quickstart(cfg, HydraConfig.get().runtime.output_dir)


def cli() -> None:
    """``gridloop quickstart``: user errors end in one line and exit code 2."""
    from reasoners.cli import run_hydra

    run_hydra(main)


if __name__ == "__main__":
    cli()
