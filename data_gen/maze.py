"""Build a Maze-Hard-style dataset: random-wall mazes whose shortest S-G path is long.

    python -m data_gen.maze --n 1000 [--test-n N] [--size 30] [--min-path L] [--count cells|edges]
                            [--walls LO HI] [--unique-path] [--seed S] [--out DIR] [--aug]
                            [--envelope C] [--overwrite]
    python -m data_gen.maze --from-csv DIR_OR_FILES --out DIR [--aug]

The public recipe (Searchformer; HRM's "hard" filter): shuffle the side^2 cells, the first
k ~ U{n//10*3 .. n//10*5} become walls (270..450 at 30x30), S and G are a uniform ordered pair of
distinct free cells, and the maze is kept when its shortest S-G path is longer than ``--min-path``.
We read the public "> 110" as counting **cells** (S and G included, as the recipe's ``len(plan)``
does), i.e. at least 110 moves; ``--count edges`` reads it as moves. ``rating`` in the CSVs is the
shortest-path length in the same unit, so every row satisfies ``rating > min_path``.

Fast and unbiased. Hard mazes are rare (~1.6e-5 per naive draw at 30x30, > 110 cells), so instead
of drawing (layout, S, G) triples we draw layouts and compute Q, the exact number of ordered pairs
at distance >= the threshold, with a few BFS (eccentricity bounds from a double sweep and a central
BFS settle ~99% of layouts; see ``puzzles._maze_kernels._count_pairs``). The naive recipe keeps a
layout with probability a = Q / (F (F - 1)) (F free cells: the chance that its uniform (S, G) draw
qualifies); we keep it with probability a / C for a fixed envelope C and pick (S, G) uniformly among
its Q pairs. The accepted mazes then follow exactly the naive recipe's distribution provided
a <= C for every layout met; stats.json reports how many layouts exceeded C ("clipped": kept with
probability 1 instead of a / C, so under-weighted). Since only "is Q > u C F (F - 1)?" matters, a
cheap upper bound on Q from the first BFS rejects many layouts before the exact count. Up to 62x62
the layouts are drawn and counted on bit rows (one uint64 per row, a BFS level is a few vector
instructions; ``puzzles._maze_kernels._count_pairs_bits``): the same layouts and decisions. The default
C comes from a measurement at the public setting (0.125 at 30x30, > 110 cells: the largest a met
in 26M layouts was 0.110) and otherwise from a pilot run on a separate random stream: 4 x the
largest a among its first 400 layouts holding a pair, rounded up to two significant digits
(``pilot_envelope``).
The envelope is what bounds the speed: a is heavy-tailed (mean 2.6e-3 over layouts holding a pair,
largest 0.110), so an exact sample needs about C / 1.6e-5 ~ 8000 layouts per maze. ``--envelope``
trades exactness for speed (0.05 would clip ~0.8% of the target mass at 30x30).

Determinism: candidate i of a run draws from its own stream keyed by (seed, i); candidates are
filtered in fixed batches and accepted in index order, so the output is byte-identical whatever the
thread count. Layouts are deduplicated up to the 8 dihedral symmetries (a test maze is never a
rotation of a training maze); the first ``--test-n`` accepted layouts form the test split and the
next ``--n`` the training split, so the test set does not change with ``--n``. ``--aug`` adds the 8
dihedral transforms of each training maze (question and label transformed together, as the reference
builder does), off by default.

Other sizes: without ``--min-path`` a size other than 30 uses ``round(110 * (size / 30) ** 1.5)``
cells (6 -> 10, 8 -> 15, 10 -> 21, 15 -> 39, 20 -> 60): long for the size but common enough for quick
CPU runs (naive yields ~5e-3, ~1.2e-3, ~3e-4 per draw at 10, 15, 20, against 1.6e-5 at 30x30).
Keeping the public yield instead would need ~33 moves at 10x10, close to the longest path a 10x10
layout ever has. ``--min-path 0`` keeps every maze whose G is reachable (S != G: at least one move).

Small learnable sets (a CPU "laptop tier"): ``--walls LO HI`` draws k ~ U{round(LO n)..round(HI n)}
(Python's ``round``; the wall share is within half a cell of [LO, HI]) instead of the recipe's
``n//10*3..n//10*5``, which ``--walls 0.3 0.5`` (the default) keeps exactly (it differs from
round(0.3 n)..round(0.5 n) when 10 does not divide n: 9..15 walls at 6x6, not 11..18).
``--unique-path`` keeps only mazes whose S-G shortest path is unique, so the label (the canonical
A* path) is the only right answer rather than one tie-broken pick among many. For example (1500
mazes at least 5 moves long, ~1 s of generation on 2 cores; ``--size 8 ... --min-path 7`` ~2 s):

    python -m data_gen.maze --size 6 --walls 0.3 0.3 --unique-path --min-path 5 --envelope 1 \\
        --n 1000 --test-n 500 --out data/maze-6x6-unique

``--envelope 1`` is exact for any setting (a keep chance never exceeds 1); it only costs layouts
when the largest keep chance is far below 1. Small grids with short thresholds have keep chances
above 1/4, where the pilot returns 1 anyway, so passing it skips a pilot of 65536 exactly counted
layouts (~2 s at 6x6, ~6 s at 8x8) and gives the same mazes.

The sample stays exact with ``--unique-path``: the target is the naive recipe with one more
condition (draw a layout, a uniform (S, G), keep it when the path is long enough *and* unique), which
keeps a layout with chance Q' / (F (F - 1)), Q' its ordered pairs that are far enough apart and
joined by one shortest path, and then holds a uniform one of those Q' pairs. So the filter counts
Q' in place of Q, accepts with chance (Q' / (F (F - 1))) / C and picks among the Q' pairs (the
pilot sizes C for Q'). Restricting the pick to the Q' pairs while still accepting on Q would be
biased (towards open layouts, whose long pairs are mostly tied); so would redrawing (S, G) on the same
layout after a tied pick. Rejecting the candidate after a tied pick among all Q pairs would be
exact too (Q / C x 1 / Q per unique pair), but it throws away the built candidate 1 - Q'/Q of the
time and needs the larger envelope of Q.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_gen.format import OneLineParser, build_split, read_public_csv, write_dataset
from puzzles import maze as pm

PUBLIC_SIZE = 30
PUBLIC_MIN_PATH = 110  # cells: the public Maze-Hard filter "> 110", read as counting cells
MAX_SOURCES = 8  # bounding BFS per component before falling back to the exact count
# Measured envelopes: (size, threshold in edges) -> C. At the public setting the largest keep chance
# in 26M layouts (three runs) was 0.110, so 0.125 clipped none; a 400-layout pilot is far noisier.
# The tail grows slowly with the run (about n^0.22): much larger runs may clip a few layouts
# (counted and warned); --envelope 0.25 gives a wider margin at twice the time.
KNOWN_ENVELOPES = {(30, 110): 0.125}  # recipe walls, any shortest path
BATCH = 1 << 16
RECIPE_WALLS = (0.3, 0.5)  # --walls default: the recipe's n//10*3..n//10*5 walls, exactly
# Accepted layouts in a row that were all seen before (up to symmetry): the setting has run out of
# distinct mazes (3x3 has one layout, 4x4 ~800 at the default threshold), so the run stops with an
# error instead of spinning.
MAX_DUPLICATE_RUN = 100_000


def default_min_path(size: int, count: str = "cells") -> int:
    """The public threshold (110 cells at 30x30) scaled as side^1.5 (10 -> 21, 15 -> 39, 20 -> 60)."""
    cells = round(PUBLIC_MIN_PATH * (size / PUBLIC_SIZE) ** 1.5)
    return cells if count == "cells" else cells - 1


def wall_count_range(size: int, walls: tuple[float, float] | None = None) -> tuple[int, int]:
    """Inclusive wall-count range of ``--walls LO HI`` on a size x size grid (n cells).

    ``None`` or exactly ``RECIPE_WALLS`` gives the recipe's ``n//10*3 .. n//10*5``; other ranges give
    ``round(LO n) .. round(HI n)``. Raises ``ValueError`` unless 0 <= LO <= HI < 1 and at least two
    cells stay free for S and G.
    """
    n = size * size
    if walls is None or tuple(walls) == RECIPE_WALLS:
        return tuple(int(k) for k in pm.wall_bounds(n))
    lo, hi = (float(w) for w in walls)
    if not (0 <= lo < 1 and 0 <= hi < 1):  # also rejects NaN
        raise ValueError(f"--walls fractions must lie in [0, 1), got {lo} {hi}")
    if lo > hi:
        raise ValueError(f"--walls LO HI needs LO <= HI, got {lo} {hi}")
    k_lo, k_hi = round(lo * n), round(hi * n)
    if n - k_hi < 2:
        raise ValueError(
            f"--walls {lo} {hi} allows {k_hi} walls of {n} cells at {size}x{size}, "
            "leaving fewer than 2 free cells for S and G"
        )
    return k_lo, k_hi


def _round_up_2sig(x: float) -> float:
    scale = 10.0 ** (np.floor(np.log10(x)) - 1)
    return float(np.ceil(round(x / scale, 9)) * scale)


def pilot_envelope(
    size: int,
    t_edges: int,
    seed: int,
    *,
    walls: tuple[float, float] | None = None,
    unique_path: bool = False,
    min_layouts: int = 400,
    max_candidates: int = 1 << 21,
):
    """Envelope C from a pilot run on a separate stream: 4 x the largest keep chance seen, rounded up
    to two significant digits, at most 1. The pilot draws its own layouts, so C does not depend on
    the candidates of the run itself. Why 4: the keep chance is heavy-tailed (at 30x30, > 110 cells,
    the largest of n layouts holding a pair grows about as n^0.22: 0.036 at 356, 0.087 at 18k, 0.104
    at 47k), so a 400-layout pilot's maximum times 4 covers runs of a few hundred thousand such
    layouts (~30M candidates). Clipping, if any, is counted in stats.json and warned about.

    Returns (C, pilot candidates, layouts with a pair, largest chance, mean chance = the naive
    recipe's yield per draw). Raises ``ValueError`` when no pilot layout holds a qualifying pair:
    the setting is impossible (e.g. 3x3 has no walls, and its pairs 4 moves apart have 6 shortest
    paths each) or too rare to size an envelope, and a run would not end.
    """
    k_lo, k_hi = wall_count_range(size, walls)
    key = np.uint64(pm.stream_key(np.uint64(seed) ^ np.uint64(0x9E1_07)))
    n_cells = size * size
    first = qualified = 0
    a_max = a_sum = 0.0
    while qualified < min_layouts and first < max_candidates:
        _, pairs, _, nwalls = pm.filter_batch(
            key, first, BATCH, size, k_lo, k_hi, t_edges, unique_path, 1.0, MAX_SOURCES, True
        )
        qual = pairs > 0
        qualified += int(qual.sum())
        free = n_cells - nwalls[qual].astype(np.float64)
        if qual.any():
            a = pairs[qual] / (free * (free - 1))
            a_max = max(a_max, float(a.max()))
            a_sum += float(a.sum())
        first += BATCH
    if qualified == 0:
        what = " joined by a unique shortest path" if unique_path else ""
        raise ValueError(
            f"none of {first} pilot layouts ({size}x{size}, {k_lo}..{k_hi} walls) holds two cells "
            f"{t_edges} or more moves apart{what}: the setting is impossible or too rare "
            "(lower --min-path, or pass --envelope to run without a pilot)"
        )
    env = min(1.0, _round_up_2sig(4 * a_max))
    return float(env), first, qualified, a_max, a_sum / first


# ----------------------------------------------------------------------------- generation


@dataclass
class MazeSet:
    """Generated mazes as token rows plus per-maze facts (lengths in edges)."""

    questions: np.ndarray  # (M, side^2) uint8
    answers: np.ndarray  # (M, side^2) uint8
    lengths: np.ndarray  # (M,) int32 shortest-path edges
    npaths: np.ndarray  # (M,) float64 number of shortest paths
    walls: np.ndarray  # (M,) int16 wall count
    indices: np.ndarray  # (M,) int64 candidate index in the run
    stats: dict = field(default_factory=dict)


def dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    """The 8 dihedral transforms in the reference builders' order (0 = identity)."""
    ops = (
        lambda a: a,
        lambda a: np.rot90(a, 1),
        lambda a: np.rot90(a, 2),
        lambda a: np.rot90(a, 3),
        np.fliplr,
        np.flipud,
        lambda a: a.T,
        lambda a: np.fliplr(np.rot90(a, 1)),
    )
    return np.ascontiguousarray(ops[tid](grid))


def layout_key(question_row: np.ndarray, side: int) -> bytes:
    """Canonical bytes of a layout's walls up to the 8 dihedral symmetries."""
    walls = (question_row.reshape(side, side) == pm.WALL).astype(np.uint8)
    return min(dihedral(walls, t).tobytes() for t in range(8))


def generate_mazes(
    count: int,
    *,
    size: int = PUBLIC_SIZE,
    t_edges: int = PUBLIC_MIN_PATH,
    seed: int = 0,
    envelope: float | None = None,
    batch: int = BATCH,
    progress: bool = False,
    max_candidates: int | None = None,
    dedupe: bool = True,
    walls: tuple[float, float] | None = None,
    unique_path: bool = False,
) -> MazeSet:
    """The first ``count`` distinct accepted layouts of the run ``seed`` (see the module docstring).

    ``t_edges``: keep mazes whose shortest path has at least this many edges. ``walls``: the wall
    share range (see ``wall_count_range``; None = the recipe's). ``unique_path``: keep only mazes
    with one shortest S-G path. ``dedupe=False`` keeps repeated layouts (as the naive recipe would;
    for distribution tests on tiny grids). Raises ``ValueError`` on bad or impossible settings (also
    when the setting runs out of distinct layouts), ``RuntimeError`` when ``max_candidates`` run out
    first.
    """
    k_lo, k_hi = _check_settings(size, t_edges, seed, walls)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    t0 = time.perf_counter()
    envelope, pilot = _resolve_envelope(envelope, size, t_edges, seed, walls, unique_path, (k_lo, k_hi))
    key = np.uint64(pm.stream_key(np.uint64(seed)))
    tally = _Tally(count, dedupe)
    parts = []
    first = 0
    n_cells = size * size
    bar = _progress(count, progress)
    try:
        while len(tally.keep) < count:
            if max_candidates is not None and first >= max_candidates:
                raise RuntimeError(f"only {len(tally.keep)} of {count} mazes after {first} candidates")
            status, pairs, nbfs, nwalls = pm.filter_batch(
                key, first, batch, size, k_lo, k_hi, t_edges, unique_path, envelope, MAX_SOURCES
            )
            acc = tally.count_batch(status, pairs, nbfs, nwalls, n_cells, envelope)
            if acc.size:
                idx = (first + acc).astype(np.int64)
                q, ans, lengths, npaths, w = pm.build_batch(
                    key, idx, pairs[acc], size, k_lo, k_hi, t_edges, unique_path, MAX_SOURCES
                )
                rows = tally.take_distinct(q, idx, size, bar)
                parts.append((q[rows], ans[rows], lengths[rows], npaths[rows], w[rows], idx[rows]))
            first += batch
            bar.set_postfix(candidates=first)
    finally:
        bar.close()
    if parts:
        q, ans, lengths, npaths, w, idx = (np.concatenate(x) for x in zip(*parts, strict=True))
    else:
        q = ans = np.zeros((0, n_cells), np.uint8)
        lengths, npaths, w, idx = (np.zeros(0, d) for d in (np.int32, np.float64, np.int16, np.int64))
    stats = tally.stats(first, envelope, pilot, time.perf_counter() - t0)
    if tally.clipped:
        print(
            f"warning: {tally.clipped} layouts had keep chance above --envelope {envelope} (max "
            f"{tally.a_max:.4f}); the sample under-weights them: raise --envelope for an exact sample",
            file=sys.stderr,
        )
    return MazeSet(q, ans, lengths, npaths, w, idx, stats)


def _resolve_envelope(
    envelope, size, t_edges, seed, walls, unique_path, k_range
) -> tuple[float, list | None]:
    """``(envelope, pilot)``: the given envelope, else a measured one (recipe walls, any shortest
    path only), else one from a pilot run (whose figures ``pilot`` holds)."""
    pilot = None
    if envelope is None and k_range == wall_count_range(size) and not unique_path:
        envelope = KNOWN_ENVELOPES.get((size, t_edges))
    if envelope is None:
        envelope, *pilot = pilot_envelope(size, t_edges, seed, walls=walls, unique_path=unique_path)
    if not 0 < envelope <= 1:
        raise ValueError(f"envelope must be in (0, 1], got {envelope}")
    return envelope, pilot


@dataclass
class _Tally:
    """The candidates :func:`generate_mazes` has scanned, and the distinct layouts it keeps."""

    count: int  # layouts wanted
    dedupe: bool
    keep: list[int] = field(default_factory=list)  # kept candidate indices
    seen: set[bytes] = field(default_factory=set)  # their layouts up to symmetry
    n_qualified: int = 0
    n_accepted: int = 0
    n_dupes: int = 0
    clipped: int = 0
    dup_run: int = 0  # accepted duplicates since the last new layout
    a_max: float = 0.0
    bfs_total: int = 0

    def count_batch(self, status, pairs, nbfs, nwalls, n_cells: int, envelope: float) -> np.ndarray:
        """Count one ``filter_batch``; returns the positions of its accepted candidates."""
        # pairs is -1 where the filter rejected on a bound: such a layout's keep chance is below
        # the envelope, so the clipped count stays exact.
        qual = pairs > 0
        self.n_qualified += int(qual.sum())
        self.bfs_total += int(nbfs.sum())
        free = n_cells - nwalls[qual].astype(np.float64)
        a = pairs[qual] / (free * (free - 1))
        if a.size:
            self.a_max = max(self.a_max, float(a.max()))
            self.clipped += int((a > envelope).sum())
        acc = np.nonzero(status == pm.ST_ACCEPTED)[0]
        self.n_accepted += acc.size
        return acc

    def take_distinct(self, q: np.ndarray, idx: np.ndarray, size: int, bar) -> np.ndarray:
        """Rows of an accepted batch to keep: new layouts only (with ``dedupe``), until ``count``."""
        rows = []
        for j in range(len(idx)):
            if len(self.keep) >= self.count:
                break
            if self.dedupe:
                lk = layout_key(q[j], size)
                if lk in self.seen:
                    self.n_dupes += 1
                    self.dup_run += 1
                    if self.dup_run > MAX_DUPLICATE_RUN:
                        raise ValueError(
                            f"only {len(self.keep)} distinct layouts (up to rotation and reflection) "
                            f"of {self.count} after {self.dup_run} repeats in a row: this setting has too "
                            "few distinct mazes (ask for fewer, or change --size, --walls or --min-path)"
                        )
                    continue
                self.seen.add(lk)
                self.dup_run = 0
            self.keep.append(int(idx[j]))
            rows.append(j)
            bar.update(1)
        return np.asarray(rows, dtype=np.int64)

    def stats(self, candidates: int, envelope: float, pilot, elapsed: float) -> dict:
        return {
            "candidates": candidates,
            "layouts_counted_with_a_pair": self.n_qualified,
            "accepted": self.n_accepted,
            "duplicates_dropped": self.n_dupes,
            "bfs_per_candidate": self.bfs_total / max(candidates, 1),
            "envelope": envelope,
            "envelope_pilot": None
            if pilot is None
            else {
                "candidates": pilot[0],
                "layouts_with_a_pair": pilot[1],
                "max_keep_chance": pilot[2],
                # mean keep chance over the pilot's layouts: the naive recipe's yield per draw
                "naive_yield_estimate": pilot[3],
            },
            "max_keep_chance_counted": self.a_max,
            "clipped_layouts": self.clipped,
            "seconds": round(elapsed, 3),
        }


def _check_settings(
    size: int, t_edges: int, seed: int, walls: tuple[float, float] | None = None
) -> tuple[int, int]:
    """Validate a run's settings; returns its wall-count range."""
    if not 3 <= size <= 1000:
        raise ValueError(f"--size must be in 3..1000, got {size}")
    k_lo, k_hi = wall_count_range(size, walls)
    if t_edges < 1:
        raise ValueError(f"the threshold must allow at least one move, got {t_edges} edges")
    free = size * size - k_lo
    if t_edges >= free:
        raise ValueError(
            f"no path in a {size}x{size} grid with at least {k_lo} walls has {t_edges} edges "
            f"(at most {free} free cells, {free - 1} moves)"
        )
    if not 0 <= seed < 2**63:
        raise ValueError(f"--seed must be in 0..2^63-1, got {seed}")
    return k_lo, k_hi


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="mazes", unit="maze", file=sys.stderr)


# ----------------------------------------------------------------------------- naive recipes


def naive_recipe_numba(
    draws: int,
    *,
    size: int,
    t_edges: int,
    seed: int = 0,
    walls: tuple[float, float] | None = None,
    unique_path: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The public recipe, one (layout, S, G) per draw, in Numba: (path edges, walls) of kept draws."""
    k_lo, k_hi = _check_settings(size, t_edges, seed, walls)
    key = np.uint64(pm.stream_key(np.uint64(seed) ^ np.uint64(0x5EED)))
    lengths, wall_counts = [], []
    for first in range(0, draws, BATCH):
        d, w = pm.naive_batch(key, first, min(BATCH, draws - first), size, k_lo, k_hi, unique_path)
        keep = d >= t_edges
        lengths.append(d[keep])
        wall_counts.append(w[keep])
    return np.concatenate(lengths), np.concatenate(wall_counts)


def naive_recipe_python(
    draws: int,
    *,
    size: int,
    t_edges: int,
    seed: int = 0,
    walls: tuple[float, float] | None = None,
    unique_path: bool = False,
) -> list[tuple[int, int]]:
    """The public recipe in plain Python (random.shuffle + deque BFS): (path edges, walls) of kept
    draws. The slow baseline of the benchmark and the independent oracle of the distribution test.
    S and G come from ``random.sample`` of the free cells (reshuffling them all cost ~23% more per
    draw at 30x30 for nothing, which flattered the benchmark's ratio).
    ``walls`` = (LO, HI) draws round(LO n)..round(HI n) walls (the recipe's range for None or
    (0.3, 0.5)); ``unique_path`` also asks for a single shortest path (counted from the BFS layers)."""
    rng = random.Random(seed)
    n = size * size
    if walls is None or tuple(walls) == (0.3, 0.5):
        lo, hi = (n // 10) * 3, (n // 10) * 5
    else:
        lo, hi = round(walls[0] * n), round(walls[1] * n)
    kept = []
    for _ in range(draws):
        cells = list(range(n))
        rng.shuffle(cells)
        k = rng.randint(lo, hi)
        wall = set(cells[:k])
        s, g = rng.sample(cells[k:], 2)  # a uniform ordered pair of distinct free cells
        dist = {s: 0}
        queue = collections.deque([s])
        while queue:
            u = queue.popleft()
            if u == g:
                break
            r, c = divmod(u, size)
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c - 1), (r, c + 1)):
                v = rr * size + cc
                if 0 <= rr < size and 0 <= cc < size and v not in wall and v not in dist:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        if dist.get(g, -1) >= t_edges and (not unique_path or _path_count(dist, size, g) == 1):
            kept.append((dist[g], k))
    return kept


def _path_count(dist: dict[int, int], size: int, g: int) -> int:
    """Shortest s-g paths from a BFS distance map that reached g (cells closer than g all settled):
    layer by layer, a cell's count is the sum of its neighbours' one step closer."""
    paths: dict[int, int] = {}
    for v in sorted(dist, key=dist.get):
        d = dist[v]
        if d > dist[g]:
            break
        r, c = divmod(v, size)
        paths[v] = (
            1
            if d == 0
            else sum(
                paths[rr * size + cc]
                for rr, cc in ((r + 1, c), (r - 1, c), (r, c - 1), (r, c + 1))
                if 0 <= rr < size and 0 <= cc < size and dist.get(rr * size + cc) == d - 1
            )
        )
    return paths[g]


# ----------------------------------------------------------------------------- dataset assembly


def _split_arrays(questions: np.ndarray, answers: np.ndarray, side: int, aug: bool):
    if not aug:
        return build_split(questions, answers, None, vocab_size=pm.VOCAB_SIZE)
    inputs, labels = [], []
    for q, a in zip(questions, answers, strict=True):
        qg, ag = q.reshape(side, side), a.reshape(side, side)
        for tid in range(8):
            inputs.append(dihedral(qg, tid).reshape(-1))
            labels.append(dihedral(ag, tid).reshape(-1))
    n = len(questions)
    inputs = np.stack(inputs) if n else np.zeros((0, side * side), np.uint8)
    labels = np.stack(labels) if n else np.zeros((0, side * side), np.uint8)
    return build_split(inputs, labels, np.full(n, 8), vocab_size=pm.VOCAB_SIZE)


def _histogram(values) -> dict[str, int]:
    vals, cnts = np.unique(np.asarray(values), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, cnts, strict=True)}


def _split_stats(lengths_edges, walls, npaths, side: int, count: str) -> dict:
    shift = 1 if count == "cells" else 0
    lengths = np.asarray(lengths_edges) + shift
    walls = np.asarray(walls, dtype=np.float64)
    npaths = np.asarray(npaths, dtype=np.float64)
    out = {"mazes": int(lengths.size)}
    if lengths.size == 0:
        return out
    share = walls / (side * side)
    out.update(
        {
            f"path_length_{count}_histogram": _histogram(lengths),
            f"path_length_{count}_mean": float(lengths.mean()),
            "wall_share_mean": float(share.mean()),
            "wall_share_histogram": _histogram(np.floor(share * 100)),  # percent bins
            "shortest_paths": {
                "min": float(npaths.min()),
                "median": float(np.median(npaths)),
                "max": float(npaths.max()),
                "unique_fraction": float((npaths == 1).mean()),
                "log10_histogram": _histogram(np.floor(np.log10(np.maximum(npaths, 1)))),
            },
        }
    )
    return out


def build_generated(
    out: str | Path,
    *,
    n: int,
    test_n: int,
    size: int = PUBLIC_SIZE,
    min_path: int | None = None,
    count: str = "cells",
    seed: int = 0,
    aug: bool = False,
    envelope: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    walls: tuple[float, float] | None = None,
    unique_path: bool = False,
) -> dict:
    """Generate, split, verify and write a dataset; returns the stats written to stats.json."""
    if n < 0 or test_n < 0:
        raise ValueError(f"--n and --test-n must be >= 0, got {n} and {test_n}")
    if min_path is None:
        min_path = default_min_path(size, count) if size != PUBLIC_SIZE else PUBLIC_MIN_PATH
    if min_path < 0:
        raise ValueError(f"--min-path must be >= 0, got {min_path}")
    # S != G, so every path has a move: "longer than 0 cells" asks for nothing more than reachability
    t_edges = max(1, pm.threshold_edges(min_path, count))
    k_lo, k_hi = _check_settings(size, t_edges, seed, walls)
    t0 = time.perf_counter()
    ms = generate_mazes(
        test_n + n,
        size=size,
        t_edges=t_edges,
        seed=seed,
        envelope=envelope,
        progress=progress,
        walls=walls,
        unique_path=unique_path,
    )
    t_gen = time.perf_counter() - t0
    _verify(ms, t_edges, (k_lo, k_hi), unique_path)
    t_verify = time.perf_counter() - t0 - t_gen
    test = slice(0, test_n)
    train = slice(test_n, test_n + n)
    shift = 1 if count == "cells" else 0
    splits, csv_rows = {}, {}
    for name, sl in (("train", train), ("test", test)):
        splits[name] = _split_arrays(ms.questions[sl], ms.answers[sl], size, aug and name == "train")
        csv_rows[name] = [
            (f"gridloop-maze:seed={seed}:i={i}", pm.format_grid(q), pm.format_grid(a), int(L) + shift)
            for q, a, L, i in zip(
                ms.questions[sl], ms.answers[sl], ms.lengths[sl], ms.indices[sl], strict=True
            )
        ]
    recipe = "walls k ~ U{n//10*3..n//10*5}, uniform ordered (S, G), keep shortest path > min_path"
    if walls is not None and tuple(walls) != RECIPE_WALLS:
        recipe = recipe.replace("n//10*3..n//10*5", "round(LO n)..round(HI n)")
    if unique_path:
        recipe += " and unique"
    stats = {
        "recipe": recipe,
        "size": size,
        "min_path": min_path,
        "count": count,
        "threshold_edges": t_edges,
        "walls": list(RECIPE_WALLS if walls is None else map(float, walls)),
        "wall_count_range": [k_lo, k_hi],
        "unique_path": unique_path,
        "seed": seed,
        "aug": aug,
        "generation": ms.stats,
        "train": _split_stats(ms.lengths[train], ms.walls[train], ms.npaths[train], size, count),
        "test": _split_stats(ms.lengths[test], ms.walls[test], ms.npaths[test], size, count),
        "timings_s": {
            "generate": round(t_gen, 3),
            "verify": round(t_verify, 3),
        },
    }
    t1 = time.perf_counter()
    write_dataset(out, splits, csv_rows=csv_rows, stats=stats, overwrite=overwrite)
    stats["timings_s"]["write"] = round(time.perf_counter() - t1, 3)
    return stats


def _verify(ms: MazeSet, t_edges: int, wall_range: tuple[int, int], unique_path: bool) -> None:
    """Re-check every generated maze with the independent checker (BFS + path validation), its wall
    count, and with ``unique_path`` its shortest-path count (exact Python count, not the kernel's)."""
    if len(ms.questions) == 0:
        return
    codes, lengths, shortest = pm.check_paths(ms.questions, ms.answers)
    nwalls = (ms.questions == pm.WALL).sum(axis=1)
    bad = (codes != 0) | (lengths != shortest) | (shortest != ms.lengths) | (shortest < t_edges)
    bad |= (nwalls < wall_range[0]) | (nwalls > wall_range[1]) | (nwalls != ms.walls)
    if unique_path:
        side = int(round(ms.questions.shape[1] ** 0.5))
        bad |= np.array([pm.count_shortest_paths(q.reshape(side, side)) != 1 for q in ms.questions])
    bad = np.nonzero(bad)[0]
    if bad.size:
        i = bad[0]
        raise RuntimeError(
            f"generated maze {int(ms.indices[i])} failed verification (path check code {codes[i]}, "
            f"shortest {shortest[i]} edges, {nwalls[i]} walls)"
        )


def build_from_csv(
    sources: list[str | Path], out: str | Path, *, aug: bool = False, overwrite: bool = False
) -> dict:
    """Build the array format from public-format maze CSVs (``train.csv``/``test.csv``, or a folder
    holding them). Every row is checked; stats.json also reports how the CSV's ``rating`` relates to
    the BFS length and how many labels equal the canonical A* path."""
    files: dict[str, Path] = {}
    for src in map(Path, sources):
        if src.is_dir():
            for name in ("train", "test"):
                if (src / f"{name}.csv").is_file():
                    files[name] = src / f"{name}.csv"
        elif src.is_file():
            name = src.stem
            if name not in ("train", "test"):
                raise ValueError(f"{src}: expected a file named train.csv or test.csv")
            files[name] = src
        else:
            raise FileNotFoundError(f"{src} not found")
    if not files:
        raise ValueError(f"no train.csv or test.csv found in {[str(s) for s in sources]}")
    splits, csv_rows, stats = {}, {}, {"source_files": {k: str(v) for k, v in files.items()}}
    for name, path in files.items():
        rows = read_public_csv(path)
        qs, ans, lengths, rating_minus_edges = [], [], [], []
        exact = 0
        side = None
        for _source, q, a, rating, line in rows:
            try:
                qg = pm.parse_grid(q)
                ag = pm.parse_grid(a, answer=True)
                if side is None:
                    side = qg.shape[0]
                if qg.shape[0] != side or ag.shape != qg.shape:
                    raise ValueError(
                        f"sizes differ: question {qg.shape}, answer {ag.shape}, file side {side}"
                    )
                chk = pm.check_path(qg, ag)
            except ValueError as e:
                raise ValueError(f"{path}:{line}: {e}") from None
            if not chk.optimal:
                raise ValueError(
                    f"{path}:{line}: the answer is not a shortest path ({chk.reason or 'too long'})"
                )
            exact += chk.exact
            qs.append(qg.reshape(-1))
            ans.append(ag.reshape(-1))
            lengths.append(chk.shortest)
            rating_minus_edges.append(rating - chk.shortest)
        n_cells = side * side if side else 0
        q_arr = np.stack(qs) if qs else np.zeros((0, n_cells), np.uint8)
        a_arr = np.stack(ans) if ans else np.zeros((0, n_cells), np.uint8)
        splits[name] = _split_arrays(q_arr, a_arr, side or 0, aug and name == "train")
        csv_rows[name] = [(s, q, a, r) for s, q, a, r, _ in rows]
        walls = (q_arr == pm.WALL).sum(axis=1)
        npaths = [pm.count_shortest_paths(q.reshape(side, side)) for q in q_arr]
        st = _split_stats(lengths, walls, np.asarray(npaths, dtype=np.float64), side or 1, "edges")
        st["labels_equal_canonical_astar"] = exact
        st["rating_minus_bfs_edges_histogram"] = _histogram(rating_minus_edges) if rows else {}
        stats[name] = st
    write_dataset(out, splits, csv_rows=csv_rows, stats=stats, overwrite=overwrite)
    return stats


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m data_gen.maze", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="training mazes (default 1000)")
    p.add_argument("--test-n", type=int, default=None, help="test mazes (default: --n)")
    p.add_argument("--size", type=int, default=PUBLIC_SIZE, help="grid side (default 30)")
    p.add_argument(
        "--min-path",
        type=int,
        default=None,
        help="keep mazes whose shortest path is longer than this (default 110 at 30x30, scaled as "
        "side^1.5: 6 -> 10, 8 -> 15, 10 -> 21; 0 keeps any maze whose G is reachable)",
    )
    p.add_argument(
        "--count", choices=("cells", "edges"), default="cells", help="unit of --min-path and rating"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=str, default=None, help="output folder (default data/maze-<size>x<size>-hard)"
    )
    p.add_argument("--aug", action="store_true", help="add the 8 dihedral transforms to the training split")
    p.add_argument(
        "--envelope",
        type=float,
        default=None,
        help="acceptance envelope C (default: 0.125 at 30x30 > 110 cells, else from a pilot run); "
        "1 is exact for any setting and skips the pilot, best on small grids",
    )
    p.add_argument(
        "--walls",
        nargs=2,
        type=float,
        default=None,
        metavar=("LO", "HI"),
        help="wall share range, 0 <= LO <= HI < 1: k ~ U{round(LO n)..round(HI n)} walls of n cells "
        "(default 0.3 0.5: the public recipe's n//10*3..n//10*5 exactly)",
    )
    p.add_argument(
        "--unique-path",
        action="store_true",
        help="keep only mazes whose shortest S-G path is unique (exact: the naive recipe with that "
        "extra condition)",
    )
    p.add_argument(
        "--from-csv", nargs="+", default=None, metavar="PATH", help="build from public-format CSVs"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.from_csv:
            out = args.out or "data/maze-from-csv"
            stats = build_from_csv(args.from_csv, out, aug=args.aug, overwrite=args.overwrite)
            print(
                f"wrote {out}: "
                + ", ".join(f"{k} {v['mazes']}" for k, v in stats.items() if k != "source_files")
            )
            return 0
        out = args.out or f"data/maze-{args.size}x{args.size}-hard"
        test_n = args.n if args.test_n is None else args.test_n
        stats = build_generated(
            out,
            n=args.n,
            test_n=test_n,
            size=args.size,
            min_path=args.min_path,
            count=args.count,
            seed=args.seed,
            aug=args.aug,
            envelope=args.envelope,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            walls=args.walls,
            unique_path=args.unique_path,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    g = stats["generation"]
    print(
        f"wrote {out}: train {stats['train']['mazes']}, test {stats['test']['mazes']} "
        f"({g['candidates']} layouts, {stats['timings_s']['generate']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
