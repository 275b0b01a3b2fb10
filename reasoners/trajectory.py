"""Record what a reasoner does on one puzzle, step by step (:mod:`reasoners.visualize` draws it).

:func:`record_trajectory` steps the reasoner through :func:`reasoners.supervision.rollout` from its
initial state for every supervision step, as evaluation does (no halting), and records at each step
the decoded grid, the per-cell confidence, loss and accuracy against the label (when known), validity
by the puzzle's own rules, the halting logits and where the halting rule fires and, for the
Attractor, every solver iterate's decoded grid and relative residual (the solver's own
``SolverInfo.trace``).

The latent path: each state tensor (y and z for TRM / the Attractor, z_H and z_L for HRM; each
(P + L, D)) is flattened *whole* (no pooling over positions: a mean over cells would hide which cells
move) and all of them — the initial state, every carried state, every solver iterate and fixed point
— are projected on the first two principal components of that set (an SVD of the centred points).
One PCA per latent. This holds ``N x (P + L) x D`` floats per latent while recording, with ``N`` up to
``1 + steps x (max_iter + 2)`` (the solver's iterates take as much again): a few MB for the tiny
models, ~100 MB for a 7M Attractor on Sudoku, ~2 GB for one on 30x30 mazes.

:func:`record_breadth` records test-time breadth on one puzzle: K trajectories as K rows of one
batch, built as :func:`reasoners.test_time.breadth_rollout` builds a puzzle's rows (``RowNoise`` of
``(seed, puzzle index, k)``, ``initial_states``, ``step_perturbation``, ``rollout``), with each row's
answer, scores, halting logits and convergence score at every step, and each selector's pick by
:func:`reasoners.test_time.select` on the recorded step (:class:`BreadthTrajectories`). Only
predictions and per-row numbers are kept, not logits or states.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from reasoners.layers import IGNORE_LABEL, LOSSES, log_stablemax
from reasoners.supervision import StepOutput, halting_rule, halts, records_iterates, rollout, unwrap
from reasoners.tasks import Task, score
from reasoners.test_time import (
    CONVERGENCE_WINDOW,
    SELECTORS,
    Breadth,
    BreadthStep,
    CallCounter,
    RowNoise,
    confidence,
    convergence_score,
    initial_states,
    logit_change,
    recursion_noise,
    select,
    step_perturbation,
)


@dataclass
class LatentPath:
    """One latent's points projected on its first two principal components, in recording order."""

    name: str  # "y", "z", "z_H" or "z_L"
    coords: np.ndarray  # (N, 2)
    explained: np.ndarray  # (2,) share of the variance along PC1, PC2
    step: np.ndarray  # (N,) supervision step (1-based; 0 = the initial state)
    kind: np.ndarray  # (N,) "initial", "iterate", "fixed_point" or "state" (carried after the step)
    iteration: np.ndarray  # (N,) solver iterate index k, -1 where not an iterate


@dataclass
class Trajectory:
    """What one reasoner did on one puzzle, step by step (S supervision steps, L cells)."""

    task: Task
    model_name: str
    halting_rule: str  # "q_halt > 0" (TRM, Attractor) or "q_halt > q_continue" (HRM)
    halt_fires: np.ndarray  # (S,) bool: training's halting rule holds after this step (exploration aside)
    halt_max_steps: int
    inputs: np.ndarray  # (L,) input tokens
    labels: np.ndarray | None  # (L,) on-disk label tokens (0 = no label for that cell), None if unknown
    preds: np.ndarray  # (S, L) decoded grid (argmax token) after each step
    confidence: np.ndarray  # (S, L) probability of the decoded token (normalised as the loss is)
    valid: np.ndarray  # (S,) bool: a correct answer by the puzzle's own rules
    q_halt: np.ndarray  # (S,) halting logits
    q_continue: np.ndarray  # (S,)
    loss_name: str = "stablemax"
    loss: np.ndarray | None = None  # (S,) mean cross entropy over labelled cells
    cell_accuracy: np.ndarray | None = None  # (S,)
    exact: np.ndarray | None = None  # (S,) bool
    # Attractor only (None otherwise); per step s: the solve's iterates x_0 .. x_{T_s - 1}
    solver_trace: list[np.ndarray] | None = None  # (T_s,) relative residual ||F(x)-x|| / ||F(x)||
    solver_preds: list[np.ndarray] | None = None  # (T_s, L) decoded grid of each iterate's y
    solver_residual: np.ndarray | None = None  # (S,) relative residual at the returned S*
    solver_converged: np.ndarray | None = None  # (S,) bool
    solver_best: np.ndarray | None = None  # (S,) index of the returned iterate
    solver_tol: float | None = None
    latents: list[LatentPath] = field(default_factory=list)
    source: str = ""  # where the puzzle came from, for titles

    @property
    def n_steps(self) -> int:
        return int(self.preds.shape[0])

    @property
    def halt_prob(self) -> np.ndarray:
        """(S,) sigmoid(q_halt)."""
        return 1.0 / (1.0 + np.exp(-self.q_halt.astype(np.float64)))

    @property
    def continue_prob(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.q_continue.astype(np.float64)))

    @property
    def halt_step(self) -> int:
        """The step (1-based) at which training would halt: the first where the rule fires, else
        ``halt_max_steps`` (evaluation always runs to ``halt_max_steps``)."""
        fired = np.flatnonzero(self.halt_fires[: self.halt_max_steps])
        return int(fired[0]) + 1 if fired.size else self.halt_max_steps

    @property
    def changed(self) -> np.ndarray:
        """(S, L) bool: the decoded cell differs from the previous step's (never at step 1)."""
        out = np.zeros_like(self.preds, dtype=bool)
        out[1:] = self.preds[1:] != self.preds[:-1]
        return out


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(coords (N, 2), explained (2,))``: the points (N, D) centred and projected on their first two
    principal components (SVD). Signs are fixed so that the last point has coordinates >= 0."""
    x = torch.as_tensor(np.asarray(points, dtype=np.float32))
    x = x.reshape(x.shape[0], -1)
    n = x.shape[0]
    coords = np.zeros((n, 2))
    explained = np.zeros(2)
    if n < 2:
        return coords, explained
    xc = x - x.mean(0, keepdim=True)
    u, s, _ = torch.linalg.svd(xc, full_matrices=False)  # (N, r), (r,)
    k = min(2, s.shape[0])
    proj = (u[:, :k] * s[:k]).double().numpy()
    total = float((s.double() ** 2).sum())
    coords[:, :k] = proj
    if total > 0:
        explained[:k] = (s[:k].double() ** 2).numpy() / total
    signs = np.where(coords[-1] < 0, -1.0, 1.0)
    return coords * signs, explained


def _probabilities(logits: torch.Tensor, loss_name: str) -> torch.Tensor:
    """Per-class probabilities under the loss's normalisation (stablemax or softmax)."""
    if loss_name == "stablemax":
        return log_stablemax(logits.double(), dim=-1).exp()
    return torch.softmax(logits.float(), dim=-1)


@contextlib.contextmanager
def _eval(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _check_tokens(name: str, tokens, task: Task) -> np.ndarray:
    arr = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens).reshape(-1)
    if arr.size != task.seq_len:
        raise ValueError(
            f"{name} has {arr.size} cells; a {task.side}x{task.side} {task.kind} needs {task.seq_len}"
        )
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= task.vocab_size:
        raise ValueError(f"{name} holds tokens outside 0..{task.vocab_size - 1} of a {task.kind}")
    return arr


def _check_model(core: nn.Module, task: Task, loss: str, steps: int | None, puzzle_identifier: int) -> int:
    """The number of steps to record; a clear ``ValueError`` when the request does not fit the model."""
    cfg = core.config
    if (cfg.seq_len, cfg.vocab_size) != (task.seq_len, task.vocab_size):
        raise ValueError(
            f"the model takes {cfg.seq_len} cells over {cfg.vocab_size} tokens, but a "
            f"{task.side}x{task.side} {task.kind} has {task.seq_len} cells over {task.vocab_size}"
        )
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: expected one of {', '.join(LOSSES)}")
    n_steps = cfg.halt_max_steps if steps is None else int(steps)
    if n_steps < 1:
        raise ValueError(f"steps must be >= 1, got {n_steps}")
    if not 0 <= puzzle_identifier < cfg.num_puzzle_ids:
        raise ValueError(f"puzzle_identifier {puzzle_identifier} is outside the model's {cfg.num_puzzle_ids}")
    return n_steps


def _label_tokens(labels, task: Task) -> np.ndarray | None:
    """On-disk label tokens (0 = unlabelled cell) of ``labels``, which may mark unlabelled cells
    with 0 (on disk) or ``IGNORE_LABEL`` (a batch); None stays None."""
    if labels is None:
        return None
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    return _check_tokens("label", np.where(lab == IGNORE_LABEL, 0, lab), task)


@torch.no_grad()
def record_trajectory(
    model: nn.Module,
    task: Task,
    inputs,
    labels=None,
    *,
    puzzle_identifier: int = 0,
    steps: int | None = None,
    loss: str = "stablemax",
    model_name: str | None = None,
    source: str = "",
) -> Trajectory:
    """Run ``model`` on one puzzle for ``steps`` supervision steps (default ``halt_max_steps``) from
    its initial state, in eval mode, and record everything (see :class:`Trajectory`).

    ``inputs``/``labels``: token rows (L,) in the on-disk format (labels: 0 or -100 = unlabelled
    cell; ``None`` = no label). A clear ``ValueError`` when they do not fit the model or the task.
    """
    core = unwrap(model)
    n_steps = _check_model(core, task, loss, steps, puzzle_identifier)
    x = _check_tokens("puzzle", inputs, task)
    y_label = _label_tokens(labels, task)
    device = next(core.parameters()).device
    batch = {
        "inputs": torch.as_tensor(x, dtype=torch.int32, device=device)[None],
        "puzzle_identifiers": torch.tensor([puzzle_identifier], dtype=torch.int32, device=device),
    }
    tracing = records_iterates(core)
    with _eval(model):
        outs = list(rollout(model, batch, n_steps, solver_iterates=True))

    preds = torch.stack([o.logits[0].argmax(-1) for o in outs]).cpu().numpy()  # (S, L)
    probs = [_probabilities(o.logits[0], loss) for o in outs]
    q_logits = torch.cat([o.q_logits for o in outs])  # (S, 2)
    traj = Trajectory(
        task=task,
        model_name=model_name or type(core).__name__.lower(),
        halting_rule=halting_rule(core.config),
        halt_fires=torch.cat([halts(o, core.config, s) for s, o in enumerate(outs, start=1)]).cpu().numpy(),
        halt_max_steps=core.config.halt_max_steps,
        inputs=x,
        labels=y_label,
        preds=preds,
        confidence=torch.stack([p.max(-1).values for p in probs]).float().cpu().numpy(),  # (S, L)
        valid=task.rule_valid(np.broadcast_to(x, preds.shape), preds),
        q_halt=q_logits[:, 0].double().cpu().numpy(),
        q_continue=q_logits[:, 1].double().cpu().numpy(),
        loss_name=loss,
        source=source,
    )
    if y_label is not None and (y_label != 0).any():
        _record_scores(traj, outs, loss)
    if all(o.solver is not None for o in outs):
        _record_solver(traj, core, [o.solver for o in outs], tracing)
    initial = core.initial_state(1, device)
    traj.latents = _latent_paths(initial, outs, [o.solver for o in outs] if tracing else None)
    return traj


def _record_scores(traj: Trajectory, outs: list[StepOutput], loss: str) -> None:
    """Cell accuracy, exactness and the mean cross entropy over labelled cells, per step."""
    x, lab, preds = traj.inputs, traj.labels, traj.preds
    s = score(traj.task, np.broadcast_to(x, preds.shape), np.broadcast_to(lab, preds.shape), preds)
    traj.cell_accuracy, traj.exact = s["cell"], s["exact"]
    device = outs[0].logits.device
    # the loss's own convention for unlabelled cells, made once from the on-disk label
    target = torch.as_tensor(np.where(lab == 0, IGNORE_LABEL, lab), dtype=torch.int64, device=device)[None]
    per_cell = torch.stack([LOSSES[loss](o.logits, target)[0] for o in outs])  # (S, L)
    traj.loss = (per_cell.sum(-1) / max(int((lab != 0).sum()), 1)).double().cpu().numpy()


def _record_solver(traj: Trajectory, core: nn.Module, infos: list, tracing: bool) -> None:
    """The Attractor's solve at each step: residual, convergence, the returned iterate and, when
    traced, every iterate's residual and decoded grid."""
    traj.solver_residual = np.array([float(i.rel_residual[0]) for i in infos])
    traj.solver_converged = np.array([bool(i.converged[0]) for i in infos])
    traj.solver_best = np.array([int(i.best_step[0]) for i in infos])
    traj.solver_tol = float(core.config.tol)
    if tracing:
        traj.solver_trace = [i.trace[:, 0].double().cpu().numpy() for i in infos]
        traj.solver_preds = [
            core.decode(i.iterates[0][:, 0])[0].argmax(-1).cpu().numpy()  # (T, L)
            for i in infos
        ]


def _latent_paths(initial, outs: list[StepOutput], infos) -> list[LatentPath]:
    """One :class:`LatentPath` per state field, all recorded states in order."""
    names = getattr(initial, "_fields", None) or tuple(f"s{i}" for i in range(len(initial)))
    points = [[] for _ in names]
    step, kind, iteration = [], [], []

    def add(state, s: int, k: str, it: int = -1):
        for i, t in enumerate(state):
            points[i].append(t[0].flatten().float().cpu())
        step.append(s)
        kind.append(k)
        iteration.append(it)

    add(initial, 0, "initial")
    for s, out in enumerate(outs, start=1):
        if infos is not None:
            its = infos[s - 1].iterates
            for k in range(its[0].shape[0]):
                add(tuple(t[k] for t in its), s, "iterate", k)
        fp = out.extras.get("fixed_point")
        if fp is not None:
            add(fp, s, "fixed_point")
        add(out.state, s, "state")
    paths = []
    for name, pts in zip(names, points, strict=True):
        coords, explained = pca_2d(torch.stack(pts).numpy())
        paths.append(LatentPath(name, coords, explained, np.array(step), np.array(kind), np.array(iteration)))
    return paths


# ----------------------------------------------------------------------------------- breadth


@dataclass
class BreadthTrajectories:
    """K trajectories of one puzzle (S supervision steps, L cells), run as K rows of one batch exactly
    as :func:`reasoners.test_time.breadth_rollout` runs that puzzle's rows: row k draws its noise from
    the generator of ``(breadth.seed, puzzle_index, k)``; trajectory 0 is the plain one."""

    task: Task
    model_name: str
    halting_rule: str
    breadth: Breadth
    puzzle_index: int  # the puzzle's index in the noise seeds (its test-split row in evaluate)
    inputs: np.ndarray  # (L,)
    labels: np.ndarray | None  # (L,) on-disk label tokens, None if unknown
    preds: np.ndarray  # (K, S, L) decoded grid after each step
    valid: np.ndarray  # (K, S) bool: a correct answer by the puzzle's own rules
    q_halt: np.ndarray  # (K, S)
    q_continue: np.ndarray  # (K, S)
    confidence: np.ndarray  # (K, S) what the selectors read: q_halt (- q_continue for HRM-style heads)
    halt_fires: np.ndarray  # (K, S) bool: the halting rule holds after this step
    change: np.ndarray  # (K, S) mean |logits - previous step's logits| (NaN at step 1)
    convergence: np.ndarray  # (K, S) breadth_rollout's score: mean change over the last <= 3 steps
    cell_accuracy: np.ndarray | None = None  # (K, S)
    exact: np.ndarray | None = None  # (K, S) bool
    calls_per_trajectory: float | None = None  # network calls of one trajectory (CallCounter)
    source: str = ""

    @property
    def K(self) -> int:
        return int(self.preds.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.preds.shape[1])

    def view(self, d: int | None = None) -> BreadthStep:
        """The :class:`BreadthStep` of the K rows at depth ``d`` (1-based; default the last step),
        built as ``breadth_rollout`` builds it."""
        d = self.n_steps if d is None else int(d)
        if not 1 <= d <= self.n_steps:
            raise ValueError(f"depth {d} is outside the recorded 1..{self.n_steps} steps")
        fired = self.halt_fires[:, :d]
        first = np.where(fired.any(1), fired.argmax(1) + 1, d)  # (K,) first step the rule fires, else d
        rows = np.arange(self.K)
        return BreadthStep(
            preds=self.preds[:, d - 1],
            confidence=self.confidence[:, d - 1],
            convergence=self.convergence[:, d - 1],
            first_halt=first,
            first_conf=self.confidence[rows, first - 1],
            halt_preds=self.preds[rows, first - 1],
        )

    def picks(self, d: int | None = None) -> dict[str, int]:
        """The trajectory each selector chooses at depth ``d`` (default the last step), by
        :func:`reasoners.test_time.select`: the code evaluate's breadth uses."""
        view = self.view(d)
        return {sel: int(select(view, 1, self.K, self.K, sel)[0]) for sel in SELECTORS}

    @property
    def right(self) -> np.ndarray:
        """(K,) bool: the last step's answer is exact (rule-valid where there is no label)."""
        return (self.exact if self.exact is not None else self.valid)[:, -1]

    @property
    def stable(self) -> np.ndarray:
        """(K,) bool: *converged* as the figure marks it: the decoded answer did not change over the
        last ``CONVERGENCE_WINDOW`` steps (the window of the convergence score); False when fewer
        steps were run."""
        w = CONVERGENCE_WINDOW
        if self.n_steps <= w:
            return np.zeros(self.K, bool)
        last = self.preds[:, -w - 1 :]  # (K, w + 1, L)
        return (last == last[:, -1:]).all(axis=(1, 2))

    @property
    def convergence_rank(self) -> np.ndarray:
        """(K,) 1 = the trajectory whose logits moved least at the last step (the convergence
        selector's pick), ties to the lower index."""
        order = np.argsort(self.convergence[:, -1], kind="stable")
        rank = np.empty(self.K, dtype=np.int64)
        rank[order] = np.arange(1, self.K + 1)
        return rank


@torch.no_grad()
def record_breadth(
    model: nn.Module,
    task: Task,
    inputs,
    labels=None,
    *,
    breadth: Breadth,
    puzzle_index: int = 0,
    puzzle_identifier: int = 0,
    steps: int | None = None,
    model_name: str | None = None,
    source: str = "",
) -> BreadthTrajectories:
    """Run ``breadth.trajectories`` trajectories of one puzzle for ``steps`` supervision steps
    (default ``halt_max_steps``) as K rows of one batch, in eval mode, and record each row's answer,
    scores, halting logits and convergence score at every step (see :class:`BreadthTrajectories`).

    The rows are built as :func:`reasoners.test_time.breadth_rollout` builds them:
    ``RowNoise(np.full(K, puzzle_index), np.arange(K), seed)``, :func:`initial_states`,
    :func:`step_perturbation`, :func:`reasoners.supervision.rollout`."""
    if not isinstance(breadth, Breadth):
        raise ValueError(f"breadth must be a reasoners.test_time.Breadth, got {type(breadth).__name__}")
    core = unwrap(model)
    n_steps = _check_model(core, task, "stablemax", steps, puzzle_identifier)
    if isinstance(puzzle_index, bool) or not isinstance(puzzle_index, (int, np.integer)) or puzzle_index < 0:
        raise ValueError(f"puzzle_index must be a non-negative integer, got {puzzle_index!r}")
    x = _check_tokens("puzzle", inputs, task)
    y_label = _label_tokens(labels, task)
    K = breadth.trajectories
    device = next(core.parameters()).device
    batch = {
        "inputs": torch.as_tensor(x, dtype=torch.int32, device=device)[None].expand(K, -1).contiguous(),
        "puzzle_identifiers": torch.full((K,), puzzle_identifier, dtype=torch.int32, device=device),
    }
    traj = np.arange(K)
    noise = RowNoise(np.full(K, int(puzzle_index)), traj, breadth.seed)
    cfg = core.config
    preds, q, conf, fires, change, convergence = [], [], [], [], [], []
    deltas: list[np.ndarray] = []
    prev = None
    with _eval(model), CallCounter(model) as counter, recursion_noise(model, noise):
        state = initial_states(model, noise, traj, breadth.init_noise, device)
        perturb = step_perturbation(model, noise, traj, breadth.step_noise, device)
        for step, out in enumerate(rollout(model, batch, n_steps, state=state, perturb=perturb), start=1):
            logits = out.logits.float()  # as breadth_rollout scores it
            if prev is not None:
                deltas.append(logit_change(logits, prev))
            prev = logits
            change.append(deltas[-1] if deltas else np.full(K, np.nan, np.float32))
            convergence.append(convergence_score(deltas, K))
            preds.append(logits.argmax(-1).cpu().numpy())
            q.append(out.q_logits.double().cpu().numpy())
            conf.append(confidence(out.q_logits, cfg.q_continue).float().cpu().numpy())
            fires.append(halts(out, cfg, step).cpu().numpy())
    P = np.stack(preds, 1)  # (K, S, L)
    Q = np.stack(q, 1)  # (K, S, 2)
    flat = P.reshape(-1, task.seq_len)
    bt = BreadthTrajectories(
        task=task,
        model_name=model_name or type(core).__name__.lower(),
        halting_rule=halting_rule(cfg),
        breadth=breadth,
        puzzle_index=int(puzzle_index),
        inputs=x,
        labels=y_label,
        preds=P,
        valid=task.rule_valid(np.broadcast_to(x, flat.shape), flat).reshape(K, n_steps),
        q_halt=Q[..., 0],
        q_continue=Q[..., 1],
        confidence=np.stack(conf, 1),
        halt_fires=np.stack(fires, 1),
        change=np.stack(change, 1),
        convergence=np.stack(convergence, 1),
        calls_per_trajectory=counter.rows / K if counter.available else None,
        source=source,
    )
    if y_label is not None and (y_label != 0).any():
        s = score(task, np.broadcast_to(x, flat.shape), np.broadcast_to(y_label, flat.shape), flat)
        bt.cell_accuracy = s["cell"].reshape(K, n_steps)
        bt.exact = s["exact"].reshape(K, n_steps)
    return bt
