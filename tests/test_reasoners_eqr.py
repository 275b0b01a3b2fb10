"""EqR behaviour that the reference fixtures do not pin down alone: the parameter counts of the
reference configurations, the random initial state and its resets (draw order, generators), the
damped noisy update against a hand unroll, noise in evaluation, network calls per step, the
convergence-score selector, bad configs, the reference config mapping, checkpoints, and a short
training run whose loss falls."""

from __future__ import annotations

import pytest
import torch
from _tiny_runs import SUDOKU4, random_batch, save_tiny_checkpoint, sudoku4_solutions, tiny_model

from reasoners.checkpoint import load_reasoner
from reasoners.compat import config_from_reference
from reasoners.eqr import EqR, EqRConfig, EqRState, convergence_score
from reasoners.layers import trunc_normal_
from reasoners.optim import AdamATan2
from reasoners.presets import preset_config
from reasoners.supervision import initial_carry, rollout, train_step

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = dict(d_model=32, n_heads=2, n_layers=2, T_cycles=2, n_inner=2, halt_max_steps=4)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def batch(B=3, L=81, vocab=11, seed=0):
    return random_batch(B, L, vocab, 1, seed)  # one puzzle id: EqR has no puzzle embedding


def model(seed=0, **overrides) -> EqR:
    torch.manual_seed(seed)
    return EqR(EqRConfig(**{**TINY, **overrides}))


# ----------------------------------------------------------------------------- sizes


def test_reference_parameter_counts():
    with torch.device("meta"):
        # locuslab/EqR's EqRModel, counted: its Sudoku model (arch/eqr.yaml + mlp_t) and its default arch
        assert n_params(EqR(EqRConfig(mixer="mlp"))) == 4_855_298
        assert n_params(EqR(EqRConfig())) == 6_828_034  # = TRM-7M: TRM's prefix has no parameters


# ----------------------------------------------------------------------------- the random initial state


def test_initial_state_is_reproducible_per_generator_and_leaves_the_global_one_alone():
    net = model()
    before = torch.get_rng_state()
    a = net.initial_state(4, generator=torch.Generator().manual_seed(7))
    b = net.initial_state(4, generator=torch.Generator().manual_seed(7))
    c = net.initial_state(4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), before)
    assert isinstance(a, EqRState) and a.y.shape == a.z.shape == (4, 81, 32)
    assert torch.equal(a.y, b.y) and torch.equal(a.z, b.z)
    assert not torch.allclose(a.y, c.y) and not torch.allclose(a.z, c.z)
    assert not torch.allclose(a.y[0], a.y[1]) and not torch.allclose(a.y, a.z)  # every element drawn
    # truncated normal at 2 (corrected) standard deviations with a realised std of 1
    big = net.initial_state(64, generator=torch.Generator().manual_seed(0))
    assert abs(big.y.std().item() - 1) < 0.01 and big.y.abs().max().item() <= 2 / 0.8796 + 1e-5
    assert net.double().initial_state(1).y.dtype == torch.float64  # the weights' dtype


def test_initial_state_draws_y_then_z_from_the_global_generator():
    net = model(y_init_std=0.5, z_init_std=2.0)
    torch.manual_seed(3)
    s = net.initial_state(2)
    torch.manual_seed(3)
    y = trunc_normal_(torch.empty(2, 81, 32), std=0.5)
    z = trunc_normal_(torch.empty(2, 81, 32), std=2.0)
    assert torch.equal(s.y, y) and torch.equal(s.z, z)


def test_reset_draws_fresh_states_for_reset_rows_only_in_the_references_order():
    net = model()
    state = EqRState(torch.zeros(4, 81, 32), torch.ones(4, 81, 32))
    mask = torch.tensor([False, True, False, True])
    torch.manual_seed(5)
    out = net.reset_state(state, mask)
    after = torch.get_rng_state()
    torch.manual_seed(5)  # the reference: y for the reset rows (in row order), then z
    y = trunc_normal_(torch.empty(2, 81, 32))
    z = trunc_normal_(torch.empty(2, 81, 32))
    assert torch.equal(torch.get_rng_state(), after)  # exactly those draws, no more
    assert torch.equal(out.y[[1, 3]], y) and torch.equal(out.z[[1, 3]], z)
    assert torch.equal(out.y[[0, 2]], state.y[[0, 2]]) and torch.equal(out.z[[0, 2]], state.z[[0, 2]])
    assert torch.equal(state.y, torch.zeros(4, 81, 32))  # the input is not modified
    # nothing to reset: nothing drawn
    before = torch.get_rng_state()
    assert net.reset_state(state, torch.zeros(4, dtype=torch.bool)) is state
    assert torch.equal(torch.get_rng_state(), before)


# ----------------------------------------------------------------------------- the dynamics


def test_step_equals_a_hand_unroll_of_the_damped_noisy_update():
    cfg = dict(damping=0.8, noise_std=0.05)
    net = model(**cfg).eval()
    b = batch()
    s0 = net.initial_state(3, generator=torch.Generator().manual_seed(1))
    net.noise_generator = torch.Generator().manual_seed(2)
    out = net(s0, b)
    g = torch.Generator().manual_seed(2)
    x = net.embed(b["inputs"], None)
    rot = net.rotary()

    def update(h, injection):
        eps = torch.randn(h.shape, generator=g)
        return 0.2 * h + 0.8 * net.net(h, injection, rot) + 0.05 * eps

    y, z = s0
    for _ in range(TINY["T_cycles"]):
        for _ in range(TINY["n_inner"]):
            z = update(z, y + x)
        y = update(y, z)
    torch.testing.assert_close(out.state.y, y)
    torch.testing.assert_close(out.state.z, z)
    torch.testing.assert_close(out.logits, net.output_head(y))  # no prefix to drop
    torch.testing.assert_close(out.q_logits, net.q_head(y[:, 0]))  # the q-head reads the first cell


def test_noise_is_drawn_in_evaluation_and_a_noise_generator_reproduces_it():
    net = model().eval()
    b = batch()
    s0 = net.initial_state(3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first, second = net(s0, b).logits, net(s0, b).logits  # the global generator moves on
        assert not torch.allclose(first, second)
        runs = []
        for _ in range(2):
            net.noise_generator = torch.Generator().manual_seed(4)
            runs.append(net(s0, b).logits)
        assert torch.equal(runs[0], runs[1])
        net.noise_generator = None
        net.config.noise_std = 0.0  # no noise: deterministic, and nothing drawn
        before = torch.get_rng_state()
        assert torch.equal(net(s0, b).logits, net(s0, b).logits)
        assert torch.equal(torch.get_rng_state(), before)


def test_one_generator_per_row_makes_a_rollout_reproducible_row_by_row():
    """With per-row generators for the initial state and the noise, a puzzle's trajectory does not
    depend on its batch-mates (nor on the global generator)."""
    net = model().eval()
    b = batch(B=3)

    def run(rows):
        seeds = [10 + r for r in rows]
        sub = {k: v[rows] for k, v in b.items()}
        state = net.initial_state(len(rows), generator=[torch.Generator().manual_seed(s) for s in seeds])
        net.noise_generator = [torch.Generator().manual_seed(100 + s) for s in seeds]
        with torch.no_grad():
            for _ in range(3):
                state, logits, _, _ = net(state, sub)
        net.noise_generator = None
        return state, logits

    torch.manual_seed(0)
    state_all, logits_all = run([0, 1, 2])
    torch.manual_seed(1)
    state_one, logits_one = run([1])
    torch.testing.assert_close(logits_all[1:2], logits_one)
    torch.testing.assert_close(state_all.y[1:2], state_one.y)
    # per-row initial states equal one-row draws from the same generators
    single = net.initial_state(1, generator=torch.Generator().manual_seed(11))
    both = net.initial_state(2, generator=[torch.Generator().manual_seed(s) for s in (10, 11)])
    assert torch.equal(both.y[1:], single.y) and torch.equal(both.z[1:], single.z)
    with pytest.raises(ValueError, match="one generator per row"):
        net.initial_state(3, generator=[torch.Generator()])
    net.noise_generator = [torch.Generator()]
    with pytest.raises(ValueError, match="1 generators for a batch of 3"):
        net(net.initial_state(3), b)


def test_a_hook_on_the_network_counts_T_times_n_plus_1_calls_per_step():
    net = model(T_cycles=3, n_inner=4)
    calls = []
    net.net.register_forward_hook(lambda *_: calls.append(1))
    b = batch()
    train_step(net.train(), initial_carry(net, b), b)
    assert len(calls) == 3 * (4 + 1)


def test_training_step_carries_no_graph_and_every_weight_gets_a_gradient():
    net = model(mixer="mlp").train()
    with torch.no_grad():  # let the q head depend on the state so its gradient is informative
        net.q_head.weight.normal_()
    b = batch()
    carry, loss, _, out = train_step(net, initial_carry(net, b), b)
    assert out["logits"].shape == (3, 81, 11) and out["q_halt_logits"].dtype == torch.float32
    assert all(s.shape == (3, 81, 32) and s.grad_fn is None for s in carry.state)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_rollout_starts_each_puzzle_from_a_random_state():
    net = model().eval()
    b = batch(B=2)
    b["inputs"][1] = b["inputs"][0]  # one puzzle twice: two random starts, two trajectories
    last = list(rollout(net, b, 2))[-1]
    assert not torch.allclose(last.state.y[0], last.state.y[1])


# ----------------------------------------------------------------------------- the test-time selector


def test_convergence_score_is_the_mean_logit_change_over_the_last_steps():
    g = torch.Generator().manual_seed(0)
    steps = [torch.randn(2, 5, 4, generator=g) for _ in range(6)]
    expected = torch.zeros(2)
    for t in (3, 4, 5):  # the last 3 changes
        for b in range(2):
            expected[b] += sum((steps[t][b, c] - steps[t - 1][b, c]).norm() for c in range(5)) / 5
    torch.testing.assert_close(convergence_score(steps), expected / 3)
    # fewer changes than the window: all of them
    torch.testing.assert_close(
        convergence_score(steps[:2], window=3), (steps[1] - steps[0]).norm(dim=-1).mean(-1)
    )
    converged = [steps[0]] * 4
    assert torch.equal(convergence_score(converged), torch.zeros(2))
    with pytest.raises(ValueError, match="at least 2 steps"):
        convergence_score(steps[:1])
    with pytest.raises(ValueError, match="window"):
        convergence_score(steps, window=0)


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(damping=0.0), r"damping \(lambda\) must be in \(0, 1\]"),
        (dict(damping=1.5), r"damping \(lambda\) must be in \(0, 1\]"),
        (dict(noise_std=-0.01), "noise_std must be a finite number >= 0"),
        (dict(y_init_std=float("nan")), "y_init_std must be a finite number >= 0"),
        (dict(z_init_std=float("inf")), "z_init_std must be a finite number >= 0"),
        (dict(T_cycles=0), "T_cycles must be >= 1"),
        (dict(n_layers=0), "n_layers must be >= 1"),
        (dict(d_model=30, n_heads=4), "divide"),
        (dict(mixer="conv"), "unknown mixer"),
    ],
)
def test_bad_configs_raise_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        EqRConfig(**overrides)


def test_the_references_configs_map_onto_the_presets():
    """locuslab/EqR config/arch/eqr.yaml with config/train/eqr_sudoku.yaml's override (mlp_t) is the
    7m preset; the maze config is attention with RoPE; 2-D RoPE is refused with a clear message."""
    arch = dict(
        seq_len=81, vocab_size=11, H_cycles=3, L_cycles=6, H_layers=0, L_layers=2, hidden_size=512,
        num_heads=8, expansion=4, pos_encodings="rope", board_height=9, board_width=9, halt_max_steps=16,
        halt_exploration_prob=0.1, lambda_=0.95, noise_scale=0.01, H_init_std=1.0, L_init_std=1.0,
    )  # fmt: skip
    assert config_from_reference("eqr", {**arch, "mlp_t": True}) == preset_config("eqr", "7m")
    maze = config_from_reference(
        "eqr", {**arch, "seq_len": 900, "vocab_size": 6, "L_layers": 1, "L_cycles": 4, "hidden_size": 128}
    )
    assert (maze.mixer, maze.positions, maze.n_layers, maze.n_inner, maze.d_model) == (
        "attention",
        "rope",
        1,
        4,
        128,
    )
    with pytest.raises(ValueError, match="rope2d"):
        config_from_reference("eqr", {**arch, "pos_encodings": "rope2d"})


def test_checkpoint_round_trip(tmp_path):
    net = tiny_model("eqr")
    path = save_tiny_checkpoint(tmp_path / "c.pt", net, "eqr", SUDOKU4, {"name": "tiny"})
    loaded, task, ckpt = load_reasoner(path)
    assert isinstance(loaded, EqR) and task == SUDOKU4 and ckpt["model_name"] == "eqr"
    assert loaded.config == net.config
    b = batch(B=2, L=16, vocab=6)
    outs = []
    for m in (net.eval(), loaded):
        m.noise_generator = torch.Generator().manual_seed(0)
        outs.append(m(m.initial_state(2, generator=torch.Generator().manual_seed(1)), b).logits)
    assert torch.equal(outs[0], outs[1])


# ----------------------------------------------------------------------------- it learns


def test_a_short_training_run_lowers_the_loss():
    """80 updates of tiny EqR on 4x4 Sudoku (deep supervision, halting and exploration on, AdamATan2):
    the mean loss of the last 10 updates is well below that of the first 10."""
    torch.manual_seed(0)
    net = tiny_model("eqr").train()
    opt = AdamATan2(net.parameters(), lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))
    solutions = torch.from_numpy(sudoku4_solutions(512, seed=1)) + 1  # tokens: digit d is d + 1
    g = torch.Generator().manual_seed(0)
    carry, losses = None, []
    for _ in range(80):
        rows = torch.randint(0, 512, (32,), generator=g)
        labels = solutions[rows]
        inputs = torch.where(torch.rand(labels.shape, generator=g) < 0.5, 1, labels)  # blank half
        b = {"inputs": inputs, "labels": labels, "puzzle_identifiers": torch.zeros(32, dtype=torch.int32)}
        carry = initial_carry(net, b) if carry is None else carry
        carry, loss, _, _ = train_step(net, carry, b, generator=g)
        (loss / 32).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item() / 32)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, f"loss {first:.3f} -> {last:.3f}"
