"""Read the on-disk dataset format (gridloop's or the reference builders') into training batches.

Sampling follows the reference loaders' training semantics: every epoch visits the *groups* (one
original puzzle and its augmentations) in a fresh random order, draws one random puzzle of each
group and one random example of that puzzle, and cuts the sequence into global batches, dropping the
last partial one. Each rank takes its contiguous slice of the global batch. Epoch ``e`` is drawn from
``numpy.random.default_rng([seed, e])`` alone, so the sampler's whole state is ``(epoch, batch)``:
a resumed run continues with exactly the batches it would have seen.

Labels use token 0 for "ignore" on disk; batches carry ``-100`` there (``IGNORE_LABEL``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_gen.format import Split, read_split
from reasoners.layers import IGNORE_LABEL
from reasoners.tasks import Task, task_from_metadata


@dataclass
class Dataset:
    """A dataset directory's splits and the task they hold."""

    root: Path
    task: Task
    train: Split | None
    test: Split


def build_command(build: str) -> list[str]:
    """The argv of a data config's ``build`` line; a leading ``python`` is this interpreter."""
    argv = shlex.split(build)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def ensure_dataset(root: str | os.PathLike, build: str | None, auto_build: bool, log=print) -> Path:
    """The dataset folder, built with its ``build`` command first when missing and ``auto_build``."""
    root = Path(root)
    if (root / "test" / "dataset.json").is_file():
        return root
    if not build:
        raise FileNotFoundError(f"dataset {root} not found and the data config gives no build command")
    if not auto_build:
        raise FileNotFoundError(
            f"dataset {root} not found. Build it with:\n  {build}\n(or set data.auto_build=true)"
        )
    log(f"dataset {root} not found: building it with `{build}`")
    result = subprocess.run(build_command(build), check=False)
    if (root / "test" / "dataset.json").is_file():
        if result.returncode != 0:
            # Two runs started together (a sweep in parallel) both found the set missing: the first
            # build to finish renamed its folder into place and the other one's rename failed. The
            # builders are seeded, so the set that is there is the one this run would have built.
            log(f"the build exited with {result.returncode}, but {root} is there now (built concurrently)")
        return root
    raise RuntimeError(
        f"building {root} failed (exit code {result.returncode}); the command was:\n  {build}\n"
        "check that its --out matches data.dir"
    )


def load_dataset(
    root: str | os.PathLike,
    kind: str,
    *,
    side: int | None = None,
    need_train: bool = True,
    fix: str | None = None,
) -> Dataset:
    """Read ``root/{train,test}`` and check that they hold ``kind`` puzzles of one size (``side`` when
    given). ``fix`` ends the error for a set of another kind (default: the data config's keys)."""
    root = Path(root)
    test = read_split(root / "test")
    train = read_split(root / "train") if need_train else None
    task = task_from_metadata(kind, int(test.metadata["seq_len"]))
    if side is not None and task.side != int(side):
        raise ValueError(
            f"{root} holds {task.side}x{task.side} grids but the data config says side={side}: "
            "point data.dir at the right dataset or fix data.side"
        )
    for name, split in (("train", train), ("test", test)):
        if split is None:
            continue
        meta = split.metadata
        if int(meta["seq_len"]) != task.seq_len or int(meta["vocab_size"]) != task.vocab_size:
            raise ValueError(
                f"{root / name} has seq_len {meta['seq_len']} and vocab_size {meta['vocab_size']}, but a "
                f"{task.side}x{task.side} {kind} needs {task.seq_len} and {task.vocab_size}: "
                f"is data.puzzle={kind!r} right for this dataset?"
            )
    check_kind(root, test, task, fix)
    return Dataset(root, task, train, test)


def check_kind(root: Path, split: Split, task: Task, fix: str | None = None, rows: int = 64) -> None:
    """4x4 Sudoku and 4x4 mazes share vocab and length: tell them apart by their tokens
    (:meth:`Task.tokens_fit`). ``fix`` ends the error message."""
    if not task.tokens_fit(split.inputs[:rows], split.labels[:rows]):
        other = "maze" if task.kind == "sudoku" else "sudoku"
        if fix is None:
            fix = f"Set data.puzzle={other!r} or point data.dir at a {task.kind} dataset"
        raise ValueError(
            f"{root} does not hold {task.kind} puzzles (its tokens do not fit): is it a {other} set? {fix}"
        )


def to_batch(split: Split, rows: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Tensors for example indices ``rows``: inputs int32, labels int64 (-100 = ignore), puzzle ids."""
    labels = split.labels[rows].astype(np.int64)
    labels[labels == int(split.metadata.get("ignore_label_id", 0))] = IGNORE_LABEL
    puzzle_of = np.searchsorted(split.puzzle_indices, rows, side="right") - 1
    ids = split.puzzle_identifiers[puzzle_of].astype(np.int32)
    return {
        "inputs": torch.from_numpy(split.inputs[rows].astype(np.int32)).to(device),
        "labels": torch.from_numpy(labels).to(device),
        "puzzle_identifiers": torch.from_numpy(ids).to(device),
    }


class TrainSampler:
    """Global batches of example indices in the reference order; ``state_dict`` is ``(epoch, batch)``."""

    def __init__(self, split: Split, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world_size} ranks")
        if split.num_groups < global_batch:
            raise ValueError(
                f"batch_size {global_batch} is larger than the {split.num_groups} training groups: "
                "lower trainer.batch_size or build more training puzzles"
            )
        self.split, self.global_batch, self.seed = split, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size
        self.epoch, self.batch = 0, 0
        self._order: np.ndarray | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.split.num_groups // self.global_batch

    def _epoch_examples(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        gi, pi = self.split.group_indices.astype(np.int64), self.split.puzzle_indices.astype(np.int64)
        groups = rng.permutation(self.split.num_groups)
        puzzles = gi[groups] + rng.integers(0, gi[groups + 1] - gi[groups])
        return pi[puzzles] + rng.integers(0, pi[puzzles + 1] - pi[puzzles])

    def next_rows(self) -> np.ndarray:
        """This rank's example indices of the next global batch."""
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
            self._order = None
        if self._order is None:
            self._order = self._epoch_examples(self.epoch)
        start = self.batch * self.global_batch + self.rank * self.local_batch
        self.batch += 1
        return self._order[start : start + self.local_batch]

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "seed": self.seed,
            "global_batch": self.global_batch,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["global_batch"] != self.global_batch or state["seed"] != self.seed:
            raise ValueError(
                f"cannot resume: the checkpoint's data order used batch_size {state['global_batch']} and "
                f"seed {state['seed']}, this run {self.global_batch} and {self.seed}"
            )
        self.epoch, self.batch, self._order = int(state["epoch"]), int(state["batch"]), None


def eval_rows(n: int, batch: int, rank: int = 0, world_size: int = 1, max_rows: int | None = None):
    """Yield this rank's example indices of the first ``max_rows`` examples, ``batch`` at a time.

    Examples are dealt round-robin over ranks, so every example is evaluated exactly once.
    """
    n = n if max_rows is None else min(n, max_rows)
    mine = np.arange(rank, n, world_size)
    for start in range(0, len(mine), batch):
        yield mine[start : start + batch]
