"""gridloop's TRM and HRM equal the reference code, step for step, gradients included.

How the fixtures in ``tests/fixtures/*.pt`` were recorded (the recording script is deliberately not
in the repository; see also ``tests/fixtures/README.md``):

- Reference: SamsungSAILMontreal/TinyRecursiveModels at commit e7b6871, models imported unchanged
  (``models/recursive_reasoning/trm.py`` ``TinyRecursiveReasoningModel_ACTV1`` and its SDPA copy of
  HRM ``hrm.py`` ``HierarchicalReasoningModel_ACTV1``), each wrapped in
  ``models/losses.py`` ``ACTLossHead(loss_type="stablemax_cross_entropy")``; CPU, float32
  (``forward_dtype="float32"``), no compile, ``torch.set_num_threads(1)``, torch 2.13.
- Configs (stored in each file under ``config``): batch 6, ``halt_max_steps=3``,
  ``halt_exploration_prob=0.5``, 3 puzzle identifiers.
  ``trm_attention_sudoku``: seq 81, vocab 11, d=32, 2 heads, 2 layers, T=3 (H_cycles), n=2
  (L_cycles), RoPE, prefix 16 with a 32-wide puzzle row. ``trm_mlp_maze``: seq 36 (6x6), vocab 6,
  d=16, 2 layers, ``mlp_t=True``, learned positions, T=2, n=3, prefix 4 with a 24-wide (padded)
  puzzle row. ``hrm_sudoku``: seq 81, d=16, 2 heads, H_layers=L_layers=1, H_cycles=2, L_cycles=3,
  prefix 1.
- ``torch.manual_seed(seed)`` before building; then, because the stock init makes every q-logit
  exactly -5 and the puzzle table zero (nothing would halt, nothing reach the table), the q head
  weight was redrawn ~ N(0, 1/d), its bias ~ N(0, 0.25) (HRM: fixed [0.5, -0.5]) and the puzzle
  table ~ N(0, 1). The persistent state dict after that is ``weights``.
- Three batches of random tokens (20% of labels -100, one row with no label, one with a single
  label, random puzzle ids) were fed through three consecutive training-mode calls sharing the
  carry, after ``torch.manual_seed(explore_seed)`` (exploration draws ``rand_like`` then
  ``randint_like`` from the global generator; no other call consumes it). After each call,
  ``loss.backward()`` on the returned (summed, float64) loss; recorded: loss, metrics, logits,
  q-logits, the bootstrapped q-continue target (HRM), halted flags, steps, the carried puzzle data,
  and every parameter gradient (plus the puzzle rows' gradient, which the reference keeps on the
  non-persistent ``local_weights`` buffer; grads were cleared between calls).
- Gradients with at most 1024 entries are stored in full; larger ones (and the carried states) as a
  64-column Gaussian sketch ``g.flatten() @ R`` with ``R = numpy.random.default_rng(crc32(name))
  .standard_normal((numel, 64))`` (float64) plus the exact norm, to keep the files ~1.2 MB. A sketch
  is a norm-relative check up to a factor ~1 (Johnson-Lindenstrauss), so permuted or wrong entries
  fail it.
- Then an evaluation-mode run on batch 0 from a fresh carry for ``halt_max_steps`` calls: the last
  logits and the halted flags of every call.

Tolerance: each tensor must satisfy ``||ours - ref|| <= 1e-5 * ||ref||`` (norm-relative); integer
and boolean tensors exactly. The key map is ``reasoners.compat`` (documented there).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from reasoners.compat import config_from_reference, load_reference_state_dict, map_reference_key
from reasoners.hrm import HRM
from reasoners.supervision import initial_carry, train_step
from reasoners.trm import TRM

FIXTURES = Path(__file__).parent / "fixtures"
RTOL = 1e-5
CASES = [("trm_attention_sudoku", "trm"), ("trm_mlp_maze", "trm"), ("hrm_sudoku", "hrm")]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def close(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = RTOL) -> None:
    actual = actual.detach().double().cpu()
    expected = expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).norm().item()
    scale = expected.norm().item()
    assert err <= rtol * max(scale, 1e-12), f"{what}: |diff| {err:.3e} > {rtol} * |ref| {scale:.3e}"


def sketch(name: str, t: torch.Tensor, k: int) -> torch.Tensor:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    R = rng.standard_normal((t.numel(), k))
    return torch.from_numpy(t.detach().double().reshape(-1).cpu().numpy() @ R)


def build(name: str, kind: str):
    fx = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    cfg = config_from_reference(kind, fx["config"])
    model = (TRM if kind == "trm" else HRM)(cfg)
    load_reference_state_dict(model, kind, fx["weights"])
    return fx, model


def test_key_map_covers_every_weight():
    for name, kind in CASES:
        fx, model = build(name, kind)
        mapped = {map_reference_key(kind, k) for k in fx["weights"]} - {None}
        assert mapped == set(model.state_dict()), name


@pytest.mark.parametrize("name,kind", CASES)
def test_three_supervision_calls_match_reference(name, kind):
    fx, model = build(name, kind)
    params = dict(model.named_parameters())
    k = fx["sketch_k"]
    model.train()
    carry = initial_carry(model, fx["batches"][0])
    torch.manual_seed(fx["explore_seed"])
    for i, (batch, ref) in enumerate(zip(fx["batches"], fx["calls"], strict=True)):
        model.zero_grad(set_to_none=True)
        carry, loss, metrics, outputs = train_step(model, carry, batch)
        loss.backward()
        at = f"{name} call {i}"
        # halting and the carry: exact
        assert torch.equal(carry.halted, ref["halted"]), f"{at}: halted {carry.halted} != {ref['halted']}"
        assert torch.equal(carry.steps, ref["steps"]), f"{at}: steps"
        for key, value in ref["current_data"].items():
            assert torch.equal(carry.batch[key], value), f"{at}: carried {key}"
        # outputs
        assert loss.dtype == torch.float64
        close(loss, ref["loss"], f"{at}: loss")
        for key in ("logits", "q_halt_logits", "q_continue_logits", "target_q_continue"):
            assert (key in outputs) == (key in ref["outputs"]), f"{at}: {key} presence"
            if key in outputs:
                close(outputs[key], ref["outputs"][key], f"{at}: {key}")
        for key, value in ref["metrics"].items():
            close(metrics[key], value, f"{at}: metric {key}")
        # carried state (sketched)
        for ours, ref_name in zip(carry.state, ("z_H", "z_L"), strict=True):
            close(
                sketch("state." + ref_name, ours, k), ref["state_sketch"][ref_name], f"{at}: state {ref_name}"
            )
            close(ours.flatten(1).norm(dim=1), ref["state_norms"][ref_name], f"{at}: state norms {ref_name}")
        # every parameter gradient
        for ref_key, ref_norm in ref["grad_norms"].items():
            ours = params[map_reference_key(kind, ref_key)].grad
            assert ours is not None, f"{at}: no grad for {ref_key}"
            close(ours.norm(), ref_norm, f"{at}: |grad| {ref_key}")
            if ref_key in ref["grads_full"]:
                close(ours, ref["grads_full"][ref_key], f"{at}: grad {ref_key}")
            else:
                close(sketch(ref_key, ours, k), ref["grads_sketch"][ref_key], f"{at}: grad sketch {ref_key}")
        close(
            model.embed.puzzle.batch_rows.grad,
            ref["grads_full"]["puzzle_emb.local_weights"],
            f"{at}: puzzle rows grad",
        )


@pytest.mark.parametrize("name,kind", CASES)
def test_evaluation_matches_reference(name, kind):
    fx, model = build(name, kind)
    model.eval()
    batch = fx["batches"][0]
    carry = initial_carry(model, batch)
    halted = []
    with torch.no_grad():
        for _ in range(fx["config"]["halt_max_steps"]):
            carry, loss, _, outputs = train_step(model, carry, batch)
            halted.append(carry.halted)
    assert torch.equal(torch.stack(halted), fx["eval"]["halted"])
    close(outputs["logits"], fx["eval"]["logits"], f"{name}: eval logits")
    close(loss, fx["eval"]["loss"], f"{name}: eval loss")


def test_key_map_strips_compile_and_loss_head_prefixes():
    assert map_reference_key("trm", "_orig_mod.model.inner.L_level.layers.1.self_attn.qkv_proj.weight") == (
        "net.layers.1.attn.qkv.weight"
    )
    assert map_reference_key("hrm", "model.inner.H_level.layers.0.mlp.down_proj.weight") == (
        "high_net.layers.0.mlp.down.weight"
    )
    assert map_reference_key("trm", "inner.L_level.layers.0.mlp_t.gate_up_proj.weight") == (
        "net.layers.0.token_mlp.mlp.gate_up.weight"
    )
    assert map_reference_key("trm", "model.inner.rotary_emb.cos_cached") is None
    with pytest.raises(ValueError, match="unknown reference kind"):
        map_reference_key("gpt", "lm_head.weight")
