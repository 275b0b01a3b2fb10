"""Reasoner behaviour that does not need the reference fixtures: parameter counts of the reference
configurations, shapes and gradient flow, halting and carry semantics, losses, bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny_runs import random_batch

from reasoners.attractor import Attractor, AttractorConfig
from reasoners.hrm import HRM, HRMConfig
from reasoners.layers import (
    Attention,
    InputEmbedding,
    log_stablemax,
    rms_norm,
    softmax_cross_entropy,
    stablemax_cross_entropy,
    swiglu_width,
    trunc_normal_,
)
from reasoners.supervision import act_loss, initial_carry, run_steps, supervision_step, train_step
from reasoners.trm import TRM, TRMConfig

REPO = Path(__file__).resolve().parents[1]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(cls, cfg):
    with torch.device("meta"):
        return cls(cfg)


TINY_TRM = dict(d_model=32, n_heads=2, n_layers=2, T_cycles=2, n_inner=2, halt_max_steps=4)
TINY_HRM = dict(d_model=32, n_heads=2, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2, halt_max_steps=4)


# ----------------------------------------------------------------------------- reference sizes


def test_reference_parameter_counts():
    # the reference configurations on Sudoku (vocab 11, 81 cells); the puzzle table is a buffer
    assert n_params(on_meta(TRM, TRMConfig())) == 6_828_034
    assert n_params(on_meta(TRM, TRMConfig(mixer="mlp"))) == 5_028_866
    assert n_params(on_meta(HRM, HRMConfig())) == 27_275_266


def test_swiglu_width_matches_reference_rounding():
    assert swiglu_width(512, 4) == 1536
    assert swiglu_width(97, 4) == 512  # TRM-MLP token mixer over 16 + 81 positions
    assert swiglu_width(32, 4) == 256


# ----------------------------------------------------------------------------- layers


def test_trunc_normal_has_requested_std_and_bounds():
    torch.manual_seed(0)
    t = trunc_normal_(torch.empty(200_000), std=0.5)
    assert abs(t.std().item() - 0.5) < 0.005
    assert t.abs().max().item() <= 2 * 0.5 / 0.8796 + 1e-6  # clip at 2 * corrected std


def test_rms_norm_is_weightless_fp32():
    x = torch.randn(4, 7, 16, dtype=torch.bfloat16)
    y = rms_norm(x)
    assert y.dtype == torch.bfloat16
    ref = x.float() / x.float().pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
    torch.testing.assert_close(y.float(), ref, atol=1e-2, rtol=1e-2)


def test_stablemax_matches_definition_and_ignores():
    logits = torch.tensor([[[0.5, -2.0, 3.0]]])
    s = torch.tensor([1.5, 1 / 3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(log_stablemax(logits.double())[0, 0], (s / s.sum()).log())
    labels = torch.tensor([[2]])
    ce = stablemax_cross_entropy(logits, labels)
    assert ce.dtype == torch.float64
    torch.testing.assert_close(ce[0, 0], -(s[2] / s.sum()).log())
    assert stablemax_cross_entropy(logits, torch.tensor([[-100]])).item() == 0
    assert softmax_cross_entropy(logits, torch.tensor([[-100]])).item() == 0
    torch.testing.assert_close(
        softmax_cross_entropy(logits, labels)[0, 0], -torch.log_softmax(logits[0, 0], -1)[2]
    )


def test_attention_is_permutation_equivariant_without_rope():
    torch.manual_seed(0)
    attn = Attention(16, 2)
    x = torch.randn(2, 5, 16)
    perm = torch.randperm(5)
    torch.testing.assert_close(attn(x, None)[:, perm], attn(x[:, perm], None))


def test_puzzle_prefix_gradient_lands_on_batch_rows_only_in_training():
    emb = InputEmbedding(11, 8, 5, prefix_len=2, num_puzzle_ids=3, puzzle_dim=12)
    emb.puzzle.table.normal_()
    ids = torch.tensor([2, 0])
    x = emb(torch.ones(2, 5, dtype=torch.long), ids)
    assert x.shape == (2, 7, 8)
    # the 12-wide row fills position 0 and half of position 1, zero-padded
    torch.testing.assert_close(x[:, 0], emb.scale * emb.puzzle.table[ids, :8])
    assert torch.all(x[:, 1, 4:] == 0)
    x.sum().backward()
    assert emb.puzzle.batch_rows.grad.shape == (2, 12)
    assert torch.equal(emb.puzzle.batch_ids, ids)
    assert emb.puzzle.table.grad is None
    emb.eval()
    emb.puzzle.batch_rows = None
    emb(torch.ones(2, 5, dtype=torch.long), ids)
    assert emb.puzzle.batch_rows is None


# ----------------------------------------------------------------------------- reasoners


@pytest.mark.parametrize(
    "cls,cfg",
    [
        (TRM, TRMConfig(**TINY_TRM)),
        (TRM, TRMConfig(**TINY_TRM, mixer="mlp", positions="none")),
        (TRM, TRMConfig(**TINY_TRM, positions="learned", seq_len=36, vocab_size=6)),
        (HRM, HRMConfig(**TINY_HRM)),
    ],
)
def test_shapes_and_gradient_flow(cls, cfg):
    torch.manual_seed(0)
    model = cls(cfg)
    with torch.no_grad():  # let the q head depend on the state so its gradient is informative
        model.q_head.weight.normal_()
    batch = random_batch(L=cfg.seq_len, vocab=cfg.vocab_size)
    model.train()
    carry = initial_carry(model, batch)
    carry, loss, metrics, out = train_step(model, carry, batch)
    B, L, V = 3, cfg.seq_len, cfg.vocab_size
    assert out["logits"].shape == (B, L, V)
    assert out["q_halt_logits"].shape == (B,) and out["q_halt_logits"].dtype == torch.float32
    assert all(s.shape == (B, model.config.prefix_len + L, cfg.d_model) for s in carry.state)
    assert all(not s.requires_grad and s.grad_fn is None for s in carry.state)  # the carry holds no graph
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    assert model.embed.puzzle.batch_rows.grad.abs().sum() > 0


def test_initial_states_are_fixed_buffers_and_reset_per_row():
    model = TRM(TRMConfig(**TINY_TRM))
    assert {"y_init", "z_init"} <= set(dict(model.named_buffers()))
    s0 = model.initial_state(2)
    changed = type(s0)(s0.y + 1, s0.z + 1)
    reset = model.reset_state(changed, torch.tensor([True, False]))
    assert torch.equal(reset.y[0], s0.y[0]) and torch.equal(reset.y[1], changed.y[1])
    assert torch.equal(reset.z[0], s0.z[0]) and torch.equal(reset.z[1], changed.z[1])


def test_trm_step_equals_manual_unroll():
    torch.manual_seed(1)
    cfg = TRMConfig(**TINY_TRM)
    model = TRM(cfg).eval()
    batch = random_batch()
    state = model.initial_state(3)
    new_state, logits, q, _ = model(state, batch)
    x = model.embed(batch["inputs"], batch["puzzle_identifiers"])
    rot = model.rotary()
    y, z = state
    for _ in range(cfg.T_cycles):
        for _ in range(cfg.n_inner):
            z = model.net(z, y + x, rot)
        y = model.net(y, z, rot)
    torch.testing.assert_close(new_state.y, y)
    torch.testing.assert_close(logits, model.output_head(y)[:, cfg.prefix_len :])


def test_halting_semantics_partial_reset_and_max_steps():
    torch.manual_seed(0)
    cfg = TRMConfig(**TINY_TRM, halt_exploration_prob=0.0)
    model = TRM(cfg).train()
    with torch.no_grad():  # q_halt == 0 exactly: never halts on q (needs q_halt > 0)
        model.q_head.weight.zero_()
        model.q_head.bias.zero_()
    b1, b2 = random_batch(seed=1), random_batch(seed=2)
    b1["puzzle_identifiers"] = torch.tensor([0, 0, 0])
    carry = initial_carry(model, b1)
    carry, _ = supervision_step(model, carry, b1)
    assert not carry.halted.any() and carry.steps.tolist() == [1, 1, 1]
    carry.halted = torch.tensor([False, True, False])  # pretend slot 1 halted
    before = carry.state
    carry2, _ = supervision_step(model, carry, b2)
    assert torch.equal(carry2.batch["inputs"][1], b2["inputs"][1])  # took the new row
    assert torch.equal(carry2.batch["inputs"][0], b1["inputs"][0])  # kept its puzzle
    assert carry2.steps.tolist() == [2, 1, 2]
    # the reset slot ran from the initial state: same as a fresh single-row run
    fresh = model(model.initial_state(1), {k: v[1:2] for k, v in b2.items()}).state
    torch.testing.assert_close(carry2.state.y[1:2], fresh.y)
    assert not torch.allclose(before.y[0], carry2.state.y[0])
    for _ in range(2):
        carry2, _ = supervision_step(model, carry2, b2)
    assert carry2.halted.tolist() == [True, False, True] and carry2.steps.tolist() == [4, 3, 4]


def test_evaluation_runs_all_steps_and_run_steps_matches():
    torch.manual_seed(0)
    model = HRM(HRMConfig(**TINY_HRM)).eval()
    with torch.no_grad():
        model.q_head.bias.fill_(10.0)  # q says "halt" everywhere: ignored in evaluation
    batch = random_batch()
    carry = initial_carry(model, batch)
    logits = []
    with torch.no_grad():
        for step in range(4):
            carry, out = supervision_step(model, carry, batch)
            assert carry.halted.all() == (step == 3)
            logits.append(out["logits"])
    traj = run_steps(model, batch)
    assert len(traj) == 4
    for a, b in zip(traj, logits, strict=True):
        torch.testing.assert_close(a["logits"], b)


def test_rollout_steps_lazily_from_the_initial_state():
    """The generator calls the reasoner once per step taken, from the initial state on, each call
    fed the state the previous one returned; stopping early costs no further calls."""
    from reasoners.supervision import StepOutput, rollout

    torch.manual_seed(0)
    model = TRM(TRMConfig(**TINY_TRM)).eval()
    batch = random_batch()
    seen = []
    real_forward = model.forward

    def spy(state, b):
        seen.append(state)
        return real_forward(state, b)

    model.forward = spy
    steps = rollout(model, batch)
    first = next(steps)
    assert isinstance(first, StepOutput) and len(seen) == 1
    torch.testing.assert_close(seen[0].y, model.initial_state(3).y, rtol=0, atol=0)
    second = next(steps)
    assert len(seen) == 2 and seen[1] is first.state
    assert len(list(steps)) == TINY_TRM["halt_max_steps"] - 2 and len(seen) == TINY_TRM["halt_max_steps"]
    assert first.q_halt.shape == (3,) and torch.equal(second.q_logits[:, 1], second.q_continue)


@pytest.mark.parametrize(
    "q, q_continue, fires",
    [
        ([0.5, 2.0], False, True),  # TRM: q_halt > 0, whatever q_continue says
        ([-0.5, -2.0], False, False),
        ([-0.5, -2.0], True, True),  # HRM: q_halt > q_continue, even below 0
        ([0.5, 2.0], True, False),
        ([0.0, 0.0], False, False),  # strict: a tie does not halt
        ([0.0, 0.0], True, False),
    ],
)
def test_halt_fires_is_the_papers_rule(q, q_continue, fires):
    from reasoners.supervision import halt_fires, halting_rule

    assert halt_fires(torch.tensor([q]), q_continue).tolist() == [fires]
    cfg = TRMConfig(**TINY_TRM, q_continue=q_continue)
    assert halting_rule(cfg) == ("q_halt > q_continue" if q_continue else "q_halt > 0")


def test_solver_iterates_are_recorded_only_during_the_rollout():
    from reasoners.attractor import Attractor, AttractorConfig
    from reasoners.supervision import rollout

    model = Attractor(AttractorConfig(**TINY_TRM)).eval()
    steps = list(rollout(model, random_batch(), 2, solver_iterates=True))
    assert all(s.solver.iterates is not None for s in steps)
    assert model.config.solver_trace is False  # put back as it was
    assert all(s.solver.iterates is None for s in rollout(model, random_batch(), 2))


def test_hrm_bootstrap_target_uses_next_step():
    torch.manual_seed(0)
    model = HRM(HRMConfig(**TINY_HRM, halt_exploration_prob=0.0)).train()
    with torch.no_grad():
        model.q_head.weight.normal_()
    batch = random_batch()
    carry = initial_carry(model, batch)
    carry, out = supervision_step(model, carry, batch)
    with torch.no_grad():
        nq = model(carry.state, carry.batch).q_logits
    torch.testing.assert_close(out["target_q_continue"], torch.sigmoid(nq.max(-1).values))


def test_act_loss_counts_only_halted_sequences():
    logits = torch.zeros(2, 3, 4)
    logits[..., 2] = 1.0
    labels = torch.tensor([[2, 2, -100], [2, 3, 2]])
    from reasoners.supervision import Carry

    carry = Carry(
        state=(),
        steps=torch.tensor([3, 1], dtype=torch.int32),
        halted=torch.tensor([True, False]),
        batch={"labels": labels},
    )
    out = {"logits": logits, "q_halt_logits": torch.tensor([1.0, -1.0]), "q_continue_logits": torch.zeros(2)}
    loss, m = act_loss(out, carry)
    assert m["count"] == 1 and m["exact_accuracy"] == 1 and m["steps"] == 3 and m["q_halt_accuracy"] == 1
    per_cell = stablemax_cross_entropy(logits, labels)
    expected_lm = per_cell[0].sum() / 2 + per_cell[1].sum() / 3
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        out["q_halt_logits"], torch.tensor([1.0, 0.0]), reduction="sum"
    )
    torch.testing.assert_close(loss, expected_lm + 0.5 * bce.double())


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: TRMConfig(d_model=30, n_heads=4), "divide"),
        (lambda: TRMConfig(mixer="conv"), "unknown mixer"),
        (lambda: TRMConfig(positions="sinusoid"), "unknown positions"),
        (lambda: TRMConfig(T_cycles=0), "T_cycles"),
        (lambda: HRMConfig(d_model=64, n_heads=5), "divide"),
        (lambda: HRMConfig(mixer="rnn"), "unknown mixer"),
    ],
)
def test_bad_configs_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _all_tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _all_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _all_tensors(v)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from _all_tensors(getattr(obj, name))


@pytest.mark.parametrize(
    "make",
    [
        lambda: TRM(TRMConfig(**TINY_TRM)),
        lambda: TRM(TRMConfig(**TINY_TRM, mixer="mlp", q_continue=True)),
        lambda: HRM(HRMConfig(**TINY_HRM)),
        # the Anderson / fixed-point solves read residuals back (.item()), which meta tensors cannot
        lambda: Attractor(AttractorConfig(**TINY_TRM, solver="unroll")),
    ],
    ids=["trm", "trm_mlp_q_continue", "hrm", "attractor_unroll"],
)
def test_training_and_evaluation_run_on_the_inputs_device(make):
    """No device assumptions: on the ``meta`` device a tensor made anywhere else (a ``.cuda()``,
    ``.to("cuda")``, ``torch.device("cuda")`` or a default-CPU ``torch.zeros``) meets a meta tensor
    and raises, so one training step (exploration and bootstrapping included), its backward and an
    evaluation rollout passing here create everything on the inputs' device."""
    from reasoners.supervision import rollout

    model = make().to("meta").train()
    model.config.halt_exploration_prob = 0.5
    batch = {k: v.to("meta") for k, v in random_batch().items()}
    carry, loss, metrics, outputs = train_step(model, initial_carry(model, batch), batch)
    loss.backward()
    model.eval()
    steps = list(rollout(model, batch, 2))
    made = [*_all_tensors((carry, loss, metrics, outputs)), *_all_tensors([tuple(s) for s in steps])]
    made += [p.grad for p in model.parameters() if p.grad is not None]
    assert made and {t.device.type for t in made} == {"meta"}


def test_a_tensor_off_the_inputs_device_is_caught_on_meta():
    """The property the test above relies on: mixing a CPU tensor into meta work raises."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.ones(3, device="meta") + torch.ones(3)


def test_trm_with_q_continue_bootstraps_like_hrm():
    torch.manual_seed(0)
    model = TRM(TRMConfig(**TINY_TRM, q_continue=True, halt_exploration_prob=0.0)).train()
    with torch.no_grad():
        model.q_head.weight.normal_()
    batch = random_batch()
    carry, out = supervision_step(model, initial_carry(model, batch), batch)
    with torch.no_grad():
        nq = model(carry.state, carry.batch).q_logits
    torch.testing.assert_close(out["target_q_continue"], torch.sigmoid(nq.max(-1).values))
    assert torch.equal(carry.halted, out["q_halt_logits"] > out["q_continue_logits"])


def test_one_training_step_with_the_optimisers_updates_weights_and_the_used_puzzle_row():
    from reasoners.optim import AdamATan2, SparseSignSGD

    torch.manual_seed(0)
    model = TRM(TRMConfig(**TINY_TRM, num_puzzle_ids=4)).train()
    opt = AdamATan2(model.parameters(), lr=1e-3, weight_decay=0.1)
    emb_opt = SparseSignSGD(model.embed.puzzle.table, lr=1e-2, weight_decay=0.1)
    batch = random_batch(n_ids=4)
    batch["puzzle_identifiers"] = torch.tensor([1, 1, 3])
    table_before = model.embed.puzzle.table.clone()
    weights_before = model.net.layers[0].mlp.down.weight.clone()
    carry, loss, _, _ = train_step(model, initial_carry(model, batch), batch)
    (loss / 3).backward()
    opt.step()
    emb_opt.step(model.embed.puzzle.batch_ids, model.embed.puzzle.batch_rows.grad)
    changed = (model.embed.puzzle.table != table_before).any(-1)
    assert changed.tolist() == [False, True, False, True]
    assert not torch.equal(model.net.layers[0].mlp.down.weight, weights_before)
