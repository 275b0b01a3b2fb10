"""bench/bench_attractor.py's bookkeeping: the targets' verdicts from a run's metrics, and the fidelity
grid's reference row. Timings are printed, never asserted."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from _tiny_runs import make_run, sudoku4_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_attractor  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _write_metrics(path: Path, rows: list[dict]) -> None:
    keys = ["step", "solver_converged", "eval_rho_below_1", "eval_rho_median", "eval_ema_rho_below_1",
            "eval_ema_rho_median"]  # fmt: skip
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def attractor_run(tmp_path):
    sudoku4_dataset(tmp_path / "data", n=8)
    run = tmp_path / "run"
    make_run(run, "attractor", tmp_path / "data", steps=40)
    return run


def test_targets_read_the_solves_after_the_cut_and_every_evaluation(attractor_run, capsys):
    # before update 20 the solves mostly fail; after it 95% and 87%: mean 91% -> PASS at >= 90%
    _write_metrics(
        attractor_run / "metrics.csv",
        [
            {"step": 10, "solver_converged": 0.1},
            {"step": 20, "solver_converged": 0.2, "eval_rho_below_1": 1.0, "eval_rho_median": 0.5,
             "eval_ema_rho_below_1": 1.0, "eval_ema_rho_median": 0.4},
            {"step": 30, "solver_converged": 0.95},
            {"step": 40, "solver_converged": 0.87, "eval_rho_below_1": 0.97, "eval_rho_median": 0.8,
             "eval_ema_rho_below_1": 0.94, "eval_ema_rho_median": 0.9},
        ],
    )  # fmt: skip
    args = ["--reps", "1", "targets", str(attractor_run), "--after", "20", "--puzzles", "8"]
    args += ["--max-iter", "2", "4", "--cost-batch", "4"]
    bench_attractor.main(args)
    out = capsys.readouterr().out
    res = bench_attractor.last_results
    assert res["converged"] == pytest.approx(0.91)
    assert res["verdicts"]["converged"] is True
    # the EMA share at update 40 is 94%: one evaluation below 95% fails the target
    assert res["verdicts"]["rho"] is False
    assert "update 20: training 100%" in out and "update 40: training 97%" in out
    assert set(res["max_iter_exact"]) == {2, 4} and res["cost_ratio"] > 0
    ex = list(res["max_iter_exact"].values())
    assert res["verdicts"]["max_iter"] == (ex[1] >= ex[0] - 0.01)


def test_targets_say_n_a_when_nothing_was_logged_after_the_cut(attractor_run):
    _write_metrics(attractor_run / "metrics.csv", [{"step": 10, "solver_converged": 1.0}])
    bench_attractor.main(["--reps", "1", "targets", str(attractor_run), "--after", "20", "--puzzles", "4",
                          "--max-iter", "2", "--cost-batch", "4"])  # fmt: skip
    res = bench_attractor.last_results
    assert res["converged"] is None
    assert res["verdicts"]["converged"] is None and res["verdicts"]["rho"] is None


def test_fidelity_grid_reference_row_is_the_implicit_gradient_itself(attractor_run):
    """The implicit row is the reference (cosine 1, norm ratio 1); the one-step gradient is UPG(1, 1)."""
    bench_attractor.main(["--reps", "1", "fidelity", "--checkpoint", str(attractor_run), "--probe", "4",
                          "--ks", "1", "--taus", "1.0"])  # fmt: skip
    rows = {r["name"]: r for r in bench_attractor.last_results}
    assert rows["implicit"]["cosine"] == pytest.approx(1.0, abs=1e-4)
    assert rows["implicit"]["norm_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert rows["one_step"]["cosine"] == pytest.approx(rows["UPG(1, 1)"]["cosine"], abs=1e-6)
    assert rows["UPG(1, 1)"]["grad_calls"] == rows["one_step"]["grad_calls"] > 0


@pytest.mark.parametrize("model", ["attractor", "attractor_mlp"])
def test_cost_yardstick_is_trm_with_the_attractors_own_mixer(model):
    from reasoners.presets import build, count_parameters
    from reasoners.tasks import Task

    task = Task("sudoku", 6)
    att = build(model, "tiny", task.preset_puzzle, **task.model_overrides())
    trm = bench_attractor.trm_like(task, att)
    # equal mixers, hence the same network: the ratio measures the solve and its gradient only
    assert trm.config.mixer == att.config.mixer and count_parameters(trm) == count_parameters(att)


def test_cost_times_each_variant_of_the_runs_config(attractor_run, capsys):
    args = ["--reps", "1", "cost", str(attractor_run), "--cost-batch", "4"]
    args += ["--variant", "max_iter=1", "--variant", "min_iter=1,max_iter=3,anderson_restart=none"]
    bench_attractor.main(args)
    rows = bench_attractor.last_results
    assert [r["variant"] for r in rows] == [
        "as trained",
        "max_iter=1",
        "min_iter=1,max_iter=3,anderson_restart=none",
    ]
    assert rows[1]["nstep"] == 1 and 1 <= rows[2]["nstep"] <= 3  # the variant's solve budget was used
    assert all(r["ratio"] > 0 for r in rows)
    assert "| max_iter=1 |" in capsys.readouterr().out
    # --batches: every variant on each of the consecutive batches, each its own comparison
    bench_attractor.main(["--reps", "1", "cost", str(attractor_run), "--cost-batch", "2", "--batches", "3",
                          "--variant", "max_iter=1"])  # fmt: skip
    rows = bench_attractor.last_results
    assert [(r["batch"], r["variant"]) for r in rows] == [
        (b, v) for b in range(3) for v in ("as trained", "max_iter=1")
    ]
    assert all(r["nstep"] == 1 for r in rows if r["variant"] == "max_iter=1")
    out = capsys.readouterr().out
    assert "| 4-5 | max_iter=1 |" in out and "over the 3 batches (x TRM): as trained: median" in out
    assert bench_attractor._parse_variant("a=1,b=0.5,c=null,d=true") == {
        "a": 1,
        "b": 0.5,
        "c": None,
        "d": True,
    }
    with pytest.raises(SystemExit, match="unknown AttractorConfig"):
        bench_attractor.main(["cost", str(attractor_run), "--variant", "max_iters=3"])
    with pytest.raises(SystemExit, match="key=value"):
        bench_attractor.main(["cost", str(attractor_run), "--variant", "max_iter"])


def test_solves_compares_the_solver_variants_per_supervision_step(attractor_run, capsys):
    args = ["solves", str(attractor_run), "--split", "test", "--puzzles", "4", "--steps", "2"]
    args += ["--budget", "3"]
    bench_attractor.main(args)
    rows = bench_attractor.last_results
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        cells = [v for k, v in r.items() if k != "step"]
        assert len(cells) == 3 and all(0 <= conv <= 1 and 1 <= ev <= 3 for conv, ev in cells)
    out = capsys.readouterr().out
    assert "| 1 | cold |" in out and "| 2 | warm |" in out


@pytest.fixture
def trained_attractor_run(tmp_path, tiny_data):
    """A real trainer run (4 updates of the tiny Attractor on 4x4 Sudoku), so it can be resumed."""
    from hydra import compose, initialize_config_module

    from reasoners.train import train

    with initialize_config_module("reasoners.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=laptop_smoke", f"data.dir={tiny_data}", "data.auto_build=false", "model=attractor",
                "trainer.batch_size=8", "trainer.max_steps=4", "trainer.eval_interval=4",
                "trainer.eval_max_puzzles=4", "trainer.lr_warmup_steps=1", "trainer.progress=false",
                "trainer.threads=1", "+model.arch.max_iter=3",
            ],
        )  # fmt: skip
    train(cfg, tmp_path / "run")
    return tmp_path / "run"


@pytest.mark.parametrize("frozen", [False, True])
def test_carried_counts_every_training_row_and_holds_the_weights_when_frozen(trained_attractor_run, frozen):
    run = trained_attractor_run
    ckpt = run / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    args = ["carried", str(run), "--updates", "3", "--budget", "16"] + (["--frozen"] if frozen else [])
    bench_attractor.main(args)
    out = bench_attractor.last_results
    assert out["cold"]["rows"] + out["warm"]["rows"] == 3 * 8  # every row of every update, once
    for kind in ("cold", "warm"):
        assert 0 <= out[kind]["converged"] <= out[kind]["rows"]
        failed = out[kind]["rows"] - out[kind]["converged"]
        for name in ("run's solver", "plain iteration", "Anderson"):
            row = out[f"{kind} {name}"]
            assert row["count"] == failed and 0 <= row["rho_above_1"] <= failed
            assert all(0 <= w <= failed for w in row["within"])
    # budget 3: some solves fail and are re-solved (the resumed carry is mid-puzzle: warm rows)
    assert out["warm"]["rows"] > out["warm"]["converged"]
    assert len(out["warm run's solver"]["within"]) == 1  # the 16-evaluation cut
    assert (out["moved"] == 0) == frozen  # an optimiser step moves the weights; frozen holds them
    assert ckpt.read_bytes() == before  # the run itself is not touched


def test_carried_measures_the_checkpoints_own_solver_config(trained_attractor_run):
    """The run's config.yaml may no longer name a value (a preset changed since): the checkpoint's model
    config is what is measured (max_iter 3 here, against the preset's 16)."""
    from omegaconf import OmegaConf

    cfg_path = trained_attractor_run / "config.yaml"
    cfg = OmegaConf.load(cfg_path)
    assert cfg.model.arch.max_iter == 3
    del cfg.model.arch["max_iter"]
    cfg_path.write_text(OmegaConf.to_yaml(cfg))
    bench_attractor.main(["carried", str(trained_attractor_run), "--updates", "1", "--budget", "4"])
    assert bench_attractor.last_results["max_iter"] == 3


def test_stuck_lists_the_unconverged_rows_with_their_traces_and_a_dense_rho(attractor_run, capsys):
    """``stuck``: the rows it reports are those the run's own solve leaves above tol on the cost batch;
    each re-solve starts at that row's warm start (its first residual is a fresh one there), and the
    dense radius is the largest |eigenvalue| of a Jacobian built independently (forward mode)."""
    import numpy as np
    import torch

    from reasoners.attractor import _joint_residual
    from reasoners.data import to_batch

    bench_attractor.main(["--step", "2", "stuck", str(attractor_run), "--cost-batch", "1", "--budget", "12",
                          "--dense"])  # fmt: skip
    rows = bench_attractor.last_results
    model, _, split, _ = bench_attractor.load_model(str(attractor_run), None, ema=False, seed=0)
    batch = to_batch(split, np.arange(1), "cpu")
    state = bench_attractor.warm_state(model, batch, 2)
    with torch.no_grad():
        x = model.embed(batch["inputs"], batch["puzzle_identifiers"])
        F = model.fixed_point_map(x, model.rotary() if model.rotary is not None else None)
        _, info = model.solve(F, tuple(state))
        fresh, _ = _joint_residual(tuple(state), F(tuple(state)))
    assert [r["row"] for r in rows] == (~info.converged).nonzero().flatten().tolist()
    assert rows, "the tiny untrained map should leave some row unconverged"
    from solvers import fixed_point_iter

    for rec in rows:
        r = rec["row"]
        assert rec["start"] == pytest.approx(float(fresh[r]), rel=1e-5)
        assert rec["peak"] >= rec["start"] and rec["run_residual"] > model.config.tol
        Fr = model.fixed_point_map(x[r : r + 1], model.rotary() if model.rotary is not None else None)
        with torch.no_grad():
            end, _ = fixed_point_iter(Fr, tuple(t[r : r + 1] for t in state), max_iter=12,
                                      tol=model.config.tol, min_iter=1)  # fmt: skip
        f, v = bench_attractor._flat_map(Fr, tuple(end))
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):  # forward-mode AD has no fused-attention rule
            J = torch.func.jacfwd(f)(v)
        assert rec["rho_dense"] == pytest.approx(
            float(np.abs(np.linalg.eigvals(J.detach().double().numpy())).max()), rel=1e-4
        )
    assert "| row |" in capsys.readouterr().out
