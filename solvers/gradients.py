"""Gradients through a fixed point x* = f(x*; theta) without backpropagating through the solver.

Symbols. J = df/dx at x* (per sample), g = dL/dx* the incoming gradient, u the vector that is handed to
f's vector-Jacobian product, so that theta (and every input f closes over) receives u^T df/dtheta.

- Implicit (IFT): dx*/dtheta = (I - J)^-1 df/dtheta, so u solves u = J^T u + g.
- Unrolled phantom gradient UPG(k, tau): from x* detached, k damped steps x <- (1 - tau) x + tau f(x)
  recorded by autograd; ordinary backprop through them. Memory grows with k (k graphs of f), not with
  the forward solver's iterations. UPG(1, 1) is the one-step (Jacobian-free) gradient.
- Neumann phantom gradient NPG(k, tau): u = tau * sum_{t<k} ((1 - tau) I + tau J^T)^t g, computed with
  k - 1 vector-Jacobian products through ONE recorded evaluation of f, so memory is constant in k.
  At an exact fixed point NPG(k, tau) and UPG(k, tau) give the same gradient; both tend to the implicit
  one as k grows (for a contractive damped map).

`neumann_grad` and `implicit_grad` return a tensor whose value is exactly x* (f is evaluated once with
grad to record its graph, but its value is not used), and whose backward replaces the incoming g by the
solved u before it enters f's graph. `phantom_grad` returns the k-th damped step itself. States may be a
tensor (B, ...) or a tuple of them; the joint state is flattened to (B, D) so the backward solves act on
(y, z) together. Double backward through `neumann_grad` / `implicit_grad` is not supported.

All of them respect the caller's grad mode: under `torch.no_grad()` they return the value only.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from solvers._structure import State, call_flat, flatten, spec_of, state_dtype, unflatten


def _detached(x: State) -> State:
    return tuple(p.detach() for p in x) if isinstance(x, tuple | list) else x.detach()


def phantom_grad(f, x_star: State, *, k: int, tau: float) -> State:
    """UPG(k, tau): k damped steps x <- (1 - tau) x + tau f(x) from x* detached, with grad.

    Returns the k-th step (same structure and dtypes as x_star); its backward is plain autograd through
    those k evaluations of f, reaching everything f closes over. phantom_grad(f, x, k=1, tau=1) is the
    one-step gradient and returns f(x)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    spec_of(x_star, "x_star")
    x = _detached(x_star)
    is_tuple = isinstance(x, tuple)
    for _ in range(k):
        fx = f(x)
        if is_tuple != isinstance(fx, tuple | list) or (is_tuple and len(fx) != len(x)):
            raise ValueError("f must map the state to the same structure")
        pairs = zip(x, fx, strict=True) if is_tuple else ((x, fx),)
        # Cast f's output (bf16 under autocast) back to the state's dtype; tau == 1 skips 0 * x.
        new = tuple(
            fi.to(xi.dtype) if tau == 1.0 else (1.0 - tau) * xi + tau * fi.to(xi.dtype) for xi, fi in pairs
        )
        x = new if is_tuple else new[0]
    return x


class _ReplaceGradient(torch.autograd.Function):
    """Forward: the fixed point's value. Backward: the incoming g becomes solve(g), which then flows into
    the recorded f(x*) and on to whatever f closes over."""

    @staticmethod
    def forward(ctx, fx_flat: Tensor, x_value: Tensor, solve) -> Tensor:
        ctx.solve = solve
        return x_value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        return ctx.solve(g), None, None


def _vjp_fn(fx_flat: Tensor, x_leaf: Tensor):
    """v -> J^T v through the one recorded evaluation fx_flat = f(x_leaf), keeping the graph."""

    def vjp(v: Tensor) -> Tensor:
        (out,) = torch.autograd.grad(fx_flat, x_leaf, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if out is None else out

    return vjp


def _with_solved_gradient(f, x_star: State, make_solve) -> State:
    spec = spec_of(x_star, "x_star")
    dtype = state_dtype(spec.dtypes)
    x_value = flatten(_detached(x_star), spec, dtype)  # (B, D)
    if not torch.is_grad_enabled():
        return unflatten(x_value, spec)
    x_leaf = x_value.clone().requires_grad_(True)  # (B, D), a leaf of its own: only J^T v needs it
    fx_flat = call_flat(f, x_leaf, spec)  # (B, D), the one evaluation whose graph is reused
    if not fx_flat.requires_grad:  # f depends on nothing that wants a gradient
        return unflatten(x_value, spec)
    out = _ReplaceGradient.apply(fx_flat, x_value, make_solve(_vjp_fn(fx_flat, x_leaf)))
    return unflatten(out, spec)


def neumann_grad(f, x_star: State, *, k: int, tau: float) -> State:
    """NPG(k, tau): value x*; backward hands u = tau * sum_{t<k} ((1-tau) I + tau J^T)^t g to f's graph.

    Costs one evaluation of f with grad and k - 1 vector-Jacobian products in backward; memory does not
    depend on k."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")

    def make_solve(vjp):
        def solve(g: Tensor) -> Tensor:
            v, total = g, g
            for _ in range(k - 1):
                v = (1.0 - tau) * v + tau * vjp(v)
                total = total + v
            return tau * total

        return solve

    return _with_solved_gradient(f, x_star, make_solve)


def implicit_grad(f, x_star: State, *, max_iter: int, tol: float) -> State:
    """Implicit-function-theorem gradient: value x*; backward solves u = J^T u + g (Anderson on
    vector-Jacobian products, warm-started at g, relative tolerance tol) and hands u to f's graph.

    The backward solve's SolverInfo (steps, residual of the linear solve) is stored in
    `implicit_grad.last_info` after each backward, for logging."""
    from solvers.fixed_point import anderson

    def make_solve(vjp):
        def solve(g: Tensor) -> Tensor:
            u, info = anderson(lambda u: vjp(u) + g, g, max_iter=max_iter, tol=tol, min_iter=0)
            implicit_grad.last_info = info
            return u

        return solve

    return _with_solved_gradient(f, x_star, make_solve)


implicit_grad.last_info = None
