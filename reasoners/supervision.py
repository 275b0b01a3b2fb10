"""Deep supervision and halting (adaptive computation time), written once for every reasoner.

A reasoner is any module with ``initial_state(batch_size, device)``, ``reset_state(state, mask)``,
a ``config`` that is a :class:`HaltingConfig` (``halt_max_steps``, ``halt_exploration_prob``,
``q_continue``), and ``forward(state, batch) -> StepOutput(detached state, logits (B, L, V),
q_logits (B, 2) = [halt, continue], extras)``: one *supervision step*.

Training follows the reference HRM/TRM semantics (docs/reference.md, "Deep supervision and halting"):

- the :class:`Carry` (reasoner state, step counts, halted flags, the puzzle each slot is working on)
  persists across batches; at each call the slots that halted at the previous call are reset to the
  initial state and take the new batch's row at that slot, the others keep their puzzle;
- a slot halts when it reaches ``halt_max_steps`` or, in training, when :func:`halts`: the q-head's
  :func:`halt_fires`, ``q_halt > 0`` (TRM) or ``q_halt > q_continue`` (HRM, ``q_continue=True``), or,
  with the Attractor's ``halt_on_converged``, a converged solve from step 2 on; with probability
  ``halt_exploration_prob`` a random minimum step count in U{2..halt_max_steps} delays halting
  (drawn ``rand`` then ``randint`` from the given generator, the global one by default, as the
  reference does);
- with ``q_continue=True`` the q_continue target is bootstrapped from one more no-grad step;
- evaluation (``model.eval()``) halts only at ``halt_max_steps``.

:func:`act_loss` computes the reference loss: per-sequence mean cross entropy summed over the batch,
``0.5 * BCE(q_halt, sequence exactly right)`` (+ the q_continue BCE), all *summed*; the trainer
divides by the global batch size. Metrics count only sequences that halted at this step.

:func:`rollout` is the one path for everything that is not training (the trainer's evaluation,
``evaluate``, ``visualize``, test-time strategies): a generator that steps one batch from the initial
state, no halting, and yields every step's :class:`StepOutput` as it is made, so a caller keeps only
what it needs (holding 32 steps of logits and Attractor fixed points at batch 256 takes gigabytes).
:func:`run_steps` is ``rollout`` collected into a list of dicts, for small batches.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from reasoners.layers import IGNORE_LABEL, LOSSES


def unwrap(model: nn.Module) -> nn.Module:
    """The reasoner inside a DDP / compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


@dataclass
class HaltingConfig:
    """The halting (ACT) fields every reasoner's config shares; the model configs inherit them."""

    halt_max_steps: int = 16  # supervision steps at most (evaluation always runs all of them)
    halt_exploration_prob: float = 0.1  # share of slots given a random minimum step count in training
    q_continue: bool = False  # halt on q_halt > q_continue and learn q_continue by bootstrapping (HRM)

    def __post_init__(self):
        if self.halt_max_steps < 1:
            raise ValueError(f"halt_max_steps must be >= 1, got {self.halt_max_steps}")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ValueError(f"halt_exploration_prob must be in [0, 1], got {self.halt_exploration_prob}")


class StepOutput(NamedTuple):
    """What a reasoner's ``forward`` returns for one supervision step."""

    state: Any  # the carried state (detached), e.g. TRMState(y, z)
    logits: torch.Tensor  # (B, L, V)
    q_logits: torch.Tensor  # (B, 2) = [halt, continue], fp32
    extras: dict  # reasoner-specific, e.g. the Attractor's {"solver": SolverInfo, "fixed_point": S*}

    @property
    def q_halt(self) -> torch.Tensor:
        return self.q_logits[..., 0]

    @property
    def q_continue(self) -> torch.Tensor:
        return self.q_logits[..., 1]

    @property
    def solver(self):
        """The Attractor's :class:`solvers.SolverInfo` of this step's solve, else None."""
        return self.extras.get("solver") if isinstance(self.extras, dict) else None


def halt_fires(q_logits: torch.Tensor, q_continue: bool) -> torch.Tensor:
    """(B,) bool: the learned halting rule, ``q_halt > q_continue`` (HRM) or ``q_halt > 0`` (TRM).

    The rule alone: training also halts at ``halt_max_steps`` and delays it by exploration."""
    q_halt, q_cont = q_logits[..., 0], q_logits[..., 1]
    return (q_halt > q_cont) if q_continue else (q_halt > 0)


# A converged solve halts a slot only from this supervision step on: the first step's solve starts from
# the fixed initial state, and a reasoner whose map converges there has not yet used its carried state.
CONVERGED_MIN_STEPS = 2


def halts(out: StepOutput, config, steps) -> torch.Tensor:
    """(B,) bool: the reasoner's whole halting rule after supervision step ``steps`` (an int, or the
    (B,) step counts of the slots): :func:`halt_fires` on the q-head, or, for a reasoner whose config
    sets ``halt_on_converged`` (the Attractor), a solve that exited below its tolerance
    (``out.solver.converged``) once ``steps >= CONVERGED_MIN_STEPS``. Every caller (training's halting
    and the evaluation paths that score the halting step) uses this one rule.

    The rule alone: training also halts at ``halt_max_steps`` and delays it by exploration."""
    fires = halt_fires(out.q_logits, config.q_continue)
    info = out.solver
    if getattr(config, "halt_on_converged", False) and info is not None:
        steps = torch.as_tensor(steps, device=fires.device)
        fires = fires | (info.converged.to(fires.device) & (steps >= CONVERGED_MIN_STEPS))
    return fires


def halting_rule(config: HaltingConfig) -> str:
    """The rule of :func:`halts` in words, for reports."""
    rule = "q_halt > q_continue" if config.q_continue else "q_halt > 0"
    if getattr(config, "halt_on_converged", False):
        rule += f" or solve converged (step >= {CONVERGED_MIN_STEPS})"
    return rule


@dataclass
class Carry:
    """What persists between supervision steps (all detached)."""

    state: tuple  # the reasoner's state, e.g. TRMState(y, z)
    steps: torch.Tensor  # (B,) int32 supervision steps taken on the current puzzle
    halted: torch.Tensor  # (B,) bool: slot finished at the last call, takes a new puzzle next call
    batch: dict[str, torch.Tensor] = field(default_factory=dict)  # the puzzle in each slot


def initial_carry(model: nn.Module, batch: dict[str, torch.Tensor]) -> Carry:
    """A carry where every slot is halted, so the first step loads the whole batch."""
    core = unwrap(model)
    B = batch["inputs"].shape[0]
    device = batch["inputs"].device
    return Carry(
        state=core.initial_state(B, device),
        steps=torch.zeros(B, dtype=torch.int32, device=device),
        halted=torch.ones(B, dtype=torch.bool, device=device),
        batch={k: torch.zeros_like(v) for k, v in batch.items()},
    )


def supervision_step(
    model: nn.Module,
    carry: Carry,
    batch: dict[str, torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    shard: tuple[int, int] = (0, 1),
) -> tuple[Carry, dict[str, torch.Tensor]]:
    """One deep-supervision step with halting. Returns the new carry and the step's outputs.

    ``shard = (rank, world_size)``: this batch is slice ``rank`` of a global batch split evenly over
    ``world_size`` ranks. Exploration is then drawn for the whole global batch (from a generator
    seeded alike on every rank) and sliced, so a DDP run explores exactly as one process with the
    global batch does.

    ``outputs`` holds ``logits`` (B, L, V) and ``q_halt_logits`` / ``q_continue_logits`` (B,) with
    grad, ``target_q_continue`` (B,) when bootstrapping, and the reasoner's ``extras``.
    """
    core = unwrap(model)
    cfg = core.config
    halted = carry.halted
    state = core.reset_state(carry.state, halted)
    steps = torch.where(halted, 0, carry.steps)
    data = {
        k: torch.where(halted.view((-1,) + (1,) * (v.ndim - 1)), batch[k], v) for k, v in carry.batch.items()
    }

    out = StepOutput(*model(state, data))
    outputs = _as_dict(out)
    new_state, q_logits = out.state, out.q_logits

    with torch.no_grad():
        steps = steps + 1
        is_last = steps >= cfg.halt_max_steps
        new_halted = is_last
        if core.training and cfg.halt_max_steps > 1:
            new_halted = new_halted | halts(out, cfg, steps)
            new_halted = new_halted & (steps >= exploration_min_steps(cfg, steps, q_logits, generator, shard))
            if cfg.q_continue:
                # Q-learning target without a replay buffer or target net: one more step from the new state
                next_q = StepOutput(*model(new_state, data)).q_logits
                next_value = torch.where(
                    is_last, next_q[..., 0], torch.maximum(next_q[..., 0], next_q[..., 1])
                )
                outputs["target_q_continue"] = torch.sigmoid(next_value)

    return Carry(new_state, steps, new_halted, data), outputs


def exploration_min_steps(
    cfg: HaltingConfig,
    steps: torch.Tensor,
    q_logits: torch.Tensor,
    generator: torch.Generator | None,
    shard: tuple[int, int],
) -> torch.Tensor:
    """(B,) the minimum step count before a slot may halt: U{2..halt_max_steps} for a random
    ``halt_exploration_prob`` share of the slots, 0 for the others. Drawn ``rand`` then ``randint``
    for the whole global batch (as the reference, whose order the parity fixtures replay) and
    sliced to this rank's rows."""
    rank, world = shard
    B = q_logits.shape[0]
    rows = slice(rank * B, (rank + 1) * B)
    u = torch.rand((world * B,), generator=generator, device=q_logits.device, dtype=q_logits.dtype)
    explore = u[rows] < cfg.halt_exploration_prob
    hi = cfg.halt_max_steps + 1
    drawn = torch.randint(2, hi, (world * B,), generator=generator, device=steps.device, dtype=steps.dtype)
    return explore * drawn[rows]


def act_loss(
    outputs: dict[str, torch.Tensor], carry: Carry, loss: str | Callable = "stablemax"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference loss of one supervision step (a *sum* over the batch) and its metrics.

    ``carry`` is the carry *returned* by the step (its labels, halted flags and step counts).
    Returns ``(loss, metrics)``; ``loss`` is float64 where the device supports it (the stablemax CE
    is computed in float64, as in the reference). Metrics are sums over sequences that halted at
    this step (``count`` of them): ``accuracy`` (per-cell, averaged per sequence), ``exact_accuracy``,
    ``q_halt_accuracy``, ``steps``, plus the detached loss terms.
    """
    loss_fn = LOSSES[loss] if isinstance(loss, str) else loss
    labels = carry.batch["labels"]
    logits = outputs["logits"]
    with torch.no_grad():
        mask = labels != IGNORE_LABEL  # (B, L)
        counts = mask.sum(-1)  # (B,)
        divisor = counts.clamp_min(1).unsqueeze(-1)  # (B, 1)
        preds = logits.argmax(-1)
        is_correct = mask & (preds == labels)
        seq_correct = is_correct.sum(-1) == counts  # (B,)
        valid = carry.halted & (counts > 0)
        metrics = {
            "count": valid.sum(),
            "accuracy": torch.where(valid, (is_correct.to(torch.float32) / divisor).sum(-1), 0).sum(),
            "exact_accuracy": (valid & seq_correct).sum(),
            "q_halt_accuracy": (valid & ((outputs["q_halt_logits"] >= 0) == seq_correct)).sum(),
            "steps": torch.where(valid, carry.steps, 0).sum(),
        }
    lm_loss = (loss_fn(logits, labels) / divisor).sum()
    q_halt = outputs["q_halt_logits"]
    q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
    total_q = q_halt_loss
    metrics["lm_loss"] = lm_loss.detach()
    metrics["q_halt_loss"] = q_halt_loss.detach()
    if "target_q_continue" in outputs:
        q_cont_loss = F.binary_cross_entropy_with_logits(
            outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum"
        )
        metrics["q_continue_loss"] = q_cont_loss.detach()
        total_q = total_q + q_cont_loss
    total = lm_loss + 0.5 * total_q
    aux = (outputs.get("extras") or {}).get("aux_loss")
    if aux is not None:  # a reasoner's own regulariser (the Attractor's Jacobian penalty), summed alike
        metrics["aux_loss"] = aux.detach()
        total = total + aux
    return total, metrics


def train_step(
    model: nn.Module,
    carry: Carry,
    batch: dict[str, torch.Tensor],
    *,
    loss: str = "stablemax",
    generator: torch.Generator | None = None,
    shard: tuple[int, int] = (0, 1),
):
    """``supervision_step`` + ``act_loss``: returns ``(new carry, loss, metrics, outputs)``.

    The loss is summed over the batch; divide by the global batch size before ``backward``.
    """
    new_carry, outputs = supervision_step(model, carry, batch, generator=generator, shard=shard)
    total, metrics = act_loss(outputs, new_carry, loss)
    return new_carry, total, metrics, outputs


def _as_dict(out: StepOutput) -> dict:
    return {
        "logits": out.logits,
        "q_halt_logits": out.q_halt,
        "q_continue_logits": out.q_continue,
        "extras": out.extras,
    }


def records_iterates(model: nn.Module) -> bool:
    """Whether the reasoner's solver can hand back its iterates (the Attractor, unless unrolled)."""
    cfg = unwrap(model).config
    return hasattr(cfg, "solver_trace") and getattr(cfg, "solver", None) != "unroll"


@contextlib.contextmanager
def _solver_iterates(model: nn.Module, on: bool):
    """Ask the Attractor's solver for every iterate (``solver_trace="iterates"``) while the block runs."""
    if not (on and records_iterates(model)):
        yield
        return
    cfg = unwrap(model).config
    before = cfg.solver_trace
    cfg.solver_trace = "iterates"
    try:
        yield
    finally:
        cfg.solver_trace = before


@torch.no_grad()
def rollout(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    n_steps: int | None = None,
    *,
    solver_iterates: bool = False,
    state: Any = None,
    perturb: Callable[[Any, int], Any] | None = None,
) -> Iterator[StepOutput]:
    """Step ``batch`` from the initial state for ``n_steps`` supervision steps (default: the
    reasoner's ``halt_max_steps``, as evaluation does), yielding each step's :class:`StepOutput`.

    No halting: every slot runs every step (score the halting rule with :func:`halts`). With
    ``solver_iterates`` the Attractor's ``extras["solver"]`` also holds every solver iterate (see
    :func:`records_iterates`). Put the model in the mode you want (``eval()``) first.

    ``state``: start from this state instead of ``initial_state`` (test-time breadth draws its own);
    ``perturb(state, step)``: applied to the carried state after step ``step`` (1-based) before the
    next one (noise in the recursion); the yielded output keeps the unperturbed state.
    """
    core = unwrap(model)
    n_steps = core.config.halt_max_steps if n_steps is None else n_steps
    if state is None:
        state = core.initial_state(batch["inputs"].shape[0], batch["inputs"].device)
    with _solver_iterates(core, solver_iterates):
        for step in range(1, n_steps + 1):
            out = StepOutput(*model(state, batch))
            yield out
            state = out.state if perturb is None else perturb(out.state, step)


def last_step(steps: Iterator[StepOutput]) -> StepOutput:
    """The final output of a :func:`rollout`, holding no other step's."""
    last = collections.deque(steps, maxlen=1)
    if not last:
        raise ValueError("the rollout made no step")
    return last[0]


def run_steps(
    model: nn.Module, batch: dict[str, torch.Tensor], n_steps: int | None = None, keep_state: bool = False
) -> list[dict]:
    """:func:`rollout` as a list of dicts: ``logits``, ``preds``, ``q_halt_logits``,
    ``q_continue_logits``, ``extras`` (and ``state`` when ``keep_state``) of every step."""
    trajectory = []
    for out in rollout(model, batch, n_steps):
        step = {**_as_dict(out), "preds": out.logits.argmax(-1)}
        if keep_state:
            step["state"] = out.state
        trajectory.append(step)
    return trajectory
