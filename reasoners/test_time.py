"""Test-time strategies: how much a trained reasoner gains from more compute at evaluation.

- *depth*: more supervision steps. :func:`score_rollout` runs one rollout of the largest step count
  and scores the answer at every requested step (steps past ``halt_max_steps`` extrapolate: the
  reasoner simply keeps going), and at the step where its own halting head first fires;
- *solver budget* (Attractor): :func:`attractor_grid` re-measures final accuracy for each
  ``(max_iter, tol)`` of the fixed-point solve.

Every strategy steps the reasoner through :func:`reasoners.supervision.rollout` and scores answers
with :func:`reasoners.tasks.score`; :mod:`reasoners.evaluate` reports what they return.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from data_gen.format import Split
from reasoners.attractor import AttractorConfig
from reasoners.data import to_batch
from reasoners.supervision import halt_fires, rollout, unwrap
from reasoners.tasks import Task, score

METRICS = ("exact", "valid", "cell")


@dataclass
class Rollout:
    """Per-puzzle results of one rollout over ``rows``."""

    steps: dict[int, dict[str, np.ndarray]]  # recorded step -> {"exact", "valid", "cell"} (N,)
    halt_step: np.ndarray  # (N,) first step the halting head fires (halt_max_steps if never)
    at_halt: dict[str, np.ndarray]  # scores of the answer at halt_step
    solver: dict | None  # Attractor: mean map evaluations per step, last step's residuals


def means(scores: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float | None]:
    """The mean of each metric over the puzzles in ``mask`` (all by default); None when empty."""
    if mask is not None:
        scores = {k: v[mask] for k, v in scores.items()}
    return {k: (float(np.mean(scores[k])) if len(scores[k]) else None) for k in METRICS}


class _SolverStats:
    """The Attractor's effort over a rollout: map evaluations per step (weighted by batch rows) and
    the relative residual and convergence of the last supervision step, per puzzle."""

    def __init__(self, n: int):
        self.evals: list[tuple[int, int]] = []
        self.residual, self.converged = np.zeros(n), np.zeros(n, bool)

    def add(self, info, at: np.ndarray, last: bool) -> None:
        self.evals.append((info.nstep, len(at)))
        if last:
            self.residual[at] = info.rel_residual.float().cpu().numpy()
            self.converged[at] = info.converged.cpu().numpy()

    def summary(self) -> dict | None:
        if not self.evals:
            return None
        weight = sum(n for _, n in self.evals)
        finite = self.residual[np.isfinite(self.residual)]
        return {
            "map_evals_per_step": sum(e * n for e, n in self.evals) / weight,
            "rel_residual": float(finite.mean()) if len(finite) else None,
            "converged": float(self.converged.mean()),
        }


@torch.no_grad()
def score_rollout(
    model: nn.Module,
    task: Task,
    split: Split,
    rows: np.ndarray,
    record: Sequence[int],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Rollout:
    """Run ``rows`` from the initial state for ``max(record, halt_max_steps)`` supervision steps,
    scoring the answer at every step in ``record``, and where the halting head first fires.

    Only predictions are kept from each step of the rollout."""
    cfg = unwrap(model).config
    halt_max = cfg.halt_max_steps
    record = sorted(set(int(s) for s in record))
    N = len(rows)
    steps = {s: {"exact": np.zeros(N, bool), "valid": np.zeros(N, bool), "cell": np.zeros(N)} for s in record}
    halt_step = np.full(N, halt_max, dtype=np.int64)
    halt_preds = np.zeros((N, task.seq_len), dtype=np.int64)
    solver = _SolverStats(N)
    for start in range(0, N, batch_size):
        idx = rows[start : start + batch_size]
        at = np.arange(start, start + len(idx))
        inputs, labels = split.inputs[idx], split.labels[idx]
        pending = np.ones(len(idx), bool)
        outs = rollout(model, to_batch(split, idx, device), max(record[-1], halt_max))
        for step, out in enumerate(outs, start=1):
            preds = out.logits.argmax(-1).cpu().numpy()  # (B, L)
            if step in steps:
                for k, v in score(task, inputs, labels, preds).items():
                    steps[step][k][at] = v
            if step > halt_max:
                continue
            fires = halt_fires(out.q_logits, cfg.q_continue).cpu().numpy()
            newly = pending & (fires | (step == halt_max))
            halt_step[at[newly]] = step
            halt_preds[at[newly]] = preds[newly]
            pending &= ~newly
            if out.solver is not None:
                solver.add(out.solver, at, last=step == halt_max)
    at_halt = score(task, split.inputs[rows], split.labels[rows], halt_preds)
    return Rollout(steps, halt_step, at_halt, solver.summary())


@contextlib.contextmanager
def solver_settings(model: nn.Module, max_iter: int, tol: float):
    """Temporarily set the Attractor's solve budget (read from ``model.config`` at every solve)."""
    cfg = unwrap(model).config
    before = (cfg.max_iter, cfg.tol)
    cfg.max_iter, cfg.tol = int(max_iter), float(tol)
    try:
        yield
    finally:
        cfg.max_iter, cfg.tol = before


def has_solver_grid(model: nn.Module) -> bool:
    cfg = unwrap(model).config
    return isinstance(cfg, AttractorConfig) and cfg.solver != "unroll"


def attractor_grid(
    model: nn.Module,
    task: Task,
    split: Split,
    rows: np.ndarray,
    max_iters: Sequence[int],
    tols: Sequence[float],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Final accuracy (after ``halt_max_steps``) and solver effort for each ``(max_iter, tol)``."""
    halt_max = unwrap(model).config.halt_max_steps
    out = []
    for max_iter in max_iters:
        for tol in tols:
            with solver_settings(model, max_iter, tol):
                r = score_rollout(model, task, split, rows, [halt_max], batch_size=batch_size, device=device)
            out.append({"max_iter": int(max_iter), "tol": float(tol), **means(r.steps[halt_max]), **r.solver})
    return out
