"""Test maps with known answers for the solvers tests: affine maps with a chosen spectrum (solution by a
dense solve) and a small contractive nonlinear map with parameters and an injected input."""

from __future__ import annotations

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Affine:
    """f(x) = A x + b per sample, A symmetric with eigenvalues rho_i * linspace(-1, 1, D), so the
    spectral radius of sample i is exactly rho_i and x* = (I - A)^-1 b."""

    def __init__(self, rhos, D, *, seed=0, dtype=torch.float64, device="cpu"):
        gen = torch.Generator().manual_seed(seed)
        B = len(rhos)
        Q, _ = torch.linalg.qr(torch.randn(B, D, D, generator=gen, dtype=torch.float64))
        eig = torch.tensor(rhos, dtype=torch.float64)[:, None] * torch.linspace(-1, 1, D, dtype=torch.float64)
        A = Q @ torch.diag_embed(eig) @ Q.transpose(1, 2)  # (B, D, D)
        b = torch.randn(B, D, generator=gen, dtype=torch.float64) + 1.0  # (B, D), solution far from 0
        x_star = torch.linalg.solve(torch.eye(D, dtype=torch.float64) - A, b)  # (B, D), the oracle
        self.A, self.b, self.x_star = (t.to(device=device, dtype=dtype) for t in (A, b, x_star))

    def __call__(self, x):
        return torch.bmm(self.A, x[:, :, None])[:, :, 0] + self.b

    def x0(self):
        return torch.zeros_like(self.b)


class TanhMap:
    """f(z) = tanh(z W^T + x_in U^T + c): parameters W, U, c and an injected input x_in; contractive when
    ||W||_2 < 1 (tanh is 1-Lipschitz). Used to check gradients reach parameters and inputs."""

    def __init__(self, B, D, *, w_norm=0.5, seed=0, dtype=torch.float64, device="cpu"):
        gen = torch.Generator().manual_seed(seed)
        W = torch.randn(D, D, generator=gen, dtype=torch.float64)
        W = w_norm * W / torch.linalg.matrix_norm(W, ord=2)
        U = torch.randn(D, D, generator=gen, dtype=torch.float64) / D**0.5
        c = 0.1 * torch.randn(D, generator=gen, dtype=torch.float64)
        x_in = torch.randn(B, D, generator=gen, dtype=torch.float64)
        self.W, self.U, self.c, self.x_in = (
            t.to(device=device, dtype=dtype).requires_grad_(True) for t in (W, U, c, x_in)
        )

    def params(self):
        return [self.W, self.U, self.c, self.x_in]

    def bind(self, W, U, c, x_in):
        return lambda z: torch.tanh(z @ W.T + x_in @ U.T + c)

    def __call__(self, z):
        return self.bind(*self.params())(z)
