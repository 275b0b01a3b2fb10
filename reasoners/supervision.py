"""Deep supervision and halting (adaptive computation time), written once for every reasoner.

A reasoner is any module with ``initial_state(batch_size, device)``, ``reset_state(state, mask)``,
a ``config`` holding ``halt_max_steps``, ``halt_exploration_prob`` and ``q_continue``, and
``forward(state, batch) -> (detached state, logits (B, L, V), q_logits (B, 2) = [halt, continue],
extras)``: one *supervision step*.

Training follows the reference HRM/TRM semantics (REFERENCE.md section 2):

- the :class:`Carry` (reasoner state, step counts, halted flags, the puzzle each slot is working on)
  persists across batches; at each call the slots that halted at the previous call are reset to the
  initial state and take the new batch's row at that slot, the others keep their puzzle;
- a slot halts when it reaches ``halt_max_steps`` or, in training, when ``q_halt > 0`` (TRM) or
  ``q_halt > q_continue`` (HRM, ``q_continue=True``); with probability ``halt_exploration_prob`` a
  random minimum step count in U{2..halt_max_steps} delays halting (drawn ``rand`` then ``randint``
  from the given generator, the global one by default, as the reference does);
- with ``q_continue=True`` the q_continue target is bootstrapped from one more no-grad step;
- evaluation (``model.eval()``) halts only at ``halt_max_steps``.

:func:`act_loss` computes the reference loss: per-sequence mean cross entropy summed over the batch,
``0.5 * BCE(q_halt, sequence exactly right)`` (+ the q_continue BCE), all *summed*; the trainer
divides by the global batch size. Metrics count only sequences that halted at this step.

:func:`run_steps` is the plain path for evaluation and visualisation: run one batch from the initial
state for N supervision steps and return every step's outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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

    new_state, logits, q_logits, extras = model(state, data)
    outputs = {
        "logits": logits,
        "q_halt_logits": q_logits[..., 0],
        "q_continue_logits": q_logits[..., 1],
        "extras": extras,
    }

    with torch.no_grad():
        steps = steps + 1
        is_last = steps >= cfg.halt_max_steps
        new_halted = is_last
        if core.training and cfg.halt_max_steps > 1:
            q_halt, q_cont = q_logits[..., 0], q_logits[..., 1]
            new_halted = new_halted | ((q_halt > q_cont) if cfg.q_continue else (q_halt > 0))
            # exploration: a random minimum number of steps for a random subset of slots
            rank, world = shard
            B = q_halt.shape[0]
            rows = slice(rank * B, (rank + 1) * B)
            explore = (
                torch.rand((world * B,), generator=generator, device=q_halt.device, dtype=q_halt.dtype)[rows]
                < cfg.halt_exploration_prob
            )
            min_steps = (
                explore
                * torch.randint(
                    2,
                    cfg.halt_max_steps + 1,
                    (world * B,),
                    generator=generator,
                    device=steps.device,
                    dtype=steps.dtype,
                )[rows]
            )
            new_halted = new_halted & (steps >= min_steps)
            if cfg.q_continue:
                # Q-learning target without a replay buffer or target net: one more step from the new state
                _, _, next_q, _ = model(new_state, data)
                next_value = torch.where(
                    is_last, next_q[..., 0], torch.maximum(next_q[..., 0], next_q[..., 1])
                )
                outputs["target_q_continue"] = torch.sigmoid(next_value)

    return Carry(new_state, steps, new_halted, data), outputs


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
    return lm_loss + 0.5 * total_q, metrics


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


@torch.no_grad()
def run_steps(
    model: nn.Module, batch: dict[str, torch.Tensor], n_steps: int | None = None, keep_state: bool = False
) -> list[dict]:
    """Run one batch from the initial state for ``n_steps`` supervision steps (default: the
    reasoner's ``halt_max_steps``, as evaluation does) and return every step's outputs:
    ``logits``, ``preds``, ``q_halt_logits``, ``q_continue_logits``, ``extras`` (and ``state``
    when ``keep_state``). No halting: every slot runs every step.
    """
    core = unwrap(model)
    n_steps = core.config.halt_max_steps if n_steps is None else n_steps
    state = core.initial_state(batch["inputs"].shape[0], batch["inputs"].device)
    trajectory = []
    for _ in range(n_steps):
        state, logits, q_logits, extras = model(state, batch)
        out = {
            "logits": logits,
            "preds": logits.argmax(-1),
            "q_halt_logits": q_logits[..., 0],
            "q_continue_logits": q_logits[..., 1],
            "extras": extras,
        }
        if keep_state:
            out["state"] = state
        trajectory.append(out)
    return trajectory


@torch.no_grad()
def evaluate_batch(model: nn.Module, batch: dict[str, torch.Tensor], n_steps: int | None = None) -> dict:
    """Exact and per-cell accuracy of the final step of :func:`run_steps` (labels -100 ignored)."""
    final = run_steps(model, batch, n_steps)[-1]
    labels = batch["labels"]
    mask = labels != IGNORE_LABEL
    correct = mask & (final["preds"] == labels)
    counts = mask.sum(-1)
    return {
        "exact": (correct.sum(-1) == counts).float().mean().item(),
        "cell": (correct.sum() / mask.sum().clamp_min(1)).item(),
        "preds": final["preds"],
    }
