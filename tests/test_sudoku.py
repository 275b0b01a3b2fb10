"""Sudoku rules, solver, rater, canonical form and augmentation against independent oracles."""

from __future__ import annotations

import csv
import itertools

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puzzles import sudoku as S
from tests._sudoku_oracles import plain_count

# ----------------------------------------------------------------------------- oracles


def independent_transform(grid: np.ndarray, box, rng: np.random.Generator) -> np.ndarray:
    """A random element of the Sudoku symmetry group, written without the library's kernels."""
    br, bc = box
    n = br * bc
    g = grid.reshape(n, n)
    if br == bc and rng.random() < 0.5:
        g = g.T
    rows = np.concatenate([b * br + rng.permutation(br) for b in rng.permutation(n // br)])
    cols = np.concatenate([s * bc + rng.permutation(bc) for s in rng.permutation(n // bc)])
    g = g[rows][:, cols]
    relabel = np.concatenate([[0], rng.permutation(n) + 1])
    return relabel[g].reshape(-1).astype(np.int8)


def load(bench_dir, name, k=None):
    with open(bench_dir / name) as f:
        rows = list(csv.DictReader(f))
    return rows[:k] if k else rows


SOLVED = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"

# ----------------------------------------------------------------------------- parse / format


def test_parse_accepts_dots_zeros_and_grids():
    p = S.parse("53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79")
    assert p.dtype == np.int8 and p.shape == (81,) and (p == 0).sum() == 51
    q = S.parse(S.format_grid(p, blank="0"))
    assert np.array_equal(p, q)
    assert np.array_equal(S.parse(p.reshape(9, 9)), p)
    assert (
        S.format_grid(p)
        == "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
    )
    assert S.parse("1" + "." * 15, box="2x2").shape == (16,)
    six = S.parse("1....." * 6, box="2x3", check_rules=False)
    assert six.shape == (36,)


@pytest.mark.parametrize(
    "text, box, match",
    [
        ("1" * 80, None, "80 characters"),
        ("x" + "." * 80, None, "bad character 'x' at position 0"),
        ("5" + "." * 15, "2x2", r"bad character '5'"),
        ("55" + "." * 79, None, "repeat digit 5 in row 1"),
        ("5" + "." * 8 + "5" + "." * 71, None, "repeat digit 5 in column 1"),
        ("5" + "." * 9 + "5" + "." * 70, None, "repeat digit 5 in box 1"),
        ("." * 81, "2x3", "needs 36"),
        ("." * 81, "4x4", "unknown box shape"),
    ],
)
def test_parse_rejects_bad_input(text, box, match):
    with pytest.raises(ValueError, match=match):
        S.parse(text, box)


def test_parse_rejects_bad_grids():
    with pytest.raises(ValueError, match="0 \\(blank\\) or 1..9"):
        S.parse(np.full(81, 10))
    with pytest.raises(ValueError, match="16, 36 or 81"):
        S.parse(np.zeros(50, int))
    with pytest.raises(ValueError, match="integers"):
        S.parse(np.zeros(81, float))


@pytest.mark.parametrize("box", ["3x3", "2x3", "2x2"])
def test_batches_of_strings_parse_as_one_by_one(box):
    # batches of strings take a vectorised path; it must give parse()'s grids and errors
    p, _, _ = S.random_minimal(30, seed=2, box=box)
    rng = np.random.default_rng(0)
    texts = [S.format_grid(x, blank=".0"[int(rng.integers(2))]) for x in p]
    grids, _ = S._as_batch(texts, box)
    assert np.array_equal(grids, np.stack([S.parse(t, box) for t in texts]))
    n = S.parse_box(box)[0] * S.parse_box(box)[1]
    bad_char = texts[:5] + ["x" + texts[5][1:]] + texts[6:]
    bad_rule = texts[:7] + [str(n) * 2 + texts[7][2:]] + texts[8:]
    for bad in (bad_char, bad_rule):
        with pytest.raises(ValueError) as batch_err:
            S._as_batch(bad, box)
        with pytest.raises(ValueError) as one_err:
            [S.parse(t, box) for t in bad]
        assert str(batch_err.value) == str(one_err.value)


def test_render_draws_boxes():
    text = S.render(S.parse(SOLVED))
    lines = text.splitlines()
    assert len(lines) == 11 and lines[3].startswith("-") and lines[0].split("|")[0].split() == ["5", "3", "4"]


# ----------------------------------------------------------------------------- validation


def test_check_solution_accepts_valid_and_rejects_given_mismatch():
    sol = S.parse(SOLVED)
    puzzle = sol.copy()
    puzzle[::3] = 0
    assert S.check_solution(puzzle, sol) is True
    other = S.parse(SOLVED)
    other[[0, 1]] = other[[1, 0]]  # the row stays a permutation, but two columns break
    assert S.check_solution(np.zeros(81, np.int8), other) is False
    wrong_given = puzzle.copy()
    wrong_given[1] = 4  # the solution has 3 there
    assert S.check_solution(wrong_given, sol) is False


@settings(max_examples=150, deadline=None)
@given(cell=st.integers(0, 80), shift=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_every_single_cell_corruption_is_rejected(cell, shift, seed):
    rng = np.random.default_rng(seed)
    sol = independent_transform(S.parse(SOLVED), (3, 3), rng)
    assert S.check_solution(np.zeros(81, np.int8), sol)
    bad = sol.copy()
    bad[cell] = (bad[cell] - 1 + shift) % 9 + 1
    assert not S.check_solution(np.zeros(81, np.int8), bad)
    assert not S.check_solution(sol, bad)  # also inconsistent with the givens


def test_check_solution_batched_matches_single():
    rng = np.random.default_rng(1)
    sols = np.stack([independent_transform(S.parse(SOLVED), (3, 3), rng) for _ in range(20)])
    puzzles = sols * (rng.random(sols.shape) < 0.3)
    cands = sols.copy()
    cands[::2, 5] = cands[::2, 5] % 9 + 1
    batched = S.check_solution(puzzles.astype(np.int8), cands)
    single = np.array([S.check_solution(p, c) for p, c in zip(puzzles, cands, strict=True)])
    assert batched.dtype == bool and np.array_equal(batched, single)
    assert batched[1::2].all() and not batched[::2].any()


# ----------------------------------------------------------------------------- solver


@pytest.mark.parametrize(
    "name",
    [
        "puzzles2_17_clue.csv",
        "puzzles3_magictour_top1465.csv",
        "puzzles5_forum_hardest_1905_11+.csv",
        "puzzles6_forum_hardest_1106.csv",
    ],
)
def test_solutions_match_collections(bench_sudoku_dir, name):
    rows = load(bench_sudoku_dir, name)[:400]
    r = S.solve_many([x["puzzle"] for x in rows], limit=2)
    assert all(S.format_grid(s) == x["solution"] for s, x in zip(r.solutions, rows, strict=True))
    assert (r.n_solutions == 1).all()
    assert (r.guesses_first >= 0).all() and (r.guesses_total >= r.guesses_first).all()


def test_solution_counts_on_multi_solution_collection(bench_sudoku_dir):
    rows = load(bench_sudoku_dir, "puzzles7_serg_benchmark.csv")[:1000]
    puzzles = [x["puzzle"] for x in rows]
    r = S.solve_many(puzzles, limit=2)
    expected = np.array([int(x["solutions_upto2"]) for x in rows])
    assert np.array_equal(r.n_solutions, expected)
    # each returned first solution really solves its puzzle
    assert S.check_solution(np.stack([S.parse(p) for p in puzzles]), r.solutions).all()
    # counting further finds more than 2 for some, and never fewer than the count to 2
    r5 = S.solve_many(puzzles[:200], limit=5)
    assert (r5.n_solutions >= r.n_solutions[:200]).all() and (r5.n_solutions > 2).any()


def test_unsolvable_and_empty_grids():
    # row 1 needs a 9 in its last cell, where column 9 already has one: no solution
    bad = S.parse("12345678." + "........9" + "." * 63)
    assert S.count_solutions(bad) == 0 and S.solve(bad) is None and S.rate(bad) == -1
    assert S.count_solutions("." * 81, limit=3) == 3
    assert S.count_solutions("." * 16, limit=1000, box="2x2") == 288  # all 4x4 Sudoku grids


def test_solver_agrees_with_plain_backtracking_on_random_puzzles():
    rng = np.random.default_rng(3)
    p, s, _ = S.random_minimal(20, seed=5)
    checked = 0
    for puzzle in p:
        # remove a few more givens: many of these have several solutions
        q = puzzle.copy()
        q[rng.choice(np.flatnonzero(q), size=3, replace=False)] = 0
        for limit in (1, 2, 3):
            assert S.count_solutions(q, limit=limit) == plain_count(q, limit=limit)
        checked += 1
    assert checked == 20


def test_our_solver_counts_guesses_before_first_solution(bench_sudoku_dir):
    rows = load(bench_sudoku_dir, "puzzles2_17_clue.csv")[:2000]
    r = S.solve_many([x["puzzle"] for x in rows])
    pub = np.array([int(x["tdoku_guesses_limit1"]) for x in rows])
    # Zero guesses exactly when propagation alone solves it; our solver and tdoku agree on most
    # of the easy collection (79% zero in the public rating).
    agree_zero = ((r.guesses_first == 0) == (pub == 0)).mean()
    assert agree_zero > 0.85
    assert S.solve_many([SOLVED[:40] + "." + SOLVED[41:]]).guesses_first[0] == 0


COLLECTIONS = [
    "puzzles2_17_clue.csv",
    "puzzles3_magictour_top1465.csv",
    "puzzles5_forum_hardest_1905_11+.csv",
    "puzzles6_forum_hardest_1106.csv",
]


@pytest.fixture(scope="module")
def rating_sample(bench_sudoku_dir):
    """A fixed sample of each unique-solution collection: up to 500 rows drawn with seed 0."""
    rng = np.random.default_rng(0)
    out = {}
    for name in COLLECTIONS:
        rows = load(bench_sudoku_dir, name)
        pick = np.sort(rng.choice(len(rows), size=min(500, len(rows)), replace=False))
        out[name] = [rows[i] for i in pick]
    return out


def test_rating_is_the_public_rating_per_puzzle(rating_sample):
    # The oracle: tdoku's own count, recorded for every benchmark puzzle (tdoku_guesses_limit1).
    # Issue #13's bar is exact on >= 95% and within one guess on >= 99%, in every collection.
    every = []
    for name, rows in rating_sample.items():
        ours = S.rate([x["puzzle"] for x in rows])
        pub = np.array([int(x["tdoku_guesses_limit1"]) for x in rows])
        exact, within1 = (ours == pub).mean(), (np.abs(ours - pub) <= 1).mean()
        assert exact >= 0.95 and within1 >= 0.99, (name, exact, within1)
        every.append(ours - pub)
    every = np.concatenate(every)
    assert len(every) == 1875 and (every == 0).mean() >= 0.95


def test_rating_returns_the_solution_it_found(rating_sample, bench_sudoku_dir):
    rows = [x for v in rating_sample.values() for x in v]
    r = S.rate_many([x["puzzle"] for x in rows])
    assert all(S.format_grid(s) == x["solution"] for s, x in zip(r.solutions, rows, strict=True))
    assert (r.ratings == r.guesses).all() and (r.ratings >= 0).all()
    # puzzles with several solutions: the first one found is a valid completion of the givens
    multi = [x["puzzle"] for x in load(bench_sudoku_dir, "puzzles7_serg_benchmark.csv")[:500]]
    rm = S.rate_many(multi)
    assert (rm.ratings >= 0).all()
    assert S.check_solution(np.stack([S.parse(p) for p in multi]), rm.solutions).all()


def test_rating_single_batch_and_threads_agree(rating_sample):
    puzzles = [x["puzzle"] for x in rating_sample["puzzles5_forum_hardest_1905_11+.csv"][:64]]
    batch = S.rate(puzzles)
    assert batch.dtype == np.int64 and batch.shape == (64,)
    assert [S.rate(p) for p in puzzles[:4]] == batch[:4].tolist()
    assert S.rate(S.parse(puzzles[0]).reshape(9, 9)) == batch[0]
    assert np.array_equal(S.rate(np.stack([S.parse(p) for p in puzzles])), batch)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = S.rate(puzzles)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, batch)


def test_rating_of_easy_empty_and_unsolvable_grids():
    # solved by singles alone: no guess
    assert S.rate(SOLVED[:40] + "." + SOLVED[41:]) == 0
    # the empty grid: 36 guesses, as tdoku (a local build) counts them
    r = S.rate_many("." * 81)
    assert r.ratings[0] == 36 and S.check_solution("." * 81, r.solutions[0])
    # row 1 needs a 9 in its last cell, where column 9 already has one: no solution, rating -1
    bad = S.parse("12345678." + "........9" + "." * 63)
    rb = S.rate_many(bad)
    assert S.rate(bad) == -1 and rb.guesses[0] >= 0 and not rb.solutions.any()


def test_band_triad_solution_count_matches_plain_backtracking(rating_sample, bench_sudoku_dir):
    from puzzles import _tdoku_rating as R

    rng = np.random.default_rng(2)
    unique = np.stack([S.parse(x["puzzle"]) for v in rating_sample.values() for x in v[:40]])
    # the climb's neighbourhood: a given or two dropped (often several solutions) and a random
    # clash-free digit added (often none)
    grids = [unique]
    for drop in (1, 2):
        g = unique.copy()
        for row in g:
            row[rng.choice(np.flatnonzero(row), size=drop, replace=False)] = 0
        grids.append(g)
    g = unique.copy()
    for row in g:
        c = rng.choice(np.flatnonzero(row == 0))
        r0, c0 = divmod(int(c), 9)
        peers = [
            row[i]
            for i in range(81)
            if i // 9 == r0 or i % 9 == c0 or (i // 27 == r0 // 3 and i % 9 // 3 == c0 // 3)
        ]
        free = [d for d in range(1, 10) if d not in peers]
        row[c] = rng.choice(free)
    grids.append(g)
    multi = np.stack(
        [S.parse(x["puzzle"]) for x in load(bench_sudoku_dir, "puzzles7_serg_benchmark.csv")[:40]]
    )
    # exactly two solutions: a solved grid less a "deadly rectangle" (a b / b a in two rows of one
    # band and two columns of different stacks), whose two digits can swap
    two = []
    for s in S.rate_many(unique[:60]).solutions:
        g = s.reshape(9, 9)
        for r1, r2, c1, c2 in itertools.product(range(9), range(9), range(9), range(9)):
            if r1 < r2 and r1 // 3 == r2 // 3 and c1 < c2 and c1 // 3 != c2 // 3:
                if g[r1, c1] == g[r2, c2] and g[r1, c2] == g[r2, c1]:
                    h = g.copy()
                    h[[r1, r1, r2, r2], [c1, c2, c1, c2]] = 0
                    two.append(h.ravel())
                    break
    grids += [np.stack(two), multi, np.zeros((1, 81), np.int8)]
    grids = np.concatenate(grids).astype(np.int8)
    # the oracle: the cell-based DPLL solver (another algorithm, itself checked against plain
    # backtracking above; plain backtracking alone takes minutes on these hard grids)
    for limit in (1, 2, 3):
        ours = R.count_batch(grids, limit)
        assert np.array_equal(ours, S.solve_many(grids, limit=limit).n_solutions), limit
    easy = grids[-41 - len(two) :]  # rectangles, the multi-solution collection, the empty grid
    assert np.array_equal(R.count_batch(easy, 3), [plain_count(x, limit=3) for x in easy])
    seen = np.bincount(R.count_batch(grids, 3), minlength=4)
    assert seen[0] > 20 and seen[1] > 150 and seen[2] > 10 and seen[3] > 20  # every case exercised


def test_climb_resumes_from_a_returned_pool():
    seeds = S.item_seeds(3, 2)
    first, pools = S.climb(seeds, pool_size=6, iters=1500, samples=2, with_pools=True)
    for (arch, scores), (pool, pool_scores) in zip(first, pools, strict=True):
        assert pool.shape == (6, 81) and pool_scores.shape == (6,)
        assert (S.solve_many(pool, limit=2).n_solutions == 1).all()
        # the pool holds the island's hardest: an archived puzzle still in it has its archived score
        archived = {a.tobytes(): s for a, s in zip(arch, scores, strict=True)}
        inside = [
            (archived[p.tobytes()], s)
            for p, s in zip(pool, pool_scores, strict=True)
            if p.tobytes() in archived
        ]
        assert len(inside) >= 3 and all(a == s for a, s in inside)
    # no further steps: the pools come back as given, with nothing archived
    same, again = S.climb(S.item_seeds(9, 2), pool_size=6, iters=0, samples=2, start=pools, with_pools=True)
    for (arch, _), (p0, s0), (p1, s1) in zip(same, pools, again, strict=True):
        assert len(arch) == 0 and np.array_equal(p0, p1) and np.array_equal(s0, s1)
    # going on: the pool's floor never falls, every kept puzzle is unique and scores at least it
    more, after = S.climb(
        S.item_seeds(9, 2), pool_size=6, iters=1500, samples=2, start=pools, with_pools=True
    )
    for (arch, scores), (_, s0), (_, s1) in zip(more, pools, after, strict=True):
        assert s1.min() >= s0.min() and (scores >= s0.min()).all()
        assert (S.solve_many(arch, limit=2).n_solutions == 1).all()
    with pytest.raises(ValueError, match="start pools"):
        S.climb(seeds, pool_size=5, iters=10, samples=2, start=pools)


def test_rating_rejects_bad_input():
    with pytest.raises(ValueError, match="characters"):
        S.rate("." * 80)
    with pytest.raises(ValueError, match="bad character"):
        S.rate("x" + "." * 80)
    with pytest.raises(ValueError, match="repeat digit 5"):
        S.rate("55" + "." * 79)
    with pytest.raises(ValueError, match="9x9"):
        S.rate("." * 16)
    with pytest.raises(ValueError, match="0..9"):
        S.rate(np.full((2, 81), 10, np.int8))
    with pytest.raises(ValueError, match="no puzzles"):
        S.rate([])


def test_public_scale_mapping_is_monotone_and_keeps_zero():
    x = np.arange(0, 400)
    y = S.to_public_scale(x)
    assert y[0] == 0 and (np.diff(y) > 0).all()
    assert S.to_public_scale(-1) == -1


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("box", ["3x3", "2x3", "2x2"])
def test_random_minimal_puzzles_are_unique_and_minimal_by_independent_count(box):
    br, bc = S.parse_box(box)
    p, s, info = S.random_minimal(24, seed=11, box=box)
    for puzzle, sol in zip(p, s, strict=True):
        assert plain_count(puzzle, (br, bc), limit=2) == 1
        assert S.check_solution(puzzle, sol, box=box)
    assert (info[:, 0] >= 0).all() and (info[:, 1] >= info[:, 0]).all()
    # minimal: removing any given breaks uniqueness (checked independently)
    for puzzle in p[:4]:
        for c in np.flatnonzero(puzzle):
            q = puzzle.copy()
            q[c] = 0
            assert plain_count(q, (br, bc), limit=2) == 2


def test_climbed_puzzles_are_unique_and_get_harder():
    islands = S.climb(S.item_seeds(4, 2), pool_size=8, iters=3000)
    for puzzles, trees in islands:
        assert len(puzzles) > 10
        for q in puzzles[-12:]:
            assert plain_count(q, limit=2) == 1
        r = S.solve_many(puzzles, limit=2)
        assert (r.n_solutions == 1).all()
        assert np.array_equal(r.guesses_total, trees)  # the archived tree sizes are honest
        assert trees[-5:].mean() > trees[:5].mean()  # the island climbed
    assert not np.array_equal(islands[0][0][:5], islands[1][0][:5])


def test_climbing_the_mean_rating_over_images_gets_harder_in_any_orientation():
    ((puzzles, scores),) = S.climb(S.item_seeds(6, 1), pool_size=8, iters=4000, samples=4)
    r = S.solve_many(puzzles, limit=2)
    assert (r.n_solutions == 1).all()
    sol = r.solutions
    # rated in orientations the climb never saw
    _, _, _, fresh = S.orient(puzzles, sol, S.item_seeds(99, len(puzzles)), 8)
    assert fresh[-10:].mean() > fresh[:10].mean()
    assert scores[-5:].mean() > scores[:5].mean()
    with pytest.raises(ValueError, match="9x9"):
        S.climb(S.item_seeds(6, 1), iters=10, samples=2, box="2x3")


def test_orient_moves_puzzle_and_solution_to_a_rated_image():
    p, s, _ = S.random_minimal(6, seed=12)
    seeds = S.item_seeds(3, 6)
    q, t, stored, images = S.orient(p, s, seeds, 5)
    assert images.shape == (6, 5)
    assert np.array_equal(stored, S.rate(q))  # the stored rating is the rater's, on the stored grid
    assert np.array_equal(stored, np.sort(images, axis=1)[:, 2])  # the median image
    assert S.check_solution(q, t).all()
    assert np.array_equal(S.canonical_form(q, t), S.canonical_form(p, s))  # a symmetry image
    q2, _, stored2, images2 = S.orient(p, s, seeds, 5, which=[0, 1, 2, 3, 4, 0])
    assert np.array_equal(images2, images) and np.array_equal(stored2, S.rate(q2))
    assert np.array_equal(stored2, images[np.arange(6), [0, 1, 2, 3, 4, 0]])
    with pytest.raises(ValueError, match="9x9"):
        S.orient(*S.random_minimal(2, seed=1, box="2x3")[:2], S.item_seeds(1, 2), 3)


def test_generation_is_seeded_and_thread_count_proof():
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = S.random_minimal(12, seed=7)
        ca = S.climb(S.item_seeds(7, 2), pool_size=4, iters=500)
        numba.set_num_threads(max(2, before))
        b = S.random_minimal(12, seed=7)
        cb = S.climb(S.item_seeds(7, 2), pool_size=4, iters=500)
    finally:
        numba.set_num_threads(before)
    c = S.random_minimal(12, seed=8)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    for (p1, t1), (p2, t2) in zip(ca, cb, strict=True):
        assert np.array_equal(p1, p2) and np.array_equal(t1, t2)
    assert not np.array_equal(a[0], c[0])


# ----------------------------------------------------------------------------- symmetry


def test_canonical_form_is_invariant_and_idempotent():
    rng = np.random.default_rng(0)
    p, s, _ = S.random_minimal(12, seed=3)
    canon = S.canonical_form(p, s)
    for i in range(len(p)):
        for _ in range(3):
            t = independent_transform(
                np.stack([p[i], s[i]]).reshape(2, 81)[0], (3, 3), np.random.default_rng(rng.integers(1 << 30))
            )
            assert np.array_equal(S.canonical_form(t[None])[0], canon[i])
    assert np.array_equal(S.canonical_form(canon), canon)
    assert len({c.tobytes() for c in canon}) == len(canon)  # random puzzles are not equivalent
    assert ((canon != 0).sum(1) == (p != 0).sum(1)).all()


def _orbit(puzzle, box):
    """Every image of a 4x4/6x6 puzzle under the symmetry group, by brute force."""
    br, bc = box
    n = br * bc
    g = puzzle.reshape(n, n)
    out = set()
    row_orders = [
        np.concatenate([np.array(b) * br + np.array(w) for b, w in zip(bands, ws, strict=True)])
        for bands in itertools.permutations(range(n // br))
        for ws in itertools.product(list(itertools.permutations(range(br))), repeat=n // br)
    ]
    col_orders = [
        np.concatenate([np.array(s) * bc + np.array(w) for s, w in zip(stacks, ws, strict=True)])
        for stacks in itertools.permutations(range(n // bc))
        for ws in itertools.product(list(itertools.permutations(range(bc))), repeat=n // bc)
    ]
    for t in [False, True] if br == bc else [False]:
        h = g.T if t else g
        for ro in row_orders:
            for co in col_orders:
                img = h[ro][:, co].reshape(-1)
                # relabel digits by first appearance: a canonical choice of the digit permutation
                relabel = np.zeros(n + 1, np.int64)
                nxt = 1
                for v in img:
                    if v and not relabel[v]:
                        relabel[v] = nxt
                        nxt += 1
                out.add(relabel[img].astype(np.int8).tobytes())
    return out


@pytest.mark.parametrize("box, count", [("2x2", 40), ("2x3", 12)])
def test_canonical_form_matches_brute_force_orbits(box, count):
    p, s, _ = S.random_minimal(count, seed=9, box=box)
    if box == "2x3":  # make some pairs equivalent so both outcomes are exercised
        q, _ = S.random_symmetry(p[:6], s[:6], seed=1, box=box)
        p = np.concatenate([p, q])
    canon = S.canonical_form(p, box=box)
    orbits = [_orbit(x, S.parse_box(box)) for x in p]
    for i in range(len(p)):
        for j in range(i + 1, len(p)):
            same_orbit = next(iter(orbits[j])) in orbits[i]
            assert same_orbit == np.array_equal(canon[i], canon[j])
    assert len({c.tobytes() for c in canon}) > 1


def test_augment_keeps_original_first_and_images_valid():
    p, s, _ = S.random_minimal(5, seed=4)
    ap, as_ = S.augment(p, s, num_aug=6, seed=1)
    assert ap.shape == (35, 81)
    assert np.array_equal(ap[::7], p) and np.array_equal(as_[::7], s)
    assert S.check_solution(ap, as_).all()
    assert np.array_equal((ap != 0).sum(1), np.repeat((p != 0).sum(1), 7))
    canon = S.canonical_form(ap, as_)
    assert all(np.array_equal(canon[k], canon[(k // 7) * 7]) for k in range(35))
    again = S.augment(p, s, num_aug=6, seed=1)
    assert np.array_equal(again[0], ap)
    assert len({x.tobytes() for x in ap}) > 30  # the images differ from each other


def test_augment_6x6_never_transposes():
    p, s, _ = S.random_minimal(3, seed=4, box="2x3")
    ap, as_ = S.augment(p, s, num_aug=20, seed=2, box="2x3")
    assert S.check_solution(ap, as_).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="limit"):
        S.solve_many(["." * 81], limit=0)
    with pytest.raises(ValueError, match="num_aug"):
        S.augment(np.zeros((1, 81), np.int8), np.zeros((1, 81), np.int8), -1, 0)
    with pytest.raises(ValueError, match="2 solutions"):
        S.canonical_form(["." * 81])
    with pytest.raises(ValueError, match="different sizes"):
        S.solve_many(["." * 81, "." * 16])
