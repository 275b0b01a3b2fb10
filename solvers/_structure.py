"""Flatten a state (a tensor or a tuple of tensors, each (B, ...)) into one (B, D) matrix and back.

The solvers and gradients treat the reasoner's (y, z) as one vector per sample, so that Anderson's
least-squares weights and the backward linear solves act on the joint state. A `Spec` remembers the
shapes and dtypes needed to rebuild the caller's structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

State = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class Spec:
    is_tuple: bool
    shapes: tuple[torch.Size, ...]  # per element, batch axis included
    dtypes: tuple[torch.dtype, ...]  # per element, as the caller gave them
    sizes: tuple[int, ...]  # per element, features per sample
    batch: int

    @property
    def width(self) -> int:
        return sum(self.sizes)

    def rows(self, n: int) -> Spec:
        """The same structure for a batch of ``n`` rows (a subset of the samples)."""
        shapes = tuple(torch.Size((n, *s[1:])) for s in self.shapes)
        return Spec(self.is_tuple, shapes, self.dtypes, self.sizes, n)


def state_dtype(dtypes: tuple[torch.dtype, ...]) -> torch.dtype:
    """The dtype the solvers compute in: float64 if any element is float64, else float32.

    Low-precision states (bf16, fp16) are promoted so that the history, the least-squares weights and
    the residuals do not inherit the map's rounding."""
    return torch.float64 if any(d == torch.float64 for d in dtypes) else torch.float32


def spec_of(x: State, name: str = "x0") -> Spec:
    is_tuple = isinstance(x, tuple | list)
    parts = tuple(x) if is_tuple else (x,)
    if not parts or not all(isinstance(p, Tensor) for p in parts):
        raise TypeError(f"{name} must be a tensor or a non-empty tuple of tensors, got {type(x).__name__}")
    for p in parts:
        if p.dim() < 1 or not p.is_floating_point():
            raise ValueError(
                f"{name}: every element must be a floating tensor of shape (B, ...), got {p.shape}"
            )
    batch = parts[0].shape[0]
    if any(p.shape[0] != batch for p in parts):
        raise ValueError(
            f"{name}: all elements must share the batch size, got {[tuple(p.shape) for p in parts]}"
        )
    if len({p.device for p in parts}) != 1:
        raise ValueError(f"{name}: all elements must live on one device")
    return Spec(
        is_tuple=is_tuple,
        shapes=tuple(p.shape for p in parts),
        dtypes=tuple(p.dtype for p in parts),
        sizes=tuple(math.prod(p.shape[1:]) for p in parts),
        batch=batch,
    )


def flatten(x: State, spec: Spec, dtype: torch.dtype) -> Tensor:
    """(B, D) in `dtype`; differentiable, so it can also build autograd leaves."""
    parts = tuple(x) if spec.is_tuple else (x,)
    if len(parts) != len(spec.shapes) or any(p.shape != s for p, s in zip(parts, spec.shapes, strict=True)):
        got = (
            [tuple(p.shape) for p in parts] if all(isinstance(p, Tensor) for p in parts) else type(x).__name__
        )
        raise ValueError(
            f"f must map the state to the same structure and shapes: expected "
            f"{[tuple(s) for s in spec.shapes]}, got {got}"
        )
    flat = [p.reshape(spec.batch, -1).to(dtype) for p in parts]
    return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)


def unflatten(flat: Tensor, spec: Spec, cast: bool = True) -> State:
    """Rebuild the caller's structure from (B, D); `cast` restores each element's own dtype."""
    parts = flat.split(list(spec.sizes), dim=1) if len(spec.sizes) > 1 else (flat,)
    out = tuple(
        (p.to(d) if cast else p).reshape(s) for p, s, d in zip(parts, spec.shapes, spec.dtypes, strict=True)
    )
    return out if spec.is_tuple else out[0]


def call_flat(f, flat: Tensor, spec: Spec) -> Tensor:
    """f applied to a flat state: f sees the caller's structure and dtypes, the result comes back (B, D)
    in the flat state's dtype (so a bf16 map's output is promoted before any solver arithmetic)."""
    out = f(unflatten(flat, spec, cast=True))
    if spec.is_tuple and not isinstance(out, tuple | list):
        raise ValueError(f"f must map the state to the same structure (a tuple), got {type(out).__name__}")
    if not spec.is_tuple and not isinstance(out, Tensor):
        raise ValueError(f"f must map the state to the same structure (a tensor), got {type(out).__name__}")
    return flatten(out, spec, flat.dtype)
