"""Implicit, Neumann and unrolled phantom gradients, and the contractivity diagnostics, in float64 against
finite differences, unrolled backprop and exact Jacobians (docs/reference.md, "Numerical checks")."""

from __future__ import annotations

import pytest
import torch

from solvers import (
    SavedTensorBytes,
    anderson,
    contraction_hinge,
    implicit_grad,
    jacobian_reg,
    neumann_grad,
    phantom_grad,
    spectral_radius,
)
from tests._solver_maps import DEVICES, Affine, TanhMap

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def solve(f, B, D, dtype=F64, device="cpu"):
    x, info = anderson(f, torch.zeros(B, D, dtype=dtype, device=device), max_iter=200, tol=1e-14, min_iter=0)
    assert (info.rel_residual < 1e-12).all()
    return x


def grads(out, params, weight):
    return torch.autograd.grad((out * weight).sum(), params)


def test_implicit_gradient_matches_finite_differences():
    """Directional derivative of L(theta) = <w, x*(theta)> along a random direction, x* re-solved to
    machine precision at theta +- eps d: central differences against the implicit gradient."""
    B, D = 3, 6
    m = TanhMap(B, D, w_norm=0.7, seed=0)
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(B, D, dtype=F64, generator=gen)
    dirs = [torch.randn(p.shape, dtype=F64, generator=gen) for p in m.params()]
    g = grads(implicit_grad(m, solve(m, B, D), max_iter=200, tol=1e-13), m.params(), w)
    analytic = sum((gi * di).sum() for gi, di in zip(g, dirs, strict=True))

    def loss(eps):
        with torch.no_grad():
            theta = [p + eps * d for p, d in zip(m.params(), dirs, strict=True)]
            return (solve(m.bind(*theta), B, D) * w).sum()

    eps = 1e-5
    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-7, atol=1e-9)
    assert implicit_grad.last_info is not None and implicit_grad.last_info.converged.all()


@pytest.mark.parametrize("device", DEVICES)
def test_implicit_gradient_matches_backprop_through_200_unrolled_steps(device):
    B, D = 4, 8
    m = TanhMap(B, D, w_norm=0.6, seed=2, device=device)
    w = torch.randn(B, D, dtype=F64, generator=torch.Generator().manual_seed(3)).to(device)
    x = torch.zeros(B, D, dtype=F64, device=device)
    for _ in range(200):  # 0.6^200: the unrolled iterate is the fixed point to machine precision
        x = m(x)
    unrolled = grads(x, m.params(), w)
    implicit = grads(implicit_grad(m, solve(m, B, D, device=device), max_iter=200, tol=1e-13), m.params(), w)
    for a, b in zip(implicit, unrolled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(("k", "tau"), [(1, 1.0), (2, 0.5), (5, 0.8), (12, 1.0)])
def test_unrolled_and_neumann_phantom_gradients_agree_at_an_exact_fixed_point(k, tau):
    B, D = 3, 7
    m = TanhMap(B, D, w_norm=0.8, seed=3)
    x_star = solve(m, B, D)
    w = torch.randn(B, D, dtype=F64, generator=torch.Generator().manual_seed(4))
    upg = phantom_grad(m, x_star, k=k, tau=tau)
    npg = neumann_grad(m, x_star, k=k, tau=tau)
    torch.testing.assert_close(upg, x_star, rtol=1e-12, atol=1e-13)  # the k-th step of a fixed point
    assert torch.equal(npg, x_star)  # exactly the fixed point's value
    upg_grads = grads(upg, m.params(), w)
    for a, b in zip(upg_grads, grads(npg, m.params(), w), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    if (k, tau) == (1, 1.0):  # the one-step gradient: u = g handed straight to df/dtheta
        one_step = grads(m(x_star), m.params(), w)
        for a, b in zip(upg_grads, one_step, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("tau", [1.0, 0.6])
def test_phantom_gradient_error_falls_as_k_grows(tau):
    B, D = 3, 8
    m = TanhMap(B, D, w_norm=0.9, seed=5)
    x_star = solve(m, B, D)
    w = torch.randn(B, D, dtype=F64, generator=torch.Generator().manual_seed(6))
    exact = torch.cat(
        [g.flatten() for g in grads(implicit_grad(m, x_star, max_iter=300, tol=1e-13), m.params(), w)]
    )
    errors = []
    for k in (1, 2, 4, 8, 16, 32, 64):
        for fn in (phantom_grad, neumann_grad):
            g = torch.cat([g.flatten() for g in grads(fn(m, x_star, k=k, tau=tau), m.params(), w)])
            errors.append(((g - exact).norm() / exact.norm()).item())
    upg, npg = errors[0::2], errors[1::2]
    assert all(b < a for a, b in zip(upg, upg[1:], strict=False)), upg
    assert upg[-1] < 1e-3 * upg[0] and upg[-1] < 2e-3
    torch.testing.assert_close(torch.tensor(npg), torch.tensor(upg), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("which", ["implicit", "neumann", "phantom"])
def test_gradcheck_through_the_solve(which):
    """torch.autograd.gradcheck on theta -> (solve, then the gradient op): finite differences see the
    true fixed point x*(theta), the analytic side is our backward (the custom autograd Function for
    implicit and neumann). With k large the phantom gradients are the implicit one."""
    B, D = 2, 4
    m = TanhMap(B, D, w_norm=0.5, seed=7)

    def fn(W, U, c, x_in):
        f = m.bind(W, U, c, x_in)
        x_star = solve(f, B, D)
        if which == "implicit":
            return implicit_grad(f, x_star, max_iter=200, tol=1e-14)
        if which == "neumann":
            return neumann_grad(f, x_star, k=80, tau=1.0)
        return phantom_grad(f, x_star, k=80, tau=1.0)

    assert torch.autograd.gradcheck(fn, tuple(m.params()), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_tuple_state_gradients_reach_parameters_and_inputs():
    """(y, z) state: each gradient op on the tuple equals the same op on the concatenated state."""
    B, L, D = 2, 3, 4
    g = TanhMap(B, 2 * L * D, w_norm=0.6, seed=8)

    def F(state):
        y, z = state
        out = g(torch.cat([y.flatten(1), z.flatten(1)], 1))
        return out[:, : L * D].reshape(B, L, D), out[:, L * D :].reshape(B, L, D)

    flat_star = solve(g, B, 2 * L * D)
    s_star = (flat_star[:, : L * D].reshape(B, L, D), flat_star[:, L * D :].reshape(B, L, D))
    w = torch.randn(B, 2 * L * D, dtype=F64, generator=torch.Generator().manual_seed(9))
    for op, kw in [
        (implicit_grad, dict(max_iter=200, tol=1e-13)),
        (neumann_grad, dict(k=4, tau=0.7)),
        (phantom_grad, dict(k=4, tau=0.7)),
    ]:
        y, z = op(F, s_star, **kw)
        assert y.shape == (B, L, D) and z.shape == (B, L, D)
        got = grads(torch.cat([y.flatten(1), z.flatten(1)], 1), g.params(), w)
        want = grads(op(g, flat_star, **kw), g.params(), w)
        for a, b in zip(got, want, strict=True):
            assert a.abs().sum() > 0  # reaches W, U, c and the injected input
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_neumann_memory_is_constant_in_k_and_phantom_memory_ignores_the_forward_solve():
    """Saved-tensor bytes (a deterministic measure of backward memory): NPG's graph is one evaluation of f
    whatever k; UPG's grows with k; neither depends on the forward solver's iterations (no grad)."""
    B, D = 8, 64
    m = TanhMap(B, D, w_norm=0.5, seed=10, dtype=torch.float32)

    def measure(op, k, max_iter):
        with SavedTensorBytes() as meter:
            x_star, _ = anderson(m, torch.zeros(B, D), max_iter=max_iter, tol=0.0)
            out = op(m, x_star, k=k, tau=1.0)
        nbytes = meter.bytes
        out.sum().backward()  # the graph must still work after measuring
        return nbytes

    npg = [measure(neumann_grad, k, 8) for k in (1, 4, 32)]
    assert npg[0] > 0 and npg[0] == npg[1] == npg[2]
    upg = [measure(phantom_grad, k, 8) for k in (2, 3, 5)]
    per_step = upg[1] - upg[0]  # the first step saves less: its input x* needs no gradient
    assert per_step > 0 and upg[2] == upg[1] + 2 * per_step
    assert measure(phantom_grad, 3, 8) == measure(phantom_grad, 3, 64)
    assert measure(neumann_grad, 3, 8) == measure(neumann_grad, 3, 64)


def test_no_grad_returns_values_only_and_autocast_state_stays_fp32():
    m = TanhMap(2, 5, seed=11, dtype=torch.float32)
    x_star = solve(m, 2, 5, dtype=torch.float32)
    with torch.no_grad():
        for op in (phantom_grad, neumann_grad):
            out = op(m, x_star, k=3, tau=0.5)
            assert not out.requires_grad
        assert torch.equal(implicit_grad(m, x_star, max_iter=10, tol=1e-6), x_star)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for op in (phantom_grad, neumann_grad):
            out = op(m, x_star, k=2, tau=0.5)
            assert out.dtype == torch.float32
            out.sum().backward()
            assert all(torch.isfinite(p.grad).all() for p in m.params())


def exact_jacobians(f, x):
    """(B, D, D) per-sample Jacobians by autograd's dense jacobian (f is per-sample)."""
    J = torch.autograd.functional.jacobian(f, x)  # (B, D, B, D), zero off the diagonal blocks
    return torch.stack([J[i, :, i, :] for i in range(x.shape[0])])


def test_hutchinson_jacobian_regulariser_is_within_two_percent():
    B, D = 4, 10
    m = TanhMap(B, D, w_norm=0.9, seed=12)
    x = torch.randn(B, D, dtype=F64, generator=torch.Generator().manual_seed(13))
    J = exact_jacobians(m, x)
    exact = (J**2).sum() / (B * D)
    torch.manual_seed(14)
    estimate = torch.stack([jacobian_reg(m, x) for _ in range(2000)]).mean()
    assert abs(estimate.item() / exact.item() - 1) < 0.02
    # For J = rho I every Rademacher probe gives rho^2 exactly, on a tensor or a (y, z) tuple.
    torch.testing.assert_close(jacobian_reg(lambda z: 0.3 * z, x), torch.tensor(0.09, dtype=F64))
    pair = (x[:, :4], x[:, 4:].reshape(B, 3, 2))
    torch.testing.assert_close(
        jacobian_reg(lambda s: (0.3 * s[0], 0.3 * s[1]), pair), torch.tensor(0.09, dtype=F64)
    )
    # Usable in a loss: its gradient reaches the parameters.
    jacobian_reg(m, x).backward()
    assert m.W.grad is not None and m.W.grad.abs().sum() > 0


def test_spectral_radius_by_power_method():
    f = Affine([0.5, 0.9, 0.99], 12, seed=15)
    torch.manual_seed(16)
    rho = spectral_radius(f, f.x0(), iters=300)
    # Spectrum rho * linspace(-1, 1): +-rho tie in modulus, and the estimate still converges to rho.
    torch.testing.assert_close(rho, torch.tensor([0.5, 0.9, 0.99], dtype=F64), rtol=1e-6, atol=0)
    # Non-normal J = V diag(lam) V^-1 with a real dominant eigenvalue: the estimate tends to it, although
    # ||J||_2 is larger.
    gen = torch.Generator().manual_seed(17)
    V = torch.eye(6, dtype=F64) + 0.5 * torch.randn(6, 6, dtype=F64, generator=gen)
    J = V @ torch.diag(torch.tensor([0.8, -0.5, 0.4, 0.3, -0.2, 0.1], dtype=F64)) @ torch.linalg.inv(V)
    assert torch.linalg.matrix_norm(J, ord=2) > 0.9
    est = spectral_radius(lambda z: z @ J.T, torch.zeros(2, 6, dtype=F64), iters=200)
    torch.testing.assert_close(est, torch.full((2,), 0.8, dtype=F64), rtol=1e-6, atol=0)


def test_contraction_hinge_is_zero_on_a_contraction_and_pushes_an_expansive_map_back():
    f = Affine([0.5, 0.7, 0.8], 8, seed=21)
    torch.manual_seed(22)
    # every radius below the target: exactly zero, and so is its gradient
    A = f.A.clone().requires_grad_(True)
    g = lambda z: torch.bmm(A, z[:, :, None])[:, :, 0] + f.b  # noqa: E731
    loss = contraction_hinge(g, f.x0(), target=0.9, iters=50)
    loss.backward()
    assert loss.item() == 0.0 and A.grad.abs().max() == 0
    # radii 0.5 and 1.2 against a target of 0.9: the mean of max(0, rho - 0.9)^2 = 0.3^2 / 2
    f2 = Affine([0.5, 1.2], 8, seed=23)
    A2 = f2.A.clone().requires_grad_(True)
    g2 = lambda z: torch.bmm(A2, z[:, :, None])[:, :, 0] + f2.b  # noqa: E731
    loss = contraction_hinge(g2, f2.x0(), target=0.9, iters=300)
    torch.testing.assert_close(loss, torch.tensor(0.09 / 2, dtype=F64), rtol=1e-6, atol=0)
    # a gradient step on it lowers the expansive sample's radius and leaves the contractive one as it was
    loss.backward()
    assert A2.grad[0].abs().max() == 0
    with torch.no_grad():
        stepped = A2 - 0.5 * A2.grad
    eig = torch.linalg.eigvalsh(stepped).abs().amax(dim=1)
    assert eig[1] < 1.2 - 1e-3 and abs(eig[0].item() - 0.5) < 1e-12
