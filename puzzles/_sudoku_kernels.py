"""Numba kernels for Sudoku: propagation, exact search, generation, canonical form, augmentation.

Pure functions (arrays in, arrays out), ``cache=True``. Grids are flat int8 arrays of N*N cells
(row-major, 0 = blank, 1..N = digits) for boxes of ``br`` rows x ``bc`` columns, N = br * bc.
Candidates are bitmasks (bit d-1 set when digit d is possible). The geometry tables come from
``puzzles.sudoku._geometry`` and are passed in explicitly so one compiled kernel serves every size.

Randomised kernels seed Numba's generator with ``np.random.seed(seed + i)`` at the start of item
``i`` inside the ``prange`` body; each item then runs on one thread, so results are identical
whatever the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from puzzles import _tdoku_rating as R

# ----------------------------------------------------------------------------- propagation


@njit(cache=True, inline="always")
def _lowbit_index(m):
    i = 0
    while not (m >> i) & 1:
        i += 1
    return i


@njit(cache=True, inline="always")
def _eliminate(c, mask, cand, cell_units, dirty, queue, qn):
    """Remove ``mask`` from cell c; returns the new queue length, or -1 on a contradiction."""
    m = cand[c] & ~mask
    cand[c] = m
    if m == 0:
        return -1
    if (m & (m - 1)) == 0:
        queue[qn] = c
        qn += 1
    for k in range(3):
        dirty[cell_units[c, k]] = 3  # bit 0: hidden singles due, bit 1: locked candidates due
    return qn


@njit(cache=True)
def _propagate(cand, geo, full, use_hidden, dirty, seg, queue, qn):
    """Naked singles, hidden singles and locked candidates, until nothing changes.

    Incremental: ``queue[:qn]`` holds cells that became single, ``dirty[u]`` marks units whose
    candidates changed since they were last examined. Returns False on a contradiction (a cell
    with no candidate, a digit with no place in a unit). A cell enters the queue once, when it
    becomes single (every elimination is a strict reduction), so no "placed" flags are kept; a
    repeat would only rescan peers that no longer hold the digit.
    """
    units, peers, cell_units, ix_inter, ix_boxrest, ix_linerest, seg_box_sib, seg_line_sib, popc = geo
    nunit = units.shape[0]
    n = units.shape[1]
    npeer = peers.shape[1]
    nix = ix_inter.shape[0]
    li = ix_inter.shape[1]
    lr = ix_boxrest.shape[1]
    while True:
        # Naked singles: place each single-candidate cell and remove its digit from its peers.
        while qn > 0:
            qn -= 1
            c = queue[qn]
            m = cand[c]
            for k in range(npeer):
                p = peers[c, k]
                if cand[p] & m:
                    qn = _eliminate(p, m, cand, cell_units, dirty, queue, qn)
                    if qn < 0:
                        return False
        if not use_hidden:
            return True
        # Hidden singles: a digit that fits in exactly one cell of a unit goes there.
        for u in range(nunit):
            if not (dirty[u] & 1):
                continue
            dirty[u] &= 2
            once = 0
            twice = 0
            single = 0
            for i in range(n):
                m = cand[units[u, i]]
                twice |= once & m
                once |= m
                if (m & (m - 1)) == 0:
                    single |= m
            if once != full:
                return False
            # Digits of single-candidate cells are already where they must go; leaving them out
            # skips the second scan for the many units with nothing new (same deductions).
            exactly = once & ~twice & ~single
            if exactly:
                for i in range(n):
                    c = units[u, i]
                    m = cand[c] & exactly
                    if m and cand[c] != m:
                        if m & (m - 1):
                            return False  # two digits both need this cell
                        qn = _eliminate(c, cand[c] & ~m, cand, cell_units, dirty, queue, qn)
        if qn > 0:
            continue
        # Locked candidates: digits of a box-line intersection confined to it on one side
        # are removed from the other side (pointing and claiming).
        # Segments (box-line intersections) as candidate masks, then per segment the digits that
        # the rest of its box or the rest of its line lacks. Masks are read once per pass; a
        # stale (larger) mask only delays a deduction to the next pass, never makes a wrong one.
        due = False
        for u in range(nunit):
            if dirty[u] & 2:
                due = True
            dirty[u] &= 1
        if not due:
            if qn == 0:
                return True
            continue
        for k in range(nix):
            m = 0
            for i in range(li):
                m |= cand[ix_inter[k, i]]
            seg[k] = m
        seg[nix] = 0
        for k in range(nix):
            inter = seg[k]
            box_rest = 0
            for i in range(seg_box_sib.shape[1]):
                box_rest |= seg[seg_box_sib[k, i]]
            line_rest = 0
            for i in range(seg_line_sib.shape[1]):
                line_rest |= seg[seg_line_sib[k, i]]
            pointing = inter & ~box_rest & line_rest
            if pointing:
                for i in range(lr):
                    c = ix_linerest[k, i]
                    if cand[c] & pointing:
                        qn = _eliminate(c, pointing, cand, cell_units, dirty, queue, qn)
                        if qn < 0:
                            return False
            claiming = inter & ~line_rest & box_rest
            if claiming:
                for i in range(lr):
                    c = ix_boxrest[k, i]
                    if cand[c] & claiming:
                        qn = _eliminate(c, claiming, cand, cell_units, dirty, queue, qn)
                        if qn < 0:
                            return False
        if qn == 0:
            any_dirty = False
            for u in range(nunit):
                if dirty[u]:
                    any_dirty = True
                    break
            if not any_dirty:
                return True


# ----------------------------------------------------------------------------- search


@njit(cache=True)
def _search(grid, geo, limit, randomize, propagate, solution, stats):
    """Depth-first search with propagation; counts solutions up to ``limit``.

    Each branch point assigns one candidate (a **guess**, counted) and keeps the alternative
    "that candidate is eliminated" on the stack, which is later explored by propagation alone
    (DPLL style, as tdoku counts guesses). The branch cell has the fewest candidates; among
    bivalue cells, the one with most bivalue peers sharing a candidate (it starts the longest
    forcing chains, which cut the tree about in half against first-in-row-major order; ties go
    to the first in row-major order); the guessed digit is the lowest candidate, or a uniformly random
    one when ``randomize``. With ``propagate`` false only naked-single elimination runs (plain
    backtracking with forward checking, used as an independent check).

    Writes the first solution into ``solution`` and ``stats`` = [n_solutions, guesses before the
    first solution, guesses in the whole search]. Returns the number of solutions found.
    """
    units, peers, cell_units, ix_inter, ix_boxrest, ix_linerest, seg_box_sib, seg_line_sib, popc = geo
    ncell = grid.shape[0]
    nunit = units.shape[0]
    n = units.shape[1]
    full = (1 << n) - 1
    cand = np.empty(ncell, np.int32)
    dirty = np.full(nunit, 3, np.int8)
    seg = np.zeros(ix_inter.shape[0] + 1, np.int32)
    queue = np.empty(2 * ncell + 2, np.int64)
    qn = 0
    for c in range(ncell):
        d = int(grid[c])  # int: int8 shifts would overflow outside Numba
        if d == 0:
            cand[c] = full
        else:
            cand[c] = 1 << (d - 1)
            queue[qn] = c
            qn += 1
    st_cand = np.empty((ncell + 1, ncell), np.int32)
    st_cell = np.empty(ncell + 1, np.int64)
    bvlist = np.empty(ncell, np.int64)
    bvm = np.empty(ncell, np.int32)  # candidates of bivalue cells, 0 elsewhere
    npeer = peers.shape[1]
    depth = 0
    count = 0
    guesses = 0
    guesses_first = -1
    ok = _propagate(cand, geo, full, propagate, dirty, seg, queue, qn)
    while True:
        if ok:
            # At a fixed point the unplaced cells are exactly those with two or more candidates.
            # One pass finds the first cell of fewest candidates and lists the bivalue cells; if
            # there are any, the branch cell is the first of them with most bivalue peers sharing
            # a candidate (the same choice as a single pass, without scoring cells that lose).
            best = -1
            bestc = n + 1
            nbv = 0
            for c in range(ncell):
                m = cand[c]
                pc = popc[m]
                bvm[c] = m if pc == 2 else 0
                if pc == 2:
                    bvlist[nbv] = c
                    nbv += 1
                elif pc > 2 and pc < bestc:
                    bestc = pc
                    best = c
            if nbv > 0:
                bestdeg = -1
                for j in range(nbv):
                    c = bvlist[j]
                    m = cand[c]
                    deg = 0
                    for k in range(npeer):
                        deg += (bvm[peers[c, k]] & m) != 0
                    if deg > bestdeg:
                        bestdeg = deg
                        best = c
            if best == -1:
                count += 1
                if count == 1:
                    guesses_first = guesses
                    for c in range(ncell):
                        solution[c] = _lowbit_index(cand[c]) + 1
                if count >= limit:
                    break
                ok = False
                continue
            m = cand[best]
            if randomize:
                r = np.random.randint(0, popc[m])
                bit = 0
                for d in range(n):
                    if (m >> d) & 1:
                        if r == 0:
                            bit = 1 << d
                            break
                        r -= 1
            else:
                bit = m & (-m)
            st_cand[depth, :] = cand
            st_cand[depth, best] = m & ~bit
            st_cell[depth] = best
            depth += 1
            cand[best] = bit
            guesses += 1
        else:
            if depth == 0:
                break
            depth -= 1
            cand[:] = st_cand[depth]
            best = st_cell[depth]
        # Only the branch cell changed since the last fixed point.
        dirty[:] = 0
        qn = 0
        m = cand[best]
        if (m & (m - 1)) == 0:
            queue[0] = best
            qn = 1
        for k in range(3):
            dirty[cell_units[best, k]] = 3
        ok = _propagate(cand, geo, full, propagate, dirty, seg, queue, qn)
    stats[0] = count
    stats[1] = guesses_first
    stats[2] = guesses
    return count


@njit(cache=True, parallel=True)
def solve_batch(grids, geo, limit, propagate):
    """Solve every row of ``grids`` (B, N*N): first solutions (B, N*N) and stats (B, 3)."""
    b = grids.shape[0]
    sols = np.zeros_like(grids)
    stats = np.zeros((b, 3), np.int64)
    for i in prange(b):
        _search(grids[i], geo, limit, False, propagate, sols[i], stats[i])
    return sols, stats


# ----------------------------------------------------------------------------- validation


@njit(cache=True, parallel=True)
def check_batch(puzzles, candidates, units):
    """ok[i] = candidate i is a valid full grid that keeps every given of puzzle i."""
    b, ncell = candidates.shape
    n = units.shape[1]
    full = (1 << n) - 1
    ok = np.zeros(b, np.bool_)
    for i in prange(b):
        good = True
        for c in range(ncell):
            v = candidates[i, c]
            if v < 1 or v > n or (puzzles[i, c] != 0 and puzzles[i, c] != v):
                good = False
                break
        if good:
            for u in range(units.shape[0]):
                seen = 0
                for k in range(n):
                    seen |= 1 << (int(candidates[i, units[u, k]]) - 1)
                if seen != full:
                    good = False
                    break
        ok[i] = good
    return ok


# ----------------------------------------------------------------------------- generation


@njit(cache=True)
def _count2(p, geo, sol, stats):
    return _search(p, geo, 2, False, True, sol, stats)


@njit(cache=True)
def _random_solution(ncell, geo):
    empty = np.zeros(ncell, np.int8)
    sol = np.zeros(ncell, np.int8)
    stats = np.zeros(3, np.int64)
    _search(empty, geo, 1, True, True, sol, stats)
    return sol


@njit(cache=True)
def _minimise(p, geo, scratch, stats):
    """Remove givens in random order while the solution stays unique (p is modified in place)."""
    ncell = p.shape[0]
    order = np.random.permutation(ncell)
    for j in range(ncell):
        c = order[j]
        if p[c] != 0:
            v = p[c]
            p[c] = 0
            if _count2(p, geo, scratch, stats) != 1:
                p[c] = v


@njit(cache=True, parallel=True)
def random_minimal_batch(seeds, geo):
    """One random minimal puzzle per seed: a random full grid, givens removed in random order
    while the solution stays unique. Returns puzzles, solutions, and per item
    [first-solution guesses, guesses of the full uniqueness search]."""
    n = geo[0].shape[1]
    ncell = n * n
    count = seeds.shape[0]
    puzzles = np.zeros((count, ncell), np.int8)
    solutions = np.zeros((count, ncell), np.int8)
    info = np.zeros((count, 2), np.int64)
    for i in prange(count):
        np.random.seed(seeds[i])
        sol = _random_solution(ncell, geo)
        scratch = np.zeros(ncell, np.int8)
        stats = np.zeros(3, np.int64)
        p = sol.copy()
        _minimise(p, geo, scratch, stats)
        _count2(p, geo, scratch, stats)
        puzzles[i] = p
        solutions[i] = sol
        info[i, 0] = stats[1]
        info[i, 1] = stats[2]
    return puzzles, solutions, info


@njit(cache=True)
def _neighbour(p, q, geo):
    """q = p with 1-2 givens dropped and 1-2 givens added (random cells, digits free of clashes
    with the remaining givens). Returns False when a chosen cell has no digit left."""
    peers = geo[1]
    popc = geo[-1]
    n = geo[0].shape[1]
    ncell = n * n
    q[:] = p
    givens = np.nonzero(q)[0]
    ndrop = 1 + np.random.randint(0, 2)
    for k in range(ndrop):
        j = np.random.randint(k, givens.shape[0])
        t = givens[k]
        givens[k] = givens[j]
        givens[j] = t
        q[givens[k]] = 0
    nadd = 1 + np.random.randint(0, 2)
    for _ in range(nadd):
        c = np.random.randint(0, ncell)
        while q[c] != 0:
            c = np.random.randint(0, ncell)
        used = 0
        for k in range(peers.shape[1]):
            v = int(q[peers[c, k]])
            if v:
                used |= 1 << (v - 1)
        free = ((1 << n) - 1) & ~used
        if free == 0:
            return False
        r = np.random.randint(0, popc[free])
        for d in range(n):
            if (free >> d) & 1:
                if r == 0:
                    q[c] = d + 1
                    break
                r -= 1
    return True


@njit(cache=True)
def _rater_work():
    """Work space of one thread for :func:`puzzles._tdoku_rating.rate_one`."""
    return (
        np.empty(81, np.int8),
        np.empty((R.MAX_DEPTH, 9, 4), np.uint64),
        np.empty((R.MAX_DEPTH, 6, 6), np.int32),
        np.empty((R.MAX_DEPTH, 6, 6), np.int32),
        np.empty((R.MAX_TASKS, 6), np.int32),
        np.empty(R.MAX_DEPTH, np.int64),
        np.empty(R.MAX_DEPTH, np.int64),
    )


@njit(cache=True)
def _rate_images(q, images, ratings, rowmap, colmap, digitmap, work):
    """Rate ``images.shape[0]`` uniformly random symmetry images of the 9x9 puzzle ``q`` with the
    tdoku rater; ``images`` receives them and ``ratings`` their ratings. Returns the sum of the
    ratings, or -1 when one of them fails (no solution, or work space exhausted).

    tdoku's count on one orientation is largely noise for hard puzzles (docs/reference.md,
    "Sudoku-Extreme"); the mean over random images measures what any orientation costs.
    """
    sol, boxes, configs, pending, tasks, gb, gc = work
    total = 0
    for k in range(images.shape[0]):
        tr = _random_transform(9, 3, 3, True, rowmap, colmap, digitmap)
        for r in range(9):
            for c in range(9):
                src = colmap[c] * 9 + rowmap[r] if tr else rowmap[r] * 9 + colmap[c]
                images[k, r * 9 + c] = digitmap[q[src]]
        g, st = R.rate_one(images[k], sol, boxes, configs, pending, tasks, gb, gc)
        if st != R.OK:
            return -1
        ratings[k] = g
        total += g
    return total


@njit(cache=True, inline="always")
def _median_index(ratings):
    """Index of the lower median of ``ratings`` (the first such entry)."""
    m = ratings.shape[0]
    order = np.argsort(ratings, kind="mergesort")
    return order[(m - 1) // 2]


@njit(cache=True, inline="always")
def _lowest_sum(ratings, keep):
    """Sum of the ``keep`` lowest entries of ``ratings``."""
    srt = np.sort(ratings)
    total = 0
    for k in range(keep):
        total += srt[k]
    return total


@njit(cache=True, parallel=True)
def orient_batch(puzzles, solutions, seeds, samples, which):
    """Rate ``samples`` random symmetry images of each 9x9 (puzzle, solution) (item i seeded by
    ``seeds[i]``) and move the item to image ``which[i]``, or, where ``which[i]`` < 0, to its
    *median orientation* (the image whose tdoku rating is the lower median).

    The same seed gives the same images, so a caller can rate first and pick an image later.
    Returns puzzles, solutions (B, 81) int8, the stored image's rating (B,) and the ratings of all
    the images (B, samples) (-1 where rating failed; the item is then left as it was).
    """
    b = puzzles.shape[0]
    out_p = puzzles.copy()
    out_s = solutions.copy()
    stored = np.full(b, -1, np.int64)
    image_ratings = np.full((b, samples), -1, np.int64)
    for i in prange(b):
        np.random.seed(seeds[i])
        work = _rater_work()
        rowmap = np.empty(9, np.int64)
        colmap = np.empty(9, np.int64)
        digitmap = np.empty(10, np.int8)
        images = np.empty((samples, 81), np.int8)
        ratings = image_ratings[i]
        total = _rate_images(puzzles[i], images, ratings, rowmap, colmap, digitmap, work)
        if total < 0:
            continue
        pick = _median_index(ratings) if which[i] < 0 else which[i]
        # Replay the same draws up to the picked transform, to move the solution with it.
        np.random.seed(seeds[i])
        for _k in range(pick + 1):
            tr = _random_transform(9, 3, 3, True, rowmap, colmap, digitmap)
        for r in range(9):
            for c in range(9):
                src = colmap[c] * 9 + rowmap[r] if tr else rowmap[r] * 9 + colmap[c]
                out_s[i, r * 9 + c] = digitmap[solutions[i, src]]
        out_p[i] = images[pick]
        stored[i] = ratings[pick]
    return out_p, out_s, stored, image_ratings


@njit(cache=True, inline="always")
def _same(a, b):
    for j in range(a.shape[0]):
        if a[j] != b[j]:
            return False
    return True


@njit(cache=True, parallel=True)
def climb_islands(seeds, pool_size, iters, archive_cap, samples, keep, geo, start_pool, start_score):
    """Neighbourhood hill climbing on islands: one independent pool of puzzles per seed.

    Each island starts from ``pool_size`` random minimal puzzles. Every iteration picks a parent
    by a 2-way tournament (the higher score wins), makes a neighbour (drop 1-2 givens, add 1-2
    random givens), and keeps it only when its solution is unique and its score is at least the
    pool's lowest, which it replaces: the pool keeps the hardest puzzles met. Every kept neighbour
    is also written to the island's archive, a ring of the last ``archive_cap`` kept puzzles (so it
    spans easy to hard).

    The score: with ``samples`` = 0, the guesses of our own full uniqueness search (any box
    size); with ``samples`` > 0 (9x9 only), the sum of the ``keep`` lowest of tdoku's ratings of
    that many random symmetry images (``keep`` = ``samples``: their mean; 1: their minimum).
    Climbing one orientation's count selects puzzles that are hard for one solver's branching in
    that orientation only (docs/reference.md, "Sudoku-Extreme"); the low ratings over images
    select puzzles hard in any orientation (a mean alone still rewards puzzles that are very hard
    in a few orientations and easy in others).
    An island whose ``start_score[i, 0]`` is >= 0 starts from ``start_pool[i]`` and
    ``start_score[i]`` (a pool this kernel returned: the island goes on climbing) instead of
    random minimal puzzles; pass (I, 0, N*N) / (I, 1) arrays of -1 scores for fresh islands.
    Returns archives (I, cap, N*N), their scores (I, cap), how many were kept (I,), and the final
    pools (I, pool_size, N*N) with their scores (I, pool_size).
    """
    n = geo[0].shape[1]
    ncell = n * n
    n_isl = seeds.shape[0]
    archive = np.zeros((n_isl, archive_cap, ncell), np.int8)
    archive_score = np.zeros((n_isl, archive_cap), np.int64)
    kept = np.zeros(n_isl, np.int64)
    pools = np.zeros((n_isl, pool_size, ncell), np.int8)
    pool_scores = np.zeros((n_isl, pool_size), np.int64)
    for isl in prange(n_isl):
        np.random.seed(seeds[isl])
        pool = pools[isl]
        score = pool_scores[isl]
        scratch = np.zeros(ncell, np.int8)
        stats = np.zeros(3, np.int64)
        work = _rater_work()
        rowmap = np.empty(9, np.int64)
        colmap = np.empty(9, np.int64)
        digitmap = np.empty(10, np.int8)
        m = max(samples, 1)
        images = np.empty((m, ncell), np.int8)
        ratings = np.empty(m, np.int64)
        resume = start_score[isl, 0] >= 0
        if resume:
            pool[:] = start_pool[isl]
            score[:] = start_score[isl]
        for i in range(0 if resume else pool_size):
            sol = _random_solution(ncell, geo)
            p = sol.copy()
            _minimise(p, geo, scratch, stats)
            _count2(p, geo, scratch, stats)
            pool[i] = p
            if samples > 0:
                _rate_images(p, images, ratings, rowmap, colmap, digitmap, work)
                score[i] = _lowest_sum(ratings, keep)
            else:
                score[i] = stats[2]
        q = np.zeros(ncell, np.int8)
        na = 0
        for _ in range(iters):
            a = np.random.randint(0, pool_size)
            b = np.random.randint(0, pool_size)
            parent = a if score[a] >= score[b] else b
            if not _neighbour(pool[parent], q, geo):
                continue
            if samples > 0 and _same(q, pool[parent]):
                # A given dropped and put back: with a noisy score, a copy would crowd the pool.
                continue
            if samples > 0:
                # 9x9: the band-triad counter gives the same count as _count2, ~3x faster (the
                # uniqueness check is most of a climb step: ~97% of neighbours are not unique)
                found, status = R.count_solutions(q, 2, work[1], work[2], work[3], work[4], work[5], work[6])
                if status != R.OK or found != 1:  # out of work space (never seen): not known unique
                    continue
            elif _count2(q, geo, scratch, stats) != 1:
                continue
            if samples > 0:
                if _rate_images(q, images, ratings, rowmap, colmap, digitmap, work) < 0:
                    continue
                s = _lowest_sum(ratings, keep)
            else:
                s = stats[2]
            worst = np.argmin(score)
            if s >= score[worst]:
                pool[worst] = q
                score[worst] = s
                archive[isl, na % archive_cap] = q
                archive_score[isl, na % archive_cap] = s
                na += 1
        kept[isl] = na
    return archive, archive_score, kept, pools, pool_scores


# ----------------------------------------------------------------------------- symmetry


@njit(cache=True, inline="always")
def _row_less(g, relabel, cp, a, b):
    """Row a before row b, compared after column order ``cp`` and digit relabelling."""
    for j in range(cp.shape[0]):
        x = relabel[g[a, cp[j]]]
        y = relabel[g[b, cp[j]]]
        if x != y:
            return x < y
    return False


@njit(cache=True)
def _canon_one(puzzle, solution, n, br, colperms, allow_transpose, out_grid, out_puzzle):
    """Lexicographically smallest image of ``solution`` under the Sudoku symmetry group.

    The group: band permutations and row permutations within bands, stack and column
    permutations, transposition (square boxes only), digit relabelling. For each column order,
    top row and transposition, digits are relabelled in order of the top row, and the remaining
    rows are chosen greedily (the smallest available row next; within a full grid two rows never
    tie, so greedy is exact). Among the grid-minimising transforms (several only for grids with
    automorphisms) the smallest image of ``puzzle`` is the puzzle's canonical form. The puzzle
    must have ``solution`` as its unique solution for this to be a canonical form of the puzzle.
    """
    best_set = False
    g = np.empty((n, n), np.int8)
    q = np.empty((n, n), np.int8)
    relabel = np.zeros(n + 1, np.int8)
    used = np.zeros(n, np.bool_)
    rows = np.empty(n, np.int64)
    cand_grid = np.empty((n, n), np.int8)
    cand_puz = np.empty((n, n), np.int8)
    bg = out_grid.reshape(n, n)
    bp = out_puzzle.reshape(n, n)
    ntrans = 2 if allow_transpose else 1
    for t in range(ntrans):
        for r in range(n):
            for c in range(n):
                if t == 0:
                    g[r, c] = solution[r * n + c]
                    q[r, c] = puzzle[r * n + c]
                else:
                    g[r, c] = solution[c * n + r]
                    q[r, c] = puzzle[c * n + r]
        for ci in range(colperms.shape[0]):
            cp = colperms[ci]
            for r0 in range(n):
                for j in range(n):
                    relabel[g[r0, cp[j]]] = j + 1
                used[:] = False
                state = 0 if best_set else -1  # 0: equal to best so far, -1: already smaller
                pos = 0
                dead = False
                band = r0 // br
                first = r0
                while pos < n:
                    # Rows of the current band, smallest first; the band's first row is given.
                    for k in range(br):
                        if k == 0:
                            r = first
                        else:
                            r = -1
                            for rr in range(band * br, band * br + br):
                                if not used[rr] and (r == -1 or _row_less(g, relabel, cp, rr, r)):
                                    r = rr
                        used[r] = True
                        rows[pos] = r
                        if state == 0:
                            for j in range(n):
                                a = relabel[g[r, cp[j]]]
                                b = bg[pos, j]
                                if a != b:
                                    state = -1 if a < b else 1
                                    break
                            if state == 1:
                                dead = True
                                break
                        pos += 1
                    if dead or pos >= n:
                        break
                    # Next band: the one holding the smallest unused row.
                    first = -1
                    for rr in range(n):
                        if not used[rr] and (first == -1 or _row_less(g, relabel, cp, rr, first)):
                            first = rr
                    band = first // br
                if dead:
                    continue
                for i in range(n):
                    for j in range(n):
                        cand_grid[i, j] = relabel[g[rows[i], cp[j]]]
                        v = q[rows[i], cp[j]]
                        cand_puz[i, j] = relabel[v] if v != 0 else 0
                if state == -1:
                    bg[:, :] = cand_grid
                    bp[:, :] = cand_puz
                    best_set = True
                else:
                    # Same grid image: keep the smaller puzzle image.
                    for i in range(n * n):
                        a = cand_puz.ravel()[i]
                        b = bp.ravel()[i]
                        if a != b:
                            if a < b:
                                bp[:, :] = cand_puz
                            break


@njit(cache=True, parallel=True)
def canonical_batch(puzzles, solutions, n, br, bc, colperms, allow_transpose):
    b = puzzles.shape[0]
    out_grid = np.zeros_like(solutions)
    out_puz = np.zeros_like(puzzles)
    for i in prange(b):
        _canon_one(puzzles[i], solutions[i], n, br, colperms, allow_transpose, out_grid[i], out_puz[i])
    return out_puz, out_grid


@njit(cache=True)
def _random_transform(n, br, bc, allow_transpose, rowmap, colmap, digitmap):
    """Draw a uniform element of the symmetry group as (row order, column order, digits, transpose)."""
    nb = n // br
    ns = n // bc
    bands = np.random.permutation(nb)
    k = 0
    for b in bands:
        within = np.random.permutation(br)
        for w in within:
            rowmap[k] = b * br + w
            k += 1
    stacks = np.random.permutation(ns)
    k = 0
    for s in stacks:
        within = np.random.permutation(bc)
        for w in within:
            colmap[k] = s * bc + w
            k += 1
    perm = np.random.permutation(n)
    digitmap[0] = 0
    for d in range(n):
        digitmap[d + 1] = perm[d] + 1
    return allow_transpose and np.random.random() < 0.5


@njit(cache=True, parallel=True)
def augment_batch(puzzles, solutions, num_aug, seeds, n, br, bc, allow_transpose):
    """For each puzzle: itself, then ``num_aug`` random symmetry images (puzzle and solution alike).

    Group g is seeded by ``seeds[g]``. The transform order follows the reference builder: digit
    permutation, transpose with p=0.5, then band/row and stack/column permutations.
    Returns (G * (1 + num_aug), N*N) arrays.
    """
    g_count, ncell = puzzles.shape
    per = 1 + num_aug
    out_p = np.empty((g_count * per, ncell), np.int8)
    out_s = np.empty((g_count * per, ncell), np.int8)
    for g in prange(g_count):
        np.random.seed(seeds[g])
        rowmap = np.empty(n, np.int64)
        colmap = np.empty(n, np.int64)
        digitmap = np.empty(n + 1, np.int8)
        out_p[g * per] = puzzles[g]
        out_s[g * per] = solutions[g]
        for a in range(1, per):
            tr = _random_transform(n, br, bc, allow_transpose, rowmap, colmap, digitmap)
            for r in range(n):
                for c in range(n):
                    sr = rowmap[r]
                    sc = colmap[c]
                    src = sc * n + sr if tr else sr * n + sc
                    out_p[g * per + a, r * n + c] = digitmap[puzzles[g, src]]
                    out_s[g * per + a, r * n + c] = digitmap[solutions[g, src]]
    return out_p, out_s
