import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_runs import (
    SUDOKU4,
    Oracle,
    data_config,
    maze4_dataset,
    save_tiny_checkpoint,
    sudoku4_dataset,
    tiny_model,
)
from hydra import compose, initialize_config_dir

from reasoners import evaluate as ev
from reasoners import test_time
from reasoners.data import to_batch
from reasoners.supervision import run_steps
from reasoners.tasks import Task

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "reasoners" / "conf"
QUIET = dict(log=lambda s: None)


def sudoku4_valid(question: np.ndarray, answer: np.ndarray) -> bool:
    """Brute-force rule check of a 4x4 token row: keeps the givens, every unit holds 1..4 once."""
    g = answer.reshape(4, 4) - 1
    if any(q > 1 and q != a for q, a in zip(question, answer, strict=True)):
        return False
    units = [g[r] for r in range(4)] + [g[:, c] for c in range(4)]
    units += [g[r : r + 2, c : c + 2].reshape(-1) for r in (0, 2) for c in (0, 2)]
    return all(sorted(u.tolist()) == [1, 2, 3, 4] for u in units)


@pytest.fixture
def sudoku_run(tmp_path, torch_one_thread):
    """A 4x4 Sudoku dataset with a spread of ratings, and a run dir holding a tiny TRM checkpoint."""
    ratings = [0, 1, 2, 3, 10, 11, 20, 21, 50, 51, 99, 0] * 2
    arrays = sudoku4_dataset(tmp_path / "data", ratings=ratings)
    model = tiny_model("trm")
    save_tiny_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.pt", model, "trm", SUDOKU4, data_config(tmp_path / "data")
    )
    return tmp_path, arrays


def test_figures_match_an_independent_rollout(sudoku_run):
    """Exact, valid, cell and halting of a real (untrained) TRM equal a direct computation from
    run_steps on the whole set at once (evaluate batches 5 at a time)."""
    tmp, arrays = sudoku_run
    result = ev.evaluate(
        tmp / "run",
        ev.EvalConfig(steps=(1, 2, 6), batch_size=5, breadth_trajectories=None),
        device="cpu",
        **QUIET,
    )
    model = tiny_model("trm").eval()
    split = ev.load_test_split(tmp / "data", SUDOKU4)
    batch = to_batch(split, np.arange(len(arrays["inputs"])))
    traj = run_steps(model, batch, 6)
    labels = arrays["labels"].astype(np.int64)
    for point in result["curve"]:
        preds = traj[point["steps"] - 1]["preds"].numpy()
        assert point["exact"] == pytest.approx((preds == labels).all(1).mean())
        assert point["cell"] == pytest.approx((preds == labels).mean(1).mean())
        valid = [sudoku4_valid(q, p) for q, p in zip(arrays["inputs"], preds, strict=True)]
        assert point["valid"] == pytest.approx(np.mean(valid))
    assert [p["steps"] for p in result["curve"]] == [1, 2, 6]
    final = traj[3]["preds"].numpy()  # halt_max_steps = 4
    assert result["halt_max_steps"] == 4
    assert result["final"]["cell"] == pytest.approx((final == labels).mean(1).mean())
    assert 0 < result["final"]["cell"] < 1  # not a degenerate comparison
    q = torch.stack([t["q_halt_logits"] for t in traj[:4]]).numpy()  # (4, N)
    fired = q > 0
    first = np.where(fired.any(0), fired.argmax(0) + 1, 4)
    assert result["halting"]["mean_step"] == pytest.approx(first.mean())
    assert result["halting"]["rule"] == "q_halt > 0"
    assert result["model"] == "trm" and result["size"] == "tiny" and result["puzzles"] == 24
    assert result["parameters"] == sum(p.numel() for p in model.parameters())


def test_oracle_curve_halting_and_other_valid_solutions(tmp_path, torch_one_thread):
    """An oracle that answers at step 3, with another valid grid for the empty puzzles, and halts at
    step 2 on puzzles with an even token sum (else never): every figure is known in advance."""
    arrays = sudoku4_dataset(tmp_path / "data", n=12, all_blank=4)
    split = ev.load_test_split(tmp_path / "data", SUDOKU4)
    swap = torch.tensor([0, 1, 3, 2, 4, 5])  # digits 1 <-> 2: still a valid grid

    def answer(inputs, labels):
        blank = (inputs == 1).all(1, keepdim=True)
        return torch.where(blank, swap[labels], labels)

    def halt_at(inputs):
        return torch.where(inputs.sum(1) % 2 == 0, 2, 99)

    oracle = Oracle(6, solve_at=3, answer=answer, halt_at=halt_at)
    config = ev.EvalConfig(steps=(1, 2, 3, 8), batch_size=5)
    result = ev.evaluate_model(oracle, SUDOKU4, split, config, data_root=tmp_path / "data", **QUIET)
    curve = {p["steps"]: p for p in result["curve"]}
    assert curve[1]["exact"] == curve[2]["exact"] == curve[1]["valid"] == 0.0
    assert curve[3]["exact"] == pytest.approx(8 / 12) and curve[3]["valid"] == 1.0
    assert {k: v for k, v in curve[8].items() if k != "steps"} == {
        k: v for k, v in curve[3].items() if k != "steps"
    }
    assert result["final"] == {k: curve[3][k] for k in ("exact", "valid", "cell")}
    assert result["final"]["cell"] < 1  # the swapped grids differ from their labels
    early = arrays["inputs"].astype(np.int64).sum(1) % 2 == 0
    empty = (arrays["inputs"] == 1).all(1)
    assert 0 < early.sum() < 12
    h = result["halting"]
    assert h["mean_step"] == pytest.approx(np.where(early, 2, 4).mean())
    assert h["never_fired"] == pytest.approx(1 - early.mean())
    # early halters answer with the question (wrong); the others run to step 4 (right by the rules)
    assert h["exact"] == pytest.approx((~early & ~empty).mean())
    assert h["valid"] == pytest.approx((~early).mean())


def test_hrm_style_halting_compares_with_q_continue(tmp_path, torch_one_thread):
    """q_continue models halt on q_halt > q_continue: a q_continue of 2 outvotes q_halt = +1."""
    sudoku4_dataset(tmp_path / "data", n=6)
    split = ev.load_test_split(tmp_path / "data", SUDOKU4)
    config = ev.EvalConfig(steps=(1,))
    for q_continue, q_cont, expected in ((False, 2.0, 2.0), (True, 2.0, 4.0), (True, 0.5, 2.0)):
        oracle = Oracle(
            6, halt_at=lambda x: torch.full((x.shape[0],), 2), q_cont=q_cont, q_continue=q_continue
        )
        result = ev.evaluate_model(oracle, SUDOKU4, split, config, **QUIET)
        assert result["halting"]["mean_step"] == expected
        assert result["halting"]["rule"] == ("q_halt > q_continue" if q_continue else "q_halt > 0")


def test_difficulty_buckets(tmp_path, torch_one_thread):
    """Buckets from test.csv: an oracle right only on puzzles with at most 5 blanks."""
    blanks = np.array([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 6])
    ratings = np.array([0, 1, 2, 3, 10, 11, 20, 21, 50, 51, 99, 0])
    sudoku4_dataset(tmp_path / "data", n=12, blanks=blanks, ratings=ratings)
    split = ev.load_test_split(tmp_path / "data", SUDOKU4)

    def answer(inputs, labels):
        easy = (inputs == 1).sum(1, keepdim=True) <= 5
        return torch.where(easy, labels, inputs)

    result = ev.evaluate_model(
        Oracle(6, answer=answer),
        SUDOKU4,
        split,
        ev.EvalConfig(steps=(1,)),
        data_root=tmp_path / "data",
        **QUIET,
    )
    rows = {r["bucket"]: r for r in result["buckets"]["rows"]}
    assert [r["bucket"] for r in result["buckets"]["rows"]] == ["0", "1-2", "3-10", "11-20", "21-50", "51+"]
    assert {k: r["puzzles"] for k, r in rows.items()} == {
        "0": 2,
        "1-2": 2,
        "3-10": 2,
        "11-20": 2,
        "21-50": 2,
        "51+": 2,
    }
    assert {k: r["exact"] for k, r in rows.items()} == {
        "0": 0.5,
        "1-2": 1.0,
        "3-10": 0.5,
        "11-20": 0.0,
        "21-50": 0.0,
        "51+": 0.0,
    }

    # first N puzzles only: the buckets count only those
    few = ev.evaluate_model(
        Oracle(6, answer=answer),
        SUDOKU4,
        split,
        ev.EvalConfig(steps=(1,), max_puzzles=3),
        data_root=tmp_path / "data",
        **QUIET,
    )
    assert [r["puzzles"] for r in few["buckets"]["rows"]] == [1, 2, 0, 0, 0, 0]
    assert few["buckets"]["rows"][2]["exact"] is None

    # a test.csv that does not line up with the test split, or none at all: skipped, with the reason
    csv = (tmp_path / "data" / "test.csv").read_text().splitlines()
    (tmp_path / "data" / "test.csv").write_text("\n".join([csv[0], *csv[1:][::-1]]) + "\n")
    shuffled = ev.evaluate_model(
        Oracle(6), SUDOKU4, split, ev.EvalConfig(steps=(1,)), data_root=tmp_path / "data", **QUIET
    )
    assert "cannot be matched" in shuffled["buckets"]["skipped"]
    (tmp_path / "data" / "test.csv").unlink()
    missing = ev.evaluate_model(
        Oracle(6), SUDOKU4, split, ev.EvalConfig(steps=(1,)), data_root=tmp_path / "data", **QUIET
    )
    assert "test.csv not found" in missing["buckets"]["skipped"]
    assert "Skipped: " in ev.to_markdown({**missing, "task": {"kind": "sudoku", "side": 4}})


def test_maze_rule_validity_and_quartile_buckets(tmp_path, torch_one_thread):
    """Mazes: another shortest path is valid but not exact; ratings 7..12 split at quartiles."""
    task = Task("maze", 4)
    maze4_dataset(tmp_path / "data")
    split = ev.load_test_split(tmp_path / "data", task)

    def answer(inputs, labels):
        # where the maze is its own transpose, the transposed path is another shortest path
        flip = lambda t: t.view(-1, 4, 4).transpose(1, 2).reshape(-1, 16)  # noqa: E731
        symmetric = (flip(inputs) == inputs).all(1, keepdim=True)
        return torch.where(symmetric, flip(labels), labels)

    result = ev.evaluate_model(
        Oracle(6, answer=answer), task, split, ev.EvalConfig(steps=(1,)), data_root=tmp_path / "data", **QUIET
    )
    assert result["final"]["exact"] == pytest.approx(2 / 6)
    assert result["final"]["valid"] == 1.0
    rows = result["buckets"]["rows"]
    assert [(r["bucket"], r["puzzles"]) for r in rows] == [("7-8", 2), ("9", 1), ("10-11", 2), ("12", 1)]
    assert [r["exact"] for r in rows] == [0.0, 0.0, 0.5, 1.0]


def test_quartile_buckets_cover_every_rating():
    rng = np.random.default_rng(0)
    ratings = rng.integers(100, 200, 501)
    which, names = ev._quartile_buckets(ratings)
    assert len(names) == 4 and set(which) == {0, 1, 2, 3}
    for b, name in enumerate(names):
        lo, hi = (int(x) for x in name.split("-"))
        assert ratings[which == b].min() == lo and ratings[which == b].max() == hi
        assert abs((which == b).mean() - 0.25) < 0.05
    which, names = ev._quartile_buckets(np.full(10, 7))
    assert names == ["7"] and (which == 0).all()


def test_attractor_solver_grid(tmp_path, torch_one_thread):
    """The grid point equal to the trained settings reproduces the final accuracy; the map-evaluation
    count follows max_iter; the model's own settings come back afterwards."""
    sudoku4_dataset(tmp_path / "data", n=8)
    model = tiny_model("attractor", halt_max_steps=2, max_iter=3, tol=1e-3)
    path = save_tiny_checkpoint(
        tmp_path / "a.pt", model, "attractor", SUDOKU4, data_config(tmp_path / "data")
    )
    config = ev.EvalConfig(
        steps=(1, 2), attractor_max_iter=(1, 3), attractor_tol=(1e-3,), breadth_trajectories=None
    )
    result = ev.evaluate(path, config, device="cpu", **QUIET)
    grid = {(g["max_iter"], g["tol"]): g for g in result["attractor"]["grid"]}
    assert set(grid) == {(1, 1e-3), (3, 1e-3)}
    same = grid[(3, 1e-3)]
    assert {k: same[k] for k in ("exact", "valid", "cell")} == result["final"]
    assert same["rel_residual"] == pytest.approx(result["solver"]["rel_residual"])
    assert grid[(1, 1e-3)]["map_evals_per_step"] == 1.0
    assert 1 < same["map_evals_per_step"] <= 3
    assert grid[(1, 1e-3)]["cell"] != same["cell"]  # the budget changes the answer
    assert result["attractor"]["configured"] == {"max_iter": 3, "tol": 1e-3}
    assert "### Attractor solver budget" in ev.to_markdown(result)
    # run_steps with the trained settings agrees with the grid's untouched point
    loaded = tiny_model("attractor", halt_max_steps=2, max_iter=3, tol=1e-3).eval()
    split = ev.load_test_split(tmp_path / "data", SUDOKU4)
    preds = run_steps(loaded, to_batch(split, np.arange(8)), 2)[-1]["preds"].numpy()
    assert same["cell"] == pytest.approx((preds == split.labels).mean(1).mean())

    # a TRM has no solver: no grid; solver_settings restores the config even on an error
    with pytest.raises(RuntimeError), test_time.solver_settings(model, 7, 0.5):
        assert (model.config.max_iter, model.config.tol) == (7, 0.5)
        raise RuntimeError
    assert (model.config.max_iter, model.config.tol) == (3, 1e-3)
    assert not test_time.has_solver_grid(tiny_model("trm"))


def test_writes_json_and_markdown_where_asked(sudoku_run):
    tmp, _ = sudoku_run
    config = ev.EvalConfig(steps=(1,), breadth_trajectories=(1, 2), breadth_steps=(2,), breadth_max_puzzles=6)
    result = ev.evaluate(tmp / "run", config, device="cpu", **QUIET)
    json_path, md_path = ev.write_outputs(result)
    assert "### Test-time breadth" in md_path.read_text()
    assert [(r["steps"], r["trajectories"]) for r in result["breadth"]["rows"]] == [(2, 1), (2, 2)]
    assert (json_path, md_path) == (tmp / "run" / "evaluation.json", tmp / "run" / "evaluation.md")
    assert json.loads(json_path.read_text())["final"] == result["final"]
    assert md_path.read_text() == ev.to_markdown(result)
    assert ev.output_paths(result, tmp / "x.json") == (tmp / "x.json", tmp / "x.md")
    assert ev.output_paths(result, tmp / "o") == (tmp / "o" / "evaluation.json", tmp / "o" / "evaluation.md")
    assert ev.run_dir_of(tmp / "run" / "checkpoints" / "last.pt") == tmp / "run"


# ----------------------------------------------------------------------------- errors and config


def test_bad_eval_values_name_the_key():
    cases = [
        (dict(batch_size=0), "eval.batch_size must be a positive integer"),
        (dict(max_puzzles=-3), "eval.max_puzzles must be a positive integer or null"),
        (dict(steps=[1, 0]), "every entry of eval.steps"),
        (dict(steps=4), "eval.steps must be a list, e.g. eval.steps=[1,2,4]"),
        (dict(steps=[]), "eval.steps must not be empty"),
        (dict(attractor_tol=[1e-3, -1]), "eval.attractor.tol must be a positive number"),
        (dict(attractor_max_iter=[2.5]), "eval.attractor.max_iter"),
        (dict(ema="yes"), "eval.ema must be true or false"),
        (
            dict(breadth_trajectories=[0, 4]),
            "every entry of eval.breadth.trajectories must be a positive integer",
        ),
        (dict(breadth_selectors=["vote"]), "unknown selector 'vote' in eval.breadth.selectors"),
        (dict(breadth_init_noise=-0.5), "eval.breadth.init_noise must be a finite number >= 0"),
        (dict(breadth_step_noise=float("nan")), "eval.breadth.step_noise must be a finite number"),
        (dict(breadth_seed=-1), "eval.breadth.seed must be a non-negative integer"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            ev.EvalConfig(**kwargs)


def test_missing_and_mismatched_data(tmp_path, torch_one_thread):
    model = tiny_model("trm")
    build = "python -m data_gen.sudoku --box 2x2 --out nowhere"
    ckpt = save_tiny_checkpoint(
        tmp_path / "a.pt", model, "trm", SUDOKU4, data_config(tmp_path / "nowhere", build)
    )
    with pytest.raises(FileNotFoundError, match="Build it with:\n  python -m data_gen.sudoku") as e:
        ev.evaluate(ckpt, device="cpu", **QUIET)
    assert "data_dir=PATH" in str(e.value)
    with pytest.raises(FileNotFoundError, match="data_dir=.*no dataset there"):
        ev.evaluate(ckpt, data_dir=tmp_path / "nowhere", device="cpu", **QUIET)
    with pytest.raises(FileNotFoundError, match="checkpoint .* not found"):
        ev.evaluate(tmp_path / "nothing.pt", device="cpu", **QUIET)
    with pytest.raises(ValueError, match="no checkpoint given: pass checkpoint="):
        ev.evaluate(None, device="cpu", **QUIET)
    # a checkpoint that does not say where its data is
    bare = save_tiny_checkpoint(tmp_path / "b.pt", model, "trm", SUDOKU4, None)
    with pytest.raises(ValueError, match="names no dataset folder.*data_dir=PATH"):
        ev.evaluate(bare, device="cpu", **QUIET)
    # a 4x4 maze set has the 4x4 Sudoku's shape: refused by its labels
    maze4_dataset(tmp_path / "maze")
    with pytest.raises(ValueError, match="does not hold sudoku puzzles.*data_dir=PATH"):
        ev.evaluate(ckpt, data_dir=tmp_path / "maze", device="cpu", **QUIET)
    # another size
    big = tmp_path / "six"
    from data_gen.format import build_split, write_dataset

    six = np.full((2, 36), 2, np.uint8)
    write_dataset(big, {"test": build_split(six, six, None, vocab_size=8)})
    with pytest.raises(ValueError, match="holds 6x6 grids .* trained on 4x4 sudoku"):
        ev.evaluate(ckpt, data_dir=big, device="cpu", **QUIET)


def test_shipped_config_composes_to_the_defaults(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate")
        custom = compose("evaluate", ["eval.steps=[1,3]", "eval.attractor.tol=[0.1]", "eval.max_puzzles=5"])
        typo = compose("evaluate", ["+eval.max_puzles=5"])
        breadth_typo = compose("evaluate", ["+eval.breadth.trajectory=[2]"])
        flat = compose("evaluate", ["+eval.breadth_seed=3"])
        off = compose("evaluate", ["eval.breadth=null"])
        wide = compose("evaluate", ["eval.breadth.trajectories=[1,32]", "eval.breadth.step_noise=0.1"])
    assert cfg.checkpoint is None and cfg.get("data") is None and cfg.data_dir is None
    assert ev.config_from_cfg(cfg) == ev.EvalConfig()
    c = ev.config_from_cfg(custom)
    assert (c.steps, c.attractor_tol, c.max_puzzles) == ((1, 3), (0.1,), 5)
    with pytest.raises(ValueError, match="unknown eval keys: eval.max_puzles"):
        ev.config_from_cfg(typo)
    with pytest.raises(ValueError, match="unknown eval keys: eval.breadth.trajectory$"):
        ev.config_from_cfg(breadth_typo)
    with pytest.raises(ValueError, match="unknown eval keys: eval.breadth_seed$"):
        ev.config_from_cfg(flat)  # the nested group is the only spelling
    assert ev.config_from_cfg(off).breadth_trajectories is None
    w = ev.config_from_cfg(wide)
    assert (w.breadth_trajectories, w.breadth_step_noise, w.breadth_steps) == ((1, 32), 0.1, (16, 64))
    with pytest.raises(ValueError, match="no checkpoint given"):
        ev.run(cfg, **QUIET)


def test_data_config_by_name(sudoku_run, tmp_path):
    """data=NAME picks a data config of conf/data/ (as in training) instead of the checkpoint's."""
    tmp, _ = sudoku_run
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "evaluate.yaml").write_text((CONF / "evaluate.yaml").read_text())
    other = tmp_path / "other"
    sudoku4_dataset(other, n=5, seed=3)
    (conf / "data" / "other.yaml").write_text(
        f"name: other\npuzzle: sudoku\ndir: {other}\nauto_build: false\n"
    )
    overrides = [f"checkpoint={tmp / 'run'}", "data=other", "eval.steps=[1]", f"out={tmp_path / 'o.json'}"]
    overrides.append("eval.breadth=null")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("evaluate", overrides)
    result = ev.run(cfg, **QUIET)
    assert result["data_dir"] == str(other) and result["puzzles"] == 5
    assert json.loads((tmp_path / "o.json").read_text())["puzzles"] == 5


def test_cli_end_to_end(sudoku_run):
    """``python -m reasoners.evaluate``: writes into the run dir, prints the table, leaves nothing
    in the working directory."""
    tmp, _ = sudoku_run
    work = tmp / "cwd"
    work.mkdir()
    args = [f"checkpoint={tmp / 'run'}", "eval.steps=[1,2]", "eval.max_puzzles=10", "device=cpu"]
    args += ["eval.breadth.trajectories=[1,3]", "eval.breadth.steps=[2]", "eval.breadth.selectors=[majority]"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "reasoners.evaluate", *args], cwd=work, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "| exact accuracy |" in done.stdout
    saved = json.loads((tmp / "run" / "evaluation.json").read_text())
    assert saved["puzzles"] == 10 and [p["steps"] for p in saved["curve"]] == [1, 2]
    assert saved["breadth"]["selectors"] == ["majority"] and saved["breadth"]["puzzles"] == 10
    assert saved["breadth"]["rows"][-1]["calls_per_puzzle"] == pytest.approx(
        3 * saved["curve"][1]["calls_per_puzzle"]
    )
    assert list(work.iterdir()) == []  # no outputs/, .hydra/ or log files


def test_cli_error_exits_2_with_the_fix(sudoku_run, monkeypatch, capsys):
    tmp, _ = sudoku_run
    monkeypatch.chdir(tmp)
    monkeypatch.setattr(sys, "argv", ["evaluate", f"checkpoint={tmp / 'run'}", "eval.batch_size=0"])
    with pytest.raises(SystemExit) as e:
        ev.main()
    assert e.value.code == 2
    assert "error: eval.batch_size must be a positive integer" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["evaluate", "data_dir=nowhere"])
    with pytest.raises(SystemExit):
        ev.main()
    assert "error: no checkpoint given: pass checkpoint=RUN_DIR" in capsys.readouterr().err
