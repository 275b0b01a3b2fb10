"""The Attractor's numerics (docs/reference.md, "Numerical checks"): honest residuals, a real fixed
point, TRM as a special case, warm starts, and a carry without a graph."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from _tiny_runs import Oracle

from reasoners.attractor import Attractor, AttractorConfig
from reasoners.supervision import initial_carry, rollout, supervision_step, train_step
from reasoners.trm import TRM, TRMConfig
from solvers import SolverInfo, anderson

# A full-width puzzle row: with zero-padded prefix positions (x = 0 there) the map has a continuum of
# fixed points (any unit-rms y = z), so a contraction test needs x != 0 everywhere.
TINY = dict(
    d_model=32,
    n_heads=2,
    n_layers=2,
    seq_len=16,
    prefix_len=4,
    puzzle_dim=128,
    num_puzzle_ids=2,
    halt_max_steps=4,
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def batch(B=3, seed=0, L=16):
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, 11, (B, L), generator=g),
        "labels": torch.randint(2, 11, (B, L), generator=g),
        "puzzle_identifiers": torch.randint(0, 2, (B,), generator=g),
    }


def contractive(model: Attractor, scale: float = 0.1) -> Attractor:
    """A random model whose map is a contraction: small block weights, so each post-norm block is close
    to rmsnorm(input), which shrinks the (y, z) perturbations."""
    with torch.no_grad():
        for p in model.net.parameters():
            p.mul_(scale)
        model.q_head.weight.normal_()
        model.embed.puzzle.table.normal_()
    return model


def fresh_residual(model: Attractor, b: dict, s: tuple) -> torch.Tensor:
    with torch.no_grad():
        x = model.embed(b["inputs"], b["puzzle_identifiers"])
        fs = model.fixed_point_map(x, model.rotary())(tuple(s))
    diff = torch.cat([(f - a).flatten(1) for a, f in zip(s, fs, strict=True)], 1)
    full = torch.cat([f.flatten(1) for f in fs], 1)
    return diff.norm(dim=1) / full.norm(dim=1)


def test_reported_residual_equals_fresh_recomputation():
    torch.manual_seed(0)
    model = Attractor(AttractorConfig(**TINY, max_iter=6, tol=1e-8)).train()  # stops unconverged
    b = batch()
    extras = model(model.initial_state(3), b).extras
    info = extras["solver"]
    assert info.nstep == 6 and not info.converged.any()
    torch.testing.assert_close(
        info.rel_residual, fresh_residual(model, b, extras["fixed_point"]), rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize("restart", [None, 1.0])
def test_solver_reaches_tolerance_and_both_trm_equations_hold(restart):
    torch.manual_seed(0)
    config = AttractorConfig(**TINY, n_inner=1, max_iter=60, tol=1e-5, anderson_restart=restart)
    model = contractive(Attractor(config)).train()
    b = batch()
    extras = model(model.initial_state(3), b).extras
    info = extras["solver"]
    assert info.converged.all() and info.nstep < 60 and info.n_diverged == 0
    assert (info.rel_residual <= 1e-5).all()
    y, z = extras["fixed_point"]
    with torch.no_grad():
        x = model.embed(b["inputs"], b["puzzle_identifiers"])
        rot = model.rotary()
        z_eq = model.net(z, y + x, rot)  # z* = net(z* + y* + x)
        y_eq = model.net(y, z, rot)  # y* = net(y* + z*)
    assert ((z_eq - z).norm() / z.norm()).item() < 1e-4
    assert ((y_eq - y).norm() / y.norm()).item() < 1e-4


def test_anderson_restart_reaches_the_solver():
    """anderson_restart is the solver's restart: the reasoner's S* is solvers.anderson's with it, and
    the restarted and plain solves differ on this (cold-started, untrained) map."""
    torch.manual_seed(0)
    model = Attractor(AttractorConfig(**TINY, max_iter=12, tol=0.0, anderson_restart=1.0)).eval()
    b = batch()
    s0 = tuple(model.initial_state(3))
    with torch.no_grad():
        got = model(model.initial_state(3), b).extras["fixed_point"]
        F = model.fixed_point_map(model.embed(b["inputs"], b["puzzle_identifiers"]), model.rotary())
        kw = dict(m=model.config.anderson_m, lam=model.config.anderson_lam, max_iter=12, tol=0.0, min_iter=2)
        want, _ = anderson(F, s0, restart=1.0, **kw)
        plain, _ = anderson(F, s0, **kw)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(w, p, rtol=1e-5, atol=1e-6) for w, p in zip(want, plain, strict=True))


def test_solver_stall_reaches_the_solver():
    """solver_stall is the solver's stall: with a tolerance no float32 solve reaches (tol 0) every row
    stops solver_stall evaluations after its best residual, where without it every row runs to
    max_iter."""
    b = batch()
    evals = {}
    for stall in (None, 3):
        torch.manual_seed(0)
        model = Attractor(AttractorConfig(**TINY, max_iter=120, tol=0.0, solver_stall=stall)).eval()
        with torch.no_grad():
            info = model(model.initial_state(3), b).extras["solver"]
        evals[stall] = info.evals
        if stall is not None:
            assert (info.evals == info.best_step + stall + 1).all()
    assert (evals[None] == 120).all() and int(evals[3].max()) < 120


def test_solver_stall_below_reaches_the_solver():
    """solver_stall_below: the stall exit only for rows whose best residual is at or below it. Below
    every row's best residual (tol 0, so none is reached) no row stops early, as without the exit;
    above every row's, each row stops solver_stall evaluations after its best, as with the exit alone."""
    b = batch()
    infos = {}
    for below in (None, 1e-30, 1e30):
        torch.manual_seed(0)
        config = AttractorConfig(**TINY, max_iter=120, tol=0.0, solver_stall=3, solver_stall_below=below)
        model = Attractor(config).eval()
        with torch.no_grad():
            infos[below] = model(model.initial_state(3), b).extras["solver"]
    assert float(infos[None].rel_residual.min()) > 1e-30
    assert (infos[1e-30].evals == 120).all()
    assert torch.equal(infos[1e30].evals, infos[None].evals) and int(infos[None].evals.max()) < 120


def test_solver_stall_rows_warm_spares_the_new_puzzles():
    """solver_stall_rows="warm": a row carried from the last step stops solver_stall evaluations after
    its best, a row reset to the initial state (a new puzzle) keeps its whole budget (tol 0: it runs
    to max_iter), where solver_stall on every row stops it early. (Carried rows are not compared
    between the two solves: at tol 0 their best step sits at float noise, and a different set of
    active rows may change a BLAS batch on another CPU.)"""
    torch.manual_seed(0)
    model = Attractor(AttractorConfig(**TINY, max_iter=60, tol=0.0, solver_stall=3)).eval()
    b = batch()
    with torch.no_grad():
        carried = model(model.initial_state(3), b).state
        state = model.reset_state(carried, torch.tensor([True, False, False]))
        every = model(state, b).extras["solver"]
        model.config.solver_stall_rows = "warm"
        warm = model(state, b).extras["solver"]
    assert int(every.evals[0]) < 60 and int(warm.evals[0]) == 60  # the cold row is spared
    assert (warm.evals[1:] == warm.best_step[1:] + 4).all() and int(warm.evals[1:].max()) < 60


def test_warm_rows_get_max_iter_warm_and_new_puzzles_max_iter():
    """max_iter_warm: a row carried from the last step is solved with its budget, a row reset to the
    initial state with max_iter (tol 0: every row spends its whole budget); the test-time budget
    (solver_settings) applies to every row."""
    from reasoners.test_time import solver_settings

    torch.manual_seed(0)
    model = Attractor(AttractorConfig(**TINY, max_iter=9, max_iter_warm=3, tol=0.0)).eval()
    b = batch()
    with torch.no_grad():
        carried = model(model.initial_state(3), b).state
        assert not model.cold_rows(tuple(carried)).any()
        state = model.reset_state(carried, torch.tensor([True, False, False]))
        assert model.cold_rows(tuple(state)).tolist() == [True, False, False]
        info = model(state, b).extras["solver"]
        assert info.evals.tolist() == [9, 3, 3] and info.nstep == 9
        with solver_settings(model, 5, 0.0):
            assert model(state, b).extras["solver"].evals.tolist() == [5, 5, 5]
        assert model.config.max_iter_warm == 3 and model.config.max_iter == 9
    with pytest.raises(ValueError, match="max_iter_warm"):
        AttractorConfig(**TINY, max_iter_warm=0)


def test_net_runs_in_eval_mode_inside_the_solve_only():
    torch.manual_seed(0)
    model = Attractor(AttractorConfig(**TINY, max_iter=3, phantom_k=2)).train()
    modes = []
    model.net.layers[0].register_forward_hook(
        lambda mod, i, o: modes.append((mod.training, torch.is_grad_enabled()))
    )
    model(model.initial_state(3), batch())
    solve_calls = [m for m in modes if not m[1]]
    grad_calls = [m for m in modes if m[1]]
    assert solve_calls and all(not training for training, _ in solve_calls)
    assert grad_calls and all(training for training, _ in grad_calls)
    assert model.training


@pytest.mark.parametrize("mixer", ["attention", "mlp"])
def test_unrolled_solver_with_one_step_gradient_is_exactly_trm(mixer):
    # "mlp": the attractor_mlp preset's network against TRM-MLP's (equal mixers)
    torch.manual_seed(0)
    T, n = 3, 2
    net = dict(TINY, mixer=mixer, positions="rope" if mixer == "attention" else "none")
    trm = TRM(TRMConfig(**net, T_cycles=T, n_inner=n))
    att = Attractor(AttractorConfig(**net, T_cycles=T, n_inner=n, solver="unroll", grad="one_step"))
    att.load_state_dict(trm.state_dict())
    with torch.no_grad():
        trm.q_head.weight.normal_()
        trm.embed.puzzle.table.normal_()
    att.load_state_dict(trm.state_dict())
    outs = {}
    for name, model in (("trm", trm), ("att", att)):
        model.train()
        carry = initial_carry(model, batch(seed=1))
        torch.manual_seed(5)  # same exploration draws
        logits, grads = [], []
        for i in range(3):
            model.zero_grad(set_to_none=True)
            carry, loss, _, out = train_step(model, carry, batch(seed=10 + i))
            loss.backward()
            logits.append(out["logits"].detach())
            grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
            grads[-1]["puzzle"] = model.embed.puzzle.batch_rows.grad.clone()
        outs[name] = (logits, grads, carry)
    for a, b in zip(outs["trm"][0], outs["att"][0], strict=True):
        assert torch.equal(a, b)
    for ga, gb in zip(outs["trm"][1], outs["att"][1], strict=True):
        for k in ga:
            assert torch.equal(ga[k], gb[k]), k
    assert torch.equal(outs["trm"][2].state.y, outs["att"][2].state.y)
    assert torch.equal(outs["trm"][2].halted, outs["att"][2].halted)


def test_unroll_reports_the_residual_of_its_last_iterate():
    torch.manual_seed(0)
    model = Attractor(
        AttractorConfig(**TINY, T_cycles=3, n_inner=2, solver="unroll", grad="one_step")
    ).train()
    b = batch()
    extras = model(model.initial_state(3), b).extras
    info = extras["solver"]
    assert info.nstep == 2
    torch.testing.assert_close(
        info.rel_residual, fresh_residual(model, b, extras["fixed_point"]), rtol=1e-4, atol=1e-7
    )


def test_warm_start_needs_fewer_iterations_than_cold():
    torch.manual_seed(0)
    cfg = dict(TINY, max_iter=40, tol=1e-4, halt_max_steps=8, halt_exploration_prob=0.0)
    warm = contractive(Attractor(AttractorConfig(**cfg))).eval()
    cold = Attractor(AttractorConfig(**cfg, warm_start=False)).eval()
    cold.load_state_dict(warm.state_dict())
    b = batch()
    steps = {}
    for name, model in (("warm", warm), ("cold", cold)):
        carry = initial_carry(model, b)
        with torch.no_grad():
            carry, out = supervision_step(model, carry, b)
            first = out["extras"]["solver"]
            carry, out = supervision_step(model, carry, b)
        steps[name] = (first, out["extras"]["solver"])
    cold_first, cold_second = steps["cold"]
    warm_first, warm_second = steps["warm"]
    assert warm_first.nstep == cold_first.nstep  # the first step is cold for both
    assert cold_second.converged.all() and warm_second.converged.all()
    assert warm_second.nstep < cold_second.nstep
    assert (warm_second.best_step < cold_second.best_step).all()


@pytest.mark.parametrize("grad", ["phantom", "neumann", "one_step", "implicit"])
def test_every_gradient_option_reaches_every_parameter_and_carry_holds_no_graph(grad):
    torch.manual_seed(0)
    model = contractive(Attractor(AttractorConfig(**TINY, grad=grad, max_iter=30, tol=1e-4, phantom_k=3)))
    model.train()
    b = batch()
    carry = initial_carry(model, b)
    carry, loss, _, out = train_step(model, carry, b)
    assert all(not s.requires_grad and s.grad_fn is None for s in carry.state)
    assert all(not s.requires_grad for s in out["extras"]["fixed_point"])
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert model.embed.puzzle.batch_rows.grad.abs().sum() > 0


def test_phantom_gradient_approaches_implicit_as_k_grows():
    torch.manual_seed(0)
    base = contractive(
        Attractor(
            AttractorConfig(
                **TINY, max_iter=60, tol=1e-6, grad="implicit", implicit_tol=1e-7, implicit_max_iter=60
            )
        )
    )
    b = batch()

    def grads(**over):
        model = Attractor(AttractorConfig(**{**TINY, "max_iter": 60, "tol": 1e-6, **over}))
        model.load_state_dict(base.state_dict())
        model.train()
        _, logits, q, _ = model(model.initial_state(3), b)
        (logits.square().mean() + q.sum()).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g_ift = grads(grad="implicit", implicit_tol=1e-7, implicit_max_iter=60)
    errors = [
        (grads(grad="phantom", phantom_k=k, phantom_tau=0.8) - g_ift).norm() / g_ift.norm()
        for k in (1, 4, 12, 30)
    ]
    assert errors[0] > errors[1] > errors[2] > errors[3]  # measured: 0.57, 0.18, 0.016, 0.0007
    assert errors[3] < 2e-3
    # at a converged fixed point the unrolled and Neumann phantom gradients agree
    g_upg, g_npg = (
        grads(grad="phantom", phantom_k=8, phantom_tau=0.8),
        grads(grad="neumann", phantom_k=8, phantom_tau=0.8),
    )
    assert (g_upg - g_npg).norm() / g_upg.norm() < 1e-4


def test_initial_state_is_a_fixed_buffer():
    model = Attractor(AttractorConfig(**TINY))
    names = {n for n, _ in model.named_parameters()}
    assert "y_init" not in names and "z_init" not in names
    assert {"y_init", "z_init"} <= set(model.state_dict())


@pytest.mark.parametrize(
    "over,match",
    [
        ({"solver": "broyden"}, "unknown solver"),
        ({"grad": "exact"}, "unknown grad"),
        ({"phantom_tau": 0.0}, "phantom_tau"),
        ({"n_heads": 5}, "divide"),
        ({"anderson_restart": 0.0}, "anderson_restart"),
        ({"solver_stall": 0}, "solver_stall"),
        ({"solver_stall_rows": "cold"}, "solver_stall_rows"),
        ({"solver_stall_below": 0.0}, "solver_stall_below"),
    ],
)
def test_bad_attractor_configs_raise(over, match):
    with pytest.raises(ValueError, match=match):
        AttractorConfig(**{**TINY, **over})


def test_solver_trace_exposes_every_iterate_for_visualisation():
    torch.manual_seed(0)
    model = Attractor(AttractorConfig(**TINY, max_iter=5, tol=0.0, solver_trace="iterates")).eval()
    with torch.no_grad():
        extras = model(model.initial_state(3), batch()).extras
    info = extras["solver"]
    assert info.trace.shape == (5, 3)
    y_iterates, z_iterates = info.iterates
    assert y_iterates.shape == (5, 3, 20, 32) and z_iterates.shape == (5, 3, 20, 32)


@pytest.mark.parametrize("solver", ["anderson", "fixed_point"])
def test_compacted_solve_gives_the_batched_answers_with_fewer_row_evaluations(solver):
    """solver_rows=True evaluates F only on the rows still solving: same fixed points, residuals and
    flags as the batched solve, and fewer sample-evaluations when rows converge at different steps."""
    torch.manual_seed(0)
    cfg = dict(**TINY, n_inner=1, max_iter=60, tol=1e-5, solver=solver)
    batched = contractive(Attractor(AttractorConfig(**cfg, solver_rows=False))).train()
    compact = Attractor(AttractorConfig(**cfg, solver_rows=True)).train()
    compact.load_state_dict(batched.state_dict())
    b = batch(B=6, seed=3)
    state = batched.initial_state(6)
    _, logits_b, q_b, extras_b = batched(state, b)
    _, logits_c, q_c, extras_c = compact(state, b)
    info_b, info_c = extras_b["solver"], extras_c["solver"]
    assert info_b.converged.all() and torch.equal(info_c.converged, info_b.converged)
    assert torch.equal(info_c.best_step, info_b.best_step) and info_c.nstep == info_b.nstep
    assert info_b.best_step.min() < info_b.best_step.max()  # rows finish at different steps
    assert info_c.row_evals < info_b.row_evals == 6 * info_b.nstep
    torch.testing.assert_close(info_c.rel_residual, info_b.rel_residual, rtol=1e-3, atol=1e-7)
    for a, c in zip(extras_c["fixed_point"], extras_b["fixed_point"], strict=True):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_c, logits_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q_c, q_b, rtol=1e-5, atol=1e-5)


def test_contraction_probe_reports_the_maps_own_spectral_radius():
    """The probe's rho is the power-method radius of F at the step's fixed point (checked against a
    dense Jacobian's eigenvalues on one sample), and a contractive map is reported as such."""
    from reasoners.attractor import contraction_probe

    torch.manual_seed(0)
    model = contractive(
        Attractor(AttractorConfig(**{**TINY, "seq_len": 4}, n_inner=1, max_iter=60, tol=1e-6))
    )
    b = batch(B=1, L=4)
    probe = contraction_probe(model, b, steps=2, iters=200)
    model.eval()
    with torch.no_grad():
        outs = list(rollout(model, b, 2))
        x = model.embed(b["inputs"], b["puzzle_identifiers"])
    F = model.fixed_point_map(x, model.rotary())
    y, z = outs[-1].extras["fixed_point"]
    n = y.numel()

    def flat_map(v):
        fy, fz = F((v[:n].view_as(y), v[n:].view_as(z)))
        return torch.cat([fy.flatten(), fz.flatten()])

    J = torch.autograd.functional.jacobian(flat_map, torch.cat([y.flatten(), z.flatten()]))
    rho = torch.linalg.eigvals(J.double()).abs().max().item()
    assert probe["rho_median"] == pytest.approx(rho, rel=0.05)
    assert rho < 1 and probe["rho_below_1"] == 1.0
    assert probe["warm_start_residual"] < 1e-3  # step 2 starts from step 1's fixed point


def test_jacobian_penalty_joins_the_loss_only_when_asked():
    torch.manual_seed(0)
    b = batch()
    off = Attractor(AttractorConfig(**TINY, max_iter=4)).train()
    _, _, _, extras = off(off.initial_state(3), b)
    assert "aux_loss" not in extras
    for reg in ("hinge", "frobenius"):
        model = Attractor(AttractorConfig(**TINY, max_iter=4, jac_weight=0.5, jac_reg=reg, jac_target=0.0))
        model.load_state_dict(off.state_dict())
        model.train()
        carry = initial_carry(model, b)
        _, loss, metrics, outputs = train_step(model, carry, b)
        aux = outputs["extras"]["aux_loss"]
        assert aux.item() > 0 and metrics["aux_loss"].item() == pytest.approx(aux.item())
        _, plain_loss, _, _ = train_step(off, initial_carry(off, b), b)
        assert loss.item() == pytest.approx(plain_loss.item() + aux.item(), rel=1e-5)
        model.zero_grad()
        aux.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())
    with pytest.raises(ValueError, match="jac_reg"):
        AttractorConfig(**TINY, jac_reg="spectral")


@pytest.mark.parametrize("reg", ["hinge", "frobenius"])
def test_jacobian_penalty_on_a_row_subset_is_the_penalty_of_those_rows(reg):
    """jac_rows=k: the penalty is solvers' estimate on the first k rows' fixed points alone (the same
    random probe), and k >= the batch is the whole-batch penalty."""
    from solvers import contraction_hinge, jacobian_reg

    b = batch()
    torch.manual_seed(0)
    kw = dict(**TINY, max_iter=4, jac_weight=0.5, jac_reg=reg, jac_target=0.0)
    full = Attractor(AttractorConfig(**kw)).train()
    penalties = {}
    for rows in (0, 2, 3):
        model = Attractor(AttractorConfig(**kw, jac_rows=rows)).train()
        model.load_state_dict(full.state_dict())
        torch.manual_seed(5)
        extras = model(model.initial_state(3), b).extras
        penalties[rows] = extras["jac_penalty"]
        if rows == 2:
            x = model.embed(b["inputs"], b["puzzle_identifiers"])[:2]  # a batch of the two rows alone
            F = model.fixed_point_map(x, model.rotary())
            s = tuple(t[:2] for t in extras["fixed_point"])
            torch.manual_seed(5)
            want = (
                contraction_hinge(F, s, target=0.0, iters=model.config.jac_iters)
                if reg == "hinge"
                else (jacobian_reg(F, s))
            )
            torch.testing.assert_close(penalties[2], want.detach(), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(penalties[3], penalties[0], rtol=1e-6, atol=0)
    assert not torch.allclose(penalties[2], penalties[0])
    with pytest.raises(ValueError, match="jac_rows"):
        AttractorConfig(**TINY, jac_rows=-1)


def test_jacobian_penalty_on_the_worst_rows_is_the_penalty_of_those_rows():
    """jac_select="worst": the penalty is solvers' hinge on the jac_rows rows whose solve exited with the
    largest residual (an oracle that picks them from the reported residuals by hand)."""
    from solvers import contraction_hinge

    b = batch()
    torch.manual_seed(0)
    kw = dict(**TINY, max_iter=2, min_iter=2, jac_weight=0.5, jac_target=0.0, jac_rows=1)
    model = Attractor(AttractorConfig(**kw, jac_select="worst")).train()
    torch.manual_seed(5)
    extras = model(model.initial_state(3), b).extras
    res = extras["solver"].rel_residual
    assert len(set(res.tolist())) == 3  # distinct residuals, so "worst" is one row
    worst = int(res.argmax())
    assert worst != 0  # else "first" would pick the same row and the test could not tell them apart
    x = model.embed(b["inputs"], b["puzzle_identifiers"])[worst : worst + 1]
    F = model.fixed_point_map(x, model.rotary())
    s = tuple(t[worst : worst + 1] for t in extras["fixed_point"])
    torch.manual_seed(5)
    want = contraction_hinge(F, s, target=0.0, iters=model.config.jac_iters)
    torch.testing.assert_close(extras["jac_penalty"], want.detach(), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="jac_select"):
        AttractorConfig(**TINY, jac_select="largest")


# ----------------------------------------------------------------------------- damping


def _dense_jacobian(F, s: tuple) -> torch.Tensor:
    """(D, D) Jacobian of F at the one-sample state s, by autograd (the oracle)."""
    n = s[0].numel()

    def flat_map(v):
        fy, fz = F((v[:n].view_as(s[0]), v[n:].view_as(s[1])))
        return torch.cat([fy.flatten(), fz.flatten()])

    return torch.autograd.functional.jacobian(flat_map, torch.cat([t.flatten() for t in s])).double()


def test_damped_map_moves_every_eigenvalue_to_one_minus_lambda_plus_lambda_mu():
    """J_damped = (1 - lambda) I + lambda J: at one state of a small map, the damped map's eigenvalues
    (a dense eigen-decomposition) are 1 - lambda + lambda mu of the plain map's, one for one."""
    torch.manual_seed(0)
    lam = 0.4
    plain = Attractor(AttractorConfig(**{**TINY, "seq_len": 4}, n_inner=1))
    damped = Attractor(AttractorConfig(**{**TINY, "seq_len": 4}, n_inner=1, damping=lam))
    damped.load_state_dict(plain.state_dict())
    b = batch(B=1, L=4)
    g = torch.Generator().manual_seed(1)
    s = tuple(torch.randn(1, 8, 32, generator=g) for _ in range(2))  # (1, P+L, D) each
    eigs = {}
    for name, model in (("plain", plain), ("damped", damped)):
        model.eval()
        x = model.embed(b["inputs"], b["puzzle_identifiers"]).detach()
        J = _dense_jacobian(model.fixed_point_map(x, model.rotary()), s)
        eigs[name] = torch.linalg.eigvals(J)
    predicted = 1 - lam + lam * eigs["plain"]
    # match as multisets: every predicted eigenvalue has a damped one next to it, and vice versa
    dist = (predicted[:, None] - eigs["damped"][None, :]).abs()
    assert dist.min(dim=1).values.max() < 1e-4 and dist.min(dim=0).values.max() < 1e-4
    # the map is not trivially damped already: the plain spectrum is far from its image
    assert (eigs["plain"].abs().max() - predicted.abs().max()).abs() > 0.05


def test_damped_map_has_the_plain_maps_fixed_points():
    torch.manual_seed(0)
    cfg = dict(TINY, n_inner=1, max_iter=200, tol=1e-6, solver="fixed_point")
    plain = contractive(Attractor(AttractorConfig(**cfg))).eval()
    damped = Attractor(AttractorConfig(**cfg, damping=0.5)).eval()
    damped.load_state_dict(plain.state_dict())
    b = batch()
    with torch.no_grad():
        s_plain = plain(plain.initial_state(3), b).extras["fixed_point"]
        info = damped(damped.initial_state(3), b).extras
    s_damped = info["fixed_point"]
    assert info["solver"].converged.all()
    # the damped solve's answer is a fixed point of the *plain* map (its residual is lambda times
    # smaller, so the plain residual is at most about 2 tol) and the plain solve's answer
    assert (fresh_residual(plain, b, s_damped) < 3e-6).all()
    for a, c in zip(s_damped, s_plain, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


def test_phantom_gradient_runs_through_the_damped_map():
    """UPG(k, tau) on S + lambda (F(S) - S) is UPG(k, tau * lambda) on F: (1 - tau) S + tau (S +
    lambda (F - S)) = (1 - tau lambda) S + tau lambda F. Same state, same gradient."""
    torch.manual_seed(0)
    lam, tau = 0.5, 0.8
    b = batch()
    g = torch.Generator().manual_seed(2)
    s = tuple(torch.randn(3, 20, 32, generator=g) for _ in range(2))
    damped = Attractor(AttractorConfig(**TINY, damping=lam, phantom_k=3, phantom_tau=tau))

    def grad(model):
        model.load_state_dict(damped.state_dict())
        model.train()
        x = model.embed(b["inputs"], b["puzzle_identifiers"])
        y, _ = model.attach_gradient(model.fixed_point_map(x, model.rotary()), s)
        logits, q = model.decode(y)
        (logits.square().mean() + q.sum()).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g_damped = grad(damped)
    g_plain = grad(Attractor(AttractorConfig(**TINY, phantom_k=3, phantom_tau=tau * lam)))
    assert g_damped.abs().sum() > 0
    torch.testing.assert_close(g_damped, g_plain, rtol=1e-4, atol=1e-7)
    # and lambda matters: the plain map with tau (not tau * lambda) gives another gradient
    g_other = grad(Attractor(AttractorConfig(**TINY, phantom_k=3, phantom_tau=tau)))
    assert (g_other - g_damped).norm() > 1e-3 * g_damped.norm()


@pytest.mark.parametrize("damping", [0.0, -0.5, 1.5])
def test_damping_outside_zero_one_raises(damping):
    with pytest.raises(ValueError, match="damping"):
        AttractorConfig(**TINY, damping=damping)


# ----------------------------------------------------------------------------- halting on convergence


class _ScriptedSolve(Oracle):
    """The Oracle (answers with the labels, q-head from ``halt_at``) plus a solver report: puzzle i's
    solve converges from supervision step ``converge_at(inputs)[i]`` on."""

    def __init__(self, converge_at, halt_on_converged: bool, **kw):
        super().__init__(6, **kw)
        self.config = _ScriptConfig(halt_on_converged=halt_on_converged)
        self.converge_at = converge_at

    def reset_state(self, state, mask):
        return (torch.where(mask, 0, state[0]),)

    def forward(self, state, batch):
        (step,), logits, q, _ = super().forward(state, batch)
        converged = step >= self.converge_at(batch["inputs"].long())
        B = step.shape[0]
        res = torch.where(converged, 1e-5, 0.5)
        info = SolverInfo(res, res.clone(), converged, torch.zeros(B, dtype=torch.long), nstep=3)
        return (step,), logits, q, {"solver": info}


@dataclass
class _ScriptConfig:
    halt_max_steps: int = 6
    q_continue: bool = False
    halt_exploration_prob: float = 0.0
    halt_on_converged: bool = False


NEVER = 5  # a token (4x4 Sudoku tokens are 0..5) that stands for "never" in the script


def _script_cases():
    """Per puzzle: the step its solve converges from, the step its q-head fires from (NEVER: not at
    all), and the halting step with the option on (converged from step 2 on, or the q-head, or
    halt_max_steps = 6) and off (the q-head alone)."""
    converge = torch.tensor([1, 2, 3, NEVER, NEVER, 4])
    q_fires = torch.tensor([NEVER, NEVER, NEVER, NEVER, 3, 1])
    expected_on = torch.tensor([2, 2, 3, 6, 3, 1])
    expected_off = torch.tensor([6, 6, 6, 6, 3, 1])
    return converge, q_fires, expected_on, expected_off


def _script_batch(converge, q_fires):
    """Cells 0 and 1 of each puzzle carry its script (the rest blank)."""
    inputs = torch.ones(6, 16, dtype=torch.long)
    inputs[:, 0], inputs[:, 1] = converge, q_fires
    return {
        "inputs": inputs,
        "labels": inputs.clone(),
        "puzzle_identifiers": torch.zeros(6, dtype=torch.long),
    }


def _script_model(on: bool):
    def step_of(col):
        return lambda inputs: torch.where(inputs[:, col] == NEVER, 10**6, inputs[:, col])

    return _ScriptedSolve(converge_at=step_of(0), halt_at=step_of(1), halt_on_converged=on)


@pytest.mark.parametrize("on", [True, False])
def test_halt_on_converged_halts_training_slots_after_two_steps(on):
    converge, q_fires, expected_on, expected_off = _script_cases()
    b = _script_batch(converge, q_fires)
    model = _script_model(on).train()
    carry = initial_carry(model, b)
    first_halt = torch.zeros(6, dtype=torch.long)
    for step in range(1, 7):
        carry, _ = supervision_step(model, carry, b)
        newly = carry.halted & (first_halt == 0)
        first_halt[newly] = step
    assert torch.equal(first_halt, expected_on if on else expected_off)


def test_halt_on_converged_is_the_halting_step_of_every_evaluation_path(tmp_path):
    """The same scripted solves through evaluate (score_rollout) and the trainer's evaluation: the
    halting step each reports is the rule's, with the option on and off."""
    from data_gen.format import build_split
    from reasoners import evaluate as ev
    from reasoners.tasks import Task
    from reasoners.train import Dist, evaluate_split

    converge, q_fires, expected_on, expected_off = _script_cases()
    b = _script_batch(converge, q_fires)
    task = Task("sudoku", 4)
    split = build_split(b["inputs"].numpy().astype("uint8"), b["inputs"].numpy().astype("uint8"), None,
                        vocab_size=task.vocab_size)  # fmt: skip
    for on, expected in ((True, expected_on), (False, expected_off)):
        model = _script_model(on).eval()
        config = ev.EvalConfig(steps=(6,), breadth_trajectories=None)
        result = ev.evaluate_model(model, task, split, config, log=lambda *a: None)
        assert result["halting"]["mean_step"] == pytest.approx(expected.double().mean().item())
        assert result["halting"]["never_fired"] == pytest.approx((expected == 6).double().mean().item())
        assert ("solve converged" in result["halting"]["rule"]) == on
        trainer_eval = evaluate_split(model, task, split, torch.device("cpu"), Dist(), batch_size=4)
        assert trainer_eval["halt_step"] == pytest.approx(expected.double().mean().item())


def test_halt_on_converged_on_a_contractive_attractor_halts_at_step_two():
    """A real solve: the q-head never fires (its initial bias), the contractive map converges at every
    step, so with the option every slot halts at step 2 in training and the recorded trajectory
    (visualize's path) marks steps 2.. as halting; without it, no slot halts before halt_max_steps."""
    from reasoners.tasks import Task
    from reasoners.trajectory import record_trajectory

    torch.manual_seed(0)
    cfg = dict(TINY, n_inner=1, max_iter=60, tol=1e-4, halt_exploration_prob=0.0)
    model = contractive(Attractor(AttractorConfig(**cfg, halt_on_converged=True)))
    with torch.no_grad():
        model.q_head.weight.zero_()  # q_halt = -5 everywhere: only convergence can halt
    off = Attractor(AttractorConfig(**cfg))
    off.load_state_dict(model.state_dict())
    b = batch()
    for m, halted_at_2 in ((model, True), (off, False)):
        m.train()
        carry = initial_carry(m, b)
        carry, out1 = supervision_step(m, carry, b)
        assert out1["extras"]["solver"].converged.all() and not carry.halted.any()
        carry, _ = supervision_step(m, carry, b)
        assert bool(carry.halted.all()) == halted_at_2 and bool(carry.halted.any()) == halted_at_2
    task = Task("sudoku", 4)  # 16 cells over 6 tokens
    tiny = contractive(Attractor(AttractorConfig(**{**cfg, "vocab_size": 6}, halt_on_converged=True)))
    with torch.no_grad():
        tiny.q_head.weight.zero_()
    traj = record_trajectory(tiny, task, b["inputs"][0].clamp(max=5).numpy())
    assert traj.halt_fires.tolist() == [False, True, True, True]
