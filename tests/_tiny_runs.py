"""Tiny datasets, checkpoints, run directories and an oracle "reasoner" for the evaluate/compare tests,
made without the trainer or the data builders (no Numba generation, a few milliseconds each)."""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_gen.format import build_split, write_dataset
from puzzles import maze as maze_rules
from reasoners.checkpoint import save_checkpoint
from reasoners.presets import build, count_parameters
from reasoners.tasks import Task

SUDOKU4 = Task("sudoku", 4)
BASE4 = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])


def sudoku4_solutions(n: int, seed: int = 0) -> np.ndarray:
    """(n, 16) valid 4x4 solutions (digits 1..4): relabel digits, swap rows within bands, transpose."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        g = np.concatenate([[0], rng.permutation(4) + 1])[BASE4]
        rows = np.concatenate([rng.permutation(2), 2 + rng.permutation(2)])
        g = g[rows]
        if rng.random() < 0.5:
            g = g.T
        out.append(g.reshape(-1))
    return np.stack(out)


def sudoku4_dataset(
    out: Path, n: int = 24, *, blanks=None, ratings=None, all_blank: int = 0, seed: int = 0, csv: bool = True
) -> dict:
    """A 4x4 Sudoku dataset (train = test) with ``blanks[i]`` blank cells in puzzle i (the last
    ``all_blank`` puzzles are empty grids, which every valid grid solves) and ``ratings[i]`` in test.csv.
    Returns the arrays as tokens: ``inputs``, ``labels`` (n, 16) and ``ratings``."""
    rng = np.random.default_rng(seed + 1)
    sol = sudoku4_solutions(n, seed)
    blanks = np.asarray(blanks if blanks is not None else rng.integers(4, 12, n))
    puzzles = sol.copy()
    for i in range(n):
        k = 16 if i >= n - all_blank else int(blanks[i])
        puzzles[i, rng.permutation(16)[:k]] = 0
    inputs, labels = (puzzles + 1).astype(np.uint8), (sol + 1).astype(np.uint8)
    ratings = np.asarray(ratings if ratings is not None else (puzzles == 0).sum(1), dtype=np.int64)
    return _write_tiny(out, SUDOKU4, inputs, labels, ratings, csv)


def maze4_dataset(out: Path) -> dict:
    """4x4 mazes: open grids with S and G in opposite corners (many shortest paths) and a few walled
    ones. The label is the path along the top row then down the right column where that is open."""
    questions, answers = [], []
    for walls in ([], [(1, 1)], [(2, 2)], [(1, 1), (2, 2)], [(3, 0)], [(2, 0), (2, 1)]):
        q = np.full((4, 4), maze_rules.OPEN, np.uint8)
        for r, c in walls:
            q[r, c] = maze_rules.WALL
        q[0, 0], q[3, 3] = maze_rules.START, maze_rules.GOAL
        a = q.copy()
        for c in range(1, 4):
            a[0, c] = maze_rules.PATH
        for r in range(1, 3):
            a[r, 3] = maze_rules.PATH
        questions.append(q.reshape(-1))
        answers.append(a.reshape(-1))
    inputs, labels = np.stack(questions), np.stack(answers)
    return _write_tiny(out, Task("maze", 4), inputs, labels, np.arange(len(inputs)) + 7)


def _write_tiny(out: Path, task: Task, inputs, labels, ratings, csv: bool = True) -> dict:
    """One split used as train and test, with ``test.csv`` holding ``ratings`` when ``csv``."""
    split = build_split(inputs, labels, None, vocab_size=task.vocab_size)
    rows = None
    if csv:
        rows = {
            "test": [
                ("tiny", task.to_text(q), task.to_text(a), int(r))
                for q, a, r in zip(inputs, labels, ratings, strict=True)
            ]
        }
    write_dataset(out, {"train": split, "test": split}, csv_rows=rows, overwrite=True)
    return {"inputs": inputs, "labels": labels, "ratings": ratings}


def random_batch(B=3, L=81, vocab=11, n_ids=1, seed=0) -> dict:
    """Random tokens for a model-level test: labels 2..vocab-1 with 30% ignored (-100), inputs
    1..vocab-1, puzzle ids in 0..n_ids-1, all from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, vocab, (B, L), generator=g)
    labels[torch.rand(B, L, generator=g) < 0.3] = -100
    return {
        "inputs": torch.randint(1, vocab, (B, L), generator=g),
        "labels": labels,
        "puzzle_identifiers": torch.randint(0, n_ids, (B,), generator=g),
    }


def tiny_model(name: str = "trm", task: Task = SUDOKU4, **overrides) -> nn.Module:
    torch.manual_seed(0)
    over = {"halt_max_steps": 4, **task.model_overrides(), **overrides}
    return build(name, "tiny", task.preset_puzzle, **over)


def data_config(data_dir: Path | str, build_cmd: str | None = None, auto_build: bool = False) -> dict:
    return {
        "name": "tiny",
        "puzzle": "sudoku",
        "dir": str(data_dir),
        "build": build_cmd,
        "auto_build": auto_build,
    }


def save_tiny_checkpoint(
    path: Path, model: nn.Module, name: str, task: Task, data: dict, step: int = 0
) -> Path:
    return save_checkpoint(
        path,
        {
            "model_name": name,
            "model_config": dataclasses.asdict(model.config),
            "task": {"kind": task.kind, "side": task.side},
            "model": model.state_dict(),
            "ema": None,
            "config": {"data": data, "model": {"name": name}, "size": {"name": "tiny"}, "trainer": {}},
            "step": step,
            "wall_time_s": 0.0,
            "metrics": {},
        },
    )


def make_run(
    run_dir: Path,
    name: str,
    data_dir: Path,
    *,
    steps: int = 100,
    wall_s: float = 12.5,
    final=(0.25, 0.5, 0.75),
    curve: list[tuple[float, float]] | None = None,
    task: Task = SUDOKU4,
    checkpoint: bool = True,
) -> dict:
    """A run directory as the trainer writes it: config.yaml, metrics.csv, summary.json and
    checkpoints/last.pt (a tiny model). Returns the summary."""
    model = tiny_model(name, task)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"model:\n  name: {name}\nsize:\n  name: tiny\n")
    if checkpoint:
        save_tiny_checkpoint(
            run_dir / "checkpoints" / "last.pt", model, name, task, data_config(data_dir), steps
        )
    curve = curve or [(wall_s * (i + 1) / 4, final[0] * (i + 1) / 4) for i in range(4)]
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "wall_s", "loss", "train_exact", "eval_exact", "eval_valid", "eval_cell"])
        for i, (t, acc) in enumerate(curve):
            w.writerow([i * 10 + 5, t / 2, 1.0, 0.1, "", "", ""])  # a training row
            w.writerow([(i + 1) * 10, t, 0.9, 0.2, acc, acc, acc])
    summary = {
        "model": name,
        "size": "tiny",
        "data": "tiny",
        "task": {"kind": task.kind, "side": task.side},
        "parameters": count_parameters(model),
        "steps": steps,
        "wall_s": wall_s,
        "final": dict(zip(("exact", "valid", "cell"), final, strict=True)),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary


@dataclass
class OracleConfig:
    halt_max_steps: int = 4
    q_continue: bool = False


class Oracle(nn.Module):
    """A stand-in reasoner that answers from the labels in the batch.

    Before step ``solve_at`` it answers with the question itself (blanks: never right); from then on
    with ``answer(inputs, labels)`` (the label by default). Its q_halt logit is +1 from step
    ``halt_at(inputs)`` on (per puzzle; never by default), else -1; its q_continue logit is ``q_cont``.
    """

    def __init__(
        self, vocab_size: int, solve_at: int = 1, answer=None, halt_at=None, q_cont: float = 0.0, **config
    ):
        super().__init__()
        self.config = OracleConfig(**config)
        self.q_cont = q_cont
        self.vocab_size, self.solve_at = vocab_size, solve_at
        self.answer = answer or (lambda inputs, labels: labels)
        self.halt_at = halt_at or (lambda inputs: torch.full((inputs.shape[0],), 10**6))

    def initial_state(self, batch_size: int, device=None):
        return (torch.zeros(batch_size, dtype=torch.long, device=device),)

    def forward(self, state, batch):
        step = state[0] + 1  # (B,)
        inputs, labels = batch["inputs"].long(), batch["labels"].clamp_min(0)
        right = self.answer(inputs, labels)
        tokens = torch.where((step >= self.solve_at)[:, None], right, inputs)
        logits = nn.functional.one_hot(tokens, self.vocab_size).float()
        fires = step >= self.halt_at(inputs).to(step.device)
        q_halt = torch.where(fires, 1.0, -1.0)
        q = torch.stack([q_halt, torch.full_like(q_halt, self.q_cont)], -1)  # (B, 2) = [halt, continue]
        return (step,), logits, q, {}
