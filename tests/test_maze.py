"""puzzles.maze: parsing, BFS, the canonical A*, shortest-path counts and the path checker, each
against an independent oracle (scipy BFS, a heapq A* written from the recipe's description,
brute-force enumeration of simple paths)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from maze_oracles import all_simple_paths, chordless, mark, random_question, reference_astar, scipy_distances

from puzzles import maze as pm

# ----------------------------------------------------------------------------- parse / format


def test_parse_format_round_trip_keeps_spaces():
    text = "S #" + "   " + "# G"
    grid = pm.parse_grid(text)
    assert grid.shape == (3, 3)
    assert grid[0].tolist() == [pm.START, pm.OPEN, pm.WALL]
    assert pm.format_grid(grid) == text
    assert pm.format_grid(pm.parse_grid("  S" + "   " + "G  ")) == "  S" + "   " + "G  "  # leading/trailing


@pytest.mark.parametrize(
    "text, match",
    [
        ("S #  x# G", r"characters \['x'\]"),
        ("S #   #G", "not a square"),
        ("", "not a square"),
        ("  #   # G", "exactly one S"),
        ("S #   #GG", "exactly one G"),
        ("SS#   # G", "exactly one S"),
        ("S #o  # G", "may not hold 'o'"),
    ],
)
def test_parse_errors(text, match):
    with pytest.raises(ValueError, match=match):
        pm.parse_grid(text)


def test_answer_parse_allows_path_marks():
    assert (pm.parse_grid("Soo  o  G", answer=True) == pm.PATH).sum() == 3


def test_threshold_units():
    assert pm.threshold_edges(110, "cells") == 110  # > 110 cells  <=>  >= 110 moves
    assert pm.threshold_edges(110, "edges") == 111
    with pytest.raises(ValueError, match="cells' or 'edges"):
        pm.threshold_edges(110, "steps")


# ----------------------------------------------------------------------------- BFS, A*, counts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), side=st.integers(2, 12), share=st.floats(0.0, 0.5))
def test_bfs_matches_scipy(seed, side, share):
    grid = random_question(np.random.default_rng(seed), side, share)
    expected = scipy_distances(grid)
    assert np.array_equal(pm.bfs_distances(grid), expected)
    g = tuple(np.argwhere(grid == pm.GOAL)[0])
    assert pm.shortest_path_length(grid) == (None if expected[g] < 0 else expected[g])


def test_astar_tie_break_by_hand():
    # 2x2 open: both S-G paths are shortest. After S, the cells (row 0, col 1) [hash 1] and
    # (row 1, col 0) [hash 100000] tie on f = 2; the smaller hash is expanded first and claims G.
    q = pm.parse_grid("S  G")
    assert pm.canonical_path(q) == [(0, 0), (0, 1), (1, 1)]
    assert pm.solve(q) == "So G"


HAND_GRIDS = [
    # open rooms with many shortest paths: ties at every step
    "S    " + "     " + "     " + "     " + "    G",
    "    G" + "     " + "     " + "     " + "S    ",
    "G    " + "     " + "  #  " + "     " + "    S",
    # a wall forcing a detour, G above S (f rises after the first moves)
    "  G  " + " ### " + "  S  " + "     " + "     ",
    # two equal corridors around a block
    "     " + " ### " + "S###G" + " ### " + "     ",
    # a node first reached at a higher cost, then improved (Manhattan misleads toward a dead end)
    "S    #" + "#### #" + "     #" + " #####" + "     G" + "      ",
]


@pytest.mark.parametrize("text", HAND_GRIDS)
def test_astar_matches_reference_on_hand_grids(text):
    q = pm.parse_grid(text)
    path = pm.canonical_path(q)
    assert path == reference_astar(q)
    assert len(path) - 1 == pm.shortest_path_length(q)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), side=st.integers(2, 30), share=st.floats(0.0, 0.5))
def test_astar_matches_reference_on_random_grids(seed, side, share):
    q = random_question(np.random.default_rng(seed), side, share)
    assert pm.canonical_path(q) == reference_astar(q)


def test_astar_on_30x30_public_style_grids():
    rng = np.random.default_rng(7)
    for _ in range(20):
        q = random_question(rng, 30, rng.uniform(0.3, 0.5))
        assert pm.canonical_path(q) == reference_astar(q)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), side=st.integers(2, 5), share=st.floats(0.0, 0.4))
def test_count_shortest_paths_brute_force(seed, side, share):
    q = random_question(np.random.default_rng(seed), side, share)
    paths = all_simple_paths(q)
    if not paths:
        assert pm.count_shortest_paths(q) == 0
        return
    best = min(len(p) for p in paths)
    assert pm.count_shortest_paths(q) == sum(len(p) == best for p in paths)


def test_count_shortest_paths_exact_beyond_float():
    # An open 30x30 grid corner to corner: C(58, 29) paths, more than 2^53.
    q = np.full((30, 30), pm.OPEN, np.uint8)
    q[0, 0], q[29, 29] = pm.START, pm.GOAL
    assert pm.count_shortest_paths(q) == 30067266499541040


# ----------------------------------------------------------------------------- check_path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), side=st.integers(2, 5), share=st.floats(0.0, 0.35))
def test_check_path_brute_force(seed, side, share):
    rng = np.random.default_rng(seed)
    q = random_question(rng, side, share)
    paths = all_simple_paths(q)
    best = min((len(p) for p in paths), default=None)
    valid_sets = {frozenset(p): len(p) for p in paths if chordless(p)}
    canonical = pm.solve(q) if paths else None
    # every enumerated path, plus random markings of open cells
    openc = [tuple(c) for c in np.argwhere(q == pm.OPEN)]
    # at most 150 enumerated paths (open 5x5 grids have thousands), always the shortest ones
    order = sorted(range(len(paths)), key=lambda i: (len(paths[i]), i))
    keep = order[:75] + list(rng.choice(order, min(75, len(order)), replace=False)) if order else []
    candidates = [paths[i] for i in keep]
    for _ in range(30):
        k = rng.integers(0, len(openc) + 1)
        pick = [openc[i] for i in rng.choice(len(openc), k, replace=False)] if openc else []
        candidates.append(pick)
    for cells in candidates:
        a = mark(q, cells)
        marked = frozenset(map(tuple, np.argwhere(a >= pm.START)))
        res = pm.check_path(q, a)
        assert res.valid == (marked in valid_sets), (pm.render(a), res)
        assert res.optimal == (res.valid and valid_sets[marked] == best)
        assert res.exact == (res.optimal and pm.format_grid(a) == canonical)
        if res.valid:
            assert res.length == len(marked) - 1
        else:
            assert res.reason


def corruptions(answer: np.ndarray):
    """Every single-cell change of an answer to another character of '# SGo'."""
    flat = answer.reshape(-1)
    for j in range(flat.size):
        for tok in (pm.WALL, pm.OPEN, pm.START, pm.GOAL, pm.PATH):
            if tok != flat[j]:
                b = flat.copy()
                b[j] = tok
                yield b


@pytest.mark.parametrize("side, share, seed", [(8, 0.3, 1), (12, 0.35, 2), (30, 0.38, 3)])
def test_every_single_cell_corruption_is_caught(side, share, seed):
    rng = np.random.default_rng(seed)
    while True:
        q = random_question(rng, side, share)
        if pm.shortest_path_length(q) and pm.shortest_path_length(q) >= side:
            break
    a = pm.parse_grid(pm.solve(q), answer=True)
    assert pm.check_path(q, a).exact
    bad = np.stack(list(corruptions(a)))
    codes, _, _ = pm.check_paths(np.repeat(q.reshape(1, -1), len(bad), 0), bad)
    assert (codes != 0).all()


def test_check_path_examples_and_errors():
    q = "S  " + "## " + "G  "
    assert pm.check_path(q, "Soo" + "##o" + "Goo").optimal
    res = pm.check_path(q, "So " + "##o" + "Goo")
    assert not res.valid and "broken" in res.reason
    assert "wall" in pm.check_path(q, "Soo" + "# o" + "Goo").reason
    assert "S" in pm.check_path(q, "ooo" + "##o" + "Goo").reason
    with pytest.raises(ValueError, match="characters"):
        pm.check_path(q, "Sxo" + "##o" + "Goo")
    with pytest.raises(ValueError, match="answer has 8"):
        pm.check_path(q, "Soo##oGo")
    with pytest.raises(ValueError, match="exactly one G"):
        pm.check_path("S  ## G G", "S  ## G G")
    rows = np.array([[pm.START, pm.GOAL, pm.OPEN, pm.OPEN], [pm.START, pm.OPEN, pm.OPEN, pm.OPEN]], np.uint8)
    with pytest.raises(ValueError, match="question row 1 does not hold exactly one G"):
        pm.check_paths(rows, rows)


def test_check_path_touching_detour_and_canonical_by_hand():
    q = "S   " + "    " + "    " + "   G"
    # The arms of this U-shaped detour touch: the marks do not form a single line.
    assert "touches" in pm.check_path(q, "So  " + "oo  " + "oooo" + "   G").reason
    # A chordless detour is valid but not optimal.
    q5 = "S    " + "     " + "     " + "     " + "    G"
    res = pm.check_path(q5, "Soooo" + "    o" + "ooooo" + "o    " + "ooooG")
    assert res.valid and not res.optimal and res.length == 16 and res.shortest == 8
    # By hand: ties on f = 6 everywhere; the smaller row-major index expands first, so the A*
    # runs along row 0, then down the last column.
    assert pm.check_path(q, "Sooo" + "   o" + "   o" + "   G").exact
    down_first = pm.check_path(q, "S   " + "o   " + "o   " + "oooG")
    assert down_first.optimal and not down_first.exact
