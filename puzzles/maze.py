"""The maze puzzle (Maze-Hard style): parse and format ``# SGo`` grids, BFS distances, the public
recipe's canonical A* path, shortest-path counts, and the path checker.

A maze is a square grid of ``#`` (wall), `` `` (open), ``S`` (start) and ``G`` (goal), written
row-major as one string of side^2 characters (900 for the public 30x30 set); an answer also marks the
path cells between S and G with ``o``. Fields contain spaces: never strip them. Tokens follow the
reference builders: 0 PAD, ``#`` 1, `` `` 2, ``S`` 3, ``G`` 4, ``o`` 5 (vocabulary 6).

Lengths: every function here counts a path's **edges** (moves), so S next to G has length 1. The
public set's "shortest path longer than 110" is read as counting **cells**, S and G included, as the
Searchformer recipe's ``len(plan)`` does (its plan lists every cell from start to goal); that is
``edges >= 110``. :func:`threshold_edges` converts either convention; ``data_gen.maze`` exposes both.

Coordinates are ``(row, col)``. The canonical path is the one the public recipe's deterministic A*
returns: f = g + Manhattan distance, ties to the smaller ``x + 100000 * y`` (x = column, y = row),
children pushed in the order y+1, y-1, x-1, x+1.

Validity (:func:`check_path`): the answer keeps every wall, S and G, and its ``o`` cells plus S and
G form one *chordless* 4-connected line from S to G (S and G have exactly one marked neighbour, each
``o`` exactly two, and the marks are connected). A marking where two non-consecutive path cells
touch is rejected: it would not determine a single path. Shortest paths never touch themselves, so
``optimal`` is unaffected by that choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from puzzles import _maze_kernels as _k

CHARSET = "# SGo"
VOCAB_SIZE = len(CHARSET) + 1
PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5

_CHAR_TO_TOKEN = np.zeros(256, np.uint8)  # 0 = not a maze character
for _i, _ch in enumerate(CHARSET):
    _CHAR_TO_TOKEN[ord(_ch)] = _i + 1
_TOKEN_TO_CHAR = np.frombuffer(("?" + CHARSET).encode(), np.uint8)

_MESSAGES = {
    _k.A_BAD_TOKEN: "the answer holds a token outside 1..5 (#, space, S, G, o)",
    _k.A_WALL_REMOVED: "a wall of the question is missing from the answer",
    _k.A_WALL_ADDED: "the answer adds a wall",
    _k.A_START_CHANGED: "the answer moves, removes or repeats S",
    _k.A_GOAL_CHANGED: "the answer moves, removes or repeats G",
    _k.A_BRANCH: "the marked path branches or touches itself",
    _k.A_DEAD_END: "the marked path is broken (a cell with too few marked neighbours)",
    _k.A_DISCONNECTED: "marked cells lie off the S-G path (a separate loop)",
}


def threshold_edges(min_path: int, count: str = "cells") -> int:
    """Smallest edge count of a path that is *longer than* ``min_path`` counted in ``count`` units.

    ``count="cells"`` counts S, G and every cell between (edges + 1); ``"edges"`` counts moves.
    """
    if count == "cells":
        return int(min_path)
    if count == "edges":
        return int(min_path) + 1
    raise ValueError(f"count must be 'cells' or 'edges', not {count!r}")


# ----------------------------------------------------------------------------- parse / format


def parse_grid(text: str, *, answer: bool = False) -> np.ndarray:
    """Token grid (side, side) uint8 of a question (or, with ``answer=True``, an answer) string.

    Raises ``ValueError`` on a non-square length, characters outside ``# SGo`` (``o`` only in an
    answer), or not exactly one S and one G.
    """
    if not isinstance(text, str):
        raise ValueError(f"a maze is a string of '# SGo' characters, got {type(text).__name__}")
    n = len(text)
    side = int(round(n**0.5))
    if n == 0 or side * side != n:
        raise ValueError(f"maze string has {n} characters, not a square number (900 for 30x30)")
    try:
        raw = np.frombuffer(text.encode("ascii"), np.uint8)
    except UnicodeEncodeError:
        raw = None
    tokens = None if raw is None else _CHAR_TO_TOKEN[raw]
    if tokens is None or (tokens == 0).any():
        bad = sorted({c for c in text if c not in CHARSET})
        raise ValueError(f"maze string holds characters {bad} outside {CHARSET!r}")
    if not answer and (tokens == PATH).any():
        raise ValueError("a question may not hold 'o' path marks (pass answer=True for an answer)")
    for tok, name in ((START, "S"), (GOAL, "G")):
        cnt = int((tokens == tok).sum())
        if cnt != 1:
            raise ValueError(f"maze must hold exactly one {name}, found {cnt}")
    return tokens.reshape(side, side).copy()


def format_grid(tokens: np.ndarray) -> str:
    """The string of a token grid (any shape whose size is side^2); PAD shows as '?'."""
    flat = np.asarray(tokens).reshape(-1)
    if flat.size and (flat.max() > PATH):
        raise ValueError(f"token {int(flat.max())} out of range 0..{PATH}")
    return _TOKEN_TO_CHAR[flat.astype(np.intp)].tobytes().decode("ascii")


def render(tokens_or_text) -> str:
    """Multi-line view of a maze for printing (rows separated by newlines)."""
    grid = _as_grid(tokens_or_text, answer=True)
    text = format_grid(grid)
    side = grid.shape[0]
    return "\n".join(text[r * side : (r + 1) * side] for r in range(side))


def _as_grid(maze, *, answer: bool = False) -> np.ndarray:
    if isinstance(maze, str):
        return parse_grid(maze, answer=answer)
    grid = np.asarray(maze)
    if grid.ndim == 1:
        side = int(round(grid.size**0.5))
        if side * side != grid.size:
            raise ValueError(f"token row of {grid.size} cells is not a square grid")
        grid = grid.reshape(side, side)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or grid.shape[0] == 0:
        raise ValueError(f"maze token grid must be square (side, side), got shape {grid.shape}")
    return grid.astype(np.uint8, copy=False)


def _padded(grid: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Padded open mask, padded width, and the padded indices of S and G (validated)."""
    side = grid.shape[0]
    bad = (grid < WALL) | (grid > GOAL)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"question token {int(grid[r, c])} at ({r}, {c}) is not #, space, S or G")
    for tok, name in ((START, "S"), (GOAL, "G")):
        cnt = int((grid == tok).sum())
        if cnt != 1:
            raise ValueError(f"maze must hold exactly one {name}, found {cnt}")
    wp = side + 2
    open_ = np.zeros((wp, wp), np.uint8)
    open_[1:-1, 1:-1] = grid != WALL
    (sr, sc), (gr, gc) = np.argwhere(grid == START)[0], np.argwhere(grid == GOAL)[0]
    return open_.reshape(-1), wp, int((sr + 1) * wp + sc + 1), int((gr + 1) * wp + gc + 1)


# ----------------------------------------------------------------------------- distances and paths


def bfs_distances(question, source: tuple[int, int] | None = None) -> np.ndarray:
    """BFS distances in edges from ``source`` (default S) to every cell; -1 for walls / unreachable."""
    grid = _as_grid(question)
    open_, wp, s, _ = _padded(grid)
    if source is not None:
        r, c = source
        side = grid.shape[0]
        if not (0 <= r < side and 0 <= c < side) or grid[r, c] == WALL:
            raise ValueError(f"source {source} is not an open cell of the {side}x{side} maze")
        s = (r + 1) * wp + c + 1
    dist = _k.bfs_padded(open_, wp, s)
    return dist.reshape(wp, wp)[1:-1, 1:-1].copy()


def shortest_path_length(question) -> int | None:
    """BFS distance from S to G in edges, or None when G is unreachable."""
    grid = _as_grid(question)
    open_, wp, s, g = _padded(grid)
    d = int(_k.bfs_padded(open_, wp, s)[g])
    return None if d < 0 else d


def canonical_path(question) -> list[tuple[int, int]] | None:
    """Cells (row, col) of the public recipe's deterministic A* path, S first and G last."""
    grid = _as_grid(question)
    open_, wp, s, g = _padded(grid)
    path = np.empty(open_.shape[0], np.int32)
    m = _k.astar_padded(open_, wp, s, g, path)
    if m < 0:
        return None
    return [(int(p // wp - 1), int(p % wp - 1)) for p in path[:m]]


def solve(question) -> str:
    """The canonical answer string: the question with the A* path's inner cells marked ``o``."""
    grid = _as_grid(question)
    path = canonical_path(grid)
    if path is None:
        raise ValueError("the maze has no path from S to G")
    answer = grid.copy()
    for r, c in path[1:-1]:
        answer[r, c] = PATH
    return format_grid(answer)


def count_shortest_paths(question) -> int:
    """Number of distinct shortest S-G paths (exact Python int; 0 when G is unreachable)."""
    grid = _as_grid(question)
    dist = bfs_distances(grid)
    (gr, gc) = np.argwhere(grid == GOAL)[0]
    if dist[gr, gc] < 0:
        return 0
    side = grid.shape[0]
    # Exact integers layer by layer: counts overflow float64's 53 bits on open grids.
    count: dict[tuple[int, int], int] = {tuple(np.argwhere(grid == START)[0]): 1}
    for d in range(1, int(dist[gr, gc]) + 1):
        for r, c in zip(*np.nonzero(dist == d), strict=True):
            total = 0
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < side and 0 <= cc < side and dist[rr, cc] == d - 1:
                    total += count.get((rr, cc), 0)
            count[(int(r), int(c))] = total
    return count[(int(gr), int(gc))]


# ----------------------------------------------------------------------------- path check


@dataclass(frozen=True)
class PathCheck:
    """Outcome of :func:`check_path`. Lengths are in edges; ``reason`` is empty when valid."""

    valid: bool
    optimal: bool
    exact: bool
    length: int | None
    shortest: int | None
    reason: str

    def __bool__(self) -> bool:
        return self.valid


def check_path(question, answer) -> PathCheck:
    """Check an answer (string or token grid) against its question.

    ``valid``: walls, S and G kept, and the ``o`` cells form one chordless S-G line through open cells;
    ``optimal``: valid and as long as the BFS distance; ``exact``: equal to the canonical A* answer.
    Raises ``ValueError`` on a malformed question, or an answer of another size or with characters
    outside ``# SGo``; an answer that merely breaks the rules is reported, not raised.
    """
    q = _as_grid(question)
    _padded(q)  # raises on a malformed question
    if isinstance(answer, str):
        if len(answer) != q.size:
            raise ValueError(f"answer has {len(answer)} characters, question {q.size}")
        bad = sorted({c for c in answer if c not in CHARSET})
        if bad:
            raise ValueError(f"answer holds characters {bad} outside {CHARSET!r}")
        a = _CHAR_TO_TOKEN[np.frombuffer(answer.encode("ascii"), np.uint8)].reshape(q.shape)
    else:
        a = _as_grid(answer)
        if a.shape != q.shape:
            raise ValueError(f"answer shape {a.shape} differs from question shape {q.shape}")
    codes, lengths, shortest = check_paths(q.reshape(1, -1), a.reshape(1, -1))
    code, length, sp = int(codes[0]), int(lengths[0]), int(shortest[0])
    valid = code == _k.OK
    optimal = valid and length == sp
    exact = False
    if optimal:
        exact = format_grid(a) == solve(q)
    return PathCheck(
        valid=valid,
        optimal=optimal,
        exact=exact,
        length=length if valid else None,
        shortest=None if sp < 0 else sp,
        reason="" if valid else _MESSAGES[code],
    )


def check_paths(questions: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch check of token rows (B, side^2): (codes, answer lengths, BFS distances), in edges.

    Code 0 is valid; an answer is optimal when valid and its length equals the distance. Raises
    ``ValueError`` naming the first malformed question row.
    """
    questions = np.ascontiguousarray(questions, dtype=np.uint8)
    answers = np.ascontiguousarray(answers, dtype=np.uint8)
    if questions.ndim != 2 or questions.shape != answers.shape:
        raise ValueError(f"questions {questions.shape} and answers {answers.shape} must be equal (B, L)")
    side = int(round(questions.shape[1] ** 0.5))
    if side * side != questions.shape[1] or side == 0:
        raise ValueError(f"row length {questions.shape[1]} is not a square grid")
    codes, lengths, shortest = _k.check_batch(questions, answers, side)
    bad = np.nonzero(codes <= _k.Q_GOAL_COUNT)[0]
    bad = bad[codes[bad] != _k.OK]
    if bad.size:
        i = int(bad[0])
        what = {
            _k.Q_BAD_TOKEN: "holds a token that is not #, space, S or G",
            _k.Q_START_COUNT: "does not hold exactly one S",
            _k.Q_GOAL_COUNT: "does not hold exactly one G",
        }[int(codes[i])]
        raise ValueError(f"question row {i} {what}")
    return codes, lengths, shortest


# ----------------------------------------------------------------------------- generation

# The Numba kernels that the dataset builder (data_gen.maze) drives, public here so that it needs
# no private module. Every candidate draws from its own counter-based stream under ``stream_key``,
# so a candidate's layout depends on (seed, index) alone, never on batching or thread count.
wall_bounds = _k.wall_bounds  # the public recipe's wall-count range for n cells
stream_key = _k.stream_key  # the 64-bit key of a run from its seed
filter_batch = _k.filter_batch  # decide candidates: accept with the naive recipe's keep chance
build_batch = _k.build_batch  # rebuild accepted candidates: (S, G) and the canonical path
naive_batch = _k.naive_batch  # the public recipe, one draw per candidate (for comparison)
ST_ACCEPTED = _k.ST_ACCEPTED  # filter_batch's status of an accepted candidate
