"""Contractivity diagnostics for a map f at a state x: Jacobian regulariser and spectral radius.

Symbols. J = df/dx at x, block-diagonal over the batch (f treats samples independently); N = numel of
the state (B * D); v a random probe.

- `jacobian_reg(f, x)`: Hutchinson's estimate ||J^T v||^2 / N of ||J||_F^2 / N with one Rademacher probe
  (E[v v^T] = I, and a lower variance than a Gaussian probe). It keeps the graph (create_graph), so it
  can be added to a loss to push f towards contractivity (Bai et al. 2021, "Stabilizing equilibrium
  models by Jacobian regularization"). For J = rho I it equals rho^2.
- `spectral_radius(f, x, iters)`: power method on J^T with vector-Jacobian products, per sample:
  v <- J^T v / ||J^T v||, then the estimate ||J^T v|| / ||v||. Exact in the limit when the dominant
  eigenvalue is unique in modulus (e.g. symmetric J); for a complex dominant pair it oscillates between
  bounds of the radius. A value >= 1 means plain iteration cannot converge locally.
- `contraction_hinge(f, x, target, iters)`: mean over samples of max(0, rho_i - target)^2, with rho_i
  the power-method estimate whose last product keeps the graph, so that a loss term pushes only the
  samples whose map is not contractive enough and leaves a contractive map alone (exactly zero, with a
  zero gradient, when every estimate is at most `target`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from solvers._structure import State, call_flat, flatten, spec_of, state_dtype


def _leaf_and_output(f, x: State) -> tuple[Tensor, Tensor]:
    spec = spec_of(x, "x")
    x_flat = flatten(x, spec, state_dtype(spec.dtypes))  # (B, D), part of x's graph if x has one
    if not x_flat.requires_grad:
        x_flat = x_flat.detach().requires_grad_(True)
    return x_flat, call_flat(f, x_flat, spec)  # (B, D) each


def jacobian_reg(f, x: State) -> Tensor:
    """One-probe Hutchinson estimate of ||df/dx||_F^2 / numel(x), a scalar with graph (usable in a loss)."""
    with torch.enable_grad():
        x_flat, fx = _leaf_and_output(f, x)
        v = torch.randint(0, 2, fx.shape, device=fx.device).to(fx.dtype) * 2 - 1  # (B, D) Rademacher
        (vjp,) = torch.autograd.grad(fx, x_flat, v, create_graph=True, allow_unused=True)
    if vjp is None:
        return fx.sum() * 0.0
    return vjp.pow(2).sum() / fx.numel()


def _power_method(f, x: State, iters: int, keep_graph: bool) -> Tensor:
    """(B,) ||J^T v|| after ``iters`` power steps from a random unit v; with ``keep_graph`` the last
    product is differentiable (the probe v itself is treated as a constant)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    with torch.enable_grad():
        x_flat, fx = _leaf_and_output(f, x)
        v = torch.randn_like(fx)  # (B, D)
        v = v / v.norm(dim=1, keepdim=True)
        radius = torch.zeros(fx.shape[0], dtype=fx.dtype, device=fx.device)  # (B,)
        for i in range(iters):
            last = keep_graph and i == iters - 1
            (w,) = torch.autograd.grad(fx, x_flat, v, retain_graph=True, create_graph=last, allow_unused=True)
            if w is None:
                return radius
            radius = w.norm(dim=1)  # ||J^T v|| with ||v|| = 1
            # A sample whose J^T v vanished keeps radius 0 and a zero probe (no division by zero).
            v = (w / torch.where(radius > 0, radius, torch.ones_like(radius))[:, None]).detach()
    return radius


def spectral_radius(f, x: State, iters: int) -> Tensor:
    """Per-sample (B,) power-method estimate of the spectral radius of df/dx at x (detached)."""
    return _power_method(f, x, iters, keep_graph=False).detach()


def contraction_hinge(f, x: State, target: float = 0.9, iters: int = 8) -> Tensor:
    """mean_i max(0, rho_i - target)^2 over the batch, a scalar with graph (see the module doc)."""
    rho = _power_method(f, x, iters, keep_graph=True)  # (B,)
    return torch.relu(rho - target).pow(2).mean()


class SavedTensorBytes:
    """Context manager: bytes of the distinct storages autograd saves for backward inside the block,
    parameters excluded. A deterministic, device-independent measure of a backward pass's activation
    memory (tracemalloc does not see torch tensors; CUDA has `max_memory_allocated`, CPU has no peak
    counter). Read `.bytes` after the block, while the graph is still alive.

        with SavedTensorBytes() as meter:
            out = phantom_grad(f, x_star, k=3, tau=1.0)
        meter.bytes
    """

    def __init__(self) -> None:
        self._seen: dict[tuple, int] = {}
        self._hooks = None

    def _pack(self, t: Tensor) -> Tensor:
        if not isinstance(t, torch.nn.Parameter):
            storage = t.untyped_storage()
            self._seen[(t.device, storage.data_ptr())] = storage.nbytes()
        return t

    def __enter__(self) -> SavedTensorBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())
