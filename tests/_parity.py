"""Replaying the reference's recorded supervision calls through gridloop's reasoners.

Shared by ``tests/test_reasoners_parity.py`` (which asserts) and ``bench/parity_spread.py`` (which
measures the spread of the same comparisons across kernel paths and thread counts).

Every call is replayed from the carry the reference had *before* that call (teacher forcing) with the
reference's RNG state, so an error cannot compound from one call into the next and the comparison
stays as sharp as the arithmetic allows. The RNG state is what makes EqR replayable: its random
resets and its recursion noise (in training and in evaluation) are drawn from the global generator
in the reference's order, so every training and evaluation call of an EqR fixture restores the state
recorded before it. :func:`compare_case` returns every comparison as a
:class:`Check`; ``Check.rel`` is ``||ours - ref|| / ||ref||`` for floats, and exact comparisons
(halting, step counts, the carried puzzles, dtypes) are ``exact`` checks that hold or fail.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reasoners.compat import config_from_reference, load_reference_state_dict, map_reference_key
from reasoners.eqr import EqR
from reasoners.hrm import HRM
from reasoners.supervision import Carry, train_step
from reasoners.trm import TRM

FIXTURES = Path(__file__).parent / "fixtures"
# (fixture file, reasoner kind); the float32 fixture repeats TRM-attention in the dtype users train in
CASES = [
    ("trm_attention_sudoku", "trm"),
    ("trm_mlp_maze", "trm"),
    ("hrm_sudoku", "hrm"),
    ("trm_attention_sudoku_fp32", "trm"),
    ("eqr_mlp_sudoku_fp64", "eqr"),
    ("eqr_attention_maze_fp64", "eqr"),
    ("eqr_mlp_sudoku", "eqr"),
    ("eqr_attention_maze", "eqr"),
]
REASONERS = {"trm": TRM, "hrm": HRM, "eqr": EqR}


@dataclass
class Check:
    what: str
    rel: float = 0.0  # norm-relative error (float comparisons)
    ok: bool = True  # exact comparisons
    exact: bool = False
    absmax: float = 0.0  # largest elementwise |ours - ref| (float comparisons)

    def passes(self, rtol: float) -> bool:
        return self.ok if self.exact else self.rel <= rtol


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def build(fx: dict, kind: str) -> torch.nn.Module:
    """gridloop's reasoner with the reference's weights, in the fixture's dtype."""
    model = REASONERS[kind](config_from_reference(kind, fx["config"]))
    load_reference_state_dict(model, kind, fx["weights"])
    return model.double() if fx["dtype"] == "float64" else model


def sketch(name: str, t: torch.Tensor, k: int) -> torch.Tensor:
    """``t.flatten() @ R`` with a Gaussian ``R`` seeded by the name (how large tensors were stored)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    R = rng.standard_normal((t.numel(), k))
    return torch.from_numpy(t.detach().double().reshape(-1).cpu().numpy() @ R)


def close(what: str, actual: torch.Tensor, expected: torch.Tensor) -> Check:
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if actual.shape != expected.shape:
        return Check(f"{what} (shape {tuple(actual.shape)} != {tuple(expected.shape)})", float("inf"))
    diff = actual - expected
    return Check(
        what, diff.norm().item() / max(expected.norm().item(), 1e-300), absmax=diff.abs().max().item()
    )


def _carry(kind: str, rec: dict) -> Carry:
    state = REASONERS[kind].State(rec["z_H"].clone(), rec["z_L"].clone())
    batch = {k: v.clone() for k, v in rec["current_data"].items()}
    return Carry(state, rec["steps"].clone(), rec["halted"].clone(), batch)


def _compare_carry(at: str, carry: Carry, rec: dict) -> list[Check]:
    checks = [
        Check(f"{at}: halted", ok=torch.equal(carry.halted, rec["halted"]), exact=True),
        Check(f"{at}: steps", ok=torch.equal(carry.steps, rec["steps"]), exact=True),
    ]
    for key, value in rec["current_data"].items():
        checks.append(Check(f"{at}: carried {key}", ok=torch.equal(carry.batch[key], value), exact=True))
    for ours, ref_name in zip(carry.state, ("z_H", "z_L"), strict=True):
        checks.append(close(f"{at}: carried state {ref_name}", ours, rec[ref_name]))
    return checks


def _compare_outputs(at: str, outputs: dict, ref: dict) -> list[Check]:
    checks = []
    for key in ("logits", "q_halt_logits", "q_continue_logits", "target_q_continue"):
        present = (key in outputs) == (key in ref)
        checks.append(Check(f"{at}: {key} present", ok=present, exact=True))
        if present and key in ref:
            checks.append(close(f"{at}: {key}", outputs[key], ref[key]))
    return checks


def _compare_grads(at: str, model: torch.nn.Module, kind: str, ref: dict, k: int) -> list[Check]:
    params = dict(model.named_parameters())
    checks = []
    for ref_key, ref_norm in ref["grad_norms"].items():
        grad = params[map_reference_key(kind, ref_key)].grad
        if grad is None:
            checks.append(Check(f"{at}: grad of {ref_key} exists", ok=False, exact=True))
            continue
        checks.append(close(f"{at}: |grad| {ref_key}", grad.norm(), ref_norm))
        if ref_key in ref["grads_full"]:
            checks.append(close(f"{at}: grad {ref_key}", grad, ref["grads_full"][ref_key]))
        else:
            checks.append(
                close(f"{at}: grad sketch {ref_key}", sketch(ref_key, grad, k), ref["grads_sketch"][ref_key])
            )
    if model.embed.puzzle is not None:  # EqR has no puzzle embedding
        rows = model.embed.puzzle.batch_rows.grad
        checks.append(close(f"{at}: puzzle rows grad", rows, ref["grads_full"]["puzzle_emb.local_weights"]))
    return checks


def compare_training_calls(
    fx: dict, kind: str, model: torch.nn.Module, stop_rtol: float | None = None
) -> list[Check]:
    """Each recorded training call, replayed from the reference's input carry and RNG state
    (with ``stop_rtol``: stop after the first call with a check failing at that tolerance)."""
    model.train()
    calls = fx["calls"]
    checks = []
    for i, (batch, ref) in enumerate(zip(fx["batches"], calls, strict=True)):
        at = f"call {i}"
        carry = _carry(kind, ref["carry_in"])
        torch.set_rng_state(ref["rng_state"])  # the exploration draws of this call
        model.zero_grad(set_to_none=True)
        carry, loss, metrics, outputs = train_step(model, carry, batch)
        loss.backward()
        checks.append(Check(f"{at}: loss is float64", ok=loss.dtype == torch.float64, exact=True))
        checks.append(close(f"{at}: loss", loss, ref["loss"]))
        checks += _compare_outputs(at, outputs, ref["outputs"])
        for key, value in ref["metrics"].items():
            checks.append(close(f"{at}: metric {key}", metrics[key], value))
        after = calls[i + 1]["carry_in"] if i + 1 < len(calls) else fx["carry_after_calls"]
        checks += _compare_carry(at, carry, after)
        checks += _compare_grads(at, model, kind, ref, fx["sketch_k"])
        if stop_rtol is not None and failures(checks, stop_rtol):
            break
    return checks


@torch.no_grad()
def compare_evaluation(fx: dict, kind: str, model: torch.nn.Module) -> list[Check]:
    """The recorded evaluation run (all slots, ``halt_max_steps`` calls), each call teacher-forced
    (and, where the fixture recorded it, from the reference's RNG state: EqR's resets and noise)."""
    model.eval()
    evals = fx["eval"]
    checks = []
    for i, ref in enumerate(evals):
        at = f"eval call {i}"
        if "rng_state" in ref:
            torch.set_rng_state(ref["rng_state"])
        carry, loss, _, outputs = train_step(model, _carry(kind, ref["carry_in"]), fx["batches"][0])
        checks.append(close(f"{at}: loss", loss, ref["loss"]))
        checks += _compare_outputs(at, outputs, ref["outputs"])
        after = evals[i + 1]["carry_in"] if i + 1 < len(evals) else fx["carry_after_eval"]
        checks += _compare_carry(at, carry, after)
    return checks


def compare_case(fx: dict, kind: str, model: torch.nn.Module, stop_rtol: float | None = None) -> list[Check]:
    """Every check of one fixture (``stop_rtol``: return as soon as a training call fails at it)."""
    checks = compare_training_calls(fx, kind, model, stop_rtol)
    if stop_rtol is not None and failures(checks, stop_rtol):
        return checks
    return checks + compare_evaluation(fx, kind, model)


def failures(checks: list[Check], rtol: float) -> list[str]:
    return [
        c.what if c.exact else f"{c.what}: |diff| / |ref| = {c.rel:.3e} > {rtol:.0e}"
        for c in checks
        if not c.passes(rtol)
    ]
