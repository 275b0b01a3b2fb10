"""Fixed-point iteration and Anderson acceleration against dense solves and exact properties
(docs/reference.md, "Numerical checks")."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from solvers import anderson, fixed_point_iter
from tests._solver_maps import DEVICES, Affine, TanhMap

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def fresh_residuals(f, x):
    """An independent recomputation of (relative, absolute) residuals at x, per sample."""
    fx = f(x)
    abs_res = (fx - x).flatten(1).norm(dim=1)
    return abs_res / fx.flatten(1).norm(dim=1), abs_res


def run(solver, f, x0, **kw):
    if solver == "plain":
        return fixed_point_iter(f, x0, **kw)
    return anderson(f, x0, **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("solver", ["plain", "anderson"])
@pytest.mark.parametrize("rho", [0.5, 0.9, 0.99])
def test_affine_maps_reach_the_dense_solution(rho, solver, device):
    tol = 1e-9
    f = Affine([rho] * 3, 24, seed=1, device=device)
    x, info = run(solver, f, f.x0(), max_iter=5000, tol=tol)
    assert info.converged.all() and (info.rel_residual <= tol).all()
    # ||x - x*|| <= ||(I - A)^-1|| ||f(x) - x|| = abs_residual / (1 - rho) for symmetric A.
    err = (x - f.x_star).norm(dim=1)
    assert (err <= info.abs_residual / (1 - rho) * (1 + 1e-6) + 1e-13).all()
    assert (err / f.x_star.norm(dim=1) < 2 * tol / (1 - rho)).all()
    rel, abs_res = fresh_residuals(f, x)
    torch.testing.assert_close(info.rel_residual, rel, rtol=1e-9, atol=0)
    torch.testing.assert_close(info.abs_residual, abs_res, rtol=1e-9, atol=0)


def test_anderson_needs_at_most_a_fifth_of_plain_steps_at_rho_099():
    f = Affine([0.99] * 2, 32, seed=2)
    _, plain = fixed_point_iter(f, f.x0(), max_iter=10_000, tol=1e-6)
    _, acc = anderson(f, f.x0(), m=5, max_iter=10_000, tol=1e-6)
    assert plain.converged.all() and acc.converged.all()
    assert acc.nstep * 5 <= plain.nstep, (acc.nstep, plain.nstep)


@pytest.mark.parametrize("beta", [1.0, 0.6])
def test_memory_one_is_plain_iteration(beta):
    """m = 1: x_{k+1} = (1 - beta) x_k + beta f(x_k), every iterate, against a hand-written loop."""
    f = TanhMap(3, 8, w_norm=0.9, seed=3)
    x0 = torch.randn(3, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, info = anderson(f, x0, m=1, beta=beta, max_iter=30, tol=0.0, trace="iterates")
        _, plain = fixed_point_iter(f, x0, tau=beta, max_iter=30, tol=0.0, trace="iterates")
        x, expected = x0, []
        for _ in range(30):
            expected.append(x)
            x = (1 - beta) * x + beta * f(x)
    torch.testing.assert_close(info.iterates, torch.stack(expected), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(plain.iterates, torch.stack(expected), rtol=1e-14, atol=1e-15)
    assert info.n_fallback == 0


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_anderson_is_scale_invariant(scale):
    """f_s(x) = s f(x / s) has the fixed point s x*; a regulariser relative to the residual scale gives
    the same weights, hence the same iterates up to the factor s and the same residual trace."""
    f = Affine([0.95] * 3, 16, seed=4)
    x, info = anderson(f, f.x0(), max_iter=300, tol=1e-9, trace=True)
    xs, info_s = anderson(lambda x: scale * f(x / scale), f.x0(), max_iter=300, tol=1e-9, trace=True)
    assert info.converged.all() and info_s.converged.all()
    assert info.nstep == info_s.nstep
    torch.testing.assert_close(info_s.trace, info.trace, rtol=1e-5, atol=1e-14)
    torch.testing.assert_close(xs / scale, x, rtol=1e-8, atol=1e-10)


def test_degenerate_histories_stay_finite():
    D = 6
    x0 = torch.randn(2, D, dtype=F64, generator=torch.Generator().manual_seed(5))
    # Identity: every point is fixed, the residual history is all zeros (a singular system).
    x, info = anderson(lambda x: x, x0, max_iter=6, tol=1e-6, min_iter=4)
    assert info.nstep == 4 and torch.equal(x, x0) and info.converged.all()
    assert (info.rel_residual == 0).all() and info.n_fallback > 0  # singular solves fell back
    # Constant map: converged after one step, exactly at the constant.
    c = torch.full((2, D), 3.0, dtype=F64)
    x, info = anderson(lambda x: c, x0, max_iter=10, tol=1e-12, min_iter=0)
    assert torch.equal(x, c) and info.converged.all() and info.best_step.tolist() == [1, 1]
    # Fixed point at the origin, started there: 0/0 counts as a zero relative residual.
    x, info = anderson(lambda x: 0.5 * x, torch.zeros(2, D, dtype=F64), max_iter=5, tol=1e-6)
    assert torch.equal(x, torch.zeros_like(x)) and info.converged.all()
    # f(x) = -x: plain iteration cycles x0, -x0, ... for ever; two history entries with opposite
    # residuals give weights (1/2, 1/2) and the exact fixed point 0.
    _, plain = fixed_point_iter(lambda x: -x, x0, max_iter=50, tol=1e-6)
    x, info = anderson(lambda x: -x, x0, max_iter=50, tol=1e-6)
    assert not plain.converged.any()
    assert info.converged.all() and x.abs().max() < 1e-12
    # Rank-one map: residuals span a 2-dimensional space, so longer histories are linearly dependent.
    u = torch.nn.functional.normalize(torch.ones(D, dtype=F64), dim=0)
    A = 0.9 * torch.outer(u, u)
    b = torch.arange(D, dtype=F64)
    x, info = anderson(lambda x: x @ A.T + b, x0, m=5, max_iter=40, tol=1e-12)
    x_star = torch.linalg.solve(torch.eye(D, dtype=F64) - A, b)
    assert torch.isfinite(x).all() and info.converged.all()
    torch.testing.assert_close(x, x_star.expand_as(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("solver", ["plain", "anderson"])
def test_mixed_batch_equals_each_sample_solved_alone(solver):
    rhos = [0.3, 0.99, 0.7]
    f = Affine(rhos, 16, seed=6)
    x, info = run(solver, f, f.x0(), max_iter=4000, tol=1e-9)
    assert info.converged.all()
    assert info.best_step[0] < info.best_step[2] < info.best_step[1]
    for i in range(3):
        fi = Affine(rhos, 16, seed=6)
        fi.A, fi.b = fi.A[i : i + 1], fi.b[i : i + 1]
        xi, info_i = run(solver, fi, fi.x0(), max_iter=4000, tol=1e-9)
        torch.testing.assert_close(x[i : i + 1], xi, rtol=1e-12, atol=1e-12)
        assert info.best_step[i] == info_i.best_step[0]
        assert info_i.nstep == int(info.best_step[i]) + 1  # an easy sample stops as soon as it is done


@pytest.mark.parametrize("solver", ["plain", "anderson"])
def test_non_contractive_maps_return_finite_unconverged(solver):
    """Samples 0-2 have no real fixed point (x^2 + 1, exp, x + 1), sample 3's map is NaN from the start,
    sample 4 is a contraction sharing the batch."""
    x0 = torch.zeros(5, 5)

    def f(x):
        return torch.stack([x[0] ** 2 + 1, torch.exp(x[1]), x[2] + 1, torch.log(x[3] - 10), 0.5 * x[4] + 1])

    x, info = run(solver, f, x0, max_iter=200, tol=1e-6, trace=True)
    assert torch.isfinite(x).all()
    assert info.converged.tolist() == [False, False, False, False, True]
    torch.testing.assert_close(x[4], torch.full((5,), 2.0), rtol=1e-5, atol=1e-5)
    assert torch.equal(x[3], x0[3]) and info.rel_residual[3] == float("inf")  # nothing better than x0
    finite = [0, 1, 2, 4]
    rel, abs_res = fresh_residuals(f, x)
    torch.testing.assert_close(info.abs_residual[finite], abs_res[finite])
    assert (info.rel_residual[:3] > 1e-3).all()
    # Plain iteration runs away on x^2 + 1 and exp; Anderson's extrapolation keeps those bounded and
    # only the NaN sample is given up.
    assert info.n_diverged == (3 if solver == "plain" else 1)
    if solver == "plain":  # the runaway samples were frozen long before overflowing float32
        assert info.nstep == 200 and info.trace[-1, :2].tolist() == info.rel_residual[:2].tolist()


@pytest.mark.parametrize("m", [2, 5])
def test_reported_residual_is_honest_and_output_not_collapsed(m):
    """Regression for a rolled history read as a ring buffer: the iterate collapsed to ~0 while the
    logged residual sat at 1.0. At every max_iter from 3 to m + 3 the returned x must be near x*, and
    the reported residuals must equal a fresh recomputation."""
    f = Affine([0.9] * 4, 16, seed=7, dtype=torch.float32)
    x_norm = f.x_star.norm(dim=1)
    previous = None
    for max_iter in range(3, m + 4):
        x, info = anderson(f, f.x0(), m=m, max_iter=max_iter, tol=0.0)
        assert info.nstep == max_iter
        rel, abs_res = fresh_residuals(f, x)
        torch.testing.assert_close(info.rel_residual, rel, rtol=1e-5, atol=0)
        torch.testing.assert_close(info.abs_residual, abs_res, rtol=1e-5, atol=0)
        assert (x.norm(dim=1) > 0.25 * x_norm).all()  # a collapsed x ~ 0 has rel residual 1
        assert ((x - f.x_star).norm(dim=1) < x_norm).all()
        assert (info.rel_residual < 0.5).all()
        if previous is not None:  # the best residual can only improve with more steps
            assert (info.rel_residual <= previous + 1e-7).all()
        previous = info.rel_residual


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_map_runs_with_fp32_state(device):
    torch.manual_seed(8)
    D = 32
    lin = torch.nn.Linear(D, D).to(device)
    with torch.no_grad():
        lin.weight.mul_(0.8 / torch.linalg.matrix_norm(lin.weight, ord=2))
    x_in = torch.randn(4, D, device=device)
    f32 = lambda z: torch.tanh(lin(z) + x_in)  # noqa: E731
    x_ref, _ = anderson(f32, torch.zeros(4, D, device=device), max_iter=100, tol=1e-6)

    # (a) a bf16 module called on bf16 input: the solver hands f bf16, keeps its own state in fp32.
    lin16 = torch.nn.Linear(D, D).to(device=device, dtype=torch.bfloat16)
    lin16.load_state_dict(lin.state_dict())
    f16 = lambda z: torch.tanh(lin16(z) + x_in.bfloat16())  # noqa: E731
    x, info = anderson(f16, torch.zeros(4, D, device=device, dtype=torch.bfloat16), max_iter=40, tol=2e-2)
    assert x.dtype == torch.float32 and torch.isfinite(x).all() and info.converged.all()
    assert ((x - x_ref).norm(dim=1) / x_ref.norm(dim=1) < 5e-2).all()

    # (b) an fp32 state and a map under autocast (bf16 matmuls): same, and the state stays fp32.
    def f_auto(z):
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            return torch.tanh(lin(z) + x_in)

    x, info = anderson(f_auto, torch.zeros(4, D, device=device), max_iter=40, tol=2e-2, trace=True)
    assert x.dtype == torch.float32 and info.trace.dtype == torch.float32 and info.converged.all()
    assert ((x - x_ref).norm(dim=1) / x_ref.norm(dim=1) < 5e-2).all()


def test_tuple_state_is_solved_jointly():
    """The Attractor's map S = (y, z) -> (g(y + z'), z') with z' = g(z + y + x)."""
    B, L, D = 3, 4, 8
    g = TanhMap(B, L * D, w_norm=0.4, seed=9)
    x_in = torch.randn(B, L, D, dtype=F64, generator=torch.Generator().manual_seed(1))

    def net(h):
        return g(h.reshape(B, L * D)).reshape(B, L, D)

    def F(state):
        y, z = state
        z_new = net(z + y + x_in)
        return net(y + z_new), z_new

    s0 = (torch.zeros(B, L, D, dtype=F64), torch.zeros(B, L, D, dtype=F64))
    with torch.no_grad():
        (y, z), info = anderson(F, s0, max_iter=100, tol=1e-12, trace="iterates")
        y2, z2 = F((y, z))
    assert y.shape == (B, L, D) and z.shape == (B, L, D) and info.converged.all()
    torch.testing.assert_close(y2, y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(z2, z, rtol=1e-10, atol=1e-10)
    # The joint residual is over (y, z) together.
    joint = torch.cat([(y2 - y).flatten(1), (z2 - z).flatten(1)], 1).norm(dim=1)
    torch.testing.assert_close(info.abs_residual, joint, rtol=1e-6, atol=1e-18)
    # Iterates come back structured, time first; the best one is the returned state.
    ys, zs = info.iterates
    assert ys.shape == (info.nstep, B, L, D) and zs.shape == (info.nstep, B, L, D)
    for i in range(B):
        assert torch.equal(ys[info.best_step[i], i], y[i]) and torch.equal(zs[info.best_step[i], i], z[i])


@pytest.mark.parametrize("solver", ["plain", "anderson"])
def test_trace_matches_fresh_residuals_of_the_iterates(solver):
    f = Affine([0.8, 0.95], 10, seed=10)
    x, info = run(solver, f, f.x0(), max_iter=25, tol=0.0, trace="iterates")
    assert info.trace.shape == (25, 2) and info.iterates.shape == (25, 2, 10)
    for k in range(25):
        rel, _ = fresh_residuals(f, info.iterates[k])
        torch.testing.assert_close(info.trace[k], rel, rtol=1e-9, atol=0)
    assert torch.equal(info.trace.min(0).values, info.rel_residual)
    assert torch.equal(info.trace.argmin(0), info.best_step)


def test_min_iter_and_warm_start():
    f = Affine([0.9] * 2, 8, seed=11)
    # Started at the fixed point: done after min_iter evaluations, not before.
    for min_iter in (0, 1, 3):
        x, info = anderson(f, f.x_star.clone(), max_iter=20, tol=1e-8, min_iter=min_iter)
        assert info.nstep == max(min_iter, 1) and info.converged.all()
        torch.testing.assert_close(x, f.x_star, rtol=1e-12, atol=1e-12)


def test_runs_without_grad_and_rejects_a_wrong_structure():
    f = TanhMap(2, 6, seed=12)
    x, info = anderson(f, torch.zeros(2, 6, dtype=F64), max_iter=50, tol=1e-8)
    assert not x.requires_grad and not info.rel_residual.requires_grad
    with pytest.raises(ValueError, match="same structure"):
        anderson(lambda s: s[0], (torch.zeros(2, 3), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="same structure"):
        fixed_point_iter(lambda x: x[:, :2], torch.zeros(2, 3), max_iter=3, tol=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    rho=st.floats(0.05, 0.97),
    m=st.integers(1, 6),
    beta=st.sampled_from([1.0, 0.7]),
    max_iter=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_property_returned_iterate_is_honest_and_no_worse_than_the_start(rho, m, beta, max_iter, seed):
    """For any contractive affine map and any settings: the reported residuals are those of the returned
    x, x is finite, the error bound ||x - x*|| <= abs_residual / (1 - rho) holds, and the returned
    residual is never worse than the starting point's."""
    f = Affine([rho, rho / 2], 8, seed=seed)
    x, info = anderson(f, f.x0(), m=m, beta=beta, max_iter=max_iter, tol=1e-10, trace=True)
    rel, abs_res = fresh_residuals(f, x)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(info.rel_residual, rel, rtol=1e-9, atol=0)
    torch.testing.assert_close(info.abs_residual, abs_res, rtol=1e-9, atol=0)
    assert (info.rel_residual <= info.trace[0]).all()
    err = (x - f.x_star).norm(dim=1)
    assert (
        err <= info.abs_residual / (1 - torch.tensor([rho, rho / 2], dtype=F64)) * (1 + 1e-9) + 1e-12
    ).all()


def test_bad_arguments_raise_clear_errors():
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="max_iter"):
        anderson(lambda x: x, x0, max_iter=0)
    with pytest.raises(ValueError, match="m must be"):
        anderson(lambda x: x, x0, m=0)
    with pytest.raises(ValueError, match="restart"):
        anderson(lambda x: x, x0, restart=-1.0)
    with pytest.raises(ValueError, match="trace"):
        fixed_point_iter(lambda x: x, x0, max_iter=3, tol=1e-3, trace="yes")
    with pytest.raises(ValueError, match="batch size"):
        anderson(lambda s: s, (torch.zeros(2, 3), torch.zeros(3, 3)))
    with pytest.raises(ValueError, match="floating"):
        anderson(lambda x: x, torch.zeros(2, 3, dtype=torch.long))


class _RowsAffine:
    """An affine map that can be evaluated on a subset of its rows (``f(x, rows)``), recording the rows."""

    def __init__(self, f: Affine):
        self.f, self.calls = f, []

    def __call__(self, x, rows):
        self.calls.append(rows.clone())
        return torch.bmm(self.f.A[rows], x[:, :, None])[:, :, 0] + self.f.b[rows]


@pytest.mark.parametrize("solver", ["plain", "anderson"])
@pytest.mark.parametrize("min_iter", [0, 3])
def test_compacted_rows_give_the_batched_solve_per_sample(solver, min_iter):
    """rows=True evaluates f only on the samples still active, and changes no sample's answer."""
    rhos = [0.3, 0.99, 0.7, 0.5, 0.95]
    f = Affine(rhos, 16, seed=11)
    kw = dict(max_iter=300, tol=1e-8, min_iter=min_iter, trace=True)
    x, info = run(solver, f, f.x0(), **kw)
    g = _RowsAffine(f)
    xr, info_r = run(solver, g, f.x0(), rows=True, **kw)
    torch.testing.assert_close(xr, x, rtol=1e-12, atol=1e-12)
    for key in ("rel_residual", "abs_residual", "trace"):
        torch.testing.assert_close(getattr(info_r, key), getattr(info, key), rtol=1e-10, atol=1e-14)
    assert torch.equal(info_r.best_step, info.best_step) and torch.equal(info_r.converged, info.converged)
    assert info_r.nstep == info.nstep and info_r.n_fallback == info.n_fallback
    # each sample is evaluated until it is done: at its best step, but not before min_iter steps
    per_sample = torch.clamp(torch.maximum(info.best_step + 1, torch.tensor(min_iter)), max=info.nstep)
    assert info_r.row_evals == int(per_sample.sum()) < info.row_evals == len(rhos) * info.nstep
    # evals: each sample's own count, the same whether or not the batch kept evaluating it
    assert torch.equal(info_r.evals, per_sample) and torch.equal(info.evals, per_sample)
    assert int(info_r.evals.sum()) == info_r.row_evals
    # the rows f saw: sorted, shrinking, the hardest sample (rho 0.99) evaluated at every step
    assert all(torch.equal(r, r.sort().values) for r in g.calls)
    assert all(set(b.tolist()) <= set(a.tolist()) for a, b in zip(g.calls, g.calls[1:], strict=False))
    assert all(1 in r.tolist() for r in g.calls) and len(g.calls) == info.nstep


def test_compacted_rows_with_a_tuple_state_and_divergent_samples():
    """A joint (y, z) state and a batch where one sample's map is expansive: compaction keeps every
    answer and every flag."""
    gen = torch.Generator().manual_seed(3)
    A = torch.randn(4, 6, 6, generator=gen, dtype=F64)
    scale = torch.tensor([0.5, 0.8, 1.5, 0.9], dtype=F64)  # sample 2 runs away
    A = A / torch.linalg.matrix_norm(A, ord=2)[:, None, None] * scale[:, None, None]
    c = torch.randn(4, 6, generator=gen, dtype=F64)

    def F(s, rows=None):
        Ar, cr = (A, c) if rows is None else (A[rows], c[rows])
        y, z = s
        z_new = torch.bmm(Ar, z[:, :, None])[:, :, 0] + 0.1 * y + cr
        return (0.5 * (y + z_new), z_new)

    s0 = (torch.zeros(4, 6, dtype=F64), torch.zeros(4, 6, dtype=F64))
    s, info = fixed_point_iter(F, s0, max_iter=400, tol=1e-10)
    sr, info_r = fixed_point_iter(F, s0, max_iter=400, tol=1e-10, rows=True)
    for a, b in zip(sr, s, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert info.converged.tolist() == [True, True, False, True] and info.n_diverged == 1
    assert torch.equal(info_r.converged, info.converged) and info_r.n_diverged == info.n_diverged
    assert info_r.row_evals < info.row_evals
    # each sample's count sums to the compacted solve's row evaluations; the divergent sample is given
    # up before max_iter, and the solve ends with its last sample
    assert int(info_r.evals.sum()) == info_r.row_evals and torch.equal(info_r.evals, info.evals)
    assert int(info.evals.max()) == info.nstep < 400


def test_restart_changes_nothing_while_residuals_fall():
    """On symmetric affine maps Anderson's residual falls at every step here (checked), so no restart
    fires and the iterates are those of plain Anderson; a factor no growth can reach gives them too."""
    f = Affine([0.9, 0.95, 0.99], 24, seed=4)
    kw = dict(m=5, max_iter=15, tol=0.0, min_iter=15, trace="iterates")
    _, ref = anderson(f, f.x0(), **kw)
    assert (ref.trace[1:] <= ref.trace[:-1]).all()
    for factor in (1.0, 1e300):
        _, got = anderson(f, f.x0(), restart=factor, **kw)
        torch.testing.assert_close(got.iterates, ref.iterates, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_restart_takes_the_plain_step_after_a_residual_grows(beta):
    """After the residual of x_k grows past that of x_{k-1}, the history is cleared: x_{k+1} is the plain
    step (1 - beta) x_k + beta f(x_k), computed here by hand. The map is affine and strongly non-normal
    (A = 0.5 I + 1.5 N, N the shift), so residuals grow often before they fall."""
    D = 16
    A = 0.5 * torch.eye(D, dtype=F64) + 1.5 * torch.diag(torch.ones(D - 1, dtype=F64), 1)
    b = torch.randn(3, D, dtype=F64, generator=torch.Generator().manual_seed(0))

    def f(x):
        return x @ A.T + b

    kw = dict(m=5, beta=beta, max_iter=30, tol=0.0, min_iter=30, trace="iterates")
    _, info = anderson(f, torch.zeros(3, D, dtype=F64), restart=1.0, **kw)
    _, ref = anderson(f, torch.zeros(3, D, dtype=F64), **kw)
    tr, xs = info.trace, info.iterates  # (T, B), (T, B, D)
    grown = [(k, i) for k in range(1, tr.shape[0] - 1) for i in range(3) if tr[k, i] > tr[k - 1, i]]
    assert len(grown) >= 5, "the test map must make the residual grow"
    for k, i in grown:
        x = xs[k, i : i + 1]
        fx = x @ A.T + b[i]
        torch.testing.assert_close(xs[k + 1, i : i + 1], (1 - beta) * x + beta * fx, rtol=1e-12, atol=1e-12)
    # plain Anderson does not take those plain steps
    assert not torch.allclose(info.iterates, ref.iterates)


@pytest.mark.parametrize("rows", [False, True])
@pytest.mark.parametrize("solver", ["plain", "anderson"])
def test_per_sample_budgets_give_each_sample_its_own_solve(solver, rows):
    """max_iter as a (B,) tensor: every sample's answer, residual and evaluations are those of the
    sample solved alone with its own integer budget; samples that converge early still stop early."""
    rhos, budgets = [0.9, 0.99, 0.3, 0.95], [5, 40, 60, 1]
    f = Affine(rhos, 16, seed=7)
    kw = dict(tol=1e-6, min_iter=1)
    x, info = run(
        solver, _RowsAffine(f) if rows else f, f.x0(), max_iter=torch.tensor(budgets), rows=rows, **kw
    )
    assert info.nstep == max(int(e) for e in info.evals) <= max(budgets)
    for i, b in enumerate(budgets):
        fi = Affine(rhos, 16, seed=7)
        fi.A, fi.b = fi.A[i : i + 1], fi.b[i : i + 1]
        xi, info_i = run(solver, fi, fi.x0(), max_iter=b, **kw)
        torch.testing.assert_close(x[i : i + 1], xi, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(info.rel_residual[i : i + 1], info_i.rel_residual, rtol=1e-12, atol=0)
        assert bool(info.converged[i]) == bool(info_i.converged[0])
        assert int(info.evals[i]) == info_i.nstep
    # the budgets bind: the rho-0.99 sample stops unconverged at 40, the rho-0.3 one converges before 60
    assert not info.converged[1] and info.converged[2] and int(info.evals[2]) < 60
    with pytest.raises(ValueError, match="every sample"):
        run(solver, f, f.x0(), max_iter=torch.tensor([3, 0, 1, 2]), tol=1e-6)
    with pytest.raises(ValueError, match="per-sample budgets for a batch"):
        run(solver, f, f.x0(), max_iter=torch.tensor([3, 2]), tol=1e-6)


@pytest.mark.parametrize("rows", [False, True])
def test_stall_freezes_a_stuck_sample_at_its_best_and_leaves_the_others_alone(rows):
    """``stall=s``: a sample with no new best residual for s evaluations is frozen at its best iterate.
    On an expansive affine map (rho 1.5) plain iteration's residual soon grows for good, so it stops s
    evaluations after its best, unconverged, at that iterate; the contractive samples (whose residual
    falls every step) get exactly the answers, residuals and evaluations of the solve without ``stall``."""
    rhos = [0.5, 1.5, 0.8]
    f = Affine(rhos, 12, seed=3)
    kw = dict(max_iter=200, tol=1e-8, min_iter=1, rows=rows)
    g = _RowsAffine(f) if rows else f
    ref_x, ref = fixed_point_iter(g, f.x0(), **kw)
    x, info = fixed_point_iter(_RowsAffine(f) if rows else f, f.x0(), stall=3, trace="iterates", **kw)
    best = int(info.best_step[1])
    assert int(info.evals[1]) == best + 4 and not info.converged[1]
    assert (info.trace[best + 1 : best + 4, 1] >= info.trace[best, 1]).all()  # three without a new best
    torch.testing.assert_close(x[1], info.iterates[best, 1], rtol=0, atol=0)
    fresh = f(x)
    rel = (fresh - x).norm(dim=1) / fresh.norm(dim=1)
    torch.testing.assert_close(info.rel_residual, rel, rtol=1e-12, atol=0)  # honest at the frozen iterate
    for i in (0, 2):
        assert info.converged[i]
        torch.testing.assert_close(x[i], ref_x[i], rtol=1e-12, atol=1e-12)  # row compaction may reorder sums
        assert int(info.evals[i]) == int(ref.evals[i])
    # without stall the stuck sample runs until it is declared divergent or the budget ends
    assert int(ref.evals[1]) > 4
    # Anderson: the stuck sample also stops early, the others still converge
    _, a = anderson(f, f.x0(), stall=3, **{**kw, "rows": False})
    assert int(a.evals[1]) <= int(a.best_step[1]) + 4 < 200 and bool(a.converged[0] & a.converged[2])
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="stall must be"):
            fixed_point_iter(f, f.x0(), max_iter=5, tol=1e-6, stall=bad)


@pytest.mark.parametrize("rows", [False, True])
def test_per_sample_stall_stops_only_the_samples_it_is_given_to(rows):
    """A (B,) ``stall`` tensor: two expansive samples, one with stall 3 and one with a value above
    max_iter (never fires). The first stops 3 evaluations after its best, as with ``stall=3``; the second
    runs as in the solve without ``stall``; the contractive one is unchanged."""
    f = Affine([0.5, 1.5, 1.5], 12, seed=1)
    kw = dict(max_iter=60, tol=1e-8, min_iter=1, rows=rows)
    g = _RowsAffine(f) if rows else f
    _, ref = fixed_point_iter(g, f.x0(), **kw)
    _, every = fixed_point_iter(g, f.x0(), stall=3, **kw)
    x, info = fixed_point_iter(g, f.x0(), stall=torch.tensor([3, 3, 61]), **kw)
    assert int(info.evals[1]) == int(every.evals[1]) == int(info.best_step[1]) + 4
    assert int(info.evals[2]) == int(ref.evals[2]) and int(info.best_step[2]) == int(ref.best_step[2])
    assert int(every.evals[2]) < int(ref.evals[2])  # which stall=3 stops earlier
    assert int(info.evals[0]) == int(ref.evals[0]) and bool(info.converged[0])
    for bad in (torch.tensor([3, 0, 3]), torch.tensor([3.0, 3.0, 3.0]), torch.tensor([3, 3])):
        with pytest.raises(ValueError, match="stall"):
            fixed_point_iter(f, f.x0(), max_iter=5, tol=1e-6, stall=bad)


def test_stall_below_spares_the_samples_still_far_from_a_fixed_point():
    """``stall_below=r``: the stall exit fires only for a sample whose best residual is at or below r.
    Two expansive samples (plain iteration's residual grows), one started near its fixed point and one
    far from it: with r between their best residuals the near one stops as with ``stall`` alone and the
    far one runs as without ``stall``; r above both is ``stall`` alone."""
    f = Affine([0.5, 1.5, 1.5], 12, seed=1)
    x0 = f.x0().clone()
    x0[1] = f.x_star[1] + 1e-4 * torch.randn(12, generator=torch.Generator().manual_seed(0), dtype=x0.dtype)
    kw = dict(max_iter=60, tol=1e-8, min_iter=1)
    _, ref = fixed_point_iter(f, x0, **kw)
    _, stall = fixed_point_iter(f, x0, stall=3, **kw)
    near, far = float(stall.rel_residual[1]), float(stall.rel_residual[2])
    assert 1e-8 < near < far / 100, "the test needs two clearly different best residuals, above tol"
    _, info = fixed_point_iter(f, x0, stall=3, stall_below=(near * far) ** 0.5, **kw)
    assert int(info.evals[1]) == int(stall.evals[1]) == int(stall.best_step[1]) + 4 < int(ref.evals[1])
    assert int(stall.evals[2]) < int(ref.evals[2])  # stall alone stops the far one too ...
    assert int(info.evals[2]) == int(ref.evals[2])  # ... stall_below lets it run as without stall
    assert int(info.best_step[2]) == int(ref.best_step[2])
    assert bool(info.converged[0]) and int(info.evals[0]) == int(ref.evals[0])
    _, loose = fixed_point_iter(f, x0, stall=3, stall_below=10 * far, **kw)
    assert torch.equal(loose.evals, stall.evals)
    for solver in ("plain", "anderson"):
        for bad in (0.0, -1e-3, "1e-3"):
            with pytest.raises(ValueError, match="stall_below"):
                run(solver, f, x0, stall=3, stall_below=bad, **kw)
