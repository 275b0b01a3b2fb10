"""Numba kernels of the band-triad rater: tdoku's guess count for 9x9 puzzles (REFERENCE.md 1.4).

The public Sudoku-Extreme ``rating`` is the number of guesses t-dillon/tdoku's DPLL-triad solver
makes before its first solution. That count depends on exactly what the solver's propagation
infers, in what order, and on which band and digit it branches; so this module follows the
published algorithm (tdoku ``docs/sudoku.md``, "Getting Vectorized" and "The Fast SIMD Solver")
step for step, in plain scalar Numba: one int32 per 9-bit digit set where tdoku keeps SIMD lanes.

State of one search node (all digit sets are 9-bit masks, bit d-1 for digit d):

- ``boxes`` (9, 16): per box (row-major box index) a 4x4 matrix, lane ``4*r + c``:
  ``r, c < 3`` is the cell in box row r, box column c (its candidates); ``(r, 3)`` is the
  *negative row triad* of minirow r (the digits that may be absent from that minirow);
  ``(3, c)`` is the negative column triad of minicolumn c; ``(3, 3)`` is unused (all digits).
  Each digit is in exactly one of {the three cells of a minirow, the minirow's negative triad}
  (and the same for minicolumns): these "exactly one" clauses tie cells and triads together.
- ``configs`` (6, 6): per band (0-2: horizontal bands = box rows; 3-5: vertical bands = box
  columns) and configuration k, the digits that may still be placed as configuration k says.
  A digit occupies one element (minirow of a horizontal band, minicolumn of a vertical one) in
  each of the band's three boxes, one element per box and all three different: 3! = 6 ways.
  ``ELEM[p, k]`` is the element that configuration k uses in the band's box p.
- ``pending`` (6, 6): eliminations sent to a band's configurations, applied when the band is
  next updated (a band collects messages from several boxes before it acts).

Propagation passes messages: a *band update* applies its pending eliminations, asserts every
positive triad left with exactly 3 digits, and restricts each of its 3 boxes to the triads its
configurations still allow; a *box update* applies a restriction, then repeats, until nothing
changes, (a) contradiction checks (a cell with no digit, a negative triad with fewer than 6),
(b) assertions (a cell with one digit, a negative triad with exactly 6, a digit left in only one
place of an exactly-one clause), (c) the eliminations they imply in the box and in its two bands;
then updates its two bands. Calls nest depth first, as tdoku's do; we keep the calls on an explicit
stack (``tasks``) so the order of inference, and hence every branching decision, is the same.
Together these subsume naked and hidden singles and locked candidates.

Search: the band with the fewest configurations left summed over digits (ties to the lowest
band), then in it the lowest digit with exactly 2 configurations left, else exactly 3, else the
lowest with 4 or more; one guess assigns that digit's lowest remaining configuration, and on
failure the configuration is eliminated instead (no guess counted). Search stops at the first
solution.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

ALL = 0x1FF

# ELEM[p, k]: element (0-2) of the band's box p (0-2, along the band) that configuration k uses.
ELEM = np.array([[0, 1, 2, 2, 0, 1], [1, 2, 0, 1, 2, 0], [2, 0, 1, 0, 1, 2]], dtype=np.int64)
POPC = np.array([bin(i).count("1") for i in range(1 << 9)], dtype=np.int32)

MAX_TASKS = 8192  # box and band updates waiting; at most 3 per effective update (< 1600 of them)
MAX_DEPTH = 330  # search levels; each guess fixes a digit in a band (at most 6 * 54 - 54 levels)

TASK_BAND = 0
TASK_BOX = 1

# status codes of rate_one
OK = 0
E_NO_SOLUTION = 1
E_OVERFLOW = 2


# ----------------------------------------------------------------------------- propagation


@njit(cache=True, inline="always")
def _others(a0, a1, a2, e):
    """OR of the two of (a0, a1, a2) other than element e."""
    if e == 0:
        return a1 | a2
    if e == 1:
        return a0 | a2
    return a0 | a1


@njit(cache=True, inline="always")
def _pick(a0, a1, a2, e):
    if e == 0:
        return a0
    if e == 1:
        return a1
    return a2


@njit(cache=True, inline="always")
def _push(tasks, top, kind, index, arg, t0, t1, t2):
    if top >= MAX_TASKS:
        return -2
    tasks[top, 0] = kind
    tasks[top, 1] = index
    tasks[top, 2] = arg
    tasks[top, 3] = t0
    tasks[top, 4] = t1
    tasks[top, 5] = t2
    return top + 1


@njit(cache=True)
def _band_update(bi, from_peer, configs, pending, tasks, top):
    """Apply band ``bi``'s pending eliminations; queue restrictions of its 3 boxes.

    Returns the new stack top (unchanged when nothing was pending), -2 on overflow.
    """
    cf = configs[bi]
    pd = pending[bi]
    new = 0
    for k in range(6):
        new |= cf[k] & pd[k]
    if new == 0:
        return top
    for k in range(6):
        cf[k] &= ~pd[k]
    # positive triads: digits that may sit in element e of box p, (p, e) -> t_pe
    c0, c1, c2, c3, c4, c5 = cf[0], cf[1], cf[2], cf[3], cf[4], cf[5]
    t00, t01, t02 = c0 | c4, c1 | c5, c2 | c3
    t10, t11, t12 = c2 | c5, c0 | c3, c1 | c4
    t20, t21, t22 = c1 | c3, c2 | c4, c0 | c5
    # A triad left with exactly 3 digits holds those 3: they leave the box's other elements.
    # One such round per update (tdoku does not iterate this to a fixed point either).
    a00 = t00 if POPC[t00] == 3 else 0
    a01 = t01 if POPC[t01] == 3 else 0
    a02 = t02 if POPC[t02] == 3 else 0
    a10 = t10 if POPC[t10] == 3 else 0
    a11 = t11 if POPC[t11] == 3 else 0
    a12 = t12 if POPC[t12] == 3 else 0
    a20 = t20 if POPC[t20] == 3 else 0
    a21 = t21 if POPC[t21] == 3 else 0
    a22 = t22 if POPC[t22] == 3 else 0
    if a00 | a01 | a02 | a10 | a11 | a12 | a20 | a21 | a22:
        for k in range(6):
            drop = (
                _others(a00, a01, a02, ELEM[0, k])
                | _others(a10, a11, a12, ELEM[1, k])
                | _others(a20, a21, a22, ELEM[2, k])
            )
            cf[k] &= ~drop
        c0, c1, c2, c3, c4, c5 = cf[0], cf[1], cf[2], cf[3], cf[4], cf[5]
        t00, t01, t02 = c0 | c4, c1 | c5, c2 | c3
        t10, t11, t12 = c2 | c5, c0 | c3, c1 | c4
        t20, t21, t22 = c1 | c3, c2 | c4, c0 | c5
    vertical = 1 if bi >= 3 else 0
    band = bi - 3 * vertical
    # Boxes are restricted in the order from_peer+1, from_peer+2, from_peer (the box the
    # update came from last); pushed in reverse so the first pops first. Each restriction
    # carries the triads as they are now, as a call's arguments would.
    for step in range(3):
        p = (from_peer + 3 - step) % 3  # from_peer, from_peer+2, from_peer+1
        box = band * 3 + p if vertical == 0 else band + 3 * p
        if p == 0:
            top = _push(tasks, top, TASK_BOX, box, vertical, t00, t01, t02)
        elif p == 1:
            top = _push(tasks, top, TASK_BOX, box, vertical, t10, t11, t12)
        else:
            top = _push(tasks, top, TASK_BOX, box, vertical, t20, t21, t22)
        if top < 0:
            return top
    return top


@njit(cache=True)
def _box_update(b, vertical, u0, u1, u2, boxes, pending, elim, asrt, tasks, top):
    """Restrict box ``b`` to the positive triads (u0, u1, u2) of one of its bands and propagate
    inside the box; queue updates of its two bands. Returns the new stack top, -1 on a
    contradiction, -2 on overflow.
    """
    bx = boxes[b]
    any_new = 0
    for r in range(3):
        ur = _pick(u0, u1, u2, r)
        for c in range(3):
            uc = _pick(u0, u1, u2, c)
            allowed = ur if vertical == 0 else uc
            e = bx[4 * r + c] & ~allowed
            elim[4 * r + c] = e
            any_new |= e
        # the negative triads of the band's own orientation: the digit is elsewhere in the band
        allowed = _others(u0, u1, u2, r)
        if vertical == 0:
            e = bx[4 * r + 3] & ~allowed
            elim[4 * r + 3] = e
            elim[12 + r] = 0
        else:
            e = bx[12 + r] & ~allowed
            elim[12 + r] = e
            elim[4 * r + 3] = 0
        any_new |= e
    if any_new == 0:
        return top
    box_row = b // 3
    box_col = b % 3
    hb = box_row
    vb = 3 + box_col
    while True:
        for lane in range(15):
            bx[lane] &= ~elim[lane]
        # (a) contradictions and (b) assertions of the cell and triad minimum clauses
        for lane in range(15):
            n = POPC[bx[lane]]
            need = 6 if (lane & 3) == 3 or lane >= 12 else 1
            if n < need:
                return -1
            asrt[lane] = bx[lane] if n == need else 0
        # (b) a digit left in one place of an exactly-one clause (minirow + its triad, or
        # minicolumn + its triad) is asserted there
        for r in range(3):
            x0, x1, x2, x3 = bx[4 * r], bx[4 * r + 1], bx[4 * r + 2], bx[4 * r + 3]
            twice = (x0 & (x1 | x2 | x3)) | (x1 & (x2 | x3)) | (x2 & x3)
            asrt[4 * r] |= x0 & ~twice
            asrt[4 * r + 1] |= x1 & ~twice
            asrt[4 * r + 2] |= x2 & ~twice
            asrt[4 * r + 3] |= x3 & ~twice
        for c in range(3):
            x0, x1, x2, x3 = bx[c], bx[4 + c], bx[8 + c], bx[12 + c]
            twice = (x0 & (x1 | x2 | x3)) | (x1 & (x2 | x3)) | (x2 & x3)
            asrt[c] |= x0 & ~twice
            asrt[4 + c] |= x1 & ~twice
            asrt[8 + c] |= x2 & ~twice
            asrt[12 + c] |= x3 & ~twice
        # (c) what the asserted cells imply: their other digits go, their digits leave the rest
        # of the box, the negative triads of their minirow and minicolumn, and the band
        # configurations that would put the digit in another element
        row0 = asrt[0] | asrt[1] | asrt[2]
        row1 = asrt[4] | asrt[5] | asrt[6]
        row2 = asrt[8] | asrt[9] | asrt[10]
        col0 = asrt[0] | asrt[4] | asrt[8]
        col1 = asrt[1] | asrt[5] | asrt[9]
        col2 = asrt[2] | asrt[6] | asrt[10]
        whole = row0 | row1 | row2
        for r in range(3):
            for c in range(3):
                a = asrt[4 * r + c]
                if a:
                    elim[4 * r + c] |= ALL & ~a
                else:
                    elim[4 * r + c] |= whole
        elim[3] |= row0
        elim[7] |= row1
        elim[11] |= row2
        elim[12] |= col0
        elim[13] |= col1
        elim[14] |= col2
        # asserted negative triads remove the configurations using that element
        hp = pending[hb]
        vp = pending[vb]
        for k in range(6):
            e = ELEM[box_col, k]
            hp[k] |= asrt[4 * e + 3] | _others(row0, row1, row2, e)
            e = ELEM[box_row, k]
            vp[k] |= asrt[12 + e] | _others(col0, col1, col2, e)
        again = 0
        for lane in range(15):
            again |= elim[lane] & bx[lane]
        if again == 0:
            break
    # Update the band across the inbound orientation first, then the inbound one.
    if vertical == 1:
        top = _push(tasks, top, TASK_BAND, vb, box_row, 0, 0, 0)
        if top < 0:
            return top
        top = _push(tasks, top, TASK_BAND, hb, box_col, 0, 0, 0)
    else:
        top = _push(tasks, top, TASK_BAND, hb, box_col, 0, 0, 0)
        if top < 0:
            return top
        top = _push(tasks, top, TASK_BAND, vb, box_row, 0, 0, 0)
    return top


@njit(cache=True)
def _run_tasks(boxes, configs, pending, elim, asrt, tasks, top):
    """Run queued updates depth first until none is left. Returns 0, -1 (contradiction), -2."""
    while top > 0:
        top -= 1
        kind = tasks[top, 0]
        if kind == TASK_BAND:
            top = _band_update(tasks[top, 1], tasks[top, 2], configs, pending, tasks, top)
        else:
            top = _box_update(
                tasks[top, 1],
                tasks[top, 2],
                tasks[top, 3],
                tasks[top, 4],
                tasks[top, 5],
                boxes,
                pending,
                elim,
                asrt,
                tasks,
                top,
            )
        if top < 0:
            return top
    return 0


@njit(cache=True)
def _init_state(grid, boxes, configs, pending, elim, asrt, tasks):
    """Clues into a fresh state, then propagate. Returns 0, -1 (contradiction) or -2."""
    boxes[:, :] = ALL
    configs[:, :] = ALL
    pending[:, :] = 0
    for cell in range(81):
        d = grid[cell]
        if d == 0:
            continue
        m = 1 << (d - 1)
        row, col = cell // 9, cell % 9
        box_row, box_col = row // 3, col // 3
        er, ec = row % 3, col % 3
        bx = boxes[box_row * 3 + box_col]
        # The clue in its own box only (no propagation yet): the cell keeps d, its box
        # neighbours and the negative triads of its minirow and minicolumn lose it.
        for r in range(3):
            for c in range(3):
                if r == er and c == ec:
                    bx[4 * r + c] &= m
                else:
                    bx[4 * r + c] &= ~m
        bx[4 * er + 3] &= ~m
        bx[12 + ec] &= ~m
        # band messages: d is in element er of box box_col of the horizontal band, and in
        # element ec of box box_row of the vertical band
        for k in range(6):
            if ELEM[box_col, k] != er:
                pending[box_row, k] |= m
            if ELEM[box_row, k] != ec:
                pending[3 + box_col, k] |= m
    # One update of each band, in the order (horizontal, vertical) x (0, 1, 2), each from the
    # box after it; usually the first does nearly all the work.
    top = 0
    for step in range(6):
        i = 5 - step  # pushed in reverse: the first pops first
        band = i // 2
        bi = band + 3 * (i % 2)
        top = _push(tasks, top, TASK_BAND, bi, (band + 1) % 3, 0, 0, 0)
    return _run_tasks(boxes, configs, pending, elim, asrt, tasks, top)


# ----------------------------------------------------------------------------- search


@njit(cache=True)
def _choose(configs):
    """(band, digit mask) to branch on, or (-1, 0) when every band is fixed."""
    best = -1
    best_val = 0x10000
    for bi in range(6):
        n = 0
        for k in range(6):
            n += POPC[configs[bi, k]]
        # a fixed band has 9 configurations (one per digit); unsigned 16-bit arithmetic makes
        # it, and anything smaller, lose to every band still open
        val = (n - 10) & 0xFFFF
        if val < best_val:
            best_val = val
            best = bi
    if best_val >= 0x100:
        return -1, 0
    cf = configs[best]
    once = 0
    twice = 0
    thrice = 0
    four = 0
    for k in range(6):
        x = cf[k]
        four |= thrice & x
        thrice |= twice & x
        twice |= once & x
        once |= x
    only2 = twice & ~thrice
    if only2:
        return best, only2 & -only2
    only3 = thrice & ~four
    if only3:
        return best, only3 & -only3
    return best, four & -four


@njit(cache=True)
def rate_one(
    grid, solution, work_boxes, work_configs, work_pending, elim, asrt, tasks, guess_band, guess_cfg
):
    """Guesses before the first solution of one 9x9 grid, and that solution.

    Returns (guesses, status): status OK with ``solution`` filled, E_NO_SOLUTION (guesses of the
    whole search), or E_OVERFLOW (a work buffer ran out; not seen on real puzzles).
    """
    guesses = 0
    rc = _init_state(grid, work_boxes[0], work_configs[0], work_pending[0], elim, asrt, tasks)
    if rc == -2:
        return guesses, E_OVERFLOW
    if rc == -1:
        return guesses, E_NO_SOLUTION
    level = 0
    while True:
        band, digit = _choose(work_configs[level])
        if band < 0:
            bx = work_boxes[level]
            for cell in range(81):
                row, col = cell // 9, cell % 9
                m = bx[(row // 3) * 3 + col // 3, 4 * (row % 3) + col % 3]
                d = 0
                while m and not (m >> d) & 1:
                    d += 1
                solution[cell] = d + 1 if m else 0
            return guesses, OK
        if digit == 0 or level + 1 >= MAX_DEPTH:
            return guesses, E_OVERFLOW
        guesses += 1
        cf = work_configs[level, band]
        first = -1
        for k in range(6):
            if cf[k] & digit:
                first = k
                break
        guess_band[level] = band
        guess_cfg[level] = first | (digit << 8)  # configuration and digit of the guess
        # the guess: digit takes configuration `first` in this band (its others are eliminated)
        work_boxes[level + 1] = work_boxes[level]
        work_configs[level + 1] = work_configs[level]
        work_pending[level + 1] = work_pending[level]
        for k in range(6):
            if k != first and cf[k] & digit:
                work_pending[level + 1, band, k] |= digit
        rc = _run_tasks(
            work_boxes[level + 1],
            work_configs[level + 1],
            work_pending[level + 1],
            elim,
            asrt,
            tasks,
            _push(tasks, 0, TASK_BAND, band, 0, 0, 0, 0),
        )
        if rc == -2:
            return guesses, E_OVERFLOW
        if rc == 0:
            level += 1
            continue
        # the guess failed, or everything below it did: eliminate the guessed configuration
        while True:
            gb = guess_band[level]
            k = guess_cfg[level] & 0xFF
            bit = guess_cfg[level] >> 8
            work_pending[level, gb, k] |= bit
            rc = _run_tasks(
                work_boxes[level],
                work_configs[level],
                work_pending[level],
                elim,
                asrt,
                tasks,
                _push(tasks, 0, TASK_BAND, gb, 0, 0, 0, 0),
            )
            if rc == -2:
                return guesses, E_OVERFLOW
            if rc == 0:
                break
            level -= 1
            if level < 0:
                return guesses, E_NO_SOLUTION


@njit(cache=True, parallel=True)
def rate_batch(grids, n_chunks):
    """Band-triad guess counts of (B, 81) int8 grids, in ``n_chunks`` contiguous chunks run in
    parallel (work buffers are allocated once per chunk). Each puzzle's result depends on that
    puzzle alone.

    Returns solutions (B, 81) int8 (zeros where none) and stats (B, 2) int64: [guesses, status].
    """
    b = grids.shape[0]
    solutions = np.zeros((b, 81), np.int8)
    stats = np.zeros((b, 2), np.int64)
    n_chunks = max(1, min(n_chunks, b))
    for ch in prange(n_chunks):
        work_boxes = np.empty((MAX_DEPTH, 9, 16), np.int32)
        work_configs = np.empty((MAX_DEPTH, 6, 6), np.int32)
        work_pending = np.empty((MAX_DEPTH, 6, 6), np.int32)
        elim = np.empty(16, np.int32)
        asrt = np.empty(16, np.int32)
        tasks = np.empty((MAX_TASKS, 6), np.int32)
        guess_band = np.empty(MAX_DEPTH, np.int64)
        guess_cfg = np.empty(MAX_DEPTH, np.int64)
        for i in range(ch * b // n_chunks, (ch + 1) * b // n_chunks):
            g, st = rate_one(
                grids[i],
                solutions[i],
                work_boxes,
                work_configs,
                work_pending,
                elim,
                asrt,
                tasks,
                guess_band,
                guess_cfg,
            )
            stats[i, 0] = g
            stats[i, 1] = st
    return solutions, stats
