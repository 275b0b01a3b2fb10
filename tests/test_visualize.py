"""reasoners.visualize: the recorded trajectory is the model's own (grids, halting, loss, solver
residuals and iterates, checked against independent forward calls), the PCA is exact, the figure,
GIF and text are written as documented, the command runs end to end through Hydra, and bad inputs
fail with clear errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from _tiny_runs import save_tiny_checkpoint
from PIL import Image

from data_gen.format import build_split, write_dataset
from puzzles import maze as maze_rules
from puzzles import sudoku as sudoku_rules
from reasoners import visualize as vis
from reasoners.layers import IGNORE_LABEL, LOSSES
from reasoners.presets import build
from reasoners.tasks import Task

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SUDOKU = Task("sudoku", 4)
SUDOKU_PUZZLE = "1..4.4.22..3.3.."
MAZE = Task("maze", 6)
# Five shortest S-G paths, so a path other than the label's is still valid.
MAZE_PUZZLE = "#######S   ## ## ##    ##   G#######"
MAZE_OTHER_PATH = "#######S   ##o## ##o   ##oooG#######"  # down the left side, then along the bottom
STEPS = 3
REASONERS = ("hrm", "trm", "trm_mlp", "attractor")


def tiny(name: str, task: Task, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == "attractor":
        overrides = {"max_iter": 6, **overrides}
    model = build(name, "tiny", task.kind, **task.model_overrides(), halt_max_steps=STEPS, **overrides)
    return model.eval()


def example(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Input and label tokens of the test puzzle of ``task`` (labels from the exact solvers)."""
    if task.kind == "sudoku":
        solution = sudoku_rules.solve(SUDOKU_PUZZLE, task.box)
        return task.encode(SUDOKU_PUZZLE).astype(np.int64), solution.astype(np.int64) + 1
    answer = maze_rules.solve(MAZE_PUZZLE)
    return task.encode(MAZE_PUZZLE).astype(np.int64), maze_rules.parse_grid(answer, answer=True).reshape(-1)


def write_checkpoint(path, name: str, task: Task, **overrides):
    model = tiny(name, task, **overrides)
    return save_tiny_checkpoint(path, model, name, task, data={})


def batch_of(inputs, labels=None):
    b = {
        "inputs": torch.as_tensor(inputs, dtype=torch.int32)[None],
        "puzzle_identifiers": torch.zeros(1, dtype=torch.int32),
    }
    if labels is not None:
        b["labels"] = torch.as_tensor(labels, dtype=torch.int64)[None]
    return b


def manual_steps(model, batch, n):
    """The model's own outputs, one ``forward`` per supervision step from the initial state (no
    run_steps, no solver tracing)."""
    state = model.initial_state(1, "cpu")
    out = []
    with torch.no_grad():
        for _ in range(n):
            entering = state
            state, logits, q, extras = model(state, batch)
            out.append(dict(entering=entering, state=state, logits=logits, q=q, extras=extras))
    return out


# ----------------------------------------------------------------------------------- recording


@pytest.mark.parametrize("task", [SUDOKU, MAZE], ids=["sudoku", "maze"])
@pytest.mark.parametrize("name", REASONERS)
def test_trajectory_is_the_models_own_step_by_step(name, task):
    model = tiny(name, task)
    inputs, labels = example(task)
    traj = vis.record_trajectory(model, task, inputs, labels, loss="softmax")
    ref = manual_steps(model, batch_of(inputs, labels), STEPS)

    assert traj.n_steps == STEPS
    for s, r in enumerate(ref):
        pred = r["logits"][0].argmax(-1).numpy()
        np.testing.assert_array_equal(traj.preds[s], pred)
        np.testing.assert_allclose(
            traj.confidence[s], torch.softmax(r["logits"][0], -1).max(-1).values, rtol=1e-6
        )
        assert traj.q_halt[s] == pytest.approx(float(r["q"][0, 0]), abs=1e-6)
        assert traj.q_continue[s] == pytest.approx(float(r["q"][0, 1]), abs=1e-6)
        assert traj.halt_prob[s] == pytest.approx(float(torch.sigmoid(r["q"][0, 0])), abs=1e-6)
        assert traj.valid[s] == task.rule_valid(inputs[None], pred[None])[0]
        assert traj.cell_accuracy[s] == pytest.approx(float((pred == labels).mean()))
        assert traj.exact[s] == bool((pred == labels).all())
        ce = LOSSES["softmax"](r["logits"], torch.as_tensor(labels)[None]).mean()
        assert traj.loss[s] == pytest.approx(float(ce), rel=1e-5)
    np.testing.assert_array_equal(traj.changed[1:], traj.preds[1:] != traj.preds[:-1])
    assert not traj.changed[0].any()
    if name == "attractor":
        assert traj.solver_trace is not None and traj.solver_preds is not None
    else:
        assert traj.solver_trace is None and traj.solver_residual is None


@pytest.mark.parametrize("task", [SUDOKU, MAZE], ids=["sudoku", "maze"])
def test_attractor_residuals_and_iterates_are_the_solvers_own(task):
    model = tiny("attractor", task, seed=1)
    inputs, _ = example(task)
    traj = vis.record_trajectory(model, task, inputs)
    assert model.config.solver_trace is False  # the recording switched it back off

    model.config.solver_trace = True  # an independent run: the solver's own residual trace
    ref = manual_steps(model, batch_of(inputs), STEPS)
    model.config.solver_trace = False
    for s, r in enumerate(ref):
        info = r["extras"]["solver"]
        np.testing.assert_array_equal(traj.solver_trace[s], info.trace[:, 0].double().numpy())
        assert traj.solver_residual[s] == float(info.rel_residual[0])
        assert traj.solver_best[s] == int(info.best_step[0])
        assert traj.solver_converged[s] == bool(info.converged[0])
        assert len(traj.solver_preds[s]) == info.nstep
        # iterate 0 is the warm start (the state entering the step); the best iterate is S*
        with torch.no_grad():
            start = model.decode(r["entering"].y)[0][0].argmax(-1).numpy()
            fixed = model.decode(r["extras"]["fixed_point"].y)[0][0].argmax(-1).numpy()
        np.testing.assert_array_equal(traj.solver_preds[s][0], start)
        np.testing.assert_array_equal(traj.solver_preds[s][info.best_step[0]], fixed)
    # the latent path holds, per step, every iterate, the fixed point and the carried state
    y = traj.latents[0]
    assert [p.name for p in traj.latents] == ["y", "z"]
    expected = ["initial"] + sum(
        (["iterate"] * len(t) + ["fixed_point", "state"] for t in traj.solver_trace), []
    )
    assert list(y.kind) == expected
    assert list(y.iteration[y.kind == "iterate"]) == [k for t in traj.solver_trace for k in range(len(t))]


def test_latent_pca_equals_an_independent_svd():
    model = tiny("hrm", SUDOKU)
    inputs, _ = example(SUDOKU)
    traj = vis.record_trajectory(model, SUDOKU, inputs)
    ref = manual_steps(model, batch_of(inputs), STEPS)
    assert [p.name for p in traj.latents] == ["z_H", "z_L"]
    for i, path in enumerate(traj.latents):
        points = [ref[0]["entering"][i]] + [r["state"][i] for r in ref]
        X = torch.stack([p[0].flatten() for p in points]).double().numpy()
        Xc = X - X.mean(0)
        u, sv, _ = np.linalg.svd(Xc, full_matrices=False)
        expected = u[:, :2] * sv[:2]
        np.testing.assert_allclose(np.abs(path.coords), np.abs(expected), rtol=1e-3, atol=1e-3 * sv[0])
        np.testing.assert_allclose(path.explained, sv[:2] ** 2 / (sv**2).sum(), atol=1e-4)
        assert list(path.kind) == ["initial"] + ["state"] * STEPS
        assert list(path.step) == list(range(STEPS + 1))


def test_pca_2d_is_exact_on_a_plane_in_high_dimension():
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(300, 2)))  # (300, 2) orthonormal
    planar = rng.normal(size=(40, 2)) * [5.0, 1.0]
    points = (planar @ basis.T + rng.normal(size=300)).astype(np.float32)
    coords, explained = vis.pca_2d(points)
    d_true = np.linalg.norm(planar[:, None] - planar[None], axis=-1)
    d_pca = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.testing.assert_allclose(d_pca, d_true, atol=1e-3)
    assert explained.sum() == pytest.approx(1.0, abs=1e-5)
    assert explained[0] > explained[1]
    assert (coords[-1] >= 0).all()
    # degenerate inputs do not fail
    assert np.all(vis.pca_2d(np.ones((5, 7), np.float32))[0] == 0)
    assert vis.pca_2d(np.ones((1, 7), np.float32))[0].shape == (1, 2)


@pytest.mark.parametrize(
    "name, bias, fires_at",
    [
        ("trm_mlp", (3.0, -9.0), 1),  # q_halt > 0 fires at once
        ("trm_mlp", (-3.0, 9.0), STEPS),  # never fires: training halts at halt_max_steps
        ("hrm", (-1.0, -2.0), 1),  # HRM: q_halt > q_continue, even with q_halt < 0
        ("hrm", (1.0, 2.0), STEPS),  # q_halt > 0 but below q_continue: no halt
    ],
)
def test_halting_rule_and_step(name, bias, fires_at):
    model = tiny(name, SUDOKU)
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor(bias))  # weights are zero at init: q = bias
    traj = vis.record_trajectory(model, SUDOKU, example(SUDOKU)[0])
    assert traj.halting_rule == ("q_halt > q_continue" if name == "hrm" else "q_halt > 0")
    np.testing.assert_allclose(traj.halt_prob, 1 / (1 + math.exp(-bias[0])), rtol=1e-6)
    assert traj.halt_step == fires_at
    assert traj.halt_fires.all() == (fires_at == 1)


def test_labels_accept_ignore_marks():
    inputs, labels = example(SUDOKU)
    partial = labels.copy()
    partial[:5] = IGNORE_LABEL
    traj = vis.record_trajectory(tiny("trm_mlp", SUDOKU), SUDOKU, inputs, partial)
    assert (traj.labels[:5] == 0).all()
    keep = labels[5:]
    assert traj.cell_accuracy[-1] == pytest.approx(float((traj.preds[-1][5:] == keep).mean()))


# ----------------------------------------------------------------------------------- figure and GIF


def test_a_different_valid_answer_is_not_drawn_wrong():
    inputs, labels = example(MAZE)
    other = maze_rules.parse_grid(MAZE_OTHER_PATH, answer=True).reshape(-1).astype(np.int64)
    assert MAZE.rule_valid(inputs[None], other[None])[0] and not (other == labels).all()
    rgb = vis._cell_colors(MAZE, inputs, labels, other, valid=True).reshape(-1, 3)
    alt = (other == 5) & (labels != 5)
    np.testing.assert_allclose(rgb[alt], np.broadcast_to(vis._MAZE["path_alt"], rgb[alt].shape))
    wrong = vis._cell_colors(MAZE, inputs, labels, other, valid=False).reshape(-1, 3)
    np.testing.assert_allclose(wrong[alt], np.broadcast_to(vis._MAZE["path_wrong"], wrong[alt].shape))
    # Sudoku: a different full solution of a puzzle with several is blue, not red
    empty = "." * 16
    a = SUDOKU.encode("1234341221434321").astype(np.int64)
    b = SUDOKU.encode("2143341212344321").astype(np.int64)
    x = SUDOKU.encode(empty)
    assert SUDOKU.rule_valid(np.stack([x, x]), np.stack([a, b])).all()
    rgb = vis._cell_colors(SUDOKU, x, a, b, valid=True).reshape(-1, 3)
    np.testing.assert_allclose(rgb[a != b], np.broadcast_to(vis._ALT, rgb[a != b].shape))


def _png_size(n_steps: int, dpi: int = 100) -> tuple[int, int]:
    # documented layout: 16 in wide; 0.7 in header + 2.4 in per row of 8 grids (<= 24 shown) + 3.6 in curves
    rows = math.ceil(min(n_steps, 24) / 8)
    return round(16 * dpi), round((0.7 + 2.4 * rows + 3.6) * dpi)


@pytest.mark.parametrize(
    "name, task, steps", [("attractor", MAZE, STEPS), ("trm_mlp", SUDOKU, 20)], ids=["maze", "sudoku"]
)
def test_figure_and_gif_are_valid_images_of_the_expected_size(tmp_path, name, task, steps):
    inputs, labels = example(task)
    traj = vis.record_trajectory(tiny(name, task), task, inputs, labels, steps=steps)
    png = vis.plot_trajectory(traj, tmp_path / "fig" / "t.png")
    gif = vis.write_gif(traj, tmp_path / "fig" / "t.gif")
    with Image.open(png) as im:
        assert im.format == "PNG"
        assert im.size == _png_size(steps)
        im.verify()
    with Image.open(gif) as im:
        assert im.format == "GIF"
        assert im.size == (400, 448)  # 5 x 5.6 in at 80 dpi
        assert im.n_frames == steps
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["t.gif", "t.png"]  # no temp files


# ----------------------------------------------------------------------------------- the command


def test_text_frames_one_grid_per_step(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", "trm_mlp", SUDOKU)
    res = vis.visualize({"checkpoint": str(ckpt), "puzzle": SUDOKU_PUZZLE, "text": True})
    out = capsys.readouterr().out
    traj = res["trajectory"]
    assert res["png"] == tmp_path / "run" / "trajectory.png" and res["png"].is_file()
    assert res["gif"] is None
    frames = vis.text_frames(traj)
    assert len(frames) == STEPS
    positions = [out.index(f"step {s + 1}/{STEPS}  ") for s in range(STEPS)]
    assert positions == sorted(positions) and out.count(f"/{STEPS}  ") == STEPS
    for s, frame in enumerate(frames):
        grid = SUDOKU.render(traj.preds[s])
        assert frame.endswith(grid) and grid in out[positions[s] :]
    assert "training would halt at step" in out


def test_data_mode_uses_the_label_and_the_chosen_split(tmp_path):
    inputs, labels = example(SUDOKU)
    rows_in = np.stack([np.ones(16), inputs]).astype(np.uint8)  # example 0: all blank
    full = (sudoku_rules.solve("." * 16, SUDOKU.box) + 1).astype(np.uint8)
    rows_lab = np.stack([full, labels]).astype(np.uint8)
    split = build_split(rows_in, rows_lab, None, vocab_size=SUDOKU.vocab_size)
    data = write_dataset(tmp_path / "data", {"train": split, "test": split})
    ckpt = write_checkpoint(tmp_path / "run" / "c.pt", "trm_mlp", SUDOKU)
    out = tmp_path / "o.png"
    res = vis.visualize(
        {"checkpoint": str(ckpt), "data": str(data), "index": 1, "out": str(out), "gif": True},
        log=lambda _: None,
    )
    traj = res["trajectory"]
    np.testing.assert_array_equal(traj.inputs, inputs)
    np.testing.assert_array_equal(traj.labels, labels)
    assert traj.exact is not None and "test example 1" in traj.source
    assert out.is_file() and out.with_suffix(".gif").is_file()
    res = vis.visualize(
        {"checkpoint": str(ckpt), "data": str(data), "index": 0, "split": "train", "out": str(out)},
        log=lambda _: None,
    )
    assert "train example 0" in res["trajectory"].source
    np.testing.assert_array_equal(res["trajectory"].inputs, np.ones(16))


def test_hydra_entry_point_end_to_end(tmp_path, monkeypatch, capsys):
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", "attractor", MAZE)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    run = ckpt.parent.parent  # a run directory: its checkpoints/last.pt is found
    argv = ["visualize", f"checkpoint={run}", f'puzzle="{MAZE_PUZZLE}"', "gif=true", "text=true"]
    monkeypatch.setattr(sys, "argv", argv)
    vis.main()
    out = capsys.readouterr().out
    assert "attractor on a 6x6 maze: puzzle string" in out
    assert out.count(f"/{STEPS}  ") == STEPS
    for name in ("trajectory.png", "trajectory.gif"):
        with Image.open(run / name) as im:
            im.verify()
    assert list(work.iterdir()) == []  # no outputs/, .hydra/ or log file in the working directory


# ----------------------------------------------------------------------------------- bad inputs


@pytest.fixture
def sudoku_ckpt(tmp_path):
    return str(write_checkpoint(tmp_path / "s.pt", "trm_mlp", SUDOKU))


def test_wrong_size_or_kind_of_puzzle_is_a_clear_error(sudoku_ckpt):
    with pytest.raises(ValueError, match=r"not a 4x4 sudoku.*17 characters"):
        vis.visualize({"checkpoint": sudoku_ckpt, "puzzle": SUDOKU_PUZZLE + "."})
    with pytest.raises(ValueError, match=r"not a 4x4 sudoku.*36 characters"):
        vis.visualize({"checkpoint": sudoku_ckpt, "puzzle": MAZE_PUZZLE})
    with pytest.raises(ValueError, match=r"not a 4x4 sudoku.*bad character '#'"):
        vis.visualize({"checkpoint": sudoku_ckpt, "puzzle": "#S  " + "#" * 10 + "G#"})
    with pytest.raises(ValueError, match="quote it"):
        vis.visualize({"checkpoint": sudoku_ckpt, "puzzle": 1234123412341234})
    with pytest.raises(ValueError, match=r"model takes 16 cells .* 6x6 maze has 36"):
        vis.record_trajectory(tiny("trm_mlp", SUDOKU), MAZE, example(MAZE)[0])
    with pytest.raises(ValueError, match="puzzle has 15 cells"):
        vis.record_trajectory(tiny("trm_mlp", SUDOKU), SUDOKU, np.ones(15))


def test_missing_checkpoint_and_puzzle_source_errors(tmp_path, sudoku_ckpt):
    with pytest.raises(FileNotFoundError, match="not found"):
        vis.visualize({"checkpoint": str(tmp_path / "nope.pt"), "puzzle": SUDOKU_PUZZLE})
    with pytest.raises(ValueError, match="checkpoint=PATH is required"):
        vis.visualize({"puzzle": SUDOKU_PUZZLE})
    with pytest.raises(ValueError, match=r"exactly one of .*\(both given\)"):
        vis.visualize({"checkpoint": sudoku_ckpt, "puzzle": SUDOKU_PUZZLE, "data": str(tmp_path)})
    with pytest.raises(ValueError, match=r"exactly one of .*\(neither given\)"):
        vis.visualize({"checkpoint": sudoku_ckpt})


def test_dataset_errors(tmp_path, sudoku_ckpt):
    inputs, labels = example(MAZE)
    split = build_split(inputs[None], labels[None], None, vocab_size=MAZE.vocab_size)
    mazes = write_dataset(tmp_path / "mazes", {"test": split})
    with pytest.raises(ValueError, match="does not hold a 4x4 sudoku"):
        vis.visualize({"checkpoint": sudoku_ckpt, "data": str(mazes), "index": 0})
    big = Task("sudoku", 6)
    grid = (sudoku_rules.solve("." * 36, big.box) + 1).astype(np.uint8)[None]
    six = write_dataset(tmp_path / "six", {"test": build_split(grid, grid, None, vocab_size=8)})
    with pytest.raises(ValueError, match="6x6 sudoku puzzles, but the checkpoint was trained on a 4x4"):
        vis.visualize({"checkpoint": sudoku_ckpt, "data": str(six), "index": 0})
    inputs, labels = example(SUDOKU)
    ok = write_dataset(
        tmp_path / "ok", {"test": build_split(inputs[None], labels[None], None, vocab_size=SUDOKU.vocab_size)}
    )
    with pytest.raises(IndexError, match="index=1 is out of range: the test split .* has 1 examples"):
        vis.visualize({"checkpoint": sudoku_ckpt, "data": str(ok), "index": 1})
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        vis.visualize({"checkpoint": sudoku_ckpt, "data": str(ok), "index": 0, "split": "val"})
    with pytest.raises(FileNotFoundError, match="does not hold a 4x4 sudoku"):
        vis.visualize({"checkpoint": sudoku_ckpt, "data": str(tmp_path / "missing"), "index": 0})


def test_default_out_and_training_loss_lookup(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert vis.default_out(run) == run / "trajectory.png"
    assert vis.default_out(run / "checkpoints" / "step_10.pt") == run / "trajectory.png"
    assert vis.default_out(tmp_path / "model.pt") == tmp_path / "trajectory.png"
    assert vis._loss_name({"trainer": {"loss": "softmax"}}) == "softmax"
    assert vis._loss_name({"loss": {"name": "x"}}) == "stablemax"
    assert vis._loss_name({}) == "stablemax"


def test_changes_panel_reads_at_a_glance_when_nothing_changes():
    """No flips and a flat loss (a converged reasoner): the count axis runs from 0 with integer ticks
    (not -0.04..0.04), the loss axis shows plain values (no '+1.1511' offset), and no right-hand
    label runs into the next panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    inputs, labels = example(SUDOKU)
    traj = vis.record_trajectory(tiny("attractor", SUDOKU), SUDOKU, inputs, labels, steps=4)
    traj.changed[:] = False
    traj.loss[:] = 1.1511 + 1e-5 * np.arange(traj.n_steps)
    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    twin = vis._plot_changes(ax, traj)
    fig.canvas.draw()
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1
    assert all(float(t).is_integer() for t in ax.get_yticks())
    assert twin.yaxis.get_offset_text().get_text() == ""
    shown = [t.get_text() for t in twin.get_yticklabels() if t.get_text()]
    assert shown and all(t.startswith("1.151") for t in shown), shown
    assert twin.get_ylabel() == "" and "loss" in ax.get_title()


# ----------------------------------------------------------------------------------- breadth

BREADTH = dict(trajectories=4, init_noise=0.7, step_noise=0.2, seed=5)


def halting_tiny(name: str = "trm", task: Task = SUDOKU) -> torch.nn.Module:
    """A tiny reasoner whose halting head reads its state (random weights, a bias near 0), so the
    trajectories' halting logits differ and some fire."""
    model = tiny(name, task)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.q_head.weight.copy_(torch.randn(model.q_head.weight.shape, generator=g))
        model.q_head.bias.fill_(-0.5)
    return model


def alone(model, inputs, puzzle: int, k: int, steps: int, init_noise, step_noise, seed):
    """Trajectory k of ``puzzle`` run by itself: a one-row batch with that row's generator."""
    from reasoners import test_time as tt
    from reasoners.supervision import rollout

    ks = np.array([k])
    noise = tt.RowNoise(np.array([puzzle]), ks, seed)
    state = tt.initial_states(model, noise, ks, init_noise, "cpu")
    perturb = tt.step_perturbation(model, noise, ks, step_noise, "cpu")
    return list(rollout(model, batch_of(inputs), steps, state=state, perturb=perturb))


def test_breadth_trajectories_are_each_rows_own_rollout():
    """Every recorded array of trajectory k equals an independent rollout of that trajectory alone
    (a one-row batch with the generator of (seed, puzzle, k)); the convergence score is the mean of
    the logits' change (per-cell Euclidean norm, mean over cells) over the last 3 steps (fewer early
    on, 0 at step 1)."""
    from reasoners.test_time import Breadth

    model = halting_tiny().double()  # float64: the K-row and one-row batches agree exactly on any CPU
    inputs, labels = example(SUDOKU)
    steps = 6
    bt = vis.record_breadth(
        model, SUDOKU, inputs, labels, breadth=Breadth(**BREADTH), puzzle_index=3, steps=steps
    )
    assert (bt.K, bt.n_steps, bt.preds.shape) == (4, steps, (4, steps, 16))
    for k in range(4):
        outs = alone(
            model, inputs, 3, k, steps, BREADTH["init_noise"], BREADTH["step_noise"], BREADTH["seed"]
        )
        logits = [o.logits[0].double() for o in outs]
        change = [
            float((b - a).norm(dim=-1).mean()) for a, b in zip(logits[:-1], logits[1:], strict=True)
        ]  # change into step s + 1
        for s, out in enumerate(outs):
            pred = out.logits[0].argmax(-1).numpy()
            np.testing.assert_array_equal(bt.preds[k, s], pred)
            assert bt.q_halt[k, s] == pytest.approx(float(out.q_logits[0, 0]), abs=1e-5)
            assert bt.confidence[k, s] == pytest.approx(float(out.q_logits[0, 0]), abs=1e-5)  # TRM: q_halt
            assert bt.halt_fires[k, s] == (float(out.q_logits[0, 0]) > 0)
            assert bt.cell_accuracy[k, s] == pytest.approx(float((pred == labels).mean()))
            assert bt.exact[k, s] == bool((pred == labels).all())
            assert bt.valid[k, s] == SUDOKU.rule_valid(inputs[None], pred[None])[0]
            window = change[max(0, s - 3) : s]
            assert bt.convergence[k, s] == pytest.approx(
                np.mean(window) if window else 0.0, rel=1e-4, abs=1e-6
            )
    assert len({bt.preds[k, -1].tobytes() for k in range(4)}) > 1  # the noise makes them differ
    assert len(np.unique(bt.confidence[:, -1].round(4))) == 4  # and the halting logits
    assert bt.calls_per_trajectory == steps * model.config.T_cycles * (model.config.n_inner + 1)


def test_breadth_picks_are_selects_on_the_recorded_step():
    from reasoners import test_time as tt

    model = halting_tiny()
    inputs, labels = example(SUDOKU)
    bt = vis.record_breadth(model, SUDOKU, inputs, labels, breadth=tt.Breadth(**BREADTH), steps=5)
    d = 5
    # the view built here from the recorded arrays, step by step as breadth_rollout builds it
    first = np.array([next((s + 1 for s in range(d) if bt.halt_fires[k, s]), d) for k in range(4)])
    view = tt.BreadthStep(
        preds=bt.preds[:, -1],
        confidence=bt.confidence[:, -1],
        convergence=bt.convergence[:, -1],
        first_halt=first,
        first_conf=bt.confidence[np.arange(4), first - 1],
        halt_preds=bt.preds[np.arange(4), first - 1],
    )
    picks = bt.picks()
    assert picks == {sel: int(tt.select(view, 1, 4, 4, sel)[0]) for sel in tt.SELECTORS}
    assert picks["convergence"] == int(np.argmin(bt.convergence[:, -1]))
    assert picks["q_head"] == int(np.argmax(bt.confidence[:, -1]))
    assert picks["convergence"] == int(np.flatnonzero(bt.convergence_rank == 1)[0])
    assert len(set(picks.values())) > 1  # not every selector on the same trajectory
    # the figure's table marks each selector on the row of its pick, and nowhere else
    header, rows = vis.breadth_table(bt)
    picked = [row[header.index("picked by")] for row in rows]
    for sel, k in picks.items():
        assert [sel in [name.split(" (")[0] for name in p.split(", ")] for p in picked] == [
            j == k for j in range(4)
        ]
    first = picked[picks["first_halt"]]
    assert f"first_halt (step {view.first_halt[picks['first_halt']]})" in first  # its answer's step
    right = [row[header.index("right")] for row in rows]
    assert right == ["\u2713" if bt.exact[k, -1] else "\u2717" for k in range(4)]
    # converged as marked: the answer unchanged over the last 3 steps
    np.testing.assert_array_equal(bt.stable, [(bt.preds[k, -4:] == bt.preds[k, -1]).all() for k in range(4)])


def test_one_breadth_trajectory_is_the_plain_trajectory():
    """K = 1 is trajectory 0 alone: never perturbed, whatever the noise, so it is record_trajectory's."""
    from reasoners.test_time import Breadth

    model = halting_tiny("hrm")
    inputs, labels = example(SUDOKU)
    plain = vis.record_trajectory(model, SUDOKU, inputs, labels, steps=4)
    bt = vis.record_breadth(
        model, SUDOKU, inputs, labels, breadth=Breadth(1, init_noise=0.9, step_noise=0.4), steps=4
    )
    assert bt.K == 1
    np.testing.assert_array_equal(bt.preds[0], plain.preds)
    np.testing.assert_array_equal(bt.q_halt[0], plain.q_halt)
    np.testing.assert_array_equal(bt.cell_accuracy[0], plain.cell_accuracy)
    np.testing.assert_array_equal(bt.halt_fires[0], plain.halt_fires)
    np.testing.assert_allclose(bt.confidence[0], plain.q_halt - plain.q_continue, atol=1e-6)  # HRM's head
    assert set(bt.picks().values()) == {0}


def test_breadth_mode_draws_evaluates_rows_of_that_puzzle(tmp_path):
    """visualize data=DIR index=p breadth.trajectories=K: trajectory k is row (p, k) of evaluate's
    breadth run, so each selector's pick scores what breadth_rollout scores for that puzzle; the
    figure is written beside trajectory.png, and trajectory 0 is the plain trajectory drawn there."""
    from _tiny_runs import sudoku4_dataset

    from reasoners import evaluate as ev
    from reasoners import test_time as tt

    sudoku4_dataset(tmp_path / "data", n=6)
    ckpt = save_tiny_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.pt", halting_tiny(), "trm", SUDOKU, {}
    )
    steps = 5
    res = vis.visualize(
        {
            "checkpoint": str(tmp_path / "run"),
            "data": str(tmp_path / "data"),
            "index": 4,
            "breadth": {**BREADTH, "steps": steps},
        },
        log=lambda _: None,
    )
    bt = res["breadth"]
    assert res["breadth_png"] == tmp_path / "run" / "trajectory_breadth.png"
    assert bt.puzzle_index == 4 and bt.n_steps == steps
    np.testing.assert_array_equal(bt.preds[0, : res["trajectory"].n_steps], res["trajectory"].preds)
    with Image.open(res["breadth_png"]) as im:
        assert im.format == "PNG"
        assert im.size == tuple(round(v * 100) for v in vis.breadth_figure_size(bt))
        im.verify()
    listing = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert listing == ["checkpoints", "trajectory.png", "trajectory_breadth.png"]  # no temp file left
    # evaluate's breadth over the whole test split, with the same seeds
    from reasoners.checkpoint import load_reasoner

    model, _, _ = load_reasoner(ckpt)
    split = ev.load_test_split(tmp_path / "data", SUDOKU)
    r = tt.breadth_rollout(model, SUDOKU, split, np.arange(6), [steps], tt.Breadth(**BREADTH))
    scores = r.scores[(steps, 4)]
    view = bt.view()
    for sel, k in bt.picks().items():
        pred = view.halt_preds[k] if sel == "first_halt" else bt.preds[k, -1]
        want = float((pred == split.labels[4]).mean())
        assert scores[sel]["cell"][4] == pytest.approx(want), sel
    assert scores["pass_at_k"]["cell"][4] == pytest.approx(bt.cell_accuracy[:, -1].max())
    assert scores["single"]["cell"][4] == pytest.approx(bt.cell_accuracy[0, -1])


def test_breadth_without_a_label_marks_valid_answers(tmp_path):
    from reasoners.test_time import Breadth

    model = tiny("trm_mlp", MAZE)
    inputs, _ = example(MAZE)
    bt = vis.record_breadth(model, MAZE, inputs, None, breadth=Breadth(3, init_noise=0.5), steps=4)
    assert bt.cell_accuracy is None and bt.exact is None
    np.testing.assert_array_equal(bt.right, bt.valid[:, -1])
    png = vis.plot_breadth(bt, tmp_path / "b.png")
    with Image.open(png) as im:
        im.verify()


def test_breadth_through_hydra(tmp_path, monkeypatch, capsys):
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", "trm_mlp", SUDOKU)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "figs" / "t.png"
    argv = ["visualize", f"checkpoint={ckpt}", f'puzzle="{SUDOKU_PUZZLE}"', f"out={out}"]
    argv += ["breadth.trajectories=3", "breadth.init_noise=0.3", "breadth.steps=4"]
    monkeypatch.setattr(sys, "argv", argv)
    vis.main()
    printed = capsys.readouterr().out
    assert "breadth: 3 trajectories for 4 steps (init_noise 0.3, step_noise 0, seed 0, puzzle 0)" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.png", "t_breadth.png"]
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    "breadth, message",
    [
        (
            {"trajectories": 0},
            "breadth.trajectories: the number of trajectories K must be an integer >= 1, got 0",
        ),
        ({"trajectories": 2, "init_noise": -1.0}, "breadth.init_noise must be a finite number >= 0"),
        ({"trajectories": 2, "seed": -1}, "breadth.seed must be a non-negative integer"),
        ({"trajectories": 2, "steps": 0}, "breadth.steps must be a positive integer"),
        ({"trajectories": 2, "noise": 1}, "unknown breadth keys: breadth.noise"),
        (3, "breadth must be a group of keys"),
    ],
)
def test_bad_breadth_values_are_one_line_errors(sudoku_ckpt, breadth, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        vis.visualize({"checkpoint": sudoku_ckpt, "puzzle": SUDOKU_PUZZLE, "breadth": breadth})
    assert "\n" not in str(e.value)
    # trajectories null: breadth is off
    assert vis.breadth_options({"trajectories": None, "init_noise": 0.5}) is None


# ------------------------------------------------------------------------ training telemetry

TELEMETRY_CSV = (
    "step,wall_s,loss,eval_exact,solver_converged,solver_rel_residual,solver_iters_p50,solver_iters_max,"
    "eval_rho_median,eval_rho_below_1,eval_ema_rho_median,eval_warm_start_residual\n"
    "10,1,0.9,,0.50,2e-3,4,16,,,,\n"
    "10,1,,0.1,,,,,1.20,0.40,0.95,3e-2\n"
    "20,2,0.8,,0.97,nan,2,3,,,,\n"
    "20,2,,0.2,,,,,0.80,0.97,inf,5e-3\n"
)


def test_fixed_point_series_keeps_each_columns_own_updates(tmp_path):
    from reasoners.compare import fixed_point_series

    (tmp_path / "metrics.csv").write_text(TELEMETRY_CSV)
    series = fixed_point_series(tmp_path)  # a run directory or the file itself
    assert series == fixed_point_series(tmp_path / "metrics.csv")
    assert series["solver_converged"] == ([10, 20], [0.50, 0.97])
    assert series["solver_rel_residual"] == ([10], [2e-3])  # the NaN is left out, not drawn as 0
    assert series["eval_rho_median"] == ([10, 20], [1.20, 0.80])
    assert series["eval_ema_rho_median"] == ([10], [0.95])  # inf left out
    assert series["solver_iters_max"] == ([10, 20], [16.0, 3.0])
    assert "loss" not in series and "eval_exact" not in series
    (tmp_path / "trm").mkdir()
    (tmp_path / "trm" / "metrics.csv").write_text("step,loss,eval_exact\n10,0.9,\n10,,0.5\n")
    assert fixed_point_series(tmp_path / "trm") == {}  # no solver: nothing to draw
    assert fixed_point_series(tmp_path / "absent") == {}


def test_visualize_draws_a_solver_runs_telemetry_beside_the_trajectory(tmp_path):
    att = tmp_path / "att"
    ckpt = write_checkpoint(att / "checkpoints" / "last.pt", "attractor", SUDOKU)
    (att / "metrics.csv").write_text(TELEMETRY_CSV)
    quiet = dict(log=lambda _: None)
    res = vis.visualize({"checkpoint": str(ckpt), "puzzle": SUDOKU_PUZZLE}, **quiet)
    assert res["telemetry_png"] == att / "trajectory_fixed_point.png"
    with Image.open(res["telemetry_png"]) as im:
        assert im.size == (int(vis.FIG_WIDTH * 100), 380)
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 10  # drawn, not blank
    res = vis.visualize({"checkpoint": str(att), "puzzle": SUDOKU_PUZZLE, "telemetry": False}, **quiet)
    assert res["telemetry_png"] is None

    trm = tmp_path / "trm"
    write_checkpoint(trm / "last.pt", "trm", SUDOKU)
    (trm / "metrics.csv").write_text("step,loss,eval_exact\n10,0.9,\n10,,0.5\n")
    res = vis.visualize({"checkpoint": str(trm / "last.pt"), "puzzle": SUDOKU_PUZZLE}, **quiet)
    assert res["telemetry_png"] is None and not (trm / "trajectory_fixed_point.png").exists()
    with pytest.raises(ValueError, match="telemetry=true: .*metrics.csv has no fixed-point solver columns"):
        vis.visualize({"checkpoint": str(trm), "puzzle": SUDOKU_PUZZLE, "telemetry": True}, **quiet)
    with pytest.raises(ValueError, match="telemetry must be auto, true or false"):
        vis.visualize({"checkpoint": str(tmp_path / "none"), "telemetry": "yes"}, **quiet)  # before reading
    with pytest.raises(ValueError, match="no fixed-point telemetry"):
        vis.plot_fixed_point_telemetry({}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
