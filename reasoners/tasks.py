"""What a reasoner needs to know about a puzzle kind: tokens <-> grids, scoring by the puzzle's own
rules, and text pictures. The only module of :mod:`reasoners` that imports :mod:`puzzles`.

A *task* is ``(kind, side)``: ``"sudoku"`` with side 4, 6 or 9 (the box follows: 2x2, 2x3, 3x3) or
``"maze"`` with any side. Token layouts are the on-disk format's, defined once in :mod:`puzzles.sudoku`
and :mod:`puzzles.maze` (see docs/reference.md, "On-disk format"); the rest of :mod:`reasoners` asks
a task instead of restating them.

:func:`score` returns per-puzzle arrays:

- ``exact``: every cell equals the label;
- ``valid``: a correct answer by the puzzle's rules, whether or not it is the label's: a full Sudoku
  grid that keeps the givens and breaks no rule, or a maze path that keeps the walls, S and G and is a
  shortest S-G path;
- ``cell``: the share of cells equal to the label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from puzzles import maze as maze_rules
from puzzles import sudoku as sudoku_rules

KINDS = ("sudoku", "maze")


@dataclass(frozen=True)
class Task:
    kind: str  # "sudoku" or "maze"
    side: int  # grid side: 4, 6, 9 (Sudoku) or the maze side

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown puzzle kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.kind == "sudoku" and self.side not in (4, 6, 9):
            raise ValueError(f"a Sudoku side must be 4, 6 or 9, got {self.side}")
        if self.side < 2:
            raise ValueError(f"grid side must be at least 2, got {self.side}")

    @property
    def seq_len(self) -> int:
        return self.side * self.side

    @property
    def vocab_size(self) -> int:
        return sudoku_rules.vocab_size(self.side) if self.kind == "sudoku" else maze_rules.VOCAB_SIZE

    @property
    def box(self) -> tuple[int, int] | None:
        return sudoku_rules.box_for_cells(self.seq_len) if self.kind == "sudoku" else None

    @property
    def preset_puzzle(self) -> str:
        """The ``reasoners.presets`` puzzle name whose data fields this task overrides."""
        return self.kind

    def model_overrides(self) -> dict:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len}

    # -- tokens <-> text -----------------------------------------------------------------------------

    def encode(self, puzzle: str) -> np.ndarray:
        """Input tokens (seq_len,) uint8 of a puzzle string; a clear ``ValueError`` when it is not a
        puzzle of this task (wrong size, bad characters, broken givens)."""
        if not isinstance(puzzle, str):
            raise ValueError(f"puzzle must be a string, got {type(puzzle).__name__}")
        if len(puzzle) != self.seq_len:
            what = f"a {self.side}x{self.side} {self.kind}"
            raise ValueError(f"puzzle has {len(puzzle)} characters; {what} needs {self.seq_len}")
        if self.kind == "sudoku":
            return sudoku_rules.grid_to_tokens(sudoku_rules.parse(puzzle, self.box)).reshape(-1)
        return maze_rules.parse_grid(puzzle).reshape(-1).astype(np.uint8)

    @property
    def maze_tokens(self) -> dict[str, int]:
        """The maze's cell tokens by name (for drawing)."""
        m = maze_rules
        return {"wall": m.WALL, "open": m.OPEN, "start": m.START, "goal": m.GOAL, "path": m.PATH}

    def is_digit(self, tokens) -> np.ndarray:
        """Sudoku: where ``tokens`` are digits (a given in a question, a filled cell in an answer)."""
        return sudoku_rules.is_digit_token(tokens, self.side)

    def tokens_fit(self, inputs: np.ndarray, labels: np.ndarray) -> bool:
        """Whether these rows look like this kind of puzzle: 4x4 Sudoku and 4x4 mazes share vocab and
        length. Sudoku labels are all digits; every maze question holds one S and one G."""
        if self.kind == "sudoku":
            return bool(self.is_digit(labels).all())
        m = maze_rules
        return bool(((inputs == m.START).sum(-1) == 1).all() and ((inputs == m.GOAL).sum(-1) == 1).all())

    def rating_buckets(self, ratings: np.ndarray) -> tuple[np.ndarray, list[str], str] | None:
        """Sudoku: ``(bucket of each rating, bucket names, what a rating is)`` on the public rating
        buckets; None for a maze (its path lengths have no fixed buckets)."""
        if self.kind != "sudoku":
            return None
        what = "backtracking guesses (public scale)"
        return sudoku_rules.bucket_of(ratings), list(sudoku_rules.BUCKET_NAMES), what

    def to_text(self, tokens) -> str:
        """Flat puzzle string of a token row (PAD and out-of-range tokens shown as ``?``)."""
        t = np.asarray(tokens).reshape(-1).astype(np.int64)
        if self.kind == "sudoku":
            chars = np.array(["?", "."] + [str(d) for d in range(1, self.side + 1)])
        else:
            chars = np.array(list("?" + maze_rules.CHARSET))
        t = np.where((t >= 0) & (t < len(chars)), t, 0)
        return "".join(chars[t])

    def render(self, tokens) -> str:
        """Multi-line text picture of a token row (PAD shown as ``?``)."""
        text = self.to_text(tokens)
        if self.kind == "sudoku":
            br, bc = self.box
            lines = []
            sep = "+".join(["-" * (2 * bc + 1)] * (self.side // bc))
            for r in range(self.side):
                if r and r % br == 0:
                    lines.append(sep)
                cells = text[r * self.side : (r + 1) * self.side]
                chunks = [" " + " ".join(cells[s : s + bc]) + " " for s in range(0, self.side, bc)]
                lines.append("|".join(chunks).rstrip())
            return "\n".join(lines)
        return "\n".join(text[r * self.side : (r + 1) * self.side] for r in range(self.side))

    # -- scoring ---------------------------------------------------------------------------------------

    def rule_valid(self, inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
        """(B,) bool: ``preds`` is a correct answer to ``inputs`` by the puzzle's own rules."""
        # Numba's OpenMP layer shares the runtime with torch and resets its thread count on its first
        # parallel launch: keep the caller's setting (an extra thread on a busy CPU costs many times).
        threads = torch.get_num_threads()
        try:
            return self._rule_valid(inputs, preds)
        finally:
            torch.set_num_threads(threads)

    def _rule_valid(self, inputs: np.ndarray, preds: np.ndarray) -> np.ndarray:
        inputs = np.asarray(inputs).reshape(-1, self.seq_len).astype(np.int64)
        preds = np.asarray(preds).reshape(-1, self.seq_len).astype(np.int64)
        if self.kind == "sudoku":
            # a blank or PAD token in the answer is never valid
            givens = sudoku_rules.tokens_to_grid(inputs, self.side)
            filled = self.is_digit(preds)
            cand = sudoku_rules.tokens_to_grid(preds, self.side)
            ok = sudoku_rules.check_solution(givens, cand, self.box)
            return np.asarray(ok, dtype=bool) & filled.all(-1)
        answers = np.clip(preds, 0, 255).astype(np.uint8)
        codes, lengths, shortest = maze_rules.check_paths(inputs.astype(np.uint8), answers)
        return (codes == 0) & (lengths == shortest)


def score(task: Task, inputs, labels, preds) -> dict[str, np.ndarray]:
    """Per-puzzle ``exact``, ``valid`` (by the rules) and ``cell`` accuracy; labels use the on-disk
    tokens (0 = ignored)."""
    inputs, labels, preds = (np.asarray(a).reshape(-1, task.seq_len) for a in (inputs, labels, preds))
    mask = labels != 0
    correct = (preds == labels) & mask
    counts = mask.sum(-1)
    return {
        "exact": correct.sum(-1) == counts,
        "valid": task.rule_valid(inputs, preds),
        "cell": correct.sum(-1) / np.maximum(counts, 1),
    }


def task_from_metadata(kind: str, seq_len: int) -> Task:
    """The task of a dataset of ``kind`` with rows of ``seq_len`` tokens."""
    side = int(round(seq_len**0.5))
    if side * side != seq_len:
        raise ValueError(f"seq_len {seq_len} is not a square grid")
    return Task(kind, side)
