"""Test-time compute on trained checkpoints: depth, breadth and selection, with the compute each costs.

    python bench/bench_test_time.py runs/trm runs/attractor [--puzzles 500] [--plan 32x16,8x64]
        [--init-noise 0.5] [--step-noise 0] [--seed 0] [--threads 2] [--out bench_test_time.json]

For each checkpoint (a run dir or a .pt; the EMA weights when it has them), on the first ``--puzzles``
test puzzles of the dataset it was trained on:

- *depth*: one trajectory, exact accuracy after 1, 2, 4, ..., 128 supervision steps, and at the step
  where its halting head first fires (:func:`reasoners.test_time.score_rollout`);
- *breadth*: each ``KxD`` of ``--plan`` is one run of K trajectories per puzzle for D steps, scored at
  the depths 4, 8, 16, ... up to D and at breadths 1, 2, 4, ... up to K (the first k trajectories of
  the K-way run are the k-way run), under every selector, beside trajectory 0 and pass@K
  (:func:`reasoners.test_time.breadth_rollout`);
- *solver budget* (Attractor only): the ``(max_iter, tol)`` grid at the trained depth.

Every row has the network calls per puzzle (counted by hooks on the reasoner's networks) and the
wall time of the run that produced it. Prints one markdown table per checkpoint; ``--out`` keeps the
figures as JSON. Time figures are only comparable on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from data_gen.format import OneLineParser, atomic_write_json
from reasoners.checkpoint import latest_checkpoint, load_reasoner
from reasoners.evaluate import load_test_split, resolve_dataset
from reasoners.supervision import unwrap
from reasoners.test_time import (
    SELECTORS,
    Breadth,
    attractor_grid,
    breadth_rollout,
    has_solver_grid,
    score_rollout,
)

DEPTHS = (1, 2, 4, 8, 16, 32, 64, 128)


def parse_plan(text: str) -> list[tuple[int, int]]:
    plan = []
    for part in text.split(","):
        try:
            k, d = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise ValueError(
                f"--plan entries are KxD (trajectories x steps), e.g. 32x16, got {part!r}"
            ) from None
        if k < 1 or d < 1:
            raise ValueError(f"--plan entry {part!r}: K and D must be positive")
        plan.append((k, d))
    return plan


def powers_up_to(n: int, start: int = 1) -> list[int]:
    out, v = [], start
    while v < n:
        out.append(v)
        v *= 2
    return sorted(set(out + [n]))


def bench_checkpoint(path: Path, args, plan) -> dict:
    ckpt_path = latest_checkpoint(path) if path.is_dir() else path
    if ckpt_path is None:
        raise FileNotFoundError(f"{path}: no checkpoint found")
    model, task, ckpt = load_reasoner(ckpt_path, ema=True, device="cpu")
    model.eval()
    split = load_test_split(resolve_dataset(ckpt, log=lambda s: None), task)
    rows = np.arange(min(args.puzzles, split.inputs.shape[0]))
    cfg = unwrap(model).config
    out = {
        "checkpoint": str(ckpt_path),
        "model": ckpt["model_name"],
        "step": ckpt.get("step"),
        "puzzles": len(rows),
    }
    out["depth"] = None
    if args.depth:
        t0 = time.perf_counter()
        depth = score_rollout(model, task, split, rows, DEPTHS, batch_size=args.batch_size)
        out["depth"] = {
            "wall_s": time.perf_counter() - t0,
            "rows": [
                {
                    "steps": s,
                    "calls_per_puzzle": depth.calls.get(s),
                    "exact": float(depth.steps[s]["exact"].mean()),
                }
                for s in DEPTHS
            ],
            "at_halt": {
                "mean_step": float(depth.halt_step.mean()),
                "exact": float(depth.at_halt["exact"].mean()),
            },
        }
    out["breadth"] = []
    for K, D in plan:
        breadth = Breadth(K, init_noise=args.init_noise, step_noise=args.step_noise, seed=args.seed)
        depths = [d for d in powers_up_to(D, 4) if d <= D]
        ks = powers_up_to(K)
        t0 = time.perf_counter()
        r = breadth_rollout(model, task, split, rows, depths, breadth, ks=ks, batch_size=args.batch_size)
        out["breadth"].append({"K": K, "D": D, "wall_s": time.perf_counter() - t0, "rows": r.table()})
    if has_solver_grid(model):
        t0 = time.perf_counter()
        grid = attractor_grid(
            model, task, split, rows, (4, 8, 16, 32), (1e-3, 1e-4), batch_size=args.batch_size
        )
        out["attractor"] = {
            "wall_s": time.perf_counter() - t0,
            "rows": grid,
            "halt_max_steps": cfg.halt_max_steps,
        }
    return out


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def markdown(res: dict) -> str:
    lines = [
        f"### {res['model']} (update {res['step']}), {res['puzzles']} test puzzles",
        "",
        "| strategy | steps | K | network calls / puzzle | trajectory 0 | "
        + " | ".join(SELECTORS)
        + " | pass@K | wall s |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(SELECTORS) + "---:|---:|",
    ]
    d = res["depth"] or {"rows": []}
    for row in d["rows"]:
        blank = " | ".join("" for _ in SELECTORS)
        lines.append(
            f"| depth | {row['steps']} | 1 | {row['calls_per_puzzle']:,.0f} | {_pct(row['exact'])} "
            f"| {blank} | | |"
        )
    if res["depth"]:
        lines.append(
            f"| own halting step | {d['at_halt']['mean_step']:.2f} (mean) | 1 | "
            f"| {_pct(d['at_halt']['exact'])} "
            f"| {' | '.join('' for _ in SELECTORS)} | | {d['wall_s']:.0f} |"
        )
    for b in res["breadth"]:
        for row in b["rows"]:
            sel = " | ".join(_pct(row[s]["exact"]) for s in SELECTORS)
            lines.append(
                f"| breadth {b['K']}x{b['D']} | {row['steps']} | {row['trajectories']} | "
                f"{row['calls_per_puzzle']:,.0f} | {_pct(row['single']['exact'])} | {sel} | "
                f"{_pct(row['pass_at_k']['exact'])} | {b['wall_s']:.0f} |"
            )
    if res.get("attractor"):
        a = res["attractor"]
        for g in a["rows"]:
            blank = " | ".join("" for _ in SELECTORS)
            lines.append(
                f"| solver max_iter {g['max_iter']}, tol {g['tol']:g} | {a['halt_max_steps']} | 1 | "
                f"{g['calls_per_puzzle']:,.0f} | {_pct(g['exact'])} | {blank} | | {a['wall_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = OneLineParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--puzzles", type=int, default=500)
    p.add_argument(
        "--plan", default="32x16,8x64", help="KxD runs: K trajectories for D steps (default %(default)s)"
    )
    p.add_argument("--init-noise", type=float, default=0.5)
    p.add_argument("--step-noise", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--no-depth", dest="depth", action="store_false", help="skip the one-trajectory depth curve"
    )
    args = p.parse_args(argv)
    try:
        plan = parse_plan(args.plan)
        Breadth(1, args.init_noise, args.step_noise, args.seed)
    except ValueError as e:
        p.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch threads: {torch.get_num_threads()}; plan {args.plan}; init_noise {args.init_noise:g}, "
        f"step_noise {args.step_noise:g}, seed {args.seed}"
    )
    results = []
    for path in args.checkpoints:
        res = bench_checkpoint(path, args, plan)
        results.append(res)
        print(markdown(res), flush=True)
        if args.out:
            atomic_write_json(
                args.out, {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
            )


if __name__ == "__main__":
    main()
