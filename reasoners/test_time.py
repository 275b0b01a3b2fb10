"""Test-time strategies: how much a trained reasoner gains from more compute at evaluation.

- *depth*: more supervision steps. :func:`score_rollout` runs one rollout of the largest step count
  and scores the answer at every requested step (steps past ``halt_max_steps`` extrapolate: the
  reasoner simply keeps going), and at the step where its own halting head first fires;
- *breadth*: K trajectories per puzzle, run as K rows of one batch (:func:`breadth_rollout`), from
  perturbed or random initial states and/or with noise added to the carried state after every
  supervision step, and one answer chosen per puzzle by a *selector* (:data:`SELECTORS`):

  ``convergence``   the trajectory whose logits moved least over its last 3 steps: the mean over
                    those steps and the cells of the Euclidean norm of a cell's change of logits
                    (EqR's convergence score; docs/reference.md, "EqR"); fewer steps at depths 2-3, a
                    tie (trajectory 0) at 1
  ``q_head``        the trajectory the halting head is most confident in at that depth: the largest
                    ``q_halt`` (``q_halt - q_continue`` for HRM-style heads), as PTRM picks
  ``first_halt``    the trajectory whose halting rule fires first, its answer at that step (one that
                    never fires halts at the depth); ties go to the more confident head
  ``majority``      the answer most trajectories give at that depth

  with ``single`` (trajectory 0 alone: today's evaluation) and ``pass_at_k`` (any trajectory
  right: the bound no selector can beat) beside them. Ties go to the lowest trajectory index.
  Trajectory 0 is always the plain one (no noise), so K = 1 is exactly the one-trajectory
  evaluation; every other row draws its noise from its own generator seeded by
  ``(seed, puzzle index, trajectory)``, so a row's draws do not depend on the batch it ran in (its
  result then agrees up to the float reduction order of the batch's kernels), and the first k
  trajectories of a K-way run are the k-way run: one run of the largest K gives every breadth;
- *solver budget* (Attractor): :func:`attractor_grid` re-measures final accuracy for each
  ``(max_iter, tol)`` of the fixed-point solve.

Compute is measured, not estimated: :class:`CallCounter` hooks the reasoner's network stacks and
counts the batch rows of every call, so ``calls_per_puzzle`` is the number of network applications
one puzzle received (the Attractor's solver makes as many as it needs).

Every strategy steps the reasoner through :func:`reasoners.supervision.rollout` and scores answers
with :func:`reasoners.tasks.score`; :mod:`reasoners.evaluate` reports what they return.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from data_gen.format import Split
from reasoners.attractor import AttractorConfig
from reasoners.data import to_batch
from reasoners.layers import Stack
from reasoners.supervision import halts, rollout, unwrap
from reasoners.tasks import Task, score

METRICS = ("exact", "valid", "cell")
SELECTORS = ("convergence", "q_head", "first_halt", "majority")
CONVERGENCE_WINDOW = 3  # EqR's convergence score averages the logits' change over the last 3 steps


@dataclass
class Rollout:
    """Per-puzzle results of one rollout over ``rows``."""

    steps: dict[int, dict[str, np.ndarray]]  # recorded step -> {"exact", "valid", "cell"} (N,)
    halt_step: np.ndarray  # (N,) first step the halting head fires (halt_max_steps if never)
    at_halt: dict[str, np.ndarray]  # scores of the answer at halt_step
    solver: dict | None  # Attractor: mean map evaluations per step, last step's residuals
    calls: dict[int, float] = field(default_factory=dict)  # recorded step -> network calls per puzzle


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
    calls = dict.fromkeys(record, 0)
    counted = True
    for start in range(0, N, batch_size):
        idx = rows[start : start + batch_size]
        at = np.arange(start, start + len(idx))
        inputs, labels = split.inputs[idx], split.labels[idx]
        pending = np.ones(len(idx), bool)
        state, noise = None, None
        if getattr(unwrap(model), "random_init", False):  # EqR: trajectory 0 of breadth's seed 0
            noise = RowNoise(idx, np.zeros(len(idx), np.int64), 0)
            state = initial_states(model, noise, np.zeros(len(idx), np.int64), 0.0, device)
        draws = recursion_noise(model, noise) if noise is not None else contextlib.nullcontext()
        with CallCounter(model) as counter, draws:
            outs = rollout(model, to_batch(split, idx, device), max(record[-1], halt_max), state=state)
            for step, out in enumerate(outs, start=1):
                preds = out.logits.argmax(-1).cpu().numpy()  # (B, L)
                counted &= counter.available
                if step in steps:
                    calls[step] += counter.rows
                    for k, v in score(task, inputs, labels, preds).items():
                        steps[step][k][at] = v
                if step > halt_max:
                    continue
                fires = halts(out, cfg, step).cpu().numpy()
                newly = pending & (fires | (step == halt_max))
                halt_step[at[newly]] = step
                halt_preds[at[newly]] = preds[newly]
                pending &= ~newly
                if out.solver is not None:
                    solver.add(out.solver, at, last=step == halt_max)
    at_halt = score(task, split.inputs[rows], split.labels[rows], halt_preds)
    per_puzzle = {s: c / max(1, N) for s, c in calls.items()} if counted else {}
    return Rollout(steps, halt_step, at_halt, solver.summary(), per_puzzle)


@contextlib.contextmanager
def solver_settings(model: nn.Module, max_iter: int, tol: float):
    """Temporarily set the Attractor's solve budget (read from ``model.config`` at every solve): ``max_iter``
    for every row, warm-started ones included (``max_iter_warm`` is lifted meanwhile)."""
    cfg = unwrap(model).config
    before = (cfg.max_iter, cfg.tol, getattr(cfg, "max_iter_warm", None))
    cfg.max_iter, cfg.tol = int(max_iter), float(tol)
    if hasattr(cfg, "max_iter_warm"):
        cfg.max_iter_warm = None
    try:
        yield
    finally:
        cfg.max_iter, cfg.tol = before[:2]
        if hasattr(cfg, "max_iter_warm"):
            cfg.max_iter_warm = before[2]


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
            out.append(
                {
                    "max_iter": int(max_iter),
                    "tol": float(tol),
                    **means(r.steps[halt_max]),
                    **r.solver,
                    "calls_per_puzzle": r.calls.get(halt_max),
                }
            )
    return out


# ----------------------------------------------------------------------------- compute


class CallCounter:
    """Counts the network applications a reasoner makes: every call of one of its :class:`Stack`
    children (TRM's ``net``, HRM's ``high_net`` and ``low_net``, the Attractor's map) adds its batch
    rows. Use as a context manager; ``rows`` is the running total. A module without a Stack (a
    hand-written stand-in) counts nothing: ``available`` is False."""

    def __init__(self, model: nn.Module):
        self.core = unwrap(model)
        self.rows = 0
        self.available = False
        self._hooks: list = []

    def _count(self, module, args, output) -> None:
        self.rows += int(args[0].shape[0])

    def __enter__(self) -> CallCounter:
        stacks = [m for m in self.core.children() if isinstance(m, Stack)]
        self.available = bool(stacks)
        self._hooks = [m.register_forward_hook(self._count) for m in stacks]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


# ----------------------------------------------------------------------------- breadth


def _check_number(key: str, v, low: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{key} must be a number, got {v!r}")
    if not (math.isfinite(v) and v >= low):
        raise ValueError(f"{key} must be a finite number >= {low:g}, got {v!r}")
    return float(v)


@dataclass
class Breadth:
    """K trajectories per puzzle and how they differ (see the module docstring).

    ``init_noise``: std of the Gaussian noise added to every field of the initial state (on top of
    the reasoner's own draw for a random-init reasoner such as EqR); ``step_noise``: std of the
    Gaussian noise added to the carried state after every supervision step. Trajectory 0 gets
    neither."""

    trajectories: int = 1  # K
    init_noise: float = 0.0
    step_noise: float = 0.0
    seed: int = 0

    def __post_init__(self):
        k = self.trajectories
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"the number of trajectories K must be an integer >= 1, got {k!r}")
        self.trajectories = int(k)
        self.init_noise = _check_number("init_noise", self.init_noise)
        self.step_noise = _check_number("step_noise", self.step_noise)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


def row_seed(seed: int, puzzle: int, trajectory: int) -> int:
    """The seed of one (puzzle, trajectory) row's generator."""
    state = np.random.SeedSequence([int(seed), int(puzzle), int(trajectory)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class RowNoise:
    """One CPU generator per batch row, seeded by ``(seed, puzzle, trajectory)``: a row draws the same
    numbers whatever batch it runs in."""

    def __init__(self, puzzles: np.ndarray, trajectories: np.ndarray, seed: int):
        self.generators = [
            torch.Generator().manual_seed(row_seed(seed, p, k))
            for p, k in zip(puzzles, trajectories, strict=True)
        ]

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal draws shaped like ``like`` (rows first), one row from each generator."""
        draws = [torch.randn(like.shape[1:], generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(draws).to(device=like.device, dtype=like.dtype)


@contextlib.contextmanager
def recursion_noise(model: nn.Module, noise: RowNoise):
    """While the block runs, a reasoner that draws noise in its recursion (EqR's
    ``noise_generator``) draws each row's from that row's generator, so the row's result does not
    depend on its batch; other reasoners are left alone."""
    core = unwrap(model)
    if not hasattr(core, "noise_generator"):
        yield
        return
    before = core.noise_generator
    core.noise_generator = noise.generators
    try:
        yield
    finally:
        core.noise_generator = before


def initial_states(
    model: nn.Module, noise: RowNoise, trajectories: np.ndarray, init_noise: float, device
) -> tuple:
    """The initial state of every row: the reasoner's own (a random-init reasoner draws each row from
    that row's generator), plus ``init_noise`` Gaussian noise on rows of trajectory > 0."""
    core = unwrap(model)
    n = len(trajectories)
    if getattr(core, "random_init", False):
        rows = [core.initial_state(1, "cpu", generator=g) for g in noise.generators]
        state = core.State(*(torch.cat(parts).to(device) for parts in zip(*rows, strict=True)))
    else:
        state = core.initial_state(n, device)
    if init_noise > 0:
        noisy = torch.as_tensor(trajectories > 0, device=device).view(-1, 1, 1)
        state = core.State(*(torch.where(noisy, t + init_noise * noise.normal(t), t) for t in state))
    return state


def step_perturbation(model: nn.Module, noise: RowNoise, trajectories: np.ndarray, step_noise: float, device):
    """``perturb(state, step)`` for :func:`reasoners.supervision.rollout`: ``step_noise`` Gaussian
    noise on the carried state of rows of trajectory > 0; None when there is none."""
    if step_noise <= 0:
        return None
    core = unwrap(model)
    noisy = torch.as_tensor(trajectories > 0, device=device).view(-1, 1, 1)

    def perturb(state, step):
        return core.State(*(torch.where(noisy, t + step_noise * noise.normal(t), t) for t in state))

    return perturb


def confidence(q_logits: torch.Tensor, q_continue: bool) -> torch.Tensor:
    """How sure the halting head is that the answer is done: ``q_halt`` (minus ``q_continue``)."""
    return q_logits[..., 0] - q_logits[..., 1] if q_continue else q_logits[..., 0]


def logit_change(logits: torch.Tensor, prev: torch.Tensor) -> np.ndarray:
    """(R,) how far each row's logits (R, L, V) moved from the step before: the Euclidean norm over
    the vocabulary of each cell's change, averaged over the cells (EqR's measure; docs/reference.md,
    "EqR")."""
    return (logits.float() - prev.float()).norm(dim=-1).mean(dim=1).cpu().numpy()


def convergence_score(changes: list[np.ndarray], n_rows: int) -> np.ndarray:
    """(R,) the convergence score after a step, given every step's :func:`logit_change` so far: the
    mean of the last ``CONVERGENCE_WINDOW`` of them (fewer early on; 0 after the first step)."""
    recent = changes[-CONVERGENCE_WINDOW:]
    return np.mean(recent, axis=0) if recent else np.zeros(n_rows)


@dataclass
class BreadthStep:
    """Every row's view at one depth ``d`` (rows puzzle-major: row ``p * K + k``)."""

    preds: np.ndarray  # (R, L) answer at d
    confidence: np.ndarray  # (R,) halting confidence at d
    convergence: np.ndarray  # (R,) mean |change of logits| over the last <= 3 steps (0 at step 1)
    first_halt: np.ndarray  # (R,) first step <= d the halting rule fired (d if it never did)
    first_conf: np.ndarray  # (R,) halting confidence at that step
    halt_preds: np.ndarray  # (R, L) answer at that step


def select(step: BreadthStep, n_puzzles: int, K: int, k: int, selector: str) -> np.ndarray:
    """(n_puzzles,) the row chosen for each puzzle among its first ``k`` of ``K`` trajectories."""
    if selector not in SELECTORS:
        raise ValueError(f"unknown selector {selector!r}: expected one of {', '.join(SELECTORS)}")
    base = np.arange(n_puzzles) * K
    if selector == "convergence":
        return base + np.argmin(step.convergence.reshape(n_puzzles, K)[:, :k], axis=1)
    if selector == "q_head":
        return base + np.argmax(step.confidence.reshape(n_puzzles, K)[:, :k], axis=1)
    if selector == "first_halt":
        first = step.first_halt.reshape(n_puzzles, K)[:, :k]
        conf = step.first_conf.reshape(n_puzzles, K)[:, :k]
        # earliest halt, then the most confident head, then the lowest index (lexsort: last key first)
        order = [np.lexsort((np.arange(k), -conf[p], first[p]))[0] for p in range(n_puzzles)]
        return base + np.asarray(order, dtype=np.int64)
    chosen = np.empty(n_puzzles, dtype=np.int64)
    preds = step.preds.reshape(n_puzzles, K, -1)
    for p in range(n_puzzles):
        votes: dict[bytes, list[int]] = {}
        for j in range(k):
            votes.setdefault(preds[p, j].tobytes(), []).append(j)
        best = max(votes.values(), key=lambda rows: (len(rows), -rows[0]))  # most votes, then lowest index
        chosen[p] = base[p] + best[0]
    return chosen


@dataclass
class BreadthResult:
    """Per-puzzle scores of every (depth, k, strategy) of one breadth run."""

    depths: list[int]
    ks: list[int]
    selectors: list[str]
    # (depth, k) -> {"single" | selector | "pass_at_k": {"exact", "valid", "cell"} (N,)}
    scores: dict[tuple[int, int], dict[str, dict[str, np.ndarray]]]
    calls_per_trajectory: dict[int, float | None]  # depth -> network calls per trajectory (row mean)
    breadth: Breadth = field(default_factory=Breadth)

    def table(self) -> list[dict]:
        """One row per (depth, k): compute and the mean of every strategy's scores."""
        out = []
        for d in self.depths:
            for k in self.ks:
                s = self.scores[(d, k)]
                out.append(
                    {
                        "steps": d,
                        "trajectories": k,
                        "calls_per_puzzle": (
                            None if self.calls_per_trajectory[d] is None else k * self.calls_per_trajectory[d]
                        ),
                        **{name: means(v) for name, v in s.items()},
                    }
                )
        return out


def _gather(scores: dict[str, np.ndarray], chosen: np.ndarray) -> dict[str, np.ndarray]:
    return {m: v[chosen] for m, v in scores.items()}


@torch.no_grad()
def breadth_rollout(
    model: nn.Module,
    task: Task,
    split: Split,
    rows: np.ndarray,
    depths: Sequence[int],
    breadth: Breadth,
    *,
    ks: Sequence[int] | None = None,
    selectors: Sequence[str] = SELECTORS,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> BreadthResult:
    """Run ``breadth.trajectories`` trajectories of every puzzle in ``rows`` for ``max(depths)``
    supervision steps, as K rows of each batch, and score every selector at every depth for every
    breadth ``k`` in ``ks`` (default: K alone; each k uses the first k trajectories).

    A batch holds ``max(1, batch_size // K)`` puzzles (K rows each)."""
    K = breadth.trajectories
    ks = sorted(set(int(k) for k in (ks if ks is not None else [K])))
    if not ks or ks[0] < 1 or ks[-1] > K:
        raise ValueError(f"every breadth k must be in 1..{K} (the trajectories run), got {list(ks)}")
    for sel in selectors:
        if sel not in SELECTORS:
            raise ValueError(f"unknown selector {sel!r}: expected one of {', '.join(SELECTORS)}")
    depths = sorted(set(int(d) for d in depths))
    if not depths or depths[0] < 1:
        raise ValueError(f"depths must be positive supervision step counts, got {list(depths)}")
    cfg = unwrap(model).config
    N = len(rows)
    strategies = ["single", *selectors, "pass_at_k"]
    parts: dict[tuple[int, int], dict[str, list]] = {
        (d, k): {s: [] for s in strategies} for d in depths for k in ks
    }
    calls = dict.fromkeys(depths, 0)
    counted = True
    per_batch = max(1, batch_size // K)
    for start in range(0, N, per_batch):
        idx = np.asarray(rows[start : start + per_batch])
        n = len(idx)
        puzzle_of = np.repeat(idx, K)  # row p * K + k works on puzzle idx[p]
        traj = np.tile(np.arange(K), n)
        noise = RowNoise(puzzle_of, traj, breadth.seed)
        batch = to_batch(split, puzzle_of, device)
        state = initial_states(model, noise, traj, breadth.init_noise, device)
        perturb = step_perturbation(model, noise, traj, breadth.step_noise, device)
        inputs, labels = split.inputs[puzzle_of], split.labels[puzzle_of]
        R = n * K
        first = np.full(R, np.iinfo(np.int64).max)
        first_conf = np.zeros(R)
        halt_preds = np.zeros((R, task.seq_len), dtype=np.int64)
        deltas: list[np.ndarray] = []
        prev = None
        with CallCounter(model) as counter, recursion_noise(model, noise):
            outs = rollout(model, batch, depths[-1], state=state, perturb=perturb)
            for step, out in enumerate(outs, start=1):
                logits = out.logits.float()
                if prev is not None:
                    deltas.append(logit_change(logits, prev))
                prev = logits
                preds = logits.argmax(-1).cpu().numpy()
                conf = confidence(out.q_logits, cfg.q_continue).float().cpu().numpy()
                fires = halts(out, cfg, step).cpu().numpy() & (first > step)
                first[fires], first_conf[fires], halt_preds[fires] = step, conf[fires], preds[fires]
                counted &= counter.available
                if step not in calls:
                    continue
                calls[step] += counter.rows
                never = first > step
                view = BreadthStep(
                    preds=preds,
                    confidence=conf,
                    convergence=convergence_score(deltas, R),
                    first_halt=np.where(never, step, first),
                    first_conf=np.where(never, conf, first_conf),
                    halt_preds=np.where(never[:, None], preds, halt_preds),
                )
                at_step = score(task, inputs, labels, preds)
                score_halt = "first_halt" in selectors  # its answers are scored only when it is asked for
                at_halt = score(task, inputs, labels, view.halt_preds) if score_halt else None
                for k in ks:
                    got = parts[(step, k)]
                    got["single"].append(_gather(at_step, np.arange(n) * K))
                    for sel in selectors:
                        chosen = select(view, n, K, k, sel)
                        got[sel].append(_gather(at_halt if sel == "first_halt" else at_step, chosen))
                    window = {m: v.reshape(n, K)[:, :k] for m, v in at_step.items()}
                    got["pass_at_k"].append(
                        {
                            "exact": window["exact"].any(1),
                            "valid": window["valid"].any(1),
                            "cell": window["cell"].max(1),
                        }
                    )
    scores = {
        key: {s: {m: np.concatenate([c[m] for c in chunks]) for m in METRICS} for s, chunks in got.items()}
        for key, got in parts.items()
    }
    per_traj = {d: (calls[d] / max(1, N * K) if counted else None) for d in depths}
    return BreadthResult(depths, ks, list(selectors), scores, per_traj, breadth)
