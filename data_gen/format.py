"""The on-disk dataset format shared with the reference HRM and TRM tools, and atomic writes.

Layout (docs/reference.md, "On-disk format")::

    <out>/identifiers.json                 ["<blank>"]
    <out>/{train,test}/dataset.json        metadata (every field HRM and TRM read)
    <out>/{train,test}/all__inputs.npy     (N_examples, seq_len) uint8 tokens
    <out>/{train,test}/all__labels.npy     (N_examples, seq_len) uint8 tokens
    <out>/{train,test}/all__puzzle_identifiers.npy   (N_puzzles,) int32, all 0
    <out>/{train,test}/all__puzzle_indices.npy       (N_puzzles + 1,) int32 example offsets
    <out>/{train,test}/all__group_indices.npy        (N_groups + 1,) int32 puzzle offsets

A group is one original puzzle and its augmentations; every puzzle holds exactly one example.
Everything is written into a hidden temporary directory beside ``<out>`` and renamed into place
at the end, so an interrupted build leaves no half-written dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ARRAY_NAMES = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
METADATA_FIELDS = (
    "pad_id",
    "ignore_label_id",
    "blank_identifier_id",
    "vocab_size",
    "seq_len",
    "num_puzzle_identifiers",
    "total_groups",
    "mean_puzzle_examples",
    "total_puzzles",
    "sets",
)
CSV_HEADER = ("source", "question", "answer", "rating")


# ----------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; renamed over ``path`` when the block
    succeeds (after an fsync), removed when it fails, so readers never see a half-written file.

    The temporary name is hidden and ends in ``.tmp`` plus ``path``'s suffix: some writers (Pillow's
    GIF) choose the format by the suffix.
    Every file the package writes goes through here: datasets, checkpoints, figures, reports."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``out`` in one rename.

    On any exception the temporary directory is removed and ``out`` is left as it was.
    An existing ``out`` is refused unless ``overwrite`` is set.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- array format


@dataclass
class Split:
    """One split of a dataset as arrays plus its metadata."""

    inputs: np.ndarray  # (N, seq_len) uint8
    labels: np.ndarray  # (N, seq_len) uint8
    puzzle_identifiers: np.ndarray  # (P,) int32
    puzzle_indices: np.ndarray  # (P + 1,) int32
    group_indices: np.ndarray  # (G + 1,) int32
    metadata: dict

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1


def build_split(
    inputs: np.ndarray,
    labels: np.ndarray,
    group_sizes: Sequence[int] | np.ndarray | None,
    *,
    vocab_size: int,
) -> Split:
    """Arrays and metadata for one split; ``group_sizes[g]`` puzzles (one example each) per group."""
    inputs = np.ascontiguousarray(inputs, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    if inputs.ndim != 2 or inputs.shape != labels.shape:
        raise ValueError(f"inputs {inputs.shape} and labels {labels.shape} must be equal (N, seq_len) arrays")
    n = inputs.shape[0]
    if group_sizes is None:
        group_sizes = np.ones(n, dtype=np.int64)
    group_sizes = np.asarray(group_sizes, dtype=np.int64)
    if group_sizes.sum() != n or (group_sizes < 1).any():
        raise ValueError(f"group sizes sum to {group_sizes.sum()} but there are {n} examples")
    if n and (max(inputs.max(), labels.max()) >= vocab_size):
        raise ValueError(f"token out of range for vocab_size={vocab_size}")
    group_indices = np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32)
    metadata = {
        "pad_id": 0,
        "ignore_label_id": 0,
        "blank_identifier_id": 0,
        "vocab_size": int(vocab_size),
        "seq_len": int(inputs.shape[1]),
        "num_puzzle_identifiers": 1,
        "total_groups": int(len(group_sizes)),
        "mean_puzzle_examples": 1,
        # The reference builders write the group count here; only the ratio to
        # mean_puzzle_examples matters to their loaders, so we write the true puzzle count.
        "total_puzzles": int(n),
        "sets": ["all"],
    }
    return Split(
        inputs=inputs,
        labels=labels,
        puzzle_identifiers=np.zeros(n, dtype=np.int32),
        puzzle_indices=np.arange(n + 1, dtype=np.int32),
        group_indices=group_indices,
        metadata=metadata,
    )


def write_split(split_dir: str | os.PathLike, split: Split) -> None:
    """Write one split's arrays and dataset.json (call inside :func:`atomic_output_dir`)."""
    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    for name in ARRAY_NAMES:
        np.save(split_dir / f"all__{name}.npy", getattr(split, name))
    with open(split_dir / "dataset.json", "w") as f:
        json.dump(split.metadata, f)


def write_identifiers(out: str | os.PathLike) -> None:
    with open(Path(out) / "identifiers.json", "w") as f:
        json.dump(["<blank>"], f)


def read_split(split_dir: str | os.PathLike) -> Split:
    """Read and validate one split written by gridloop or by the reference builders."""
    split_dir = Path(split_dir)
    meta_path = split_dir / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: is {split_dir} a dataset split directory?")
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path} is not valid JSON: {e}") from e
    missing = [k for k in METADATA_FIELDS if k not in metadata and k != "total_puzzles"]
    if missing:
        raise ValueError(f"{meta_path} lacks fields {missing}")
    arrays = {}
    for name in ARRAY_NAMES:
        p = split_dir / f"all__{name}.npy"
        try:
            arrays[name] = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{p} is missing or corrupt: {e}") from e
    split = Split(metadata=metadata, **arrays)
    n, seq_len = split.inputs.shape if split.inputs.ndim == 2 else (-1, -1)
    problems = []
    if split.inputs.ndim != 2 or split.labels.shape != split.inputs.shape:
        problems.append(f"inputs {split.inputs.shape} / labels {split.labels.shape} are not equal 2-D arrays")
    elif seq_len != metadata["seq_len"]:
        problems.append(f"seq_len {seq_len} != metadata seq_len {metadata['seq_len']}")
    pi, gi = split.puzzle_indices, split.group_indices
    if len(pi) < 1 or pi[0] != 0 or pi[-1] != n or np.any(np.diff(pi) < 0):
        problems.append("puzzle_indices are not monotone offsets from 0 to N")
    if len(gi) < 1 or gi[0] != 0 or gi[-1] != len(pi) - 1 or np.any(np.diff(gi) < 0):
        problems.append("group_indices are not monotone offsets from 0 to the puzzle count")
    if len(split.puzzle_identifiers) != len(pi) - 1:
        problems.append("puzzle_identifiers length differs from the puzzle count")
    if n > 0 and max(int(split.inputs.max()), int(split.labels.max())) >= metadata["vocab_size"]:
        problems.append("a token is >= vocab_size")
    if problems:
        raise ValueError(f"{split_dir}: " + "; ".join(problems))
    return split


# ----------------------------------------------------------------------------- public CSV format


def write_public_csv(path: str | os.PathLike, rows: Iterable[tuple[str, str, str, int]]) -> None:
    """Write rows (source, question, answer, rating) in the public Sudoku-Extreme/Maze-Hard format."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for source, q, a, rating in rows:
        w.writerow((source, q, a, int(rating)))
    atomic_write_text(path, buf.getvalue())


def read_public_csv(path: str | os.PathLike) -> list[tuple[str, str, str, int, int]]:
    """Rows (source, question, answer, rating, line_number) of a public-format CSV.

    Fields are never stripped (maze fields contain spaces). A malformed row raises a
    ``ValueError`` naming the file and line.
    """
    path = Path(path)
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected header {','.join(CSV_HEADER)}") from None
        if tuple(header) != CSV_HEADER:
            raise ValueError(f"{path}:1: header {header} is not {list(CSV_HEADER)}")
        for row in reader:
            line = reader.line_num
            if len(row) != 4:
                raise ValueError(
                    f"{path}:{line}: expected 4 fields (source,question,answer,rating), got {len(row)}"
                )
            source, q, a, rating = row
            try:
                r = int(rating)
            except ValueError:
                raise ValueError(f"{path}:{line}: rating {rating!r} is not an integer") from None
            rows.append((source, q, a, r, line))
    return rows


def write_dataset(
    out: str | os.PathLike,
    splits: dict[str, Split],
    *,
    csv_rows: dict[str, Iterable[tuple[str, str, str, int]]] | None = None,
    stats: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a whole dataset directory atomically: splits, identifiers, CSVs and stats.json."""
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for name, split in splits.items():
            write_split(tmp / name, split)
        write_identifiers(tmp)
        for name, rows in (csv_rows or {}).items():
            write_public_csv(tmp / f"{name}.csv", rows)
        if stats is not None:
            atomic_write_json(tmp / "stats.json", stats)
    return Path(out)


class OneLineParser(argparse.ArgumentParser):
    """argparse with the toolkit's command-line convention, for the builders and the tools that
    import this module: a bad argument ends in one line, ``error: ...``, and exit code 2 (argparse
    prints its whole usage block first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
