"""Sudoku rules: parse/format, validate, solve exactly, rate difficulty, canonical form, augment.

Grids are flat ``int8`` arrays of N*N cells, row-major, ``0`` for a blank and ``1..N`` for digits,
for boxes of ``br`` rows x ``bc`` columns (N = br * bc): 2x2 (4x4 grids), 2x3 (6x6) and 3x3 (9x9).
Strings use ``.`` or ``0`` for blanks. The heavy lifting is in Numba kernels
(:mod:`puzzles._sudoku_kernels`); this module validates input and raises clear ``ValueError``s.

The **rating** of a 9x9 puzzle (:func:`rate`) is the public Sudoku-Extreme ``rating`` itself:
the number of guesses tdoku's band-triad DPLL solver makes before its first solution, on the
puzzle exactly as written, computed by our own Numba implementation of that algorithm
(:mod:`puzzles._tdoku_rating`; docs/reference.md, "tdoku's rating as an algorithm"; it gives
tdoku's count on every puzzle of the shared benchmark collections). :func:`solve_many` reports the
guesses of our own exact solver (``guesses_first``), which works for every box shape; the dataset
builder rates 9x9 puzzles with :func:`rate` and uses that count mapped by :func:`to_public_scale`
only for 4x4 and 6x6 Sudoku, which tdoku's algorithm does not cover.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numba
import numpy as np

from puzzles import _sudoku_kernels as K
from puzzles import _tdoku_rating as R

BOX_SHAPES = {"2x2": (2, 2), "2x3": (2, 3), "3x3": (3, 3)}


# ----------------------------------------------------------------------------- tokens and buckets

# The token layout of the on-disk format (docs/reference.md, "On-disk format"), defined here once for
# the builders (data_gen) and the reasoners (reasoners.tasks): 0 PAD, 1 blank, digit d -> d + 1.
PAD_TOKEN, BLANK_TOKEN = 0, 1

# The public Sudoku-Extreme rating buckets (guesses before the first solution, public scale):
# each bucket's lower bound and name. The builder fills them toward the public set's histogram;
# evaluation reports accuracy per bucket.
BUCKET_EDGES = (0, 1, 3, 11, 21, 51)
BUCKET_NAMES = ("0", "1-2", "3-10", "11-20", "21-50", "51+")


def vocab_size(side: int) -> int:
    """Tokens of an N x N Sudoku: PAD, blank and the N digits."""
    return side + 2


def grid_to_tokens(grids) -> np.ndarray:
    """Token rows (uint8) of grids (0 blank, 1..N digits)."""
    return (np.asarray(grids, dtype=np.int16) + 1).astype(np.uint8)


def tokens_to_grid(tokens, side: int) -> np.ndarray:
    """Grids (int8, 0 = blank) of token rows; PAD and any token that is not a digit read as blank."""
    t = np.asarray(tokens).astype(np.int64)
    return np.where(is_digit_token(t, side), t - 1, 0).astype(np.int8)


def is_digit_token(tokens, side: int) -> np.ndarray:
    """Where the tokens are digits 1..N (not PAD, not blank)."""
    t = np.asarray(tokens)
    return (t >= BLANK_TOKEN + 1) & (t <= side + 1)


def bucket_of(public_rating) -> np.ndarray:
    """The index into :data:`BUCKET_NAMES` of each public-scale rating."""
    return np.searchsorted(np.asarray(BUCKET_EDGES), np.asarray(public_rating), side="right") - 1


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    """Index tables of one board shape, passed to every kernel."""

    br: int
    bc: int
    n: int
    units: np.ndarray  # (3N, N) cell indices of each row, column and box
    peers: np.ndarray  # (N*N, P) the other cells sharing a unit
    cell_units: np.ndarray  # (N*N, 3) the row, column and box unit of each cell
    ix_inter: np.ndarray  # (M, L) box-line intersections, for locked candidates
    ix_boxrest: np.ndarray  # (M, N-L) the rest of the box
    ix_linerest: np.ndarray  # (M, N-L) the rest of the line
    seg_box_sib: np.ndarray  # (M, .) the other intersections of the same box and orientation (M = none)
    seg_line_sib: np.ndarray  # (M, .) the other intersections of the same line (M = none)
    popc: np.ndarray  # (2**N,) popcount table
    colperms: np.ndarray  # (S, N) every column order the symmetry group allows

    @property
    def ncell(self) -> int:
        return self.n * self.n

    @property
    def square_boxes(self) -> bool:
        return self.br == self.bc

    def tables(self):
        return (
            self.units,
            self.peers,
            self.cell_units,
            self.ix_inter,
            self.ix_boxrest,
            self.ix_linerest,
            self.seg_box_sib,
            self.seg_line_sib,
            self.popc,
        )


def parse_box(box: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(box, str):
        if box not in BOX_SHAPES:
            raise ValueError(f"unknown box shape {box!r}; choose one of {sorted(BOX_SHAPES)}")
        return BOX_SHAPES[box]
    br, bc = (int(v) for v in box)
    if (br, bc) not in BOX_SHAPES.values():
        raise ValueError(f"unsupported box shape {br}x{bc}; choose one of {sorted(BOX_SHAPES)}")
    return br, bc


@functools.cache
def geometry(box: str | tuple[int, int] = "3x3") -> Geometry:
    br, bc = parse_box(box)
    n = br * bc
    cells = np.arange(n * n).reshape(n, n)
    rows = [cells[r, :] for r in range(n)]
    cols = [cells[:, c] for c in range(n)]
    boxes = [cells[r : r + br, c : c + bc].ravel() for r in range(0, n, br) for c in range(0, n, bc)]
    units = np.array(rows + cols + boxes, dtype=np.int64)
    peers = []
    for cell in range(n * n):
        p = set()
        for u in units:
            if cell in u:
                p.update(int(x) for x in u)
        p.discard(cell)
        peers.append(sorted(p))
    peers = np.array(peers, dtype=np.int64)
    cell_units = np.zeros((n * n, 3), dtype=np.int64)
    for cell in range(n * n):
        r, c = divmod(cell, n)
        cell_units[cell] = (r, n + c, 2 * n + (r // br) * (n // bc) + c // bc)
    inter, boxrest, linerest, ix_units = [], [], [], []
    for bi, b in enumerate(boxes):
        bset = set(b.tolist())
        for li, line in enumerate(rows + cols):
            lset = set(line.tolist())
            common = sorted(bset & lset)
            if common:
                inter.append(common)
                boxrest.append(sorted(bset - lset))
                linerest.append(sorted(lset - bset))
                ix_units.append((2 * n + bi, li))
    # Intersections with rows hold bc cells and with columns br cells; pad to one width by
    # splitting into two tables would complicate the kernel, so for non-square boxes we repeat
    # the last index (harmless: OR and removal are idempotent).
    width = max(len(x) for x in inter)
    rest = max(len(x) for x in boxrest)

    def pad(rows_, w):
        return np.array([r + [r[-1]] * (w - len(r)) for r in rows_], dtype=np.int64)

    popc = np.array([bin(i).count("1") for i in range(1 << n)], dtype=np.int64)
    m = len(inter)

    def sib(same):
        rows_ = [[j for j in range(m) if j != k and same(ix_units[k], ix_units[j])] for k in range(m)]
        width_ = max(len(r) for r in rows_)
        return np.array([r + [m] * (width_ - len(r)) for r in rows_], dtype=np.int64)

    stacks = [list(range(s * bc, s * bc + bc)) for s in range(n // bc)]
    colperms = []
    for sp in itertools.permutations(range(n // bc)):
        for within in itertools.product(*[list(itertools.permutations(stacks[s])) for s in sp]):
            colperms.append([c for w in within for c in w])
    return Geometry(
        br=br,
        bc=bc,
        n=n,
        units=units,
        peers=peers,
        cell_units=cell_units,
        ix_inter=pad(inter, width),
        ix_boxrest=pad(boxrest, rest),
        ix_linerest=pad(linerest, rest),
        seg_box_sib=sib(lambda a, b: a[0] == b[0] and (a[1] < n) == (b[1] < n)),
        seg_line_sib=sib(lambda a, b: a[1] == b[1]),
        popc=popc,
        colperms=np.array(colperms, dtype=np.int64),
    )


def box_for_cells(ncell: int) -> tuple[int, int]:
    for shape in BOX_SHAPES.values():
        if (shape[0] * shape[1]) ** 2 == ncell:
            return shape
    raise ValueError(f"a Sudoku has 16, 36 or 81 cells, got {ncell}")


# ----------------------------------------------------------------------------- parse / format


def parse(puzzle, box: str | tuple[int, int] | None = None, *, check_rules: bool = True) -> np.ndarray:
    """Parse a puzzle string (``.`` or ``0`` blanks) or an N x N / flat grid into a flat int8 array.

    Raises ``ValueError`` for a wrong length, a bad character or digit, or givens that already
    break a rule (the message names the unit and digit).
    """
    if isinstance(puzzle, str):
        s = puzzle
        if box is None:
            br, bc = box_for_cells(len(s)) if len(s) in (16, 36, 81) else (None, None)
            if br is None:
                raise ValueError(f"puzzle string has {len(s)} characters; expected 16, 36 or 81")
        else:
            br, bc = parse_box(box)
        n = br * bc
        if len(s) != n * n:
            raise ValueError(f"puzzle string has {len(s)} characters; a {br}x{bc}-box Sudoku needs {n * n}")
        grid = np.zeros(n * n, np.int8)
        for i, ch in enumerate(s):
            if ch in ".0":
                continue
            if not ch.isdigit() or not (1 <= int(ch) <= n):
                raise ValueError(
                    f"bad character {ch!r} at position {i} (row {i // n + 1}, col {i % n + 1}); "
                    f"use 1-{n} for givens and '.' or '0' for blanks"
                )
            grid[i] = int(ch)
    else:
        arr = np.asarray(puzzle)
        if arr.ndim == 2 and arr.shape[0] == arr.shape[1]:
            arr = arr.reshape(-1)
        if arr.ndim != 1:
            raise ValueError(f"expected a flat grid or an N x N grid, got shape {np.shape(puzzle)}")
        br, bc = parse_box(box) if box is not None else box_for_cells(arr.size)
        n = br * bc
        if arr.size != n * n:
            raise ValueError(f"grid has {arr.size} cells; a {br}x{bc}-box Sudoku needs {n * n}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"grid must hold integers, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() > n:
            raise ValueError(f"grid values must be 0 (blank) or 1..{n}")
        grid = arr.astype(np.int8)
    if check_rules:
        _check_givens(grid, geometry((br, bc)))
    return grid


def _check_givens(grid: np.ndarray, geo: Geometry) -> None:
    kinds = ["row"] * geo.n + ["column"] * geo.n + ["box"] * geo.n
    for ui, unit in enumerate(geo.units):
        vals = grid[unit]
        vals = vals[vals != 0]
        if len(vals) != len(np.unique(vals)):
            d = int(next(v for v in vals if (vals == v).sum() > 1))
            raise ValueError(f"the givens repeat digit {d} in {kinds[ui]} {ui % geo.n + 1}")


def format_grid(grid, blank: str = ".") -> str:
    """Flat string of a grid, ``blank`` for empty cells."""
    return "".join(blank if v == 0 else str(int(v)) for v in np.asarray(grid).reshape(-1))


def render(grid, box: str | tuple[int, int] | None = None) -> str:
    """Multi-line text picture with box borders, for terminals."""
    g = np.asarray(grid).reshape(-1)
    br, bc = parse_box(box) if box is not None else box_for_cells(g.size)
    n = br * bc
    lines = []
    sep = "+".join(["-" * (2 * bc + 1)] * (n // bc))
    for r in range(n):
        if r and r % br == 0:
            lines.append(sep)
        cells = [("." if g[r * n + c] == 0 else str(int(g[r * n + c]))) for c in range(n)]
        chunks = [" " + " ".join(cells[s : s + bc]) + " " for s in range(0, n, bc)]
        lines.append("|".join(chunks).rstrip())
    return "\n".join(lines)


def _parse_strings(strings, box) -> tuple[np.ndarray, Geometry] | None:
    """Many puzzle strings of one size at once (numpy, not a Python loop per puzzle), or None
    when they are not all valid, so that :func:`parse` on each names the first bad one exactly.
    Gives the same grids as :func:`parse`.
    """
    if not isinstance(strings, (list, tuple)) or not strings or not all(isinstance(x, str) for x in strings):
        return None
    size = len(strings[0])
    if size not in (16, 36, 81) or any(len(x) != size for x in strings):
        return None
    br, bc = parse_box(box) if box is not None else box_for_cells(size)
    geo = geometry((br, bc))
    if size != geo.ncell:
        return None
    try:
        raw = np.frombuffer("".join(strings).encode("ascii"), np.uint8).reshape(len(strings), size)
    except UnicodeEncodeError:
        return None
    blank = (raw == ord(".")) | (raw == ord("0"))
    digit = raw.astype(np.int16) - ord("0")
    if not (blank | ((digit >= 1) & (digit <= geo.n))).all():
        return None
    grid = np.where(blank, 0, digit).astype(np.int8)
    # givens that repeat a digit in a unit: the slow path raises the exact message
    in_units = grid[:, geo.units]  # (B, 3N, N)
    for d in range(1, geo.n + 1):
        if ((in_units == d).sum(axis=2) > 1).any():
            return None
    return grid, geo


def _as_batch(grids, box) -> tuple[np.ndarray, Geometry]:
    if isinstance(grids, str):
        grids = [grids]
    if isinstance(grids, np.ndarray) and grids.ndim == 2 and grids.dtype != object:
        arr = grids
        if arr.shape[1] not in (16, 36, 81):
            raise ValueError(f"batched grids must have 16, 36 or 81 columns, got {arr.shape[1]}")
        br, bc = parse_box(box) if box is not None else box_for_cells(arr.shape[1])
        if arr.shape[1] != (br * bc) ** 2:
            raise ValueError(f"grids have {arr.shape[1]} cells; box {br}x{bc} needs {(br * bc) ** 2}")
        if arr.size and (arr.min() < 0 or arr.max() > br * bc):
            raise ValueError(f"grid values must be 0..{br * bc}")
        return np.ascontiguousarray(arr, dtype=np.int8), geometry((br, bc))
    fast = _parse_strings(grids, box)
    if fast is not None:
        return fast
    rows = [parse(g, box) for g in grids]
    if not rows:
        raise ValueError("no puzzles given")
    sizes = {r.size for r in rows}
    if len(sizes) != 1:
        raise ValueError(f"puzzles of different sizes in one batch: {sorted(sizes)}")
    br, bc = parse_box(box) if box is not None else box_for_cells(rows[0].size)
    return np.stack(rows), geometry((br, bc))


# ----------------------------------------------------------------------------- validation


def check_solution(puzzle, candidate, box=None) -> bool | np.ndarray:
    """True when ``candidate`` is a full grid valid by the rules that keeps every given of ``puzzle``.

    Also batched: with (B, N*N) arrays it returns a (B,) bool array.
    """
    # (B, N*N) arrays are batches; an N x N array (at most 9 columns) is one grid.
    if isinstance(puzzle, np.ndarray) and puzzle.ndim == 2 and puzzle.shape[1] in (16, 36, 81):
        p, geo = _as_batch(puzzle, box)
        c = np.asarray(candidate)
        if c.shape != p.shape:
            raise ValueError(f"candidates {c.shape} and puzzles {p.shape} differ in shape")
        return K.check_batch(p, np.ascontiguousarray(c, dtype=np.int8), geo.units)
    p = parse(puzzle, box, check_rules=False)
    c = np.asarray(parse(candidate, box, check_rules=False) if isinstance(candidate, str) else candidate)
    c = c.reshape(-1)
    if c.size != p.size:
        raise ValueError(f"candidate has {c.size} cells, puzzle has {p.size}")
    geo = geometry(box_for_cells(p.size) if box is None else box)
    return bool(K.check_batch(p[None], c[None].astype(np.int8), geo.units)[0])


# ----------------------------------------------------------------------------- solving


@dataclass
class SolveResult:
    solutions: np.ndarray  # (B, N*N) first solution (zeros where none)
    n_solutions: np.ndarray  # (B,) counted up to the limit
    guesses_first: np.ndarray  # (B,) guesses before the first solution (-1: none)
    guesses_total: np.ndarray  # (B,) guesses in the whole search


def solve_many(grids, *, limit: int = 1, box=None, propagate: bool = True) -> SolveResult:
    """Solve a batch in parallel (one puzzle per thread), counting solutions up to ``limit``."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    g, geo = _as_batch(grids, box)
    sols, stats = K.solve_batch(g, geo.tables(), int(limit), bool(propagate))
    return SolveResult(sols, stats[:, 0], stats[:, 1], stats[:, 2])


def solve(puzzle, box=None) -> np.ndarray | None:
    """The first solution of one puzzle (lowest-digit-first search), or None if it has none."""
    r = solve_many([puzzle] if not isinstance(puzzle, np.ndarray) else puzzle.reshape(1, -1), box=box)
    return r.solutions[0] if r.n_solutions[0] > 0 else None


def count_solutions(puzzle, limit: int = 2, box=None) -> int:
    r = solve_many(
        [puzzle] if not isinstance(puzzle, np.ndarray) else puzzle.reshape(1, -1), limit=limit, box=box
    )
    return int(r.n_solutions[0])


@dataclass
class RatingResult:
    ratings: np.ndarray  # (B,) int64 tdoku guesses before the first solution (-1: no solution)
    solutions: np.ndarray  # (B, 81) int8 that first solution (zeros where none)
    guesses: np.ndarray  # (B,) int64 guesses of the search, also where it found no solution


def _is_single(puzzles) -> bool:
    if isinstance(puzzles, str):
        return True
    if isinstance(puzzles, np.ndarray) and puzzles.dtype != object:
        # a flat grid, or one N x N grid (a batch has 16, 36 or 81 columns)
        return puzzles.ndim == 1 or (puzzles.ndim == 2 and puzzles.shape[0] == puzzles.shape[1] <= 9)
    return False


def rate_many(puzzles) -> RatingResult:
    """The public (tdoku) rating of each 9x9 puzzle, with the first solution the rater found.

    ``puzzles``: strings (``.`` or ``0`` blanks), grids, or a (B, 81) integer array. Puzzles are
    rated in parallel, one per thread; each result depends on its puzzle alone.
    """
    if _is_single(puzzles):
        puzzles = [puzzles]
    g, geo = _as_batch(puzzles, None)
    if geo.n != 9:
        raise ValueError(
            f"the public (tdoku) rating is defined for 9x9 Sudoku, got {geo.n}x{geo.n} grids; "
            "for other sizes use solve_many(...).guesses_first"
        )
    sols, stats = R.rate_batch(g, 4 * numba.get_num_threads())
    if (stats[:, 1] == R.E_OVERFLOW).any():  # a work buffer ran out: not seen on real puzzles
        bad = int(np.flatnonzero(stats[:, 1] == R.E_OVERFLOW)[0])
        raise RuntimeError(f"the rater ran out of work space on puzzle {bad}: {format_grid(g[bad])}")
    guesses = stats[:, 0].copy()
    ratings = np.where(stats[:, 1] == R.OK, guesses, -1)
    return RatingResult(ratings=ratings, solutions=sols, guesses=guesses)


def rate(puzzles):
    """The public Sudoku-Extreme rating: tdoku's guesses before the first solution, on the puzzle
    exactly as written (-1 if it has no solution). 9x9 only.

    One puzzle (a string or a grid) gives an ``int``; a batch (a list, or a (B, 81) array) gives a
    (B,) int64 array. See :func:`rate_many` for the solutions too.
    """
    single = _is_single(puzzles)
    r = rate_many(puzzles).ratings
    return int(r[0]) if single else r


# ----------------------------------------------------------------------------- calibration

# Monotone map from our solver's guess count (``solve_many(...).guesses_first``) to tdoku's scale,
# fitted by matching quantiles of both counts over the shared benchmark collections (17-clue,
# magictour top1465, forum hardest 1905 11+, forum hardest 1106); regenerate with
# `python bench/bench_sudoku.py --calibrate`. Piecewise linear between knots, linear beyond.
# Agrees with the public rating on collection averages only; for a 9x9 puzzle's own public
# rating use `rate`. Kept for 4x4 and 6x6 Sudoku, which tdoku's algorithm does not cover: the
# builder rates those sets with it.
CALIBRATION_OURS = np.array(
    [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0, 192.0, 256.0]
)
CALIBRATION_PUBLIC = np.array(
    [
        0.0,
        1.001,
        2.002,
        3.003,
        4.004,
        6.005,
        8.006,
        11.007,
        14.008,
        20.009,
        25.01,
        37.011,
        48.012,
        69.013,
        87.014,
        118.015,
        147.018,
    ]
)


def to_public_scale(rating) -> np.ndarray:
    """Our solver's guess count(s) mapped onto the public (tdoku) scale; monotone, 0 stays 0.

    Right on collection averages, not per puzzle: use :func:`rate` for the public rating itself.
    """
    r = np.asarray(rating, dtype=np.float64)
    x, y = CALIBRATION_OURS, CALIBRATION_PUBLIC
    out = np.interp(r, x, y)
    slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
    out = np.where(r > x[-1], y[-1] + (r - x[-1]) * slope, out)
    return np.where(r < 0, -1.0, out)


# ----------------------------------------------------------------------------- symmetry


def canonical_form(puzzles, solutions=None, box=None) -> np.ndarray:
    """Canonical representative of each puzzle under the Sudoku symmetry group, (B, N*N) int8.

    Two uniquely solvable puzzles are symmetry images of each other (band/row, stack/column
    permutations, transposition for square boxes, digit relabelling) exactly when their canonical
    forms are equal. ``solutions`` (their unique solutions) are computed when not given.
    """
    p, geo = _as_batch(puzzles, box)
    if solutions is None:
        r = solve_many(p, limit=2, box=(geo.br, geo.bc))
        if (r.n_solutions != 1).any():
            bad = int(np.flatnonzero(r.n_solutions != 1)[0])
            raise ValueError(
                f"puzzle {bad} has {r.n_solutions[bad]} solutions (counted to 2); "
                "canonical_form needs uniquely solvable puzzles"
            )
        s = r.solutions
    else:
        s, _ = _as_batch(solutions, (geo.br, geo.bc))
        if s.shape != p.shape:
            raise ValueError(f"solutions {s.shape} and puzzles {p.shape} differ in shape")
    out_p, _ = K.canonical_batch(p, s, geo.n, geo.br, geo.bc, geo.colperms, geo.square_boxes)
    return out_p


def item_seeds(seed: int, count: int, stream: int = 0) -> np.ndarray:
    """Independent per-item seeds (uint32) for ``count`` items of one stream of a run seed."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(stream),))
    return ss.generate_state(max(int(count), 1), dtype=np.uint32)[: int(count)].astype(np.int64)


def augment(puzzles, solutions, num_aug: int, seed: int, box=None) -> tuple[np.ndarray, np.ndarray]:
    """Each puzzle followed by ``num_aug`` random symmetry images, as the reference builder does.

    Returns (G * (1 + num_aug), N*N) puzzles and solutions; index 0 of each group is the original.
    """
    if num_aug < 0:
        raise ValueError(f"num_aug must be >= 0, got {num_aug}")
    p, geo = _as_batch(puzzles, box)
    s, _ = _as_batch(solutions, (geo.br, geo.bc))
    seeds = item_seeds(seed, p.shape[0], stream=7)
    return K.augment_batch(p, s, int(num_aug), seeds, geo.n, geo.br, geo.bc, geo.square_boxes)


def random_symmetry(puzzles, solutions, seed: int, box=None) -> tuple[np.ndarray, np.ndarray]:
    """One uniformly random symmetry image of each (puzzle, solution)."""
    ap, as_ = augment(puzzles, solutions, 1, seed, box)
    return ap[1::2].copy(), as_[1::2].copy()


# ----------------------------------------------------------------------------- generation


def random_minimal(count: int, seed: int, box="3x3", stream: int = 0):
    """``count`` random minimal puzzles, item i seeded from (seed, stream, i).

    Each item has its own seed, so the output is identical whatever the number of threads.
    Returns puzzles, solutions and per item [rating, guesses of the full uniqueness search].
    """
    return random_minimal_seeded(item_seeds(seed, count, stream), box)


def _check_seeds(seeds) -> np.ndarray:
    seeds = np.asarray(seeds, dtype=np.int64)
    if seeds.ndim != 1 or (seeds < 0).any() or (seeds >= 2**32).any():
        raise ValueError("seeds must be a 1-D array of integers in [0, 2**32)")
    return seeds


def random_minimal_seeded(seeds, box="3x3"):
    """:func:`random_minimal` with explicit per-item seeds (non-negative ints < 2**32)."""
    return K.random_minimal_batch(_check_seeds(seeds), geometry(box).tables())


def climb(
    seeds,
    *,
    pool_size: int = 50,
    iters: int = 100_000,
    archive_cap: int = 4096,
    samples: int = 0,
    keep: int | None = None,
    box="3x3",
    start=None,
    with_pools: bool = False,
):
    """Hill-climb toward hard puzzles on independent islands, one per seed (see
    :func:`puzzles._sudoku_kernels.climb_islands`).

    ``samples`` = 0 climbs our own solver's search-tree size (any box); ``samples`` = S > 0
    (9x9 only) climbs the sum of the ``keep`` lowest public (tdoku) ratings of S random symmetry
    images (``keep`` defaults to S, the mean).
    Returns one ``(puzzles, scores)`` pair per island: the puzzles the island kept, oldest
    first (the last ``archive_cap`` of them), each with a unique solution and mostly harder
    than the one before; ``scores`` are tree sizes (``samples`` = 0) or the sums of the ``keep``
    lowest image ratings.

    ``start``: one ``(pool, pool_scores)`` per seed, as returned with ``with_pools=True``: each
    island goes on climbing from that pool (a continued island, with its new seed) instead of
    starting from random minimal puzzles. ``with_pools=True`` returns ``(archives, pools)``, with
    ``pools`` the final ``(pool, pool_scores)`` of every island.
    """
    seeds = _check_seeds(seeds)
    keep = samples if keep is None else keep
    if pool_size < 2 or iters < 0 or archive_cap < 1 or samples < 0:
        raise ValueError("need pool_size >= 2, iters >= 0, archive_cap >= 1 and samples >= 0")
    if samples and not 1 <= keep <= samples:
        raise ValueError(f"keep must be in 1..samples ({samples}), got {keep}")
    geo = geometry(box)
    if samples and geo.n != 9:
        raise ValueError(
            f"samples > 0 climbs the public (tdoku) rating, defined for 9x9 only, not {geo.n}x{geo.n}"
        )
    if start is None:
        start_pool = np.zeros((len(seeds), 0, geo.ncell), np.int8)
        start_score = np.full((len(seeds), 1), -1, np.int64)
    else:
        if len(start) != len(seeds):
            raise ValueError(f"start has {len(start)} pools for {len(seeds)} seeds")
        start_pool = np.stack([np.asarray(p, np.int8) for p, _ in start])
        start_score = np.stack([np.asarray(s, np.int64) for _, s in start])
        if start_pool.shape[1:] != (pool_size, geo.ncell) or start_score.shape[1:] != (pool_size,):
            raise ValueError(
                f"start pools must be ({pool_size}, {geo.ncell}) puzzles with {pool_size} scores"
            )
    arch, score, kept, pools, pool_scores = K.climb_islands(
        seeds,
        int(pool_size),
        int(iters),
        int(archive_cap),
        int(samples),
        int(keep),
        geo.tables(),
        start_pool,
        start_score,
    )
    out = []
    for i in range(len(seeds)):
        k = int(kept[i])
        if k <= archive_cap:
            order = np.arange(k)
        else:  # unroll the ring: oldest surviving entry first
            order = (np.arange(archive_cap) + k) % archive_cap
        out.append((arch[i, order], score[i, order]))
    if with_pools:
        return out, [(pools[i], pool_scores[i]) for i in range(len(seeds))]
    return out


def orient(puzzles, solutions, seeds, samples: int, which=None):
    """Rate ``samples`` random symmetry images of each 9x9 puzzle (item i seeded by ``seeds[i]``)
    and move the puzzle and its solution to image ``which[i]`` (default, or where negative: the
    median orientation, the image whose public rating is the lower median). Same seeds, same
    images. Returns puzzles, solutions, the public rating as stored (B,), and the public ratings
    of all the images (B, samples): how the puzzle rates across orientations.
    """
    p, geo = _as_batch(puzzles, None)
    if geo.n != 9:
        raise ValueError(f"orient uses the public (tdoku) rating, defined for 9x9 only, not {geo.n}x{geo.n}")
    s, _ = _as_batch(solutions, "3x3")
    seeds = _check_seeds(seeds)
    if len(seeds) != len(p) or samples < 1:
        raise ValueError("need one seed per puzzle and samples >= 1")
    which = np.full(len(p), -1, np.int64) if which is None else np.asarray(which, dtype=np.int64)
    if which.shape != (len(p),) or (which >= samples).any():
        raise ValueError(f"which needs one image index (< {samples}, or -1) per puzzle")
    return K.orient_batch(p, s, seeds, int(samples), which)


# ----------------------------------------------------------------------------- compilation

# The 9x9 builder's kernels that a second process can compile while the first compiles the ones
# it needs first (random_minimal_batch, orient_batch): Numba compiles on one core, and the cache
# files it writes are picked up by the builder on first use (cache writes are atomic renames).
_BUILDER_LATER = (K.climb_islands, R.rate_batch, K.canonical_batch, K.solve_batch, K.augment_batch)


def kernels_cached(kernels=_BUILDER_LATER) -> bool:
    """Whether Numba's cache holds a current build of every kernel (False when unsure)."""
    try:
        return all(bool(k._cache._cache_file._load_index()) for k in kernels)
    except Exception:  # a Numba without this cache layout: treat as cold
        return False


def compile_builder_kernels() -> None:
    """Compile (or load) the 9x9 builder's later kernels by running each once on a tiny input."""
    seeds = item_seeds(0, 2)
    climb(seeds, pool_size=4, iters=10, samples=2, with_pools=True)  # the first one needed
    # a valid grid by the shifted-rows pattern, with every third cell blank
    s = np.array([[(3 * r + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)], np.int8).reshape(1, 81)
    p = np.where(np.arange(81) % 3 == 0, 0, s).astype(np.int8)
    rate_many(p)
    canonical_form(p, s)
    solve_many(p)
    augment(p, s, 1, 0)
