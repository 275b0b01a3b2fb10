"""Fixed-point solvers for x* = f(x*): damped fixed-point iteration and Anderson acceleration.

Symbols. f is the map, x_k the k-th iterate (x_0 = x0), F_k = f(x_k), G_k = F_k - x_k the residual.
The relative residual of x_k is ||G_k|| / ||F_k|| and the absolute one ||G_k||, per sample.

- Fixed-point iteration: x_{k+1} = (1 - tau) x_k + tau F_k.
- Anderson acceleration (type II, Walker & Ni 2011), memory m: keep the last m pairs (x_i, G_i) in a
  ring buffer (slot k % m); choose weights alpha (summing to 1) minimising ||sum_i alpha_i G_i||^2 +
  lam_rel ||alpha||^2 by solving the bordered (n+1) x (n+1) system

      [ 0   1^T         ] [ mu    ]   [ 1 ]
      [ 1   G G^T + r I ] [ alpha ] = [ 0 ],     r = lam * mean(diag(G G^T))   (per sample)

  in float64, then x_{k+1} = sum_i alpha_i (x_i + beta G_i) = sum_i alpha_i ((1 - beta) x_i + beta F_i).
  The regulariser is relative to the residual scale, so the method is scale invariant and does not stall
  near convergence. When a sample's system is singular or gives non-finite weights, that sample takes a
  plain damped step instead (counted in `n_fallback`). With one history entry (m = 1, or k = 0) the
  step is the plain step, so m = 1 is exactly fixed-point iteration.
  Restarts (`restart`, off by default): when a sample's relative residual grows to more than `restart`
  times its previous one, that sample's history is cleared (only the current pair is kept, so its next
  step is the plain step) and rebuilt from there. Far from the fixed point of a nonlinear map the old
  pairs describe a different linearisation, and extrapolating from them can hold the iterate on a
  plateau that plain iteration leaves (measured on the Attractor's map from its cold start, README);
  on a map whose residual never grows nothing changes.

Both solvers:
- run under `torch.no_grad()`; keep the state in float32 (float64 if x0 is float64) even when f computes
  in bf16: f receives its input in x0's dtype(s), its output is promoted before any arithmetic;
- return the *best* iterate per sample (lowest relative residual), with the residuals measured at that
  very iterate, so a fresh ||f(x) - x|| / ||f(x)|| on the returned x reproduces `info.rel_residual`;
- freeze a sample once it has converged (after `min_iter` steps) or diverged, so every sample's answer is
  what it would be if solved alone, and stop when no sample is active or after `max_iter` evaluations;
  `max_iter` may be a (B,) integer tensor of per-sample budgets: a sample whose budget is spent is frozen
  at its best iterate like a converged one (and flagged by its residual), the others go on;
  `stall` (off by default): a sample whose best residual has not improved for `stall` evaluations (after
  `min_iter`) is frozen the same way, so one stuck sample does not run the solve to `max_iter` alone
  (a (B,) integer tensor gives each sample its own; a value above `max_iter` never fires);
  `stall_below` (with `stall`): the exit fires only for a sample whose best relative residual is at or
  below this value, so a sample still far from any fixed point keeps iterating (None: at any residual);
- with `rows=True`, evaluate f only on the samples still active: f is then called as `f(state, rows)`
  with the active samples' state and `rows`, a (b,) int64 tensor of their indices in the batch (sorted),
  so that f can select the matching rows of whatever it closes over. Each sample's iterates, answer and
  residuals are those of the batched solve; `info.row_evals` counts the sample-evaluations spent;
- never raise on a non-contractive map: a sample whose map returns non-finite values, or whose residual
  grows past `DIVERGENCE_FACTOR` times its starting residual, is reset to its best iterate, frozen,
  flagged unconverged and counted in `n_diverged`.

Host synchronisation: one `.item()` per iteration (is any sample still active?), needed to stop early;
everything else (counters, traces) stays on the device until the loop ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from solvers._structure import Spec, State, call_flat, flatten, spec_of, state_dtype, unflatten

# A residual this many times the starting one means the iteration is running away.
DIVERGENCE_FACTOR = 1e4


@dataclass
class SolverInfo:
    """What a solve did, per sample where it can differ between samples.

    rel_residual, abs_residual: (B,) ||f(x) - x|| / ||f(x)|| and ||f(x) - x|| at the returned x.
    converged: (B,) bool, rel_residual <= tol.   best_step: (B,) index k of the returned iterate x_k.
    nstep: number of evaluations of f.   row_evals: sample-evaluations of f (B * nstep without
    `rows`; with `rows`, only the samples still active at each evaluation).   n_fallback:
    sample-steps where Anderson fell back to a plain step.   n_diverged: samples given up as divergent.
    evals: (B,) the evaluations of f each sample needed: the evaluation at which it was done
    (converged after ``min_iter``, or given up as divergent), else ``nstep``; with ``rows`` it is exactly
    the evaluations the sample got, without it the batch kept evaluating done samples (row_evals).
    trace: (T, B) relative residual of every iterate x_0 .. x_{T-1} (T = nstep), with trace=True.
    iterates: the iterates x_0 .. x_{T-1}, structured like x0 with a leading T axis, with
    trace="iterates".
    """

    rel_residual: Tensor
    abs_residual: Tensor
    converged: Tensor
    best_step: Tensor
    nstep: int
    row_evals: int = 0
    n_fallback: int = 0
    n_diverged: int = 0
    evals: Tensor | None = None
    trace: Tensor | None = None
    iterates: State | None = None


def _residuals(x: Tensor, fx: Tensor) -> tuple[Tensor, Tensor]:
    """(B,) relative and absolute residuals; non-finite maps count as infinitely far. 0/0 := 0."""
    abs_res = (fx - x).norm(dim=1)
    rel_res = abs_res / (fx.norm(dim=1) + torch.finfo(fx.dtype).tiny)
    # A NaN or inf anywhere in f(x) makes both norms inf or NaN: map all of those to +inf.
    inf = float("inf")
    return rel_res.nan_to_num(nan=inf, posinf=inf), abs_res.nan_to_num(nan=inf, posinf=inf)


# A stepper gets (k, x, fx, idx) for the rows idx of the batch (None: every row) and returns
# (x_next, fallback mask or None) for those rows.
Stepper = Callable[[int, Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor | None]]


def _evaluate(f, x_rows: Tensor, spec: Spec, idx: Tensor | None) -> Tensor:
    """f at ``x_rows``, the rows ``idx`` of the batch (every row when idx is None), (b, D) in x's dtype."""
    if idx is None:
        return call_flat(f, x_rows, spec)
    return call_flat(lambda s: f(s, idx), x_rows, spec.rows(idx.numel()))


def _solve(
    f,
    x0: State,
    stepper_factory,
    *,
    max_iter,
    tol: float,
    min_iter: int,
    trace,
    rows,
    stall=None,
    stall_below: float | None = None,
) -> tuple:
    budget = None  # (B,) per-sample evaluation budgets, when max_iter is a tensor
    if isinstance(max_iter, Tensor):
        budget = max_iter.to(torch.long)
        if budget.ndim != 1 or budget.numel() == 0:
            raise ValueError(
                f"a max_iter tensor must be (B,) per-sample budgets, got shape {tuple(budget.shape)}"
            )
        max_iter = int(budget.max())
        if int(budget.min()) < 1:
            raise ValueError(f"max_iter must be >= 1 for every sample, got {int(budget.min())}")
    elif max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if isinstance(stall, Tensor):
        if stall.ndim != 1 or stall.numel() == 0 or stall.is_floating_point():
            raise ValueError(f"a stall tensor must be (B,) per-sample integers, got {stall!r}")
        if int(stall.min()) < 1:
            raise ValueError(f"stall must be >= 1 for every sample, got {int(stall.min())}")
    elif stall is not None and not (isinstance(stall, int) and stall >= 1):
        raise ValueError(f"stall must be an integer >= 1, a (B,) tensor of them, or None, got {stall!r}")
    if stall_below is not None and not (isinstance(stall_below, int | float) and stall_below > 0):
        raise ValueError(f"stall_below must be a residual > 0 or None, got {stall_below!r}")
    if trace not in (False, True, "iterates"):
        raise ValueError(f"trace must be False, True or 'iterates', got {trace!r}")
    spec: Spec = spec_of(x0)
    dtype = state_dtype(spec.dtypes)
    with torch.no_grad():
        x = flatten(x0, spec, dtype).clone()  # (B, D)
        B = x.shape[0]
        if budget is not None:
            if budget.numel() != B:
                raise ValueError(f"max_iter has {budget.numel()} per-sample budgets for a batch of {B}")
            budget = budget.to(x.device)
        if isinstance(stall, Tensor):
            if stall.numel() != B:
                raise ValueError(f"stall has {stall.numel()} per-sample values for a batch of {B}")
            stall = stall.to(x.device, torch.long)
        step = stepper_factory(x)
        best_x = x.clone()  # (B, D)
        best_rel = torch.full((B,), float("inf"), dtype=dtype, device=x.device)
        best_abs = best_rel.clone()
        best_step = torch.zeros(B, dtype=torch.long, device=x.device)
        runaway_abs = None
        diverged = torch.zeros(B, dtype=torch.bool, device=x.device)
        n_fallback = torch.zeros((), dtype=torch.long, device=x.device)
        idx = torch.arange(B, device=x.device) if rows else None  # the rows f is evaluated on
        evals = torch.zeros(B, dtype=torch.long, device=x.device)  # 0 = not done yet
        rel_trace: list[Tensor] = []
        iterates: list[Tensor] = []
        nstep = row_evals = 0
        for k in range(max_iter):
            x_rows = x if idx is None else x[idx]  # (b, D) the rows evaluated
            fx = _evaluate(f, x_rows, spec, idx)  # (b, D), promoted to the state dtype
            nstep, row_evals = k + 1, row_evals + fx.shape[0]
            rel, abs_ = _residuals(x_rows, fx)
            if idx is not None:  # frozen rows sit at their best iterate: their residuals are the best ones
                rel, abs_ = best_rel.index_put((idx,), rel), best_abs.index_put((idx,), abs_)
            if trace:
                rel_trace.append(rel)
                if trace == "iterates":
                    iterates.append(x.clone())
            if runaway_abs is None:
                # (B,) finite even when f(x0) is not, so that an inf residual always counts as runaway
                runaway_abs = (DIVERGENCE_FACTOR * abs_).clamp(max=torch.finfo(abs_.dtype).max)
            # Frozen samples are re-evaluated at their best iterate, which never beats itself.
            better = rel < best_rel
            if idx is None:
                best_x = torch.where(better[:, None], x, best_x)
            else:  # only evaluated rows can improve: copy those rows, not the whole (B, D) batch
                better_rows = better[idx]
                best_x[idx[better_rows]] = x_rows[better_rows]
            best_rel = torch.where(better, rel, best_rel)
            best_abs = torch.where(better, abs_, best_abs)
            best_step = torch.where(better, k, best_step)
            converged = best_rel <= tol
            running_away = abs_ > runaway_abs  # includes non-finite f(x)
            diverged = diverged | (running_away & ~converged)
            done = diverged | (converged if k + 1 >= min_iter else torch.zeros_like(converged))
            if budget is not None:
                done = done | (budget <= k + 1)
            if stall is not None and k + 1 >= min_iter:
                stalled = k - best_step >= stall  # no new best in the last `stall` evaluations
                if stall_below is not None:  # ... and already near a fixed point
                    stalled = stalled & (best_rel <= stall_below)
                done = done | stalled
            active = ~done
            evals = torch.where(done & (evals == 0), k + 1, evals)
            if k + 1 == max_iter or not bool(active.any()):
                break
            x, idx, fallback = _advance(step, k, x, fx, idx, active, best_x)
            if fallback is not None:
                n_fallback += fallback.sum()

        info = SolverInfo(
            rel_residual=best_rel,
            abs_residual=best_abs,
            converged=best_rel <= tol,
            best_step=best_step,
            nstep=nstep,
            row_evals=row_evals,
            n_fallback=int(n_fallback.item()),
            n_diverged=int((diverged & ~(best_rel <= tol)).sum().item()),
            evals=torch.where(evals == 0, nstep, evals),
        )
        if trace:
            info.trace = torch.stack(rel_trace)  # (T, B)
            if trace == "iterates":
                info.iterates = _stack_iterates(iterates, spec)
        return unflatten(best_x, spec, cast=False), info


def _advance(step, k: int, x: Tensor, fx: Tensor, idx: Tensor | None, active: Tensor, best_x: Tensor):
    """The next iterate of every active sample; done samples sit at their best iterate from now on.
    Returns (x, the rows to evaluate next or None, fallback mask of the active samples)."""
    if idx is None:
        x_next, fallback = step(k, x, fx, None)
        fallback = None if fallback is None else fallback & active
        return torch.where(active[:, None], x_next, best_x), None, fallback
    keep = active[idx]  # (b,) which of the evaluated rows go on
    idx_next, idx_done = idx[keep], idx[~keep]
    x_next, fallback = step(k, x[idx_next], fx[keep], idx_next)
    # In place, row by row (x is the solve's own buffer): a row done now sits at its best iterate, an
    # active row takes its next iterate, rows frozen earlier are at their best already.
    x[idx_done] = best_x[idx_done]
    x[idx_next] = x_next
    return x, idx_next, fallback


def _stack_iterates(iterates: list[Tensor], spec: Spec) -> State:
    """T flat (B, D) iterates -> x0's structure with a leading T axis, in the state dtype."""
    stacked = torch.stack(iterates)  # (T, B, D)
    parts = stacked.split(list(spec.sizes), dim=2)
    out = tuple(p.reshape(len(iterates), *s) for p, s in zip(parts, spec.shapes, strict=True))
    return out if spec.is_tuple else out[0]


def fixed_point_iter(
    f,
    x0: State,
    *,
    max_iter: int | Tensor,
    tol: float,
    min_iter: int = 0,
    tau: float = 1.0,
    trace=False,
    rows=False,
    stall: int | Tensor | None = None,
    stall_below: float | None = None,
) -> tuple[State, SolverInfo]:
    """Damped fixed-point iteration x_{k+1} = (1 - tau) x_k + tau f(x_k). Returns (x, SolverInfo)."""

    def factory(x: Tensor) -> Stepper:
        def step(k: int, x: Tensor, fx: Tensor, idx: Tensor | None):
            # tau == 1 gives f(x) exactly (0 * x adds nothing for finite x).
            return (1.0 - tau) * x + tau * fx, None

        return step

    exits = dict(max_iter=max_iter, tol=tol, min_iter=min_iter, stall=stall, stall_below=stall_below)
    return _solve(f, x0, factory, trace=trace, rows=rows, **exits)


def anderson(
    f,
    x0: State,
    *,
    m: int = 5,
    lam: float = 1e-4,
    beta: float = 1.0,
    max_iter: int | Tensor = 16,
    tol: float = 1e-3,
    min_iter: int = 2,
    trace=False,
    rows: bool = False,
    restart: float | None = None,
    stall: int | Tensor | None = None,
    stall_below: float | None = None,
) -> tuple[State, SolverInfo]:
    """Anderson acceleration with memory m, relative regulariser lam, mixing beta and optional restarts
    (a sample's history is cleared when its relative residual grows past ``restart`` times the previous
    one; see module doc). Returns (x, SolverInfo)."""
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    if restart is not None and not restart > 0:
        raise ValueError(f"restart must be > 0 or None, got {restart}")

    def factory(x: Tensor) -> Stepper:
        B, D = x.shape
        # Ring buffers over the last m steps: the plain steps P_i = (1 - beta) x_i + beta F_i (the new
        # iterate is their alpha-weighted sum), the residuals G_i, and their Gram matrix, kept up to date
        # one row at a time (O(m D) per step instead of O(m^2 D)).
        P = torch.zeros(B, m, D, dtype=x.dtype, device=x.device)  # (B, m, D)
        G = torch.zeros(B, m, D, dtype=x.dtype, device=x.device)  # (B, m, D)
        GG = torch.zeros(B, m, m, dtype=x.dtype, device=x.device)  # (B, m, m)
        # The constant parts of the bordered system, built once.
        f64 = dict(dtype=torch.float64, device=x.device)
        border = torch.zeros(m + 1, m + 1, **f64)  # (m+1, m+1): [[0, 1^T], [1, 0]]
        border[0, 1:] = 1.0
        border[1:, 0] = 1.0
        eye = torch.eye(m, **f64)  # (m, m)
        rhs = torch.zeros(B, m + 1, **f64)  # (B, m+1): (1, 0, ..., 0)
        rhs[:, 0] = 1.0
        if restart is not None:
            valid = torch.zeros(B, m, dtype=torch.bool, device=x.device)  # (B, m): slots in the history
            prev_rel = torch.full((B,), float("inf"), dtype=x.dtype, device=x.device)  # (B,)

        def step(k: int, x: Tensor, fx: Tensor, idx: Tensor | None):
            # idx: the rows of the batch being stepped (None: all); their history lives at P[idx] etc.
            rows = slice(None) if idx is None else idx
            slot, n = k % m, min(k + 1, m)
            g = fx - x  # (b, D)
            plain = (1.0 - beta) * x + beta * fx  # (b, D); beta = 1 gives f(x) exactly
            P[rows, slot] = plain
            G[rows, slot] = g
            Gh = G[rows, :n]  # (b, n, D)
            row = torch.bmm(Gh, g[:, :, None])[:, :, 0]  # (b, n)
            GG[rows, slot, :n] = row
            GG[rows, :n, slot] = row
            if restart is not None:
                rel = _residuals(x, fx)[0]  # (b,) the residual the solve records for x
                v = valid[rows] & ~(rel > restart * prev_rel[rows])[:, None]  # (b, m): grown -> cleared
                v[:, slot] = True
                valid[rows], prev_rel[rows] = v, rel
            if n == 1:
                return plain, None
            b = x.shape[0]
            gram = GG[rows, :n, :n].to(torch.float64)  # (b, n, n)
            if restart is None:
                reg = lam * gram.diagonal(dim1=1, dim2=2).mean(dim=1)  # (b,)
                H = border[: n + 1, : n + 1].repeat(b, 1, 1)  # (b, n+1, n+1)
                H[:, 1:, 1:] += gram + reg[:, None, None] * eye[:n, :n]
            else:
                # Cleared slots are decoupled: zero rows and columns (border included), 1 on the
                # diagonal, so that their weight is exactly 0 and the rest solve the reduced system.
                vn = v[:, :n].to(torch.float64)  # (b, n)
                gram = gram * vn[:, :, None] * vn[:, None, :]
                reg = lam * gram.diagonal(dim1=1, dim2=2).sum(dim=1) / vn.sum(dim=1)  # (b,)
                H = border[: n + 1, : n + 1].repeat(b, 1, 1)  # (b, n+1, n+1)
                H[:, 0, 1:] *= vn
                H[:, 1:, 0] *= vn
                H[:, 1:, 1:] += gram + torch.diag_embed(reg[:, None] * vn + (1.0 - vn))
            # no host sync: failures are reported per sample
            sol, info = torch.linalg.solve_ex(H, rhs[:b, : n + 1])
            alpha = sol[:, 1:]  # (b, n)
            ok = (info == 0) & torch.isfinite(alpha).all(dim=1)
            alpha = torch.where(ok[:, None], alpha, torch.zeros_like(alpha)).to(x.dtype)  # (b, n)
            mixed = torch.bmm(alpha[:, None, :], P[rows, :n])[:, 0]  # (b, D)
            return torch.where(ok[:, None], mixed, plain), ~ok

        return step

    exits = dict(max_iter=max_iter, tol=tol, min_iter=min_iter, stall=stall, stall_below=stall_below)
    return _solve(f, x0, factory, trace=trace, rows=rows, **exits)
