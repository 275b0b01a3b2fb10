"""Build Sudoku-Extreme-style datasets: generate -> rate -> dedupe -> split -> resample -> augment -> write.

    python -m data_gen.sudoku --n 1000                      # 1000 train + 1000 test, 9x9
    python -m data_gen.sudoku --n 1000 --box 2x3 --num-aug 0  # 6x6 for quick CPU experiments
    python -m data_gen.sudoku --from-csv path/to/sudoku-extreme --subsample-size 1000 --num-aug 1000

Generated sets are made from scratch (never from public puzzles): random minimal puzzles
("easy", 26.5% of the candidates as in the public set) and hill-climbed ones ("hard", from
islands of neighbourhood search, see :func:`puzzles.sudoku.climb`: every island climbs a short
screen, and the share of them that climbed highest goes on for a long climb). Every puzzle has a unique
solution. Each lineage (a random minimal puzzle, or one island and everything it climbed
through) belongs to one split, and a test puzzle whose canonical form (Sudoku symmetry) appears
in train is drawn again, so no test puzzle is a symmetry image or a hill-climb neighbour of a
training puzzle. Smaller boxes (2x2, 2x3) are random minimal puzzles only.

Rating: for 9x9 the ``rating`` shipped is the public one itself, tdoku's guess count on the puzzle
as stored (:func:`puzzles.sudoku.rate`). The climb maximises that count averaged over random
symmetry images, and the draw toward the public set's histogram (docs/reference.md,
"Sudoku-Extreme") reads each candidate's ratings over 27 random images, not one orientation's, so
the histogram holds for other orientations of the set too; each drawn puzzle is then shipped in
one of its images so that the stored histogram matches as well. 4x4 and 6x6 sets (tdoku is 9x9
only) are rated by our solver's count mapped by ``to_public_scale``. Where the pool has too few
hard puzzles a bucket's shortfall is filled from easier ones, and ``stats.json`` reports the
histogram reached (stored and re-oriented) next to the target.

Output (atomic): ``<out>/{train,test}/`` in the HRM/TRM array format, ``identifiers.json``,
``train.csv``/``test.csv`` (``source,question,answer,rating``; ``rating`` on the public scale) and
``stats.json``. The same arguments give byte-identical output whatever the number of threads.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
from tqdm import tqdm

from data_gen.format import OneLineParser, build_split, read_public_csv, write_dataset
from puzzles import sudoku as S

# Public Sudoku-Extreme rating histogram (docs/reference.md, "Sudoku-Extreme"): the share of each
# of puzzles.sudoku's rating buckets.
BUCKET_EDGES, BUCKET_NAMES, bucket_of = S.BUCKET_EDGES, S.BUCKET_NAMES, S.bucket_of
TARGET_SHARES = (0.18, 0.07, 0.14, 0.17, 0.33, 0.11)
TARGET_MEAN = 22.0  # the public set's mean rating (docs/reference.md, "Sudoku-Extreme")
EASY_SHARE = 0.265
# Hard candidates kept per island, in units of --per-island: the newest (hardest) of its archive,
# enough to fill every bucket with a margin, few enough to re-orient them all cheaply.
HARD_PER_ISLAND = 4
CHUNK = 256  # generation work unit: progress-bar granularity, never affects the output


def histogram(public_rating: np.ndarray) -> dict[str, float]:
    b = bucket_of(public_rating)
    n = max(len(b), 1)
    return {name: round(float((b == k).sum()) / n, 4) for k, name in enumerate(BUCKET_NAMES)}


def rating_summary(ratings) -> dict:
    """Mean, median and bucket histogram of one split's ratings (None where the split is empty)."""
    r = np.asarray(ratings, dtype=np.float64)
    return {
        "mean": round(float(r.mean()), 3) if len(r) else None,
        "median": float(np.median(r)) if len(r) else None,
        "histogram": histogram(r),
    }


def resample_to_target(
    public_rating: np.ndarray, n: int, shares=TARGET_SHARES, priority: np.ndarray | None = None
) -> np.ndarray:
    """Indices (sorted) of ``n`` items drawn per bucket toward ``shares``.

    Buckets are filled from the hardest down; a shortfall moves to the next easier bucket, so the
    result is as close to the target as the pool allows and never easier than needed. Within a
    bucket the items of highest ``priority`` are taken first, ties (and no priority) by lowest
    index (the pool is already in random order).
    """
    b = bucket_of(public_rating)
    want = np.floor(np.asarray(shares) * n).astype(int)
    want[0] += n - want.sum()
    if len(public_rating) < n:
        raise ValueError(f"pool of {len(public_rating)} is smaller than the {n} puzzles asked for")
    chosen: list[np.ndarray] = []
    carry = 0
    for k in range(len(shares) - 1, -1, -1):
        idx = np.flatnonzero(b == k)
        if priority is not None:
            idx = idx[np.argsort(-priority[idx], kind="stable")]
        take = min(len(idx), want[k] + carry)
        carry = want[k] + carry - take
        chosen.append(idx[:take])
    out = np.sort(np.concatenate(chosen))
    if carry:
        # Not enough easy ones either (only with tiny pools): top up with any leftovers.
        rest = np.setdiff1d(np.arange(len(public_rating)), out)[:carry]
        out = np.sort(np.concatenate([out, rest]))
    return out


def _rows_bytes(a: np.ndarray) -> list[bytes]:
    return [r.tobytes() for r in np.ascontiguousarray(a, dtype=np.int8)]


def _interleave(groups: list[np.ndarray]) -> np.ndarray:
    """Round-robin merge of index arrays, so that selection in order spreads over the groups."""
    out = []
    depth = max((len(g) for g in groups), default=0)
    for k in range(depth):
        out.extend(int(g[k]) for g in groups if k < len(g))
    return np.asarray(out, dtype=np.int64)


def _climb_in_chunks(seeds, iters, start, args, bar) -> tuple[list, list]:
    """Archives and final pools of one climbing island per seed (continuing ``start``'s pools
    when given), a thread's worth at a time for the progress bar; seeds fix the output."""
    tdoku = S.geometry(args.box).n == 9
    step = max(1, numba.get_num_threads())
    archives, pools = [], []
    for lo in range(0, len(seeds), step):
        a, p = S.climb(
            seeds[lo : lo + step],
            pool_size=args.island_pool,
            iters=iters,
            samples=args.samples if tdoku else 0,
            keep=args.keep if tdoku else None,
            box=args.box,
            start=None if start is None else start[lo : lo + step],
            with_pools=True,
        )
        archives.extend(a)
        pools.extend(p)
        bar.update(len(a))
    return archives, pools


def candidate_pool(n: int, stream: int, args) -> dict[str, np.ndarray]:
    """Candidates for one split: random minimal puzzles and the archives of climbing islands.

    Returns arrays ``puzzles``, ``solutions``, ``rating`` (public scale, as stored: tdoku's count
    for 9x9, our solver's count mapped by ``to_public_scale`` for smaller boxes), ``lineage``
    (one id per random minimal puzzle or per island) and ``easy`` (random minimal or not). Hard
    candidates come newest (hardest) first per island and round-robin across islands. A 9x9
    candidate is stored in its median orientation (``puzzles.sudoku.orient``), so that its
    rating is what a typical orientation of it costs.
    """
    box, seed, progress = args.box, args.seed, not args.quiet
    geo = S.geometry(box)
    tdoku = geo.n == 9
    hard_share = 0.0 if box != "3x3" else 1.0 - args.easy_share
    n_easy = int(math.ceil(n * (1.0 - hard_share) * args.pool_factor)) + (4 if n else 0)
    n_islands = args.islands if args.islands is not None else int(math.ceil(n * hard_share / args.per_island))
    if hard_share == 0.0:
        n_islands = 0
    seeds_easy = S.item_seeds(seed, n_easy, stream=10 * stream)
    n_survivors = min(n_islands, int(math.ceil(n_islands * args.survivors))) if args.climb_iters else 0
    seeds_isl = S.item_seeds(seed, n_islands, stream=10 * stream + 1)
    seeds_cont = S.item_seeds(seed, n_islands, stream=10 * stream + 4)  # by island index
    seeds_orient = S.item_seeds(seed, n_easy, stream=10 * stream + 2)
    parts = []
    with tqdm(
        total=n_easy + n_islands + n_survivors,
        desc=f"{['train', 'test'][stream]}: generate",
        unit="lineage",
        disable=not progress,
    ) as bar:
        for lo in range(0, n_easy, CHUNK):
            hi = min(n_easy, lo + CHUNK)
            p, s, info = S.random_minimal_seeded(seeds_easy[lo:hi], box)
            if tdoku:  # rate the images now, move to one at the end (select_split)
                _, _, r, images = S.orient(p, s, seeds_orient[lo:hi], args.orient_samples)
            else:
                r = S.to_public_scale(info[:, 0])
                images = r[:, None]
            parts.append((p, s, r, images))
            bar.update(hi - lo)
        islands, pools = _climb_in_chunks(seeds_isl, args.screen_iters, None, args, bar)
        # The survivors (the islands whose pools climbed highest in the screen) go on climbing:
        # how high an island gets is mostly luck of its start, and shows early (measured: Spearman
        # 0.74 between 16 islands' pools after 100k and after 400k steps), so the long climbs go
        # where they pay.
        means = np.array([s.mean() for _, s in pools]) if pools else np.zeros(0)
        survivors = np.sort(np.argsort(-means, kind="stable")[:n_survivors])
        more, _ = _climb_in_chunks(
            seeds_cont[survivors], args.climb_iters, [pools[i] for i in survivors], args, bar
        )
        for i, (pz, sc) in zip(survivors, more, strict=True):
            islands[i] = (np.concatenate([islands[i][0], pz]), np.concatenate([islands[i][1], sc]))
        wanted = np.full(n_islands, HARD_PER_ISLAND * args.per_island)
        if n_survivors:
            wanted[survivors] = int(round(HARD_PER_ISLAND * args.per_island * n_islands / n_survivors))
    empty = np.zeros((0, geo.ncell), np.int8)
    p_easy = np.concatenate([x[0] for x in parts]) if parts else empty
    s_easy = np.concatenate([x[1] for x in parts]) if parts else empty
    r_easy = np.concatenate([x[2] for x in parts]) if parts else np.zeros(0)
    i_easy = np.concatenate([x[3] for x in parts]) if parts else np.zeros((0, 1))
    # Hard candidates: newest first within an island, exact duplicates dropped, islands interleaved.
    hard_rows, lineage_hard, offsets = [], [], []
    for i, (pz, _) in enumerate(islands):
        seen, rows = set(), []
        for row in pz[::-1]:
            b = row.tobytes()
            if b not in seen:
                seen.add(b)
                rows.append(row)
            if len(rows) == wanted[i]:
                break
        offsets.append(np.arange(len(rows)) + sum(len(r) for r in hard_rows))
        hard_rows.append(np.asarray(rows, dtype=np.int8).reshape(-1, geo.ncell))
        lineage_hard.append(np.full(len(rows), n_easy + i))
    p_hard, s_hard, r_hard, lin_hard = empty, empty, np.zeros(0), np.zeros(0, np.int64)
    i_hard = np.zeros((0, i_easy.shape[1]))
    # one orientation seed per hard candidate (item seeds are prefix-stable)
    seeds_orient_hard = S.item_seeds(seed, sum(len(r) for r in hard_rows), stream=10 * stream + 3)
    if hard_rows:
        order = _interleave(offsets)
        p_hard = np.concatenate(hard_rows)[order]
        lin_hard = np.concatenate(lineage_hard)[order]
        if len(p_hard) and tdoku:
            s_hard = S.rate_many(p_hard).solutions
            _, _, r_hard, i_hard = S.orient(p_hard, s_hard, seeds_orient_hard, args.orient_samples)
        elif len(p_hard):
            solved = S.solve_many(p_hard, box=box)
            s_hard, r_hard = solved.solutions, S.to_public_scale(solved.guesses_first)
            i_hard = r_hard[:, None]
    rating = np.concatenate([r_easy, r_hard]).astype(np.float64)
    images = np.concatenate([i_easy, i_hard])
    return {
        "puzzles": np.concatenate([p_easy, p_hard]),
        "solutions": np.concatenate([s_easy, s_hard]),
        "rating": rating,
        "images": images,
        "orient_seeds": np.concatenate([seeds_orient, seeds_orient_hard]),
        "lineage": np.concatenate([np.arange(len(p_easy)), lin_hard]).astype(np.int64),
        "easy": np.concatenate([np.ones(len(p_easy), bool), np.zeros(len(p_hard), bool)]),
        "n_islands": n_islands,
    }


def draw_by_orientations(
    images: np.ndarray, n: int, shares=TARGET_SHARES, mean=TARGET_MEAN, rounds: int = 30
) -> np.ndarray:
    """Indices (sorted) of ``n`` puzzles whose ratings over random orientations follow ``shares``
    (and average about ``mean``; None: the histogram alone).

    ``images`` (B, M): each candidate's public rating in M random orientations. Drawing on one
    orientation's rating would pick the candidates that rate high by chance, so that other
    orientations of the set come out easier (docs/reference.md, "Sudoku-Extreme"). Instead
    puzzles are drawn per bucket of their median rating, with per-bucket quotas adjusted until
    the set's expected histogram over orientations (each puzzle spreads over the buckets its
    images fall in) matches ``shares`` as closely as the pool allows. Within a bucket, one of two
    orders: (a) the candidates whose images fall in that bucket most often first (the least
    spill into neighbouring buckets), and in the open top bucket those putting the most images
    into it per rating point (the climb's best islands reach 100-300, far above the public set's
    51+ puzzles, whose mean the public histogram and mean put near 70); or (b) pool order (hard
    candidates newest first), the top bucket's least extreme first. Of the draws the quota rounds
    of both orders visit, the one kept is nearest the targets in units of the tolerances (5 points
    per bucket, 15% of the mean); the mean only chooses among them, it never trades histogram.
    """
    if len(images) < n:
        raise ValueError(f"pool of {len(images)} is smaller than the {n} puzzles asked for")
    nb = len(shares)
    spread = np.stack([(bucket_of(images) == k).mean(axis=1) for k in range(nb)], axis=1)
    median = np.sort(images, axis=1)[:, (images.shape[1] - 1) // 2]
    level = images.mean(axis=1)
    mb = bucket_of(median)
    top = mb == nb - 1
    orders = (
        np.where(top, spread[:, nb - 1] / np.maximum(level, 1.0), spread[np.arange(len(mb)), mb]),
        np.where(top, -median.astype(np.float64), 0.0),
    )
    want = np.asarray(shares, dtype=np.float64) * n
    best, best_err = None, np.inf
    for priority in orders:
        quota = want.copy()
        for _ in range(rounds):
            sel = resample_to_target(median, n, shares=quota / quota.sum(), priority=priority)
            got = spread[sel].sum(axis=0)
            err = np.abs(got - want).max() / (0.05 * n)
            if mean is not None:
                err = max(err, abs(level[sel].mean() - mean) / (0.15 * mean))
            if err < best_err:
                best, best_err = sel, err
            quota = np.clip(quota + 0.7 * (want - got), 0.0, None)
    return best


def store_orientations(images: np.ndarray, shares=TARGET_SHARES, rounds: int = 20) -> np.ndarray:
    """For each drawn puzzle, the orientation (an index into its M images) to ship it in, so that
    the shipped ratings follow ``shares``. Every puzzle starts in its median bucket; then, while a
    bucket is short of its share, puzzles move to it from buckets over theirs, those that rate in
    it most often first. The image stored is the median of the puzzle's images in its bucket."""
    n, m = images.shape
    nb = len(shares)
    b = bucket_of(images)
    share = np.stack([(b == k).mean(axis=1) for k in range(nb)], axis=1)  # (n, buckets)
    want = np.floor(np.asarray(shares) * n).astype(int)
    want[0] += n - want.sum()
    assign = bucket_of(np.sort(images, axis=1)[:, (m - 1) // 2])
    for _ in range(rounds):
        moved = False
        for k in np.argsort(np.bincount(assign, minlength=nb) - want, kind="stable"):
            excess = np.bincount(assign, minlength=nb) - want
            if excess[k] >= 0:
                break
            cand = np.flatnonzero((excess[assign] > 0) & (share[:, k] > 0))
            for i in cand[np.argsort(-share[cand, k], kind="stable")]:
                if excess[k] >= 0:
                    break
                if excess[assign[i]] > 0:
                    excess[assign[i]] -= 1
                    excess[k] += 1
                    assign[i] = k
                    moved = True
        if not moved:
            break
    which = np.empty(n, np.int64)
    for i in range(n):
        in_k = np.flatnonzero(b[i] == assign[i])
        in_k = in_k[np.argsort(images[i, in_k], kind="stable")]
        which[i] = in_k[(len(in_k) - 1) // 2]
    return which


def select_split(
    pool: dict, n: int, box: str, forbidden: set[bytes], dedupe: str = "symmetry"
) -> tuple[np.ndarray, set[bytes], int]:
    """Indices of ``n`` candidates drawn toward the target histogram (:func:`draw_by_orientations`),
    with no two in one symmetry class and none in ``forbidden`` (the training classes, when
    selecting test). Canonical forms are computed only for the candidates drawn; a drawn duplicate
    is discarded and drawn again."""
    alive = np.ones(len(pool["rating"]), bool)
    canon: dict[int, bytes] = {}
    dropped = 0
    while True:
        idx_alive = np.flatnonzero(alive)
        if len(idx_alive) < n:
            raise ValueError(
                f"only {len(idx_alive)} distinct candidates for {n} puzzles; raise --pool-factor "
                "(or --islands), or ask for fewer puzzles (small boxes have few symmetry classes)"
            )
        # the public mean is on tdoku's 9x9 scale; smaller boxes' mapped counts match the histogram only
        mean = TARGET_MEAN if S.geometry(box).n == 9 else None
        sel = idx_alive[draw_by_orientations(pool["images"][idx_alive], n, mean=mean)]
        need = np.array([i for i in sel if i not in canon], dtype=np.int64)
        if len(need):
            if dedupe == "symmetry":
                forms = S.canonical_form(pool["puzzles"][need], pool["solutions"][need], box=box)
            else:
                forms = pool["puzzles"][need]
            canon.update(zip(need.tolist(), _rows_bytes(forms), strict=True))
        seen: set[bytes] = set()
        bad = []
        for i in sel:
            c = canon[int(i)]
            if c in seen or c in forbidden:
                bad.append(int(i))
            else:
                seen.add(c)
        if not bad:
            return sel, seen, dropped
        dropped += len(bad)
        alive[bad] = False


def shipped(pool: dict, sel: np.ndarray, box: str, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Puzzles, solutions and public ratings of the drawn candidates as shipped: 9x9 ones moved to
    the orientation :func:`store_orientations` picks; smaller boxes as generated."""
    p, s = pool["puzzles"][sel], pool["solutions"][sel]
    if S.geometry(box).n != 9 or not len(sel):
        return p, s, pool["rating"][sel]
    which = store_orientations(pool["images"][sel])
    p, s, r, _ = S.orient(p, s, pool["orient_seeds"][sel], samples, which)
    return p, s, r.astype(np.float64)


def build_generated(args) -> tuple[dict, dict, dict]:
    timings: dict[str, float] = {}
    splits = {}
    dropped = {}
    forbidden: set[bytes] = set()
    meta = {}
    for stream, (name, n) in enumerate((("train", args.n), ("test", args.test_n))):
        t0 = time.perf_counter()
        pool = candidate_pool(n, stream, args)
        timings[f"{name}_generate_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        if n:
            sel, classes, dropped[name] = select_split(pool, n, args.box, forbidden, args.dedupe)
        else:
            sel, classes, dropped[name] = np.zeros(0, np.int64), set(), 0
        if name == "train":
            forbidden = classes
        timings[f"{name}_select_s"] = time.perf_counter() - t1
        lineage = pool["lineage"][sel]
        shares = np.bincount(np.unique(lineage, return_inverse=True)[1]) if len(sel) else np.zeros(1)
        meta[name] = {
            "candidates": int(len(pool["rating"])),
            "islands": int(pool["n_islands"]),
            "lineages": int(len(np.unique(lineage))),
            "max_per_lineage": int(shares.max()),
        }
        p, s, r = shipped(pool, sel, args.box, args.orient_samples)
        splits[name] = (p, s, r, pool["easy"][sel])
    timings["generate_s"] = sum(v for k, v in timings.items() if k.endswith("generate_s"))
    return splits, {"redrawn_duplicates": dropped, "pool": meta}, timings


def read_csv_inputs(paths: list[str]) -> dict[str, list[tuple[str, str, str, int, str]]]:
    """Rows per split from public-format CSVs: a directory with train.csv/test.csv, or files."""
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(path.glob("*.csv"))
            if not found:
                raise ValueError(f"{path} holds no .csv files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    named = {"train": [f for f in files if "train" in f.stem], "test": [f for f in files if "test" in f.stem]}
    out: dict[str, list] = {}
    if named["train"] and named["test"]:
        groups = named
    else:
        groups = {"all": files}
    for split, fs in groups.items():
        rows = []
        for f in fs:
            rows.extend((src, q, a, r, f"{f}:{line}") for src, q, a, r, line in read_public_csv(f))
        out[split] = rows
    return out


def parse_rows(rows, box) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    puzzles, answers, ratings, sources = [], [], [], []
    for src, q, a, r, where in rows:
        try:
            pz = S.parse(q, box)
            an = S.parse(a, box, check_rules=False)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if (an == 0).any() or not S.check_solution(pz, an):
            raise ValueError(f"{where}: answer is not a valid solution of the question")
        puzzles.append(pz)
        answers.append(an)
        ratings.append(r)
        sources.append(src)
    if not puzzles:
        raise ValueError("no rows to build from")
    return np.stack(puzzles), np.stack(answers), np.asarray(ratings, dtype=np.int64), sources


def build_from_csv(args) -> tuple[dict, dict, dict]:
    t0 = time.perf_counter()
    groups = read_csv_inputs(args.from_csv)
    rng = np.random.default_rng(args.seed)
    splits = {}
    dropped = {"below_min_difficulty": 0}

    def filt(rows):
        if args.min_difficulty is None:
            return rows
        kept = [r for r in rows if r[3] >= args.min_difficulty]
        dropped["below_min_difficulty"] += len(rows) - len(kept)
        return kept

    if "all" in groups:
        # One pool: split by canonical form so no test puzzle is a symmetry image of a train one.
        p, a, r, src = parse_rows(filt(groups["all"]), args.box)
        canon = _rows_bytes(S.canonical_form(p, a))
        classes: dict[bytes, list[int]] = {}
        for i, c in enumerate(canon):
            classes.setdefault(c, []).append(i)
        order = rng.permutation(len(classes))
        keys = list(classes)
        test_idx, train_idx = [], []
        for j in order:
            members = classes[keys[j]]
            (test_idx if len(test_idx) < args.test_n else train_idx).extend(members)
        parts = {
            "train": np.sort(np.asarray(train_idx, dtype=np.int64)),
            "test": np.sort(np.asarray(test_idx, dtype=np.int64)),
        }
        data = {k: (p[v], a[v], r[v], [src[i] for i in v]) for k, v in parts.items()}
    else:
        data = {k: parse_rows(filt(groups[k]), args.box) for k in ("train", "test")}
    for name, (p, a, r, src) in data.items():
        if name == "train" and args.subsample_size is not None and args.subsample_size < len(p):
            idx = np.sort(rng.choice(len(p), size=args.subsample_size, replace=False))
            p, a, r, src = p[idx], a[idx], r[idx], [src[i] for i in idx]
        splits[name] = (p, a, r, src)
    return splits, dropped, {"read_s": time.perf_counter() - t0}


def assemble(splits_grids: dict, num_aug: int, seed: int, box) -> tuple[dict, float]:
    """Array splits for the format writer; only the training split is augmented."""
    t0 = time.perf_counter()
    geo = S.geometry(box)
    out = {}
    for name, (p, s) in splits_grids.items():
        if name == "train" and num_aug > 0 and len(p):
            ap, as_ = S.augment(p, s, num_aug, seed, box=(geo.br, geo.bc))
            sizes = np.full(len(p), 1 + num_aug)
        else:
            ap, as_, sizes = p, s, None
        out[name] = build_split(
            S.grid_to_tokens(ap), S.grid_to_tokens(as_), sizes, vocab_size=S.vocab_size(geo.n)
        )
    return out, time.perf_counter() - t0


def _parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="python -m data_gen.sudoku", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="training puzzles (before augmentation)")
    ap.add_argument("--test-n", type=int, default=1000, help="test puzzles")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=str, default=None, help="output directory (default data/sudoku-<box>-<n>)")
    ap.add_argument("--num-aug", type=int, default=1000, help="symmetry augmentations per training puzzle")
    ap.add_argument("--box", type=str, default="3x3", choices=sorted(S.BOX_SHAPES))
    ap.add_argument(
        "--screen-iters",
        type=int,
        default=75_000,
        help="neighbourhood steps of every hill-climbing island (the screen)",
    )
    ap.add_argument(
        "--climb-iters",
        type=int,
        default=300_000,
        help="further steps of the surviving islands (more = harder puzzles, slower)",
    )
    ap.add_argument(
        "--survivors",
        type=float,
        default=0.375,
        help="share of islands, those whose pools climbed highest in the screen, that go on climbing",
    )
    ap.add_argument(
        "--samples",
        type=int,
        default=4,
        help="9x9: random symmetry images whose mean public rating the climb maximises "
        "(and among which each puzzle is stored in its median orientation)",
    )
    ap.add_argument(
        "--keep",
        type=int,
        default=None,
        help="9x9: the climb's score is the sum of the KEEP lowest of the --samples ratings "
        "(default --samples: their mean; 1: their minimum, which climbs far more slowly)",
    )
    ap.add_argument(
        "--orient-samples",
        type=int,
        default=27,
        help="9x9: random symmetry images among which each kept puzzle is stored in its median "
        "orientation (the one rated in the csv)",
    )
    ap.add_argument("--island-pool", type=int, default=50, help="puzzles kept per island")
    ap.add_argument(
        "--per-island",
        type=int,
        default=46,
        help="hard puzzles wanted per island: sets the island count unless --islands is given",
    )
    ap.add_argument("--islands", type=int, default=None, help="climbing islands per split (a lineage each)")
    ap.add_argument(
        "--dedupe",
        choices=("auto", "symmetry", "exact"),
        default="auto",
        help="what counts as a duplicate (and must not cross train/test): a symmetry class, "
        "or the exact puzzle; auto = exact for 2x2 (minimal 4x4 puzzles fall into only ~36 "
        "classes), symmetry otherwise",
    )
    ap.add_argument(
        "--easy-share",
        type=float,
        default=EASY_SHARE,
        help="share of random minimal ('easy') lineages, as in the public set",
    )
    ap.add_argument(
        "--pool-factor",
        type=float,
        default=1.5,
        help="lineages generated per kept puzzle, for resampling toward the histogram",
    )
    ap.add_argument(
        "--from-csv",
        nargs="+",
        default=None,
        metavar="DIR_OR_FILES",
        help="build from public-format CSVs instead of generating",
    )
    ap.add_argument(
        "--subsample-size", type=int, default=None, help="with --from-csv: seeded train subsample"
    )
    ap.add_argument("--min-difficulty", type=int, default=None, help="with --from-csv: keep rating >= this")
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (output does not depend on it)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def _parse_args(argv) -> tuple[argparse.Namespace, Path]:
    """The arguments, checked (argparse's one-line error and exit code 2 otherwise), and --out."""
    ap = _parser()
    args = ap.parse_args(argv)

    for k in ("n", "test_n", "num_aug", "screen_iters", "climb_iters"):
        if getattr(args, k) < 0:
            ap.error(f"--{k.replace('_', '-')} must be >= 0")
    if args.n == 0 and args.test_n == 0:
        ap.error("nothing to build: --n and --test-n are both 0")
    if args.samples < 1 or args.orient_samples < 1:
        ap.error("--samples and --orient-samples must be >= 1")
    if args.keep is None:
        args.keep = args.samples
    if not 1 <= args.keep <= args.samples:
        ap.error(f"--keep must be in 1..--samples ({args.samples})")
    if not 0.0 <= args.survivors <= 1.0:
        ap.error("--survivors must be in [0, 1]")
    if not 0.0 <= args.easy_share <= 1.0:
        ap.error("--easy-share must be in [0, 1]")
    if args.pool_factor < 1.0:
        ap.error("--pool-factor must be >= 1")
    if args.from_csv is None and (args.subsample_size is not None or args.min_difficulty is not None):
        ap.error("--subsample-size and --min-difficulty apply to --from-csv only")
    if args.threads is not None:
        numba.set_num_threads(args.threads)
    if args.dedupe == "auto":
        args.dedupe = "exact" if args.box == "2x2" else "symmetry"
    out = Path(args.out or f"data/sudoku-{args.box}-{'csv' if args.from_csv else args.n}")
    if out.exists() and not args.overwrite:
        ap.error(f"{out} already exists; choose another --out or pass --overwrite")

    return args, out


def _our_counts(splits: dict, box) -> dict:
    """Our own exact solver's guesses to the first solution, per split (what stats.json records)."""
    return {
        k: S.solve_many(v[0], box=box).guesses_first if len(v[0]) else np.zeros(0) for k, v in splits.items()
    }


def _from_csv_parts(args) -> tuple:
    """Grids, ratings (ours and public), CSV rows and timings of a --from-csv build."""
    splits, dropped, timings = build_from_csv(args)
    grids = {k: (v[0], v[1]) for k, v in splits.items()}
    ours = _our_counts(splits, args.box)
    public = {k: v[2].astype(np.float64) for k, v in splits.items()}
    csv_rows = {
        k: [
            (src, S.format_grid(p), S.format_grid(a), int(r))
            for p, a, r, src in zip(v[0], v[1], v[2], v[3], strict=True)
        ]
        for k, v in splits.items()
    }
    easy_share = None
    return grids, ours, public, csv_rows, easy_share, dropped, timings


def _generated_parts(args) -> tuple:
    """Grids, ratings (ours and public scale), CSV rows and timings of a generated build."""
    splits, dropped, timings = build_generated(args)
    grids = {k: (v[0], v[1]) for k, v in splits.items()}
    # Our own solver's count, for the record (stats.json); the rating shipped is the public one.
    ours = _our_counts(splits, args.box)
    public = {k: v[2] for k, v in splits.items()}
    csv_rows = {
        k: [
            (
                "gridloop-easy" if e else "gridloop-hard",
                S.format_grid(p),
                S.format_grid(s),
                int(round(r)),
            )
            for p, s, e, r in zip(v[0], v[1], v[3], public[k], strict=True)
        ]
        for k, v in splits.items()
    }
    easy_share = {k: round(float(v[3].mean()), 4) if len(v[3]) else 0.0 for k, v in splits.items()}
    return grids, ours, public, csv_rows, easy_share, dropped, timings


def reoriented_rating(grids: dict, seed: int) -> dict:
    """The public rating of one random symmetry image of every puzzle, per split (9x9): what the
    set's histogram would be in orientations nobody selected on."""
    out = {}
    for k, (p, s) in grids.items():
        if len(p):
            q, _ = S.random_symmetry(p, s, seed=seed + 1 + len(out))
            out[k] = S.rate(q)
        else:
            out[k] = np.zeros(0)
    return out


def _stats(args, grids, arrays, ours, public, easy_share, dropped) -> dict:
    """``stats.json`` (without the timings)."""
    return {
        "generator": "from-csv" if args.from_csv else "gridloop islands hill-climb",
        "args": {k: v for k, v in vars(args).items() if k not in ("quiet", "overwrite", "threads")},
        "box": args.box,
        "counts": {k: int(len(v[0])) for k, v in grids.items()},
        "examples": {k: int(v.inputs.shape[0]) for k, v in arrays.items()},
        "dropped": dropped,
        "easy_share": easy_share,
        "needs_guessing_share": {
            k: round(float((np.asarray(v) > 0).mean()), 4) if len(v) else 0.0 for k, v in ours.items()
        },
        "rating_source": (
            "the csv's rating column"
            if args.from_csv
            else "tdoku's guess count (puzzles.sudoku.rate) on the puzzle as stored"
            if args.box == "3x3"
            else "our solver's guess count mapped by puzzles.sudoku.to_public_scale (tdoku is 9x9 only)"
        ),
        "rating_ours": {k: rating_summary(v) for k, v in ours.items()},
        "rating_public_scale": {k: rating_summary(v) for k, v in public.items()},
        "target_histogram": dict(zip(BUCKET_NAMES, TARGET_SHARES, strict=True)),
        "seed": args.seed,
    }


def _compile_in_background(args):
    """A process compiling the later 9x9 kernels while this one compiles the first ones, when
    Numba's cache is cold (a first run); None otherwise. It changes no output, only the time."""
    if args.from_csv or args.box != "3x3" or S.kernels_cached():
        return None
    code = "from puzzles import sudoku; sudoku.compile_builder_kernels()"
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None


def main(argv=None) -> int:
    args, out = _parse_args(argv)
    t0 = time.perf_counter()
    compiler = _compile_in_background(args)
    try:
        parts = _from_csv_parts(args) if args.from_csv else _generated_parts(args)
        grids, ours, public, csv_rows, easy_share, dropped, timings = parts
        arrays, t_aug = assemble(grids, args.num_aug, args.seed, args.box)
        timings["augment_s"] = t_aug
        stats = _stats(args, grids, arrays, ours, public, easy_share, dropped)
        if args.box == "3x3":
            t1 = time.perf_counter()
            stats["rating_reoriented"] = {
                k: rating_summary(v) for k, v in reoriented_rating(grids, args.seed).items()
            }
            timings["reoriented_s"] = time.perf_counter() - t1
        timings["total_s"] = time.perf_counter() - t0
        stats["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        write_dataset(out, arrays, csv_rows=csv_rows, stats=stats, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if compiler is not None and compiler.poll() is None:
            compiler.kill()  # only if this build finished first: nothing of it is needed
        if compiler is not None:
            compiler.wait()
    if not args.quiet:
        hist = stats["rating_public_scale"]
        for k in grids:
            print(
                f"{k}: {stats['counts'][k]} puzzles, {stats['examples'][k]} examples, "
                f"public-scale rating mean {hist[k]['mean']}, histogram {hist[k]['histogram']}"
            )
            if "rating_reoriented" in stats:
                re = stats["rating_reoriented"][k]
                print(f"  re-oriented: mean {re['mean']}, histogram {re['histogram']}")
        print(f"wrote {out} in {timings['total_s']:.1f}s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
