"""Optimisers, LR schedule and weight EMA used to train HRM, TRM and the Attractor.

Sources (facts carried over, no code copied):

- **AdamATan2**: Everett et al. 2024, "Scaling Exponents Across Parameterizations and Optimizers"
  (arXiv:2407.05872), which replaces Adam's ``m / (sqrt(v) + eps)`` by ``atan2(m, sqrt(v))``: bounded
  by pi/2, equal to m/sqrt(v) for small ratios, and scale-invariant without an eps to tune. The exact
  update matched here is the one HRM/TRM train with, the fused CUDA kernel of the ``adam-atan2`` PyPI
  package (sapientinc/adam-atan2), per step t (1-based), per parameter::

      p   <- p * (1 - lr * weight_decay)                  # decoupled decay, scaled by lr
      m   <- beta1 * m + (1 - beta1) * g                  # Adam moments, no eps anywhere
      v   <- beta2 * v + (1 - beta2) * g * g
      p   <- p - lr * atan2(m / (1 - beta1**t), sqrt(v) / sqrt(1 - beta2**t))

  No extra scale constants (the paper's general form has ``a * atan2(m, b * sqrt(v))``; the kernel
  uses a = b = 1). ``adam-atan2-pytorch`` (lucidrains) is *not* this optimiser: it multiplies by 1.27
  and does not scale the decay by lr.
- **Sparse sign-SGD** for the puzzle-embedding table, as TRM's ``CastedSparseEmbeddingSignSGD_Distributed``:
  the rows used in the step (all-gathered over ranks in DDP) have their gradients summed per id, and
  only those rows move, ``row <- row * (1 - lr * wd) - lr * sign(grad_sum)``. The reference's
  reason: Adam is close to sign-SGD when a row's gradient is this sparse (it appears in few steps),
  and a full Adam state for a table with one row per training puzzle would be wasted memory.
- **LR schedule** of TRM's ``pretrain.py``: linear warmup then a half cosine down to ``min_ratio``;
  the reference configs set ``min_ratio = 1.0``, i.e. warmup then constant.
- **EMA** of TRM's ``models/ema.py`` (decay 0.999): see :class:`EMA` for the exact semantics.

The reasoners' trainer needs only: :class:`AdamATan2` (or :func:`build_optimizer`),
:class:`SparseSignSGD`, :func:`lr_at` and :class:`EMA`. Everything is plain torch and device-agnostic.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["EMA", "AdamATan2", "SparseSignSGD", "build_optimizer", "lr_at"]

# Low-precision parameters are updated in float32 and stored back, as the reference kernel does
# (its "opmath" type); moments are kept in the parameter's dtype, also as the reference.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_lr(lr: float | Tensor) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError(f"lr as a tensor must hold one value, got shape {tuple(lr.shape)}")
    if lr < 0:
        raise ValueError(f"Invalid learning rate: {float(lr)}")


class AdamATan2(torch.optim.Optimizer):
    """Adam with ``atan2`` instead of eps-division, and decoupled weight decay scaled by lr.

    The exact update is in the module docstring; it matches the ``adam-atan2`` package that HRM and
    TRM use, without its CUDA extension (any device, any floating dtype).

    Args:
        params: parameters or parameter groups, as for any ``torch.optim.Optimizer``.
        lr: learning rate, a float or a one-element tensor. The reference trainer builds the
            optimiser with ``lr=0`` and writes ``param_group["lr"]`` before every step (see
            :func:`lr_at`); doing the same here is the intended use.
        betas: (beta1, beta2). HRM/TRM use (0.9, 0.95).
        weight_decay: decoupled decay coefficient, applied as ``p *= 1 - lr * weight_decay``
            (HRM/TRM Sudoku/Maze runs: 1.0; the package default is 0.01).

    Parameters whose ``.grad`` is None are skipped entirely (no decay either), as in the reference.
    The step count is kept per parameter as a Python int in ``state[p]["step"]``, so
    ``state_dict()`` / ``load_state_dict()`` resume exactly.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 1e-2,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            weight_decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")

                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                # Bias corrections in Python float64, as the kernel computes them in double.
                bias_correction1 = 1.0 - beta1**t
                bias_correction2_sqrt = math.sqrt(1.0 - beta2**t)

                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if p.dtype in _LOW_PRECISION:
                    param32, m32, v32 = p.float(), exp_avg.float(), exp_avg_sq.float()
                    _adam_atan2_update_(
                        param32, p.grad.float(), m32, v32, lr, beta1, beta2, weight_decay,
                        bias_correction1, bias_correction2_sqrt,
                    )  # fmt: skip
                    p.copy_(param32)
                    exp_avg.copy_(m32)
                    exp_avg_sq.copy_(v32)
                else:
                    _adam_atan2_update_(
                        p, p.grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay,
                        bias_correction1, bias_correction2_sqrt,
                    )  # fmt: skip
        return loss


def _adam_atan2_update_(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    bias_correction1: float,
    bias_correction2_sqrt: float,
) -> None:
    """One in-place AdamATan2 update of one tensor (all arguments in the compute dtype)."""
    param.mul_(1.0 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    # atan2(m_hat, sqrt(v_hat)) written as the kernel does: sqrt(v) / sqrt(bc2). When m = v = 0
    # (a gradient that has always been exactly zero) atan2(0, 0) = 0, so the parameter only decays.
    update = torch.atan2(exp_avg / bias_correction1, exp_avg_sq.sqrt().div_(bias_correction2_sqrt))
    # Multiply rather than add_(alpha=-lr): alpha must be a Python number, lr may be a tensor.
    param.sub_(update.mul_(lr))


class SparseSignSGD(torch.optim.Optimizer):
    """Sign-SGD with decoupled decay on the rows of an embedding table used in the step.

    The table is a plain tensor (a buffer in the reference, so no autograd ``.grad`` lands on it):
    the model gathers the rows of the batch, ``rows = table[ids]``, makes them a leaf that requires
    grad, and after ``backward()`` the trainer calls ``step(ids, rows.grad)``. Per step:

    1. In DDP (``torch.distributed`` initialised, or ``process_group`` given, with more than one
       rank) ``ids`` and ``grad_rows`` are all-gathered, so every rank applies the same update and
       the replicated tables stay identical. Every rank must pass the same number of rows.
    2. Gradients of duplicate ids are **summed** (``sign(g1 + g2)``, not ``sign(g1) + sign(g2)``).
    3. Only the distinct ids' rows change: ``row <- row * (1 - lr * wd) - lr * sign(grad_sum)``.
       Decay, too, touches only those rows (rows not in the batch are left exactly as they are), and
       a row in the batch with a zero summed gradient is decayed but not moved.

    Make ``rows`` a fresh leaf in every training forward (as in the example below): its ``.grad``
    then holds this step's gradient only. (The reference keeps one persistent buffer instead and
    relies on this optimiser's ``zero_grad()`` to clear it.) On CUDA the per-id sum uses atomics, so
    its last bits may vary from run to run, like the reference's ``scatter_add_``.

    ``lr`` and ``weight_decay`` live in ``param_groups[0]`` like any optimiser, so the trainer's
    ``group["lr"] = lr_at(...)`` loop covers this one too. There is no other state.

    Args:
        weight: the (num_embeddings, D) table, updated in place.
        lr: learning rate, float or one-element tensor (HRM/TRM: 1e-4 for Sudoku/Maze).
        weight_decay: decoupled decay (HRM/TRM: 1.0 for Sudoku/Maze).
        process_group: group to all-gather over; None means the default group when
            ``torch.distributed`` is initialised, and no communication otherwise.

    Example::

        rows = table[ids].detach().requires_grad_()     # (B, D), in the model's forward
        ...; loss.backward()
        emb_opt.step(ids, rows.grad)
    """

    def __init__(
        self,
        weight: Tensor,
        lr: float | Tensor,
        weight_decay: float = 1e-2,
        process_group: Any = None,
    ) -> None:
        if not isinstance(weight, Tensor) or weight.ndim != 2:
            raise ValueError("weight must be a 2-D tensor (num_embeddings, dim)")
        _check_lr(lr)
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__([weight], dict(lr=lr, weight_decay=weight_decay))
        self.process_group = process_group

    @property
    def weight(self) -> Tensor:
        return self.param_groups[0]["params"][0]

    @torch.no_grad()
    def step(self, ids: Tensor, grad_rows: Tensor) -> None:  # type: ignore[override]
        """Update the rows ``ids`` (N,) of the table with their gradients ``grad_rows`` (N, D)."""
        weight = self.weight
        if ids.ndim != 1 or grad_rows.ndim != 2 or grad_rows.shape != (ids.shape[0], weight.shape[1]):
            raise ValueError(
                f"expected ids (N,) and grad_rows (N, {weight.shape[1]}), "
                f"got {tuple(ids.shape)} and {tuple(grad_rows.shape)}"
            )
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"ids must be an integer tensor, got {ids.dtype}")
        group = self.param_groups[0]
        lr, weight_decay = group["lr"], group["weight_decay"]

        ids, grad_rows = _all_gather_rows(ids, grad_rows, self.process_group)

        unique_ids, inverse = torch.unique(ids, return_inverse=True)  # (U,), (N,)
        grad_sum = grad_rows.new_zeros((unique_ids.shape[0], grad_rows.shape[1]))  # (U, D)
        grad_sum.index_add_(0, inverse, grad_rows)

        rows = weight.index_select(0, unique_ids)  # (U, D), a copy
        rows.mul_(1.0 - lr * weight_decay)
        rows.sub_(torch.sign(grad_sum).to(rows.dtype).mul_(lr))
        weight.index_copy_(0, unique_ids, rows)


def _all_gather_rows(ids: Tensor, grad_rows: Tensor, group: Any) -> tuple[Tensor, Tensor]:
    """Concatenate every rank's (ids, grad_rows); the inputs unchanged when not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError("a process_group was given but torch.distributed is not initialised")
        return ids, grad_rows
    world_size = dist.get_world_size(group)
    if world_size == 1:
        return ids, grad_rows
    n = ids.shape[0]
    all_ids = ids.new_empty((world_size * n,))
    all_grads = grad_rows.new_empty((world_size * n, grad_rows.shape[1]))
    dist.all_gather_into_tensor(all_ids, ids.contiguous(), group=group)
    dist.all_gather_into_tensor(all_grads, grad_rows.contiguous(), group=group)
    return all_ids, all_grads


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 1.0) -> float:
    """Learning rate of update number ``step``, as TRM's ``cosine_schedule_with_warmup_lr_lambda``.

    ``step < warmup_steps``: ``base_lr * step / max(1, warmup_steps)`` (linear from 0). Afterwards a
    half cosine from ``base_lr`` down to ``base_lr * min_ratio`` at ``total_steps``::

        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        lr = base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * progress)))

    ``min_ratio=1.0`` (the reference configs) gives warmup then constant. The reference increments
    its step counter *before* computing the LR, so its first update uses ``step=1`` (lr =
    base_lr / warmup_steps, never 0): pass the 1-based index of the update about to be applied to
    reproduce it. Past ``total_steps`` (never reached by the reference, which stops there) the
    reference cosine would rise again; here progress is clamped to 1, so the LR stays at its floor.
    """
    if step < 0 or warmup_steps < 0 or total_steps < 0:
        raise ValueError(
            f"step, warmup_steps, total_steps must be >= 0, got {step}, {warmup_steps}, {total_steps}"
        )
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    if step < warmup_steps:
        return base_lr * float(step) / float(max(1, warmup_steps))
    progress = min(1.0, float(step - warmup_steps) / float(max(1, total_steps - warmup_steps)))
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose parameter names are stable: strip DDP / DataParallel and torch.compile."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class EMA:
    """Exponential moving average of a model's trainable parameters, TRM's ``EMAHelper`` semantics.

    - Starts at construction from the current weights (no bias correction, no warmup), so after n
      updates with parameter values theta_1..theta_n:
      ``shadow = decay**n * theta_0 + (1 - decay) * sum_k decay**(n - k) * theta_k``.
    - Tracks exactly the parameters with ``requires_grad=True`` (so never integer tensors), by name.
      **Buffers are not averaged**: frozen parameters and buffers (including the puzzle-embedding
      table trained by :class:`SparseSignSGD`) keep their live values in the EMA copy, exactly as
      the reference's ``ema_copy`` (a deepcopy with only the parameters overwritten).
    - ``update(model)`` is meant to be called once after every optimiser step.
    - Wrappers (DDP, DataParallel, torch.compile) are looked through, so names match either way.

    The shadow tensors have each parameter's dtype and device. ``state_dict()`` is a plain dict
    ``{"decay": float, "shadow": {name: tensor}}`` that loads with ``torch.load(weights_only=True)``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.shadow: dict[str, Tensor] = {name: p.detach().clone() for name, p in self._tracked(model)}

    @staticmethod
    def _tracked(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, p in _unwrap(model).named_parameters():
            if p.requires_grad:
                yield name, p

    def _pairs(self, model: nn.Module) -> Iterator[tuple[Tensor, nn.Parameter]]:
        tracked = dict(self._tracked(model))
        if tracked.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - tracked.keys())
            extra = sorted(tracked.keys() - self.shadow.keys())
            raise ValueError(f"model does not match the EMA: missing {missing}, unexpected {extra}")
        for name, p in tracked.items():
            yield self.shadow[name], p

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- decay * shadow + (1 - decay) * param, for every tracked parameter."""
        for shadow, p in self._pairs(model):
            shadow.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's tracked parameters with the averages (the reference's ``ema``)."""
        for shadow, p in self._pairs(model):
            p.copy_(shadow)

    def ema_copy(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` holding the averaged weights (what TRM evaluates and saves)."""
        model_copy = copy.deepcopy(_unwrap(model))
        self.copy_to(model_copy)
        return model_copy

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averages into ``model`` (no second model in memory); restore on exit."""
        with torch.no_grad():
            backup = {name: p.detach().clone() for name, p in self._tracked(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._tracked(model):
                    p.copy_(backup[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load averages saved by :meth:`state_dict`; names must match, values keep this EMA's device."""
        shadow = state_dict["shadow"]
        if shadow.keys() != self.shadow.keys():
            raise ValueError(
                f"EMA state does not match: missing {sorted(self.shadow.keys() - shadow.keys())}, "
                f"unexpected {sorted(shadow.keys() - self.shadow.keys())}"
            )
        self.decay = float(state_dict["decay"])
        for name, value in shadow.items():
            self.shadow[name].copy_(value)


_OPTIMIZERS = ("adam_atan2", "adamw")


def build_optimizer(
    name: str,
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 1e-2,
) -> torch.optim.Optimizer:
    """The model optimiser by name: ``"adam_atan2"`` (HRM/TRM) or ``"adamw"`` (``torch.optim.AdamW``,
    eps 1e-8, same decoupled ``p *= 1 - lr * wd``). Raises ``ValueError`` on any other name."""
    if name == "adam_atan2":
        return AdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(_OPTIMIZERS)}")
