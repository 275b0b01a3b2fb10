"""The same reasoners on a GPU: fp32 matches CPU, bf16 autocast runs with fp32 states. Skipped
without CUDA (nothing in the reasoners assumes a device; see test_no_device_assumptions_in_source)."""

from __future__ import annotations

import copy

import pytest
import torch

from reasoners.presets import PRESETS, build
from reasoners.supervision import Carry, initial_carry, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def batch(device, B=4):
    g = torch.Generator().manual_seed(0)
    b = {
        "inputs": torch.randint(1, 11, (B, 81), generator=g),
        "labels": torch.randint(2, 11, (B, 81), generator=g),
        "puzzle_identifiers": torch.zeros(B, dtype=torch.int32),
    }
    return {k: v.to(device) for k, v in b.items()}


@pytest.mark.parametrize("model", list(PRESETS))
def test_cuda_fp32_step_matches_cpu(model):
    torch.manual_seed(0)
    cpu = build(model, "tiny").eval()
    random_init = cpu.random_init  # EqR: a random initial state and noise, drawn from other streams
    if random_init:
        cpu.config.noise_std = 0.0
        state0 = cpu.initial_state(4)  # drawn once on the CPU, given to both
    gpu = copy.deepcopy(cpu).to("cuda")
    results = []
    for net, device in ((cpu, "cpu"), (gpu, "cuda")):
        b = batch(device)
        carry = initial_carry(net, b)
        if random_init:  # start from state0, no slot to reset
            state = type(state0)(*(t.to(device) for t in state0))
            carry = Carry(state, carry.steps, torch.zeros_like(carry.halted), dict(b))
        with torch.no_grad():
            for _ in range(2):
                carry, loss, _, out = train_step(net, carry, b)
        results.append((out["logits"].float().cpu(), carry.state[0].cpu()))
    (l_cpu, s_cpu), (l_gpu, s_gpu) = results
    assert (l_gpu - l_cpu).norm() <= 1e-4 * l_cpu.norm()
    assert (s_gpu - s_cpu).norm() <= 1e-4 * s_cpu.norm()


@pytest.mark.parametrize("model", list(PRESETS))
def test_cuda_bf16_autocast_trains_with_fp32_state(model):
    torch.manual_seed(0)
    net = build(model, "tiny").to("cuda").train()
    b = batch("cuda")
    carry = initial_carry(net, b)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        carry, loss, _, out = train_step(net, carry, b)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(s.dtype == torch.float32 for s in carry.state)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
