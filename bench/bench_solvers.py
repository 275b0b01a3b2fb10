"""Benchmarks for solvers/: Anderson vs plain iteration, and backward memory of the gradient ops.

    python bench/bench_solvers.py                 # cuda if available, else cpu
    python bench/bench_solvers.py --device cpu --threads 1 --quick

1. Steps and wall time to a relative tolerance, Anderson (m=5) vs plain iteration, on affine maps with a
   known spectral radius and on a TRM-style (y, z) map built from a small post-norm transformer block.
2. Memory of one training step (no-grad forward solve with max_iter evaluations, then the gradient op,
   then backward) as max_iter grows from 8 to 64: phantom_grad(k=3) and neumann_grad(k=3) must stay
   flat (ratio <= 1.05), backprop through the unrolled iterations grows linearly. Measured as the bytes
   of the distinct storages autograd saves for backward (deterministic, any device), and on CUDA also as
   the peak of torch.cuda.max_memory_allocated over the whole step, above what was allocated before.

3. A straggler: with ``rows=True`` a batch whose rows have all converged but one should cost, per further
   iteration, what that row costs solved alone (the ratio is 1 at best). One slow row (an affine map
   with rho 0.999, never converging within the budget) among B - 1 that converge at once, Anderson with
   restarts, D the laptop Attractor's state size; per-iteration time = (time at max_iter 48 - at 2) / 46.

Timings are the best of a few repeats; on a shared CPU they are noisy, the step counts are not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from solvers import SavedTensorBytes, anderson, fixed_point_iter, neumann_grad, phantom_grad  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    fn()  # warm-up (allocator, kernels)
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return out, min(times)  # best of N: the least disturbed by other load on a shared machine


class AffineMap:
    """f(x) = x A^T + b with A symmetric, eigenvalues rho * linspace(-1, 1, D)."""

    def __init__(self, rho, B, D, device, seed=0):
        gen = torch.Generator().manual_seed(seed)
        Q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
        A = Q @ torch.diag(rho * torch.linspace(-1, 1, D, dtype=torch.float64)) @ Q.T
        self.A = A.float().to(device)
        self.b = torch.randn(B, D, generator=gen).to(device) + 1.0

    def __call__(self, x):
        return x @ self.A.T + self.b


def rms_norm(h, eps=1e-5):
    return h * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + eps).to(h.dtype)


class PostNormBlock(nn.Module):
    """h = rms(u + attn(u)); out = rms(h + mlp(h)): the TRM block shape, small."""

    def __init__(self, d, heads, expansion=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.up = nn.Linear(d, 2 * expansion * d, bias=False)
        self.down = nn.Linear(expansion * d, d, bias=False)

    def forward(self, u):  # (B, L, d)
        B, L, d = u.shape
        q, k, v = self.qkv(u).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, heads, L, d/heads)
        h = rms_norm(u + self.proj(a.transpose(1, 2).reshape(B, L, d)))
        gate, up = self.up(h).chunk(2, dim=-1)
        return rms_norm(h + self.down(nn.functional.silu(gate) * up))


class TRMMap(nn.Module):
    """S = (y, z) -> (net(y + z'), z') with z' = net(z + y + x): the Attractor's joint map."""

    def __init__(self, B, L, d, heads, device, seed=0, autocast=False):
        super().__init__()
        torch.manual_seed(seed)
        self.net = PostNormBlock(d, heads).to(device)
        # A gentle init keeps the map contractive enough for plain iteration to converge at all.
        with torch.no_grad():
            for p in self.net.parameters():
                p.mul_(0.5)
        self.x = torch.randn(B, L, d, device=device)
        self.autocast = autocast
        self.device = device

    def forward(self, state):
        y, z = state
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            z_new = self.net(z + y + self.x)
            return self.net(y + z_new), z_new

    def init_state(self):
        return torch.zeros_like(self.x), torch.zeros_like(self.x)


def steps_and_time(name, f, x0, tol, max_iter, device, repeats, rows, m=5):
    (_, plain), t_plain = timed(lambda: fixed_point_iter(f, x0, max_iter=max_iter, tol=tol), device, repeats)
    (_, acc), t_acc = timed(lambda: anderson(f, x0, m=m, max_iter=max_iter, tol=tol), device, repeats)

    def steps(info):
        return f"{info.nstep}" + ("" if bool(info.converged.all()) else " (not converged)")

    rows.append(
        f"| {name} | {tol:g} | {m} | {steps(plain)} | {steps(acc)} | {acc.nstep / plain.nstep:.3f} "
        f"| {t_plain * 1e3:.1f} | {t_acc * 1e3:.1f} | {t_acc / t_plain:.3f} |"
    )


def bench_steps(device, quick, repeats):
    rows = [
        "| map | tol | m | plain steps | Anderson steps | step ratio | plain ms | Anderson ms | time ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    B, D = (16, 64) if quick else (64, 256)
    x0 = torch.zeros(B, D, device=device)
    for rho in (0.5, 0.9, 0.99):
        f = AffineMap(rho, B, D, device)
        steps_and_time(f"affine rho={rho}, B={B}, D={D}", f, x0, 1e-5, 5000, device, repeats, rows)
    # A dense spectrum on [-0.99, 0.99] needs a longer memory to stay under a fifth of plain's steps.
    steps_and_time(f"affine rho=0.99, B={B}, D={D}", f, x0, 1e-5, 5000, device, repeats, rows, m=10)
    B, L, d = (4, 16, 64) if quick else (32, 81, 128)
    trm = TRMMap(B, L, d, 4, device)
    with torch.no_grad():
        steps_and_time(
            f"TRM block (y, z), B={B}, L={L}, d={d}", trm, trm.init_state(), 1e-4, 500, device, repeats, rows
        )
        if device.type == "cuda":
            trm.autocast = True
            steps_and_time(
                f"same, bf16 autocast, B={B}, L={L}, d={d}",
                trm,
                trm.init_state(),
                1e-2,
                500,
                device,
                repeats,
                rows,
            )
    return rows


def step_memory(kind, max_iter, model: TRMMap, device):
    """Bytes saved for backward, and CUDA peak above the starting allocation, for one training step."""
    for p in model.parameters():
        p.grad = None
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
    with SavedTensorBytes() as meter:
        if kind == "unrolled backprop":
            state = model.init_state()
            for _ in range(max_iter):
                state = model(state)
        else:
            s_star, _ = anderson(model, model.init_state(), max_iter=max_iter, tol=0.0)
            op = phantom_grad if kind == "phantom_grad(k=3)" else neumann_grad
            state = op(model, s_star, k=3, tau=0.5)
    saved = meter.bytes
    loss = sum(s.float().pow(2).mean() for s in state)
    loss.backward()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - start if device.type == "cuda" else None
    return saved, peak


def bench_memory(device, quick):
    B, L, d = (4, 16, 64) if quick else (16, 81, 128)
    model = TRMMap(B, L, d, 4, device)
    iters = (8, 16, 32, 64)
    rows = [
        "| gradient | " + " | ".join(f"max_iter={n}" for n in iters) + " | ratio 64/8 | flat (<= 1.05) |",
        "|---|" + "---|" * (len(iters) + 2),
    ]
    for kind in ("phantom_grad(k=3)", "neumann_grad(k=3)", "unrolled backprop"):
        results = [step_memory(kind, n, model, device) for n in iters]
        for label, idx in (("saved MiB", 0), ("CUDA peak MiB", 1)):
            values = [r[idx] for r in results]
            if values[0] is None:
                continue
            ratio = values[-1] / values[0]
            flat = "yes" if ratio <= 1.05 else "no"
            cells = " | ".join(f"{v / 2**20:.2f}" for v in values)
            rows.append(f"| {kind}, {label} | {cells} | {ratio:.2f} | {flat} |")
    return rows, (B, L, d)


def bench_straggler(device, quick: bool, repeats: int) -> list[str]:
    """Per-iteration cost of one active row in a batch of B (``rows=True``) against that row alone."""
    D = 2 * 37 * 64  # the laptop Attractor-MLP's (y, z) state: 2 x (36 cells + 1 prefix) x d 64
    gen = torch.Generator().manual_seed(0)
    rows_out = ["| batch | per further iteration, one row active in the batch | the row alone | ratio |"]
    rows_out.append("|---:|---:|---:|---:|")
    for B in (16, 64) if quick else (16, 64, 256):
        target = torch.randn(B, D, generator=gen).to(device)
        x0 = torch.randn(B, D, generator=gen).to(device)

        def f(x, rows=None, target=target):
            r = torch.arange(target.shape[0], device=device) if rows is None else rows
            out = target[r].clone()  # every row but row 0 is at its fixed point after one step
            slow = r == 0
            out[slow] = 0.999 * x[slow]
            return out

        def solve(x0, f, n):
            return lambda: anderson(f, x0, max_iter=n, tol=1e-3, min_iter=1, rows=True, restart=1.0)

        one = x0[:1].clone()
        per = []
        for start, fn in ((x0, f), (one, lambda x, rows=None: 0.999 * x)):
            _, t_long = timed(solve(start, fn, 48), device, repeats)
            _, t_short = timed(solve(start, fn, 2), device, repeats)
            per.append((t_long - t_short) / 46)
        rows_out.append(f"| {B} | {per[0] * 1e3:.3f} ms | {per[1] * 1e3:.3f} ms | {per[0] / per[1]:.2f} |")
    return rows_out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(f"# solvers benchmark on {name}, torch {torch.__version__}\n")
    print("## Steps and wall time to tolerance (fp32 state; Anderson lam=1e-4, beta=1)\n")
    print("\n".join(bench_steps(device, args.quick, args.repeats)))
    rows, (B, L, d) = bench_memory(device, args.quick)
    print(
        f"\n## Memory of one training step on the TRM-block map (B={B}, L={L}, d={d}) vs forward max_iter\n"
    )
    print("\n".join(rows))
    print("\n## One straggler: a batch with one active row against that row alone (Anderson, restarts)\n")
    print("\n".join(bench_straggler(device, args.quick, args.repeats)))


if __name__ == "__main__":
    main()
