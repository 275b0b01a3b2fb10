"""data_gen.maze: generated mazes re-verified by independent oracles, the fast generator's
distribution against the naive recipe (two-sample tests), determinism across thread counts, the
split by layout, the on-disk format, --from-csv, bad input, and the laptop-tier options (--walls,
--unique-path, small sides)."""

from __future__ import annotations

import hashlib
import json

import numba
import numpy as np
import pytest
from maze_oracles import (
    all_simple_paths,
    mark,
    random_question,
    reference_astar,
    scipy_distances,
    unique_far_pairs,
)
from scipy import stats as sps

from data_gen import maze as dm
from data_gen.format import read_public_csv, read_split, write_public_csv
from puzzles import _maze_kernels as mk
from puzzles import maze as pm

SIDE = 10
T_EDGES = 20


@pytest.fixture(scope="module")
def small_set():
    return dm.generate_mazes(60, size=SIDE, t_edges=T_EDGES, seed=3)


def walls_of(row: np.ndarray, side: int) -> frozenset:
    return frozenset(map(tuple, np.argwhere(row.reshape(side, side) == pm.WALL)))


def symmetric_key(row: np.ndarray, side: int) -> frozenset:
    """All 8 dihedral images of a layout's wall set, as one hashable set of sets."""
    cells = walls_of(row, side)
    m = side - 1
    maps = [
        lambda r, c: (r, c),
        lambda r, c: (c, m - r),
        lambda r, c: (m - r, m - c),
        lambda r, c: (m - c, r),
        lambda r, c: (r, m - c),
        lambda r, c: (m - r, c),
        lambda r, c: (c, r),
        lambda r, c: (m - c, m - r),
    ]
    return frozenset(frozenset(f(r, c) for r, c in cells) for f in maps)


# ----------------------------------------------------------------------------- kernels


def padded_open(q: np.ndarray) -> np.ndarray:
    """(side + 2, side + 2) uint8: 1 on the open cells of maze ``q``, a border of walls around."""
    side = q.shape[0]
    open_ = np.zeros((side + 2, side + 2), np.uint8)
    open_[1:-1, 1:-1] = q != pm.WALL
    return open_


@pytest.mark.parametrize("side, t", [(6, 6), (8, 10), (10, 18), (12, 22)])
def test_pair_count_matches_all_pairs_bfs(side, t):
    """The bounded pair count equals BFS from every cell, with and without early decisions."""
    rng = np.random.default_rng(side * 100 + t)
    for _ in range(40):
        q = random_question(rng, side, rng.uniform(0.2, 0.5))
        open_ = padded_open(q)
        flat = open_.reshape(-1)
        expected = 0
        for r, c in np.argwhere(q != pm.WALL):
            d = mk.bfs_padded(flat, side + 2, (r + 1) * (side + 2) + c + 1)
            expected += int((d >= t).sum())
        for max_sources in (0, 1, 8):
            assert mk.count_pairs_padded(flat, side, t, max_sources)[0] == expected


def test_wall_count_range_matches_recipe():
    assert mk.wall_bounds(900) == (270, 450)
    assert mk.wall_bounds(225) == (66, 110)  # n // 10 * 3, n // 10 * 5 as in the recipe


# ----------------------------------------------------------------------------- generated mazes


def test_generated_mazes_verified_by_independent_oracles(small_set):
    ms = small_set
    assert len(ms.questions) == 60
    for q, a, length, npaths, walls in zip(
        ms.questions, ms.answers, ms.lengths, ms.npaths, ms.walls, strict=True
    ):
        qg = q.reshape(SIDE, SIDE)
        d = scipy_distances(qg)
        g = tuple(np.argwhere(qg == pm.GOAL)[0])
        assert d[g] == length >= T_EDGES
        assert int((qg == pm.WALL).sum()) == walls
        lo, hi = mk.wall_bounds(SIDE * SIDE)
        assert lo <= walls <= hi
        path = reference_astar(qg)
        expected = qg.copy()
        for cell in path[1:-1]:
            expected[cell] = pm.PATH
        assert np.array_equal(a.reshape(SIDE, SIDE), expected)
        assert npaths == pm.count_shortest_paths(qg)
        assert pm.check_path(qg, a.reshape(SIDE, SIDE)).exact


def test_public_setting_generates_verified_hard_mazes():
    ms = dm.generate_mazes(3, size=30, t_edges=110, seed=11, envelope=0.125)
    for q, length in zip(ms.questions, ms.lengths, strict=True):
        qg = q.reshape(30, 30)
        g = tuple(np.argwhere(qg == pm.GOAL)[0])
        assert scipy_distances(qg)[g] == length >= 110  # > 110 cells
    assert ms.stats["clipped_layouts"] == 0


def test_distribution_matches_naive_python_recipe():
    """The fast generator against the plain-Python draw-and-reject recipe on 7x7, >= 11 moves."""
    side, t = 7, 11
    naive = dm.naive_recipe_python(30000, size=side, t_edges=t, seed=5)
    fast = dm.generate_mazes(2000, size=side, t_edges=t, seed=5, dedupe=False)
    assert fast.stats["clipped_layouts"] == 0
    n_len, n_walls = np.array(naive).T
    assert len(n_len) > 800
    p_len = sps.ks_2samp(n_len, fast.lengths).pvalue
    p_walls = sps.ks_2samp(n_walls, fast.walls).pvalue
    # chi-square on the path-length histogram as well (few distinct values)
    values = np.union1d(n_len, fast.lengths)
    table = np.array([[np.sum(n_len == v) for v in values], [np.sum(fast.lengths == v) for v in values]])
    table = table[:, table.sum(0) >= 10]
    p_chi = sps.chi2_contingency(table).pvalue
    assert min(p_len, p_walls, p_chi) > 1e-3, (p_len, p_walls, p_chi)


def test_a_biased_sampler_is_detected():
    """Power check: keeping every layout that has a qualifying pair (instead of weighting it by its
    keep chance) and then picking a pair shifts the path lengths; the same test must notice."""
    side, t = 7, 11
    naive = np.array(dm.naive_recipe_python(30000, size=side, t_edges=t, seed=5))
    key = np.uint64(mk.stream_key(np.uint64(99)))
    lo, hi = mk.wall_bounds(side * side)
    _, pairs, _, _ = mk.filter_batch(key, 0, 100000, side, lo, hi, t, False, 1.0, 8, True)
    idx = np.nonzero(pairs > 0)[0][:2000].astype(np.int64)
    lengths = mk.build_batch(key, idx, pairs[idx], side, lo, hi, t, False, 8)[2]
    assert sps.ks_2samp(naive[:, 0], lengths).pvalue < 1e-6


def test_determinism_across_thread_counts(tmp_path):
    before = numba.get_num_threads()
    outs = []
    try:
        for threads in (1, 2 if numba.config.NUMBA_NUM_THREADS >= 2 else 1):
            numba.set_num_threads(threads)
            out = tmp_path / f"t{threads}"
            dm.build_generated(
                out, n=20, test_n=10, size=SIDE, min_path=T_EDGES, seed=4, aug=True, progress=False
            )
            outs.append(out)
    finally:
        numba.set_num_threads(before)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {"train/all__inputs.npy", "test.csv", "train.csv", "stats.json"}
    for f in files:
        a, b = (outs[0] / f).read_bytes(), (outs[1] / f).read_bytes()
        if f.name == "stats.json":
            sa, sb = json.loads(a), json.loads(b)
            for s in (sa, sb):  # wall-clock timings are the only fields allowed to differ
                s.pop("timings_s")
                s["generation"].pop("seconds")
            assert sa == sb
        else:
            assert a == b, f
    # a different seed gives a different set
    other = dm.generate_mazes(5, size=SIDE, t_edges=T_EDGES, seed=5)
    assert not np.array_equal(
        other.questions, dm.generate_mazes(5, size=SIDE, t_edges=T_EDGES, seed=4).questions
    )


def test_batch_size_does_not_change_output():
    a = dm.generate_mazes(15, size=SIDE, t_edges=T_EDGES, seed=8, envelope=1.0, batch=1 << 12)
    b = dm.generate_mazes(15, size=SIDE, t_edges=T_EDGES, seed=8, envelope=1.0, batch=1 << 16)
    assert np.array_equal(a.questions, b.questions) and np.array_equal(a.answers, b.answers)


def test_split_by_layout_and_format(tmp_path):
    out = tmp_path / "maze"
    stats = dm.build_generated(
        out, n=40, test_n=20, size=SIDE, min_path=T_EDGES, seed=2, aug=True, progress=False
    )
    train, test = read_split(out / "train"), read_split(out / "test")
    assert json.loads((out / "identifiers.json").read_text()) == ["<blank>"]
    for sp in (train, test):
        assert sp.metadata["vocab_size"] == 6 and sp.metadata["seq_len"] == SIDE * SIDE
        assert sp.metadata["total_puzzles"] == len(sp.inputs)
    assert test.inputs.shape == (20, 100) and test.num_groups == 20
    assert train.inputs.shape == (40 * 8, 100) and train.num_groups == 40
    assert np.array_equal(np.diff(train.group_indices), np.full(40, 8))
    # each group: the original first, then its 7 other dihedral images, labels transformed alike
    originals = train.inputs[::8]
    for g in range(40):
        base = train.inputs[8 * g].reshape(SIDE, SIDE)
        keys = {dm.dihedral(base, t).tobytes() for t in range(8)}
        assert {train.inputs[8 * g + t].reshape(SIDE, SIDE).tobytes() for t in range(8)} == keys
    codes, lengths, shortest = pm.check_paths(train.inputs, train.labels)
    assert (codes == 0).all() and np.array_equal(lengths, shortest)
    # no layout repeated, none shared between splits, even up to rotation and reflection
    train_keys = {symmetric_key(r, SIDE) for r in originals}
    test_keys = {symmetric_key(r, SIDE) for r in test.inputs}
    assert len(train_keys) == 40 and len(test_keys) == 20 and not train_keys & test_keys
    # public CSV columns; rating = shortest path in cells; fields keep their spaces
    rows = read_public_csv(out / "test.csv")
    assert len(rows) == 20
    for (_, q, a, rating, _), inp in zip(rows, test.inputs, strict=True):
        assert len(q) == len(a) == SIDE * SIDE and " " in q
        assert np.array_equal(pm.parse_grid(q).reshape(-1), inp)
        assert rating == pm.shortest_path_length(q) + 1 > T_EDGES
    assert stats["train"]["mazes"] == 40 and stats["count"] == "cells"
    hist = stats["test"]["path_length_cells_histogram"]
    assert sum(hist.values()) == 20 and min(map(int, hist)) > T_EDGES


def test_test_split_does_not_depend_on_n(tmp_path):
    for n in (5, 12):
        dm.build_generated(
            tmp_path / str(n), n=n, test_n=8, size=SIDE, min_path=T_EDGES, seed=6, progress=False
        )
    a, b = read_split(tmp_path / "5" / "test"), read_split(tmp_path / "12" / "test")
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(
        read_split(tmp_path / "5" / "train").inputs, read_split(tmp_path / "12" / "train").inputs[:5]
    )


def test_from_csv_round_trip(tmp_path):
    src = tmp_path / "gen"
    dm.build_generated(
        src, n=15, test_n=10, size=SIDE, min_path=T_EDGES, count="edges", seed=1, progress=False
    )
    out = tmp_path / "from_csv"
    stats = dm.build_from_csv([src], out, aug=True)
    for name in ("train", "test"):
        a, b = read_split(src / name), read_split(out / name)
        assert np.array_equal(a.inputs, b.inputs if name == "test" else b.inputs[::8])
        assert stats[name]["labels_equal_canonical_astar"] == len(a.inputs)
        assert stats[name]["rating_minus_bfs_edges_histogram"] == {"0": len(a.inputs)}  # --count edges
    assert (out / "train.csv").read_bytes() == (src / "train.csv").read_bytes()


def test_from_csv_errors(tmp_path):
    q = pm.format_grid(random_question(np.random.default_rng(0), 5, 0.0))
    bad = q.replace(" ", "x", 1)
    write_public_csv(tmp_path / "train.csv", [("s", q, pm.solve(q), 3), ("s", bad, bad, 3)])
    with pytest.raises(ValueError, match=r"train.csv:3: .*characters"):
        dm.build_from_csv([tmp_path / "train.csv"], tmp_path / "o1")
    wrong = pm.format_grid(np.where(pm.parse_grid(q) == pm.OPEN, pm.PATH, pm.parse_grid(q)))
    write_public_csv(tmp_path / "test.csv", [("s", q, wrong, 3)])
    with pytest.raises(ValueError, match="test.csv:2: the answer is not a shortest path"):
        dm.build_from_csv([tmp_path / "test.csv"], tmp_path / "o2")
    (tmp_path / "mazes.csv").write_text("source,question,answer,rating\n")
    with pytest.raises(ValueError, match="train.csv or test.csv"):
        dm.build_from_csv([tmp_path / "mazes.csv"], tmp_path / "o3")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 2}, "--size"),
        ({"t_edges": 0}, "at least one move"),
        ({"t_edges": 100}, "no path"),
        ({"seed": -1}, "--seed"),
        ({"envelope": 0.0}, "envelope"),
    ],
)
def test_generator_bad_settings(kwargs, match):
    args = {"size": SIDE, "t_edges": T_EDGES, "seed": 0, "envelope": 1.0} | kwargs
    with pytest.raises(ValueError, match=match):
        dm.generate_mazes(1, **args)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "--n",
        "6",
        "--test-n",
        "4",
        "--size",
        "10",
        "--min-path",
        "20",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert dm.main(argv) == 0
    assert read_split(out / "train").inputs.shape == (6, 100)
    assert dm.main(argv) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert dm.main([*argv, "--overwrite", "--count", "edges"]) == 0
    assert dm.main(["--n", "-1", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--n" in capsys.readouterr().err


@pytest.mark.parametrize("side, t, envelope", [(10, 20, 1.0), (15, 38, 0.5), (30, 110, 0.125)])
def test_early_rejection_never_changes_a_decision(side, t, envelope):
    """The filter's bound-based early rejection gives exactly the exact count's decisions."""
    key = np.uint64(mk.stream_key(np.uint64(17)))
    lo, hi = mk.wall_bounds(side * side)
    st_exact, q_exact, _, _ = mk.filter_batch(key, 0, 20000, side, lo, hi, t, False, envelope, 8, True)
    st_fast, q_fast, _, _ = mk.filter_batch(key, 0, 20000, side, lo, hi, t, False, envelope, 8, False)
    assert np.array_equal(st_exact == mk.ST_ACCEPTED, st_fast == mk.ST_ACCEPTED)
    counted = q_fast >= 0
    assert np.array_equal(q_fast[counted], q_exact[counted]) and (~counted).sum() > 0


# ------------------------------------------------------------------ --walls, --unique-path, small sides

# The laptop tier: 6x6, 11 walls (30.6%), at least 5 moves, one shortest path.
LAPTOP = {"size": 6, "t_edges": 5, "walls": (0.3, 0.3), "unique_path": True}
# generate_mazes(25, size=8, t_edges=12, seed=5) on main before --walls / --unique-path existed
GOLDEN_DEFAULT_SHA256 = "edfadb0b2d0418c592b579b297a9c56b3b1e601b2db98b04ccafcec11cf7cdf1"


@pytest.fixture(scope="module")
def unique_set():
    return dm.generate_mazes(40, seed=1, envelope=1.0, batch=1 << 12, **LAPTOP)


def test_defaults_unchanged():
    """The new options at their defaults (omitted or given) draw exactly what the generator drew
    before they existed."""
    for kwargs in ({}, {"walls": (0.3, 0.5), "unique_path": False}):
        ms = dm.generate_mazes(25, size=8, t_edges=12, seed=5, **kwargs)
        digest = hashlib.sha256(ms.questions.tobytes() + ms.answers.tobytes()).hexdigest()
        assert digest == GOLDEN_DEFAULT_SHA256, kwargs


def test_wall_count_range():
    assert dm.wall_count_range(30) == dm.wall_count_range(30, (0.3, 0.5)) == (270, 450)
    # the default keeps the recipe's n//10*3..n//10*5, not round(0.3 n)..round(0.5 n) = 11..18
    assert dm.wall_count_range(6) == dm.wall_count_range(6, [0.3, 0.5]) == (9, 15)
    assert dm.wall_count_range(6, (0.3, 0.500001)) == (11, 18)
    assert dm.wall_count_range(6, (0.3, 0.3)) == (11, 11)
    assert dm.wall_count_range(8, (0.3, 0.3)) == (19, 19)
    assert dm.wall_count_range(7, (0.0, 0.25)) == (0, 12)


@pytest.mark.parametrize("side, t", [(5, 1), (6, 4), (8, 9)])
def test_unique_pair_count_matches_distance_oracle(side, t):
    """Q' (far pairs with one shortest path) equals a count from scipy all-pairs distances alone."""
    rng = np.random.default_rng(side * 10 + t)
    for _ in range(20):
        q = random_question(rng, side, rng.uniform(0.1, 0.45))
        open_ = padded_open(q)
        expected = unique_far_pairs(q, t)
        for max_sources in (0, 8):
            assert mk.count_pairs_padded(open_.reshape(-1), side, t, max_sources, True)[0] == expected


def test_unique_path_mazes_verified_by_brute_force(unique_set):
    ms = unique_set
    assert len(ms.questions) == 40 and (ms.npaths == 1).all()
    for q, a, length, walls in zip(ms.questions, ms.answers, ms.lengths, ms.walls, strict=True):
        qg = q.reshape(6, 6)
        paths = all_simple_paths(qg)  # every simple S-G path, by exhaustive DFS
        shortest = min(len(p) for p in paths) - 1
        best = [p for p in paths if len(p) - 1 == shortest]
        assert len(best) == 1 and shortest == length >= LAPTOP["t_edges"]
        assert np.array_equal(a.reshape(6, 6), mark(qg, best[0]))
        assert walls == int((qg == pm.WALL).sum()) == 11


def test_wall_share_stays_in_range():
    side, lo, hi = 7, 0.2, 0.4  # 49 cells: round(9.8) = 10 .. round(19.6) = 20 walls
    # t = 1: every keep chance is <= 1, so envelope 1 is exact (no pilot needed)
    ms = dm.generate_mazes(
        300, size=side, t_edges=1, seed=2, walls=(lo, hi), envelope=1.0, batch=1 << 12, dedupe=False
    )
    counted = (ms.questions == pm.WALL).sum(axis=1)
    assert np.array_equal(counted, ms.walls)
    assert counted.min() == 10 and counted.max() == 20  # both ends drawn, nothing outside
    share = counted / side**2
    assert ((share >= lo - 0.5 / side**2) & (share <= hi + 0.5 / side**2)).all()


@pytest.fixture(scope="module")
def naive_unique():
    side, t, walls = 6, 5, (0.2, 0.45)
    naive = np.array(
        dm.naive_recipe_python(30000, size=side, t_edges=t, seed=5, walls=walls, unique_path=True)
    )
    return side, t, walls, naive


def _two_sample_p(naive: np.ndarray, lengths: np.ndarray, walls: np.ndarray) -> float:
    return min(sps.ks_2samp(naive[:, 0], lengths).pvalue, sps.ks_2samp(naive[:, 1], walls).pvalue)


def test_unique_path_distribution_matches_naive_recipe(naive_unique):
    """With --unique-path the sample is the naive draw-and-reject recipe with that extra condition
    (plain Python, its own path count), not merely a sample of unique mazes."""
    side, t, walls, naive = naive_unique
    assert len(naive) > 2000
    fast = dm.generate_mazes(2000, size=side, t_edges=t, seed=5, dedupe=False, walls=walls, unique_path=True)
    assert fast.stats["clipped_layouts"] == 0
    assert _two_sample_p(naive, fast.lengths, fast.walls) > 1e-3


def test_accepting_on_all_far_pairs_is_detected(naive_unique):
    """Power check: accepting a layout on Q (all far pairs) but picking among its unique ones only
    over-weights open layouts; the same two-sample test must notice."""
    side, t, walls, naive = naive_unique
    lo, hi = dm.wall_count_range(side, walls)
    key = np.uint64(mk.stream_key(np.uint64(99)))
    status, _, _, _ = mk.filter_batch(key, 0, 50000, side, lo, hi, t, False, 1.0, 8, False)
    _, q_unique, _, _ = mk.filter_batch(key, 0, 50000, side, lo, hi, t, True, 1.0, 8, True)
    idx = np.nonzero((status == mk.ST_ACCEPTED) & (q_unique > 0))[0][:2000].astype(np.int64)
    _, _, lengths, _, nwalls = mk.build_batch(key, idx, q_unique[idx], side, lo, hi, t, True, 8)
    assert _two_sample_p(naive, lengths, nwalls) < 1e-6


def test_small_side_cli_records_settings(tmp_path):
    """--size 6 --min-path 0 works (any reachable G), the pilot sizes the envelope, and stats.json
    records the new settings."""
    out = tmp_path / "m6"
    argv = ["--size", "6", "--walls", "0.3", "0.3", "--unique-path", "--min-path", "0"]
    assert dm.main([*argv, "--n", "30", "--test-n", "10", "--out", str(out), "--no-progress"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["walls"] == [0.3, 0.3] and stats["wall_count_range"] == [11, 11]
    assert stats["unique_path"] is True and stats["threshold_edges"] == 1
    assert "unique" in stats["recipe"] and "round(LO n)" in stats["recipe"]
    gen = stats["generation"]
    assert gen["envelope_pilot"] is not None and gen["clipped_layouts"] == 0
    for name, n in (("train", 30), ("test", 10)):
        assert stats[name]["mazes"] == n and stats[name]["shortest_paths"]["unique_fraction"] == 1.0
        rows = read_public_csv(out / f"{name}.csv")
        assert len(rows) == n
        for _, q, a, rating, _ in rows:
            assert q.count("#") == 11 and pm.count_shortest_paths(q) == 1
            assert pm.check_path(q, a).exact and rating == pm.shortest_path_length(q) + 1
    assert dm.default_min_path(6) == 10 and dm.default_min_path(8) == 15  # the documented defaults


@pytest.mark.parametrize(
    "walls, match",
    [
        ((0.5, 0.3), "LO <= HI"),
        ((-0.1, 0.3), r"\[0, 1\)"),
        ((0.3, 1.0), r"\[0, 1\)"),
        ((float("nan"), 0.3), r"\[0, 1\)"),
        ((0.9, 0.98), "fewer than 2 free cells"),  # 35 walls of 36
    ],
)
def test_bad_walls(walls, match):
    with pytest.raises(ValueError, match=match):
        dm.generate_mazes(1, size=6, t_edges=1, walls=walls, envelope=1.0)


def test_impossible_settings_fail_clearly(monkeypatch, tmp_path, capsys):
    # 18 walls leave 18 free cells: no path has 18 moves
    with pytest.raises(ValueError, match="no path .* 18 edges"):
        dm.generate_mazes(1, size=6, t_edges=18, walls=(0.5, 0.5), envelope=1.0)
    # 3x3 has no walls; its pairs 4 moves apart (opposite corners) have 6 shortest paths each
    with pytest.raises(ValueError, match="unique shortest path: the setting is impossible"):
        dm.pilot_envelope(3, 4, 0, unique_path=True, max_candidates=1 << 16)
    # 3x3 has one layout: a second distinct one never comes, so the run stops instead of spinning
    monkeypatch.setattr(dm, "MAX_DUPLICATE_RUN", 1000)
    with pytest.raises(ValueError, match="only 1 distinct layouts"):
        dm.generate_mazes(2, size=3, t_edges=1, envelope=1.0)
    for argv, msg in (
        (["--walls", "0.5", "0.3"], "LO <= HI"),
        (["--min-path", "-1"], "--min-path"),
        (["--walls", "0.2"], None),  # argparse: two values needed
    ):
        full = [*argv, "--size", "6", "--n", "2", "--out", str(tmp_path / "x"), "--no-progress"]
        if msg is None:
            with pytest.raises(SystemExit):
                dm.main(full)
        else:
            assert dm.main(full) == 2
            assert msg in capsys.readouterr().err


# ------------------------------------------------------------------ bit-parallel filter


def _bit_rows(open_padded: np.ndarray) -> np.ndarray:
    """(side + 2, side + 2) 0/1 grid -> one uint64 per row, bit c = column c."""
    weights = np.left_shift(np.uint64(1), np.arange(open_padded.shape[1], dtype=np.uint64))
    return (open_padded.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


@pytest.mark.parametrize("side", [3, 7, 30, 62])
def test_bit_bfs_matches_queue_bfs(side):
    """Levels, per-distance counts, eccentricity and reached set of the bit-row BFS equal the queue
    BFS's distances, from random sources on random layouts (sparse to fragmented)."""
    rng = np.random.default_rng(side)
    wp = side + 2
    levels = np.zeros((wp * wp, wp), np.uint64)
    hist = np.empty(wp * wp + 2, np.int64)
    for _ in range(30):
        q = random_question(rng, side, rng.uniform(0.0, 0.6))
        open_ = np.zeros((wp, wp), np.uint8)
        open_[1:-1, 1:-1] = q != pm.WALL
        cells = np.argwhere(open_)
        r, c = cells[rng.integers(len(cells))]
        dist = mk.bfs_padded(open_.reshape(-1), wp, r * wp + c).reshape(wp, wp)
        avail = _bit_rows(open_)
        e = mk._bfs_bits(avail, wp, r, c, levels, hist)
        assert e == dist.max()
        assert np.array_equal(hist[: e + 1], np.bincount(dist[dist >= 0]))
        for i in range(e + 1):
            assert np.array_equal(levels[i], _bit_rows(dist == i)), i
        assert np.array_equal(avail, _bit_rows(open_.astype(bool) & (dist < 0)))


@pytest.mark.parametrize("side", [3, 10, 30, 62])
def test_bit_sampler_draws_the_same_layout(side):
    """The bit-row sampler reproduces ``_sample_layout`` draw for draw: same walls, same stream
    position afterwards (so the acceptance and pair draws that follow are the same too)."""
    key = np.uint64(mk.stream_key(np.uint64(side)))
    wp = side + 2
    codes = mk.cell_codes(side)
    perm = np.empty(side * side, np.int32)
    cperm = np.empty(side * side, np.uint32)
    swaps = np.empty(side * side, np.uint64)
    open_a = np.empty(wp * wp, np.uint8)
    open_b = np.empty(wp * wp, np.uint8)
    rows = np.empty(wp, np.uint64)
    s_a, s_b = np.empty(1, np.uint64), np.empty(1, np.uint64)
    for i in range(50):
        lo, hi = (0, side * side - 2) if i % 2 else mk.wall_bounds(side * side)
        mk._start(s_a, key, i)
        mk._start(s_b, key, i)
        k_a = mk._sample_layout(s_a, side, perm, open_a, lo, hi)
        k_b = mk._sample_bits(s_b, side, cperm, codes, swaps, rows, lo, hi)
        mk._bits_to_bytes(rows, side, open_b)
        assert k_a == k_b and np.array_equal(open_a, open_b) and s_a[0] == s_b[0]
        assert wp * wp - open_a.sum() - (4 * wp - 4) == k_a  # k walls inside a zero border


@pytest.mark.parametrize(
    "side, t, walls, envelope, unique",
    [
        (30, 110, None, 0.125, False),  # the public setting
        (30, 80, None, 0.3, False),
        (15, 38, None, 0.5, False),
        (10, 20, None, 1.0, False),
        (12, 5, (0, 70), 0.2, False),  # from open to fragmented layouts, short threshold
        (3, 1, (0, 7), 1.0, False),
        (6, 5, (7, 16), 1.0, True),
        (8, 9, None, 1.0, True),
        (62, 160, None, 1.0, False),  # the largest side on bit rows
    ],
)
def test_bit_filter_decides_like_queue_filter(side, t, walls, envelope, unique):
    """The bit-row filter makes exactly the queue filter's decisions on the same candidates, and
    every Q it reports (0 when it proves no pair, exact counts otherwise) is the queue filter's."""
    key = np.uint64(mk.stream_key(np.uint64(side + t)))
    lo, hi = walls or mk.wall_bounds(side * side)
    count = 3000 if side > 30 else 20000
    for exact in (False, True):
        args = (key, 0, count, side, lo, hi, t, unique, envelope, 8, exact)
        st_q, q_q, _, w_q = mk.filter_batch(*args, False)
        st_b, q_b, _, w_b = mk.filter_batch(*args, True)
        assert np.array_equal(w_q, w_b)
        assert np.array_equal(st_q == mk.ST_ACCEPTED, st_b == mk.ST_ACCEPTED)
        counted = (q_q >= 0) & (q_b >= 0)
        assert np.array_equal(q_q[counted], q_b[counted])
        if exact:
            assert np.array_equal(q_q, q_b) and np.array_equal(st_q, st_b)
    assert (st_q == mk.ST_ACCEPTED).any()
