"""Tests for reasoners.optim: each checks against an independent oracle or a property."""

import io
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from reasoners.optim import EMA, AdamATan2, SparseSignSGD, build_optimizer, lr_at

# ----------------------------------------------------------------------------------------------
# AdamATan2


class _NumpyAdamATan2:
    """The update of the adam-atan2 package, element by element in float64 numpy (the oracle)."""

    def __init__(self, p, beta1, beta2, wd):
        self.p = np.array(p, dtype=np.float64)
        self.m = np.zeros_like(self.p)
        self.v = np.zeros_like(self.p)
        self.t = 0
        self.beta1, self.beta2, self.wd = beta1, beta2, wd

    def step(self, g, lr):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        self.p = self.p * (1 - lr * self.wd)
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        self.p = self.p - lr * np.arctan2(m_hat, np.sqrt(v_hat))


def _run_groups(n_steps, grad_scale=1.0, lr_as_tensor=False, seed=0):
    """Three float64 tensors in two groups; returns the optimiser's and the oracle's parameters."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    params = [nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]
    settings = [dict(betas=(0.9, 0.95), weight_decay=1.0), dict(betas=(0.8, 0.99), weight_decay=0.3)]
    opt = AdamATan2(
        [
            {"params": params[:2], **settings[0]},
            {"params": params[2:], **settings[1]},
        ],
        lr=0.0,
    )
    oracles = [
        _NumpyAdamATan2(p.detach().numpy(), *settings[0]["betas"], settings[0]["weight_decay"])
        for p in params[:2]
    ]
    oracles.append(
        _NumpyAdamATan2(params[2].detach().numpy(), *settings[1]["betas"], settings[1]["weight_decay"])
    )
    group_of = [0, 0, 1]
    for step in range(n_steps):
        lrs = [1e-2 * (1 + step), 3e-3 / (1 + step)]  # the LR changes between steps
        for group, lr in zip(opt.param_groups, lrs, strict=True):
            group["lr"] = torch.tensor(lr, dtype=torch.float64) if lr_as_tensor else lr
        for i, p in enumerate(params):
            # Parameter 1 gets no gradient on step 2: skipped (no decay, its step count stays).
            if i == 1 and step == 2:
                p.grad = None
                continue
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64) * grad_scale
            p.grad = g
            oracles[i].step(g.numpy(), lrs[group_of[i]])
        opt.step()
    return [p.detach().numpy() for p in params], [o.p for o in oracles], opt


def test_adam_atan2_matches_reference_formula():
    got, want, opt = _run_groups(n_steps=6)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)
    assert [opt.state[p]["step"] for p in opt.param_groups[0]["params"]] == [6, 5]


def test_adam_atan2_lr_as_zero_dim_tensor():
    got, want, _ = _run_groups(n_steps=4, lr_as_tensor=True)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)


def test_adam_atan2_differs_from_adamw():
    # Same betas and decay: AdamW's m/(sqrt(v)+eps) is not atan2(m, sqrt(v)); on the first step the
    # ratio is exactly +-1, so AdamW moves by lr and AdamATan2 by lr * pi/4.
    torch.manual_seed(0)
    p0 = torch.randn(10, dtype=torch.float64)
    g = torch.randn(10, dtype=torch.float64)
    results = {}
    for name in ("adam_atan2", "adamw"):
        p = nn.Parameter(p0.clone())
        opt = build_optimizer(name, [p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.0)
        p.grad = g.clone()
        opt.step()
        results[name] = p.detach()
    torch.testing.assert_close(results["adam_atan2"], p0 - 0.1 * math.pi / 4 * g.sign(), rtol=0, atol=1e-15)
    torch.testing.assert_close(results["adamw"], p0 - 0.1 * g.sign(), rtol=0, atol=1e-7)


def test_adam_atan2_has_no_eps():
    # atan2 is scale-invariant: gradients 1e-20 times smaller give the same trajectory. With any eps
    # (Adam's 1e-8) tiny gradients would be damped to almost no movement.
    got, _, _ = _run_groups(n_steps=5)
    tiny, _, _ = _run_groups(n_steps=5, grad_scale=1e-20)
    for a, b in zip(got, tiny, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    p = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = AdamATan2([p], lr=0.01, weight_decay=0.0)
    p.grad = torch.tensor([1e-30, -1e-30, 0.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(
        p.detach(), torch.tensor([-0.01 * math.pi / 4, 0.01 * math.pi / 4, 0.0]).double()
    )


def _train_model(opt_state=None, model_state=None, steps=(0, 8), seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    if model_state is not None:
        model.load_state_dict(model_state)
    opt = AdamATan2(model.parameters(), lr=0.0, weight_decay=0.5)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    data = torch.Generator().manual_seed(123)
    batches = [torch.randn(16, 4, generator=data, dtype=torch.float64) for _ in range(steps[1])]
    for step in range(steps[0], steps[1]):
        for group in opt.param_groups:
            group["lr"] = lr_at(step + 1, 0.05, warmup_steps=3, total_steps=8, min_ratio=0.2)
        opt.zero_grad()
        model(batches[step]).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_adam_atan2_state_dict_round_trip_resumes_exactly():
    full, _ = _train_model(steps=(0, 8))
    first, opt = _train_model(steps=(0, 3))
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    resumed, opt2 = _train_model(opt_state=ckpt["opt"], model_state=ckpt["model"], steps=(3, 8), seed=1)
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(s["step"] == 8 for s in opt2.state.values())


def test_adam_atan2_bf16_updates_in_float32():
    torch.manual_seed(0)
    p32 = torch.randn(64)
    g = torch.randn(64)
    p = nn.Parameter(p32.bfloat16())
    opt = AdamATan2([p], lr=1e-2, weight_decay=1.0)
    p.grad = g.bfloat16()
    opt.step()
    oracle = _NumpyAdamATan2(p32.bfloat16().double().numpy(), 0.9, 0.95, 1.0)
    oracle.step(g.bfloat16().double().numpy(), 1e-2)
    want = torch.from_numpy(oracle.p).bfloat16()
    assert p.dtype == torch.bfloat16 and opt.state[p]["exp_avg"].dtype == torch.bfloat16
    # One bf16 rounding of the float32 result: within half an ulp of the float64 oracle, rounded.
    torch.testing.assert_close(p.detach().float(), want.float(), rtol=2**-8, atol=0)


def test_adam_atan2_rejects_bad_arguments():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError):
        AdamATan2(p, lr=-1.0)
    with pytest.raises(ValueError):
        AdamATan2(p, lr=1e-3, betas=(1.0, 0.9))
    with pytest.raises(ValueError):
        AdamATan2(p, lr=1e-3, weight_decay=-0.1)


@pytest.mark.parametrize("name", ["adam_atan2", "adamw"])
def test_build_optimizer_applies_lr_betas_and_decay_by_name(name):
    """Two steps by hand: decoupled decay p *= 1 - lr * wd, then Adam's bias-corrected moments with
    the given betas; AdamATan2 moves by lr * atan2(m_hat, sqrt(v_hat)), AdamW by lr * m_hat /
    (sqrt(v_hat) + 1e-8). Distinct betas, lr and decay so that a dropped argument shows."""
    lr, (b1, b2), wd = 0.1, (0.5, 0.8), 0.3
    p0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    grads = [
        torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64),
        torch.tensor([-0.2, 0.4, 1.0], dtype=torch.float64),
    ]
    p = nn.Parameter(p0.clone())
    opt = build_optimizer(name, [p], lr=lr, betas=(b1, b2), weight_decay=wd)
    want, m, v = p0.clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        move = torch.atan2(m_hat, v_hat.sqrt()) if name == "adam_atan2" else m_hat / (v_hat.sqrt() + 1e-8)
        want = want * (1 - lr * wd) - lr * move
    torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-12)


def test_build_optimizer_refuses_unknown_names():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        build_optimizer("sgd", p, lr=1e-3)


# ----------------------------------------------------------------------------------------------
# Sparse sign-SGD for the puzzle-embedding table


def test_sign_sgd_hand_computed_example():
    table = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], dtype=torch.float64)
    opt = SparseSignSGD(table, lr=0.5, weight_decay=0.1)  # decay factor 1 - 0.05 = 0.95
    ids = torch.tensor([2, 0, 2])
    grads = torch.tensor([[1.0, -2.0], [0.0, 3.0], [-3.0, 1.0]], dtype=torch.float64)
    opt.step(ids, grads)
    # Row 2: summed gradient (-2, -1) -> sign (-1, -1); per-entry signs would cancel to (0, 0).
    # Row 0: gradient (0, 3) -> sign (0, 1): the first entry only decays.
    want = torch.tensor([[0.95, 1.4], [3.0, 4.0], [5.25, 6.2], [7.0, 8.0]], dtype=torch.float64)
    torch.testing.assert_close(table, want, rtol=0, atol=1e-15)


def _sign_sgd_oracle(table, ids, grads, lr, wd):
    out = table.clone()
    for i in sorted(set(ids.tolist())):
        g = sum(grads[k] for k in range(len(ids)) if ids[k] == i)
        out[i] = table[i] * (1 - lr * wd) - lr * torch.sign(g)
    return out


def test_sign_sgd_random_against_oracle_and_untouched_rows():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    before = table.clone()
    opt = SparseSignSGD(table, lr=0.0, weight_decay=1.0)
    ids = torch.randint(0, 50, (40,), generator=gen)
    assert len(set(ids.tolist())) < 40  # duplicates present
    grads = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    opt.param_groups[0]["lr"] = torch.tensor(0.01, dtype=torch.float64)  # set as the trainer does
    opt.step(ids, grads)
    torch.testing.assert_close(table, _sign_sgd_oracle(before, ids, grads, 0.01, 1.0), rtol=0, atol=1e-15)
    unused = sorted(set(range(50)) - set(ids.tolist()))
    assert torch.equal(table[unused], before[unused])  # neither moved nor decayed


def test_sign_sgd_state_dict_and_bad_input():
    table = torch.zeros(3, 2)
    opt = SparseSignSGD(table, lr=0.1, weight_decay=0.2)
    opt.param_groups[0]["lr"] = 0.7
    other = SparseSignSGD(torch.zeros(3, 2), lr=0.0, weight_decay=0.0)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups[0]["lr"] == 0.7 and other.param_groups[0]["weight_decay"] == 0.2
    with pytest.raises(ValueError):
        opt.step(torch.tensor([0, 1]), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        opt.step(torch.tensor([0.0, 1.0]), torch.zeros(2, 2))
    with pytest.raises(ValueError):
        SparseSignSGD(torch.zeros(3), lr=0.1)
    with pytest.raises(RuntimeError, match="not initialised"):
        SparseSignSGD(table, lr=0.1, process_group=object()).step(torch.tensor([0]), torch.zeros(1, 2))


def _sign_sgd_worker(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        table = torch.arange(12, dtype=torch.float64).reshape(6, 2)
        opt = SparseSignSGD(table, lr=0.5, weight_decay=0.1)
        # Rank 0 pushes row 1 up, rank 1 pushes it down harder: only the gathered sum decides.
        ids = [torch.tensor([1, 3]), torch.tensor([1, 4])][rank]
        grads = [torch.tensor([[1.0, -1.0], [2.0, 2.0]]), torch.tensor([[-3.0, -1.0], [0.0, -5.0]])][rank]
        opt.step(ids, grads.double())
        torch.save(table, f"{out_dir}/table{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_sign_sgd_all_gathers_over_ranks(tmp_path):
    mp.spawn(_sign_sgd_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"table{rank}.pt", weights_only=True) for rank in range(2)]
    table = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    ids = torch.tensor([1, 3, 1, 4])
    grads = torch.tensor([[1.0, -1.0], [2.0, 2.0], [-3.0, -1.0], [0.0, -5.0]], dtype=torch.float64)
    want = _sign_sgd_oracle(table, ids, grads, 0.5, 0.1)
    assert torch.equal(results[0], results[1])
    torch.testing.assert_close(results[0], want, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# LR schedule


def test_lr_at_warmup_then_constant():
    assert lr_at(0, 1e-4, 2000, 65000) == 0.0
    assert lr_at(1, 1e-4, 2000, 65000) == pytest.approx(1e-4 / 2000, rel=1e-15)
    assert lr_at(1000, 1e-4, 2000, 65000) == pytest.approx(5e-5, rel=1e-15)
    assert lr_at(2000, 1e-4, 2000, 65000) == pytest.approx(1e-4, rel=1e-15)
    assert lr_at(40000, 1e-4, 2000, 65000) == pytest.approx(1e-4, rel=1e-15)


def test_lr_at_cosine_with_min_ratio():
    # warmup 10, total 110: progress 0.5 at step 60 -> 0.1 + 0.9 * 0.5; the floor at and after 110.
    assert lr_at(10, 2.0, 10, 110, min_ratio=0.1) == pytest.approx(2.0, rel=1e-15)
    assert lr_at(60, 2.0, 10, 110, min_ratio=0.1) == pytest.approx(2.0 * 0.55, rel=1e-15)
    assert lr_at(35, 2.0, 10, 110, min_ratio=0.1) == pytest.approx(
        2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))), rel=1e-15
    )
    assert lr_at(110, 2.0, 10, 110, min_ratio=0.1) == pytest.approx(0.2, rel=1e-15)
    assert lr_at(200, 2.0, 10, 110, min_ratio=0.1) == pytest.approx(0.2, rel=1e-15)
    assert lr_at(0, 2.0, 0, 110, min_ratio=0.1) == pytest.approx(2.0, rel=1e-15)  # no warmup


def test_lr_at_rejects_bad_arguments():
    with pytest.raises(ValueError):
        lr_at(-1, 1.0, 10, 100)
    with pytest.raises(ValueError):
        lr_at(5, 1.0, 10, 100, min_ratio=1.5)


# ----------------------------------------------------------------------------------------------
# EMA


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.frozen = nn.Parameter(torch.ones(2, dtype=torch.float64), requires_grad=False)
        self.register_buffer("table", torch.zeros(4, 2, dtype=torch.float64))


def test_ema_closed_form():
    decay, n = 0.9, 7
    model = _Tiny()
    thetas = [torch.tensor([k, -2.0 * k, k * k], dtype=torch.float64) for k in range(n + 1)]
    with torch.no_grad():
        model.w.copy_(thetas[0])
    ema = EMA(model, decay=decay)  # starts at theta_0
    for k in range(1, n + 1):
        with torch.no_grad():
            model.w.copy_(thetas[k])
        ema.update(model)
    want = decay**n * thetas[0] + (1 - decay) * sum(decay ** (n - k) * thetas[k] for k in range(1, n + 1))
    torch.testing.assert_close(ema.shadow["w"], want, rtol=0, atol=1e-12)
    assert set(ema.shadow) == {"w"}  # frozen parameters and buffers are not averaged


def test_ema_copy_swap_and_restore():
    model = _Tiny()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.w.fill_(4.0)
        model.table.fill_(7.0)
        model.frozen.fill_(3.0)
    ema.update(model)  # shadow w = 0.5 * 0 + 0.5 * 4 = 2
    live = model.w.detach().clone()

    copy = ema.ema_copy(model)
    assert torch.equal(copy.w, torch.full((3,), 2.0, dtype=torch.float64))
    assert torch.equal(copy.table, model.table) and torch.equal(copy.frozen, model.frozen)  # live values
    assert torch.equal(model.w, live)  # the original is untouched

    with ema.swapped_in(model) as m:
        assert m is model and torch.equal(model.w, torch.full((3,), 2.0, dtype=torch.float64))
    assert torch.equal(model.w, live)

    ema.copy_to(model)
    assert torch.equal(model.w, ema.shadow["w"])


def test_ema_state_dict_round_trip_and_wrappers():
    model = _Tiny()
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.w.add_(1.0)
    ema.update(nn.DataParallel(model))  # a wrapper is looked through: same names
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    other = EMA(_Tiny(), decay=0.5)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.decay == 0.99 and torch.equal(other.shadow["w"].cpu(), ema.shadow["w"].cpu())
    with pytest.raises(ValueError, match="unexpected"):
        ema.update(nn.Linear(2, 2))
    with pytest.raises(ValueError):
        EMA(model, decay=1.5)


# ----------------------------------------------------------------------------------------------
# Same results on CUDA (runs only where a GPU is present)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    p_cpu = nn.Parameter(torch.randn(100, dtype=torch.float64))
    p_gpu = nn.Parameter(p_cpu.detach().cuda())
    opts = [AdamATan2([p], lr=1e-2, weight_decay=1.0) for p in (p_cpu, p_gpu)]
    for step in range(5):
        g = torch.randn(100, dtype=torch.float64)
        p_cpu.grad, p_gpu.grad = g, g.cuda()
        opts[1].param_groups[0]["lr"] = torch.tensor(1e-2 / (step + 1), device="cuda", dtype=torch.float64)
        opts[0].param_groups[0]["lr"] = 1e-2 / (step + 1)
        for o in opts:
            o.step()
    torch.testing.assert_close(p_gpu.detach().cpu(), p_cpu.detach(), rtol=0, atol=1e-12)

    table = torch.randn(20, 4, dtype=torch.float64)
    table_gpu = table.cuda()
    ids = torch.randint(0, 20, (30,))
    grads = torch.randn(30, 4, dtype=torch.float64)
    SparseSignSGD(table, lr=0.1, weight_decay=1.0).step(ids, grads)
    SparseSignSGD(table_gpu, lr=0.1, weight_decay=1.0).step(ids.cuda(), grads.cuda())
    torch.testing.assert_close(table_gpu.cpu(), table, rtol=0, atol=1e-15)

    # An EMA made before the model moves to the GPU follows it there.
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.5)
    model.cuda()
    ema.update(model)
    assert all(v.is_cuda for v in ema.shadow.values())
