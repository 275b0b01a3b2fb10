"""Numba kernels of the band-triad rater: tdoku's guess count for 9x9 puzzles
(docs/reference.md, "tdoku's rating as an algorithm").

The public Sudoku-Extreme ``rating`` is the number of guesses t-dillon/tdoku's DPLL-triad solver
makes before its first solution. That count depends on exactly what the solver's propagation
infers, in what order, and on which band and digit it branches; so this module follows the
published algorithm (tdoku ``docs/sudoku.md``, "Getting Vectorized" and "The Fast SIMD Solver")
step for step, in Numba: 16-bit lanes of 64-bit words where tdoku keeps SIMD vectors.

State of one search node, each array with a leading search-level axis (a guess works on a copy
at the next level); all digit sets are 9-bit masks, bit d-1 for digit d:

- ``boxes`` (levels, 9, 4) uint64: per box (row-major box index) a 4x4 matrix of digit sets, one
  64-bit word per matrix row r and one 16-bit lane per column c (bits 16c .. 16c+8):
  ``r, c < 3`` is the cell in box row r, box column c (its candidates); ``(r, 3)`` is the
  *negative row triad* of minirow r (the digits that may be absent from that minirow);
  ``(3, c)`` is the negative column triad of minicolumn c; ``(3, 3)`` is unused (all digits).
  Each digit is in exactly one of {the three cells of a minirow, the minirow's negative triad}
  (and the same for minicolumns): these "exactly one" clauses tie cells and triads together.
  Lane-parallel bit tricks on the four words (SWAR) stand in for tdoku's SIMD vectors.
- ``configs`` (levels, 6, 6): per band (0-2: horizontal bands = box rows; 3-5: vertical bands = box
  columns) and configuration k, the digits that may still be placed as configuration k says.
  A digit occupies one element (minirow of a horizontal band, minicolumn of a vertical one) in
  each of the band's three boxes, one element per box and all three different: 3! = 6 ways.
  ``ELEM[p, k]`` is the element that configuration k uses in the band's box p.
- ``pending`` (levels, 6, 6): eliminations sent to a band's configurations, applied when the band is
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

U = np.uint64
LANES = U(0x01FF01FF01FF01FF)  # every lane full
CELLS = U(0x000001FF01FF01FF)  # lanes 0-2 (the cells of a row word, the triads of word 3)
HIGH = U(0x8000800080008000)  # the top bit of each lane, for lane-wise compare
ONES = U(0x0001000100010001)
NEED_ROW = U(0x0006000100010001)  # cells need >= 1 digit, negative triads >= 6 (lanes 0-2, 3)
NEED_TRIADS = U(0x0000000600060006)  # word 3: triads >= 6, the unused lane >= 0
M55 = U(0x5555555555555555)
M33 = U(0x3333333333333333)
M0F = U(0x0F0F0F0F0F0F0F0F)
M1F = U(0x001F001F001F001F)
L9 = U(0x1FF)
S1, S2, S4, S8, S15, S16, S32, S48 = U(1), U(2), U(4), U(8), U(15), U(16), U(32), U(48)

MAX_TASKS = 8192  # box and band updates waiting; at most 3 per effective update (< 1600 of them)
MAX_DEPTH = 64  # search levels: each level below fixes one more (band, digit), at most 6 * 9

TASK_BAND = 0
TASK_BOX = 1

# status codes of rate_one
OK = 0
E_NO_SOLUTION = 1
E_OVERFLOW = 2


# ----------------------------------------------------------------------------- propagation


@njit(cache=True, inline="always")
def _by_config(p, x0, x1, x2):
    """Per configuration k, x[ELEM[p, k]]: what an element-wise message (x0, x1, x2) from the
    band's box p says about each of the band's 6 configurations."""
    if p == 0:
        return x0, x1, x2, x2, x0, x1
    if p == 1:
        return x1, x2, x0, x1, x2, x0
    return x2, x0, x1, x0, x1, x2


@njit(cache=True, inline="always")
def _lane_counts(w):
    """Popcount of each 16-bit lane of w (lanes hold at most 9 bits)."""
    x = w - ((w >> S1) & M55)
    x = (x & M33) + ((x >> S2) & M33)
    x = (x + (x >> S4)) & M0F
    return (x + (x >> S8)) & M1F


@njit(cache=True, inline="always")
def _lanes_below(counts, need):
    """True when some lane of ``counts`` is below the same lane of ``need``."""
    return (((counts | HIGH) - need) & HIGH) != HIGH


@njit(cache=True, inline="always")
def _lane_mask(top_bits):
    """0x7FFF in each lane whose top bit is set, 0 elsewhere."""
    return top_bits - (top_bits >> S15)


@njit(cache=True, inline="always")
def _equal_mask(counts, need):
    nonzero = (((counts ^ need) | HIGH) - ONES) & HIGH
    return _lane_mask(HIGH & ~nonzero)


@njit(cache=True, inline="always")
def _nonzero_mask(w):
    return _lane_mask(((w | HIGH) - ONES) & HIGH)


@njit(cache=True, inline="always")
def _once_in_row(w):
    """Digits in exactly one lane of the row word w, kept in the lane that holds them."""
    r1 = (w >> S16) | (w << S48)
    r2 = (w >> S32) | (w << S32)
    r3 = (w >> S48) | (w << S16)
    twice = (w & (r1 | r2 | r3)) | (r1 & (r2 | r3)) | (r2 & r3)
    return w & ~twice


@njit(cache=True, inline="always")
def _spread3(x):
    """A 9-bit set copied into lanes 0-2."""
    return x | (x << S16) | (x << S32)


@njit(cache=True, inline="always")
def _triads(c0, c1, c2, c3, c4, c5):
    """Positive triads t_pe (digits that may sit in element e of the band's box p) of a band's
    configurations: t_pe is the union of the configurations k with ELEM[p, k] == e."""
    return (c0 | c4, c1 | c5, c2 | c3, c2 | c5, c0 | c3, c1 | c4, c1 | c3, c2 | c4, c0 | c5)


@njit(cache=True, inline="always")
def _if_three(t):
    return t if POPC[t] == 3 else 0


@njit(cache=True)
def _propagate(lv, boxes, configs, pending, tasks, top):
    """Run the queued band and box updates of search level ``lv``, depth first, until none is
    left. Returns 0, -1 on a contradiction, -2 when the task stack overflows.

    Task rows: [TASK_BAND, band, from_peer, ...] or [TASK_BOX, box, vertical, t0, t1, t2]. Both
    updates are written out here rather than as functions taking the state arrays: every
    compiled call with array arguments costs atomic reference counts, which cost more than the
    updates themselves. Callers pass np.int64 values, so that Numba compiles this large loop once
    rather than once more per literal argument.
    """
    while top > 0:
        top -= 1
        if top + 3 > MAX_TASKS:
            return -2
        if tasks[top, 0] == TASK_BAND:
            # ---- band update: apply pending eliminations, then restrict the band's 3 boxes
            bi = tasks[top, 1]
            from_peer = tasks[top, 2]
            new = 0
            for k in range(6):
                new |= configs[lv, bi, k] & pending[lv, bi, k]
            if new == 0:
                continue
            for k in range(6):
                configs[lv, bi, k] &= ~pending[lv, bi, k]
            c0, c1, c2 = configs[lv, bi, 0], configs[lv, bi, 1], configs[lv, bi, 2]
            c3, c4, c5 = configs[lv, bi, 3], configs[lv, bi, 4], configs[lv, bi, 5]
            t00, t01, t02, t10, t11, t12, t20, t21, t22 = _triads(c0, c1, c2, c3, c4, c5)
            # A triad left with exactly 3 digits holds those 3: they leave the box's other
            # elements. One such round per update (tdoku does not iterate it to a fixed point).
            a00, a01, a02 = _if_three(t00), _if_three(t01), _if_three(t02)
            a10, a11, a12 = _if_three(t10), _if_three(t11), _if_three(t12)
            a20, a21, a22 = _if_three(t20), _if_three(t21), _if_three(t22)
            if a00 | a01 | a02 | a10 | a11 | a12 | a20 | a21 | a22:
                # configuration k uses elements (ELEM[0, k], ELEM[1, k], ELEM[2, k]) of boxes
                # 0, 1, 2; it loses the digits asserted in any other element of any of them
                n00, n01, n02 = a01 | a02, a00 | a02, a00 | a01
                n10, n11, n12 = a11 | a12, a10 | a12, a10 | a11
                n20, n21, n22 = a21 | a22, a20 | a22, a20 | a21
                c0 &= ~(n00 | n11 | n22)
                c1 &= ~(n01 | n12 | n20)
                c2 &= ~(n02 | n10 | n21)
                c3 &= ~(n02 | n11 | n20)
                c4 &= ~(n00 | n12 | n21)
                c5 &= ~(n01 | n10 | n22)
                configs[lv, bi, 0], configs[lv, bi, 1], configs[lv, bi, 2] = c0, c1, c2
                configs[lv, bi, 3], configs[lv, bi, 4], configs[lv, bi, 5] = c3, c4, c5
                t00, t01, t02, t10, t11, t12, t20, t21, t22 = _triads(c0, c1, c2, c3, c4, c5)
            vertical = 1 if bi >= 3 else 0
            band = bi - 3 * vertical
            # Boxes are restricted in the order from_peer+1, from_peer+2, from_peer (the box
            # the update came from last): pushed in reverse, so the first pops first. Each
            # restriction carries the triads as they are now, as a call's arguments would.
            for step in range(3):
                p = (from_peer + 3 - step) % 3  # from_peer, from_peer+2, from_peer+1
                tasks[top, 0] = TASK_BOX
                tasks[top, 1] = band * 3 + p if vertical == 0 else band + 3 * p
                tasks[top, 2] = vertical
                if p == 0:
                    tasks[top, 3], tasks[top, 4], tasks[top, 5] = t00, t01, t02
                elif p == 1:
                    tasks[top, 3], tasks[top, 4], tasks[top, 5] = t10, t11, t12
                else:
                    tasks[top, 3], tasks[top, 4], tasks[top, 5] = t20, t21, t22
                top += 1
            continue

        # ---- box update: restrict box b to the positive triads (t0, t1, t2) of one of its
        # bands, propagate inside the box, then update its two bands
        b = tasks[top, 1]
        vertical = tasks[top, 2]
        t0, t1, t2 = U(tasks[top, 3]), U(tasks[top, 4]), U(tasks[top, 5])
        w0, w1, w2, w3 = boxes[lv, b, 0], boxes[lv, b, 1], boxes[lv, b, 2], boxes[lv, b, 3]
        o0, o1, o2 = t1 | t2, t0 | t2, t0 | t1  # the digit sits in another element
        if vertical == 0:
            # cells of minirow r may hold only t_r; its negative triad only the others
            e0 = w0 & ~(_spread3(t0) | (o0 << S48))
            e1 = w1 & ~(_spread3(t1) | (o1 << S48))
            e2 = w2 & ~(_spread3(t2) | (o2 << S48))
            e3 = U(0)
        else:
            # cells of minicolumn c may hold only t_c; its negative triad only the others
            cols = t0 | (t1 << S16) | (t2 << S32) | (L9 << S48)
            e0 = w0 & ~cols
            e1 = w1 & ~cols
            e2 = w2 & ~cols
            e3 = w3 & ~(o0 | (o1 << S16) | (o2 << S32) | (L9 << S48))
        if (e0 | e1 | e2 | e3) == 0:
            continue
        box_row = b // 3
        box_col = b % 3
        hb = box_row
        vb = 3 + box_col
        while True:
            w0 &= ~e0
            w1 &= ~e1
            w2 &= ~e2
            w3 &= ~e3
            # (a) contradictions and (b) assertions of the cell and triad minimum clauses
            n0, n1, n2, n3 = _lane_counts(w0), _lane_counts(w1), _lane_counts(w2), _lane_counts(w3)
            if (
                _lanes_below(n0, NEED_ROW)
                or _lanes_below(n1, NEED_ROW)
                or _lanes_below(n2, NEED_ROW)
                or _lanes_below(n3, NEED_TRIADS)
            ):
                return -1  # the level's state is dropped: the caller backtracks
            a0 = w0 & _equal_mask(n0, NEED_ROW)
            a1 = w1 & _equal_mask(n1, NEED_ROW)
            a2 = w2 & _equal_mask(n2, NEED_ROW)
            a3 = w3 & _equal_mask(n3, NEED_TRIADS)
            # (b) a digit left in one place of an exactly-one clause (minirow + its triad: one
            # row word; minicolumn + its triad: one lane of all four words) is asserted there
            a0 |= _once_in_row(w0)
            a1 |= _once_in_row(w1)
            a2 |= _once_in_row(w2)
            twice = (w0 & (w1 | w2 | w3)) | (w1 & (w2 | w3)) | (w2 & w3)
            a0 |= w0 & ~twice
            a1 |= w1 & ~twice
            a2 |= w2 & ~twice
            a3 = (a3 | (w3 & ~twice)) & CELLS  # lane 3 of word 3 is no clause
            # (c) what the asserted cells imply: their other digits go, their digits leave the
            # rest of the box, the negative triads of their minirow and minicolumn, and the
            # band configurations that would put the digit in another element
            c0, c1, c2 = a0 & CELLS, a1 & CELLS, a2 & CELLS
            row0 = (c0 | (c0 >> S16) | (c0 >> S32)) & L9
            row1 = (c1 | (c1 >> S16) | (c1 >> S32)) & L9
            row2 = (c2 | (c2 >> S16) | (c2 >> S32)) & L9
            cols = c0 | c1 | c2
            whole = _spread3(row0 | row1 | row2)
            m0, m1, m2 = _nonzero_mask(c0), _nonzero_mask(c1), _nonzero_mask(c2)
            e0 |= (((m0 & ~c0) | (~m0 & whole)) & CELLS) | (row0 << S48)
            e1 |= (((m1 & ~c1) | (~m1 & whole)) & CELLS) | (row1 << S48)
            e2 |= (((m2 & ~c2) | (~m2 & whole)) & CELLS) | (row2 << S48)
            e3 |= cols
            col0, col1, col2 = cols & L9, (cols >> S16) & L9, (cols >> S32) & L9
            # band messages, per element e of this box: an asserted negative triad removes
            # the configurations using e; a digit asserted in element e removes the others
            h0 = np.int64(((a0 >> S48) & L9) | row1 | row2)
            h1 = np.int64(((a1 >> S48) & L9) | row0 | row2)
            h2 = np.int64(((a2 >> S48) & L9) | row0 | row1)
            v0 = np.int64((a3 & L9) | col1 | col2)
            v1 = np.int64(((a3 >> S16) & L9) | col0 | col2)
            v2 = np.int64(((a3 >> S32) & L9) | col0 | col1)
            if h0 | h1 | h2:
                x0, x1, x2, x3, x4, x5 = _by_config(box_col, h0, h1, h2)
                pending[lv, hb, 0] |= x0
                pending[lv, hb, 1] |= x1
                pending[lv, hb, 2] |= x2
                pending[lv, hb, 3] |= x3
                pending[lv, hb, 4] |= x4
                pending[lv, hb, 5] |= x5
            if v0 | v1 | v2:
                x0, x1, x2, x3, x4, x5 = _by_config(box_row, v0, v1, v2)
                pending[lv, vb, 0] |= x0
                pending[lv, vb, 1] |= x1
                pending[lv, vb, 2] |= x2
                pending[lv, vb, 3] |= x3
                pending[lv, vb, 4] |= x4
                pending[lv, vb, 5] |= x5
            if ((e0 & w0) | (e1 & w1) | (e2 & w2) | (e3 & w3)) == 0:
                break
        boxes[lv, b, 0], boxes[lv, b, 1], boxes[lv, b, 2], boxes[lv, b, 3] = w0, w1, w2, w3
        # Update the band across the inbound orientation first, then the inbound one (pushed
        # in reverse).
        first, first_from, second, second_from = vb, box_row, hb, box_col
        if vertical == 1:
            first, first_from, second, second_from = hb, box_col, vb, box_row
        tasks[top, 0], tasks[top, 1], tasks[top, 2] = TASK_BAND, second, second_from
        tasks[top + 1, 0], tasks[top + 1, 1], tasks[top + 1, 2] = TASK_BAND, first, first_from
        top += 2
    return 0


@njit(cache=True)
def _init_state(grid, boxes, configs, pending, tasks):
    """Clues into a fresh state at level 0, then propagate. Returns 0, -1 (contradiction) or -2."""
    lv = 0
    boxes[lv] = LANES
    configs[lv] = ALL
    pending[lv] = 0
    for cell in range(81):
        d = grid[cell]
        if d == 0:
            continue
        m = 1 << (d - 1)
        row, col = cell // 9, cell % 9
        box_row, box_col = row // 3, col // 3
        er, ec = row % 3, col % 3
        b = box_row * 3 + box_col
        # The clue in its own box only (no propagation yet): the cell keeps d, its box
        # neighbours and the negative triads of its minirow and minicolumn lose it.
        um = U(m)
        here = U(16 * ec)
        for r in range(3):
            if r == er:
                boxes[lv, b, r] &= ~((_spread3(um) & ~(L9 << here)) | ((L9 & ~um) << here) | (um << S48))
            else:
                boxes[lv, b, r] &= ~_spread3(um)
        boxes[lv, b, 3] &= ~(um << here)
        # band messages: d is in element er of box box_col of the horizontal band, and in
        # element ec of box box_row of the vertical band
        for k in range(6):
            if ELEM[box_col, k] != er:
                pending[lv, box_row, k] |= m
            if ELEM[box_row, k] != ec:
                pending[lv, 3 + box_col, k] |= m
    # One update of each band, in the order (horizontal, vertical) x (0, 1, 2), each from the
    # box after it; usually the first does nearly all the work.
    top = 0
    for step in range(6):
        i = 5 - step  # pushed in reverse: the first pops first
        band = i // 2
        bi = band + 3 * (i % 2)
        tasks[top, 0], tasks[top, 1], tasks[top, 2] = TASK_BAND, bi, (band + 1) % 3
        top += 1
    return _propagate(np.int64(lv), boxes, configs, pending, tasks, np.int64(top))


# ----------------------------------------------------------------------------- search


@njit(cache=True)
def _choose(lv, configs):
    """(band, digit mask) to branch on, or (-1, 0) when every band is fixed."""
    best = -1
    best_val = 0x10000
    for bi in range(6):
        n = 0
        for k in range(6):
            n += POPC[configs[lv, bi, k]]
        # a fixed band has 9 configurations (one per digit); unsigned 16-bit arithmetic makes
        # it, and anything smaller, lose to every band still open
        val = (n - 10) & 0xFFFF
        if val < best_val:
            best_val = val
            best = bi
    if best_val >= 0x100:
        return -1, 0
    once = 0
    twice = 0
    thrice = 0
    four = 0
    for k in range(6):
        x = configs[lv, best, k]
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
    return best, four & -four  # nonzero: an open band has >= 10 configurations for 9 digits


@njit(cache=True)
def _copy_level(boxes, configs, pending, lv):
    """The state of level lv copied to level lv + 1 (a guess works on the copy)."""
    for b in range(9):
        for r in range(4):
            boxes[lv + 1, b, r] = boxes[lv, b, r]
    for bi in range(6):
        for k in range(6):
            configs[lv + 1, bi, k] = configs[lv, bi, k]
            pending[lv + 1, bi, k] = pending[lv, bi, k]


@njit(cache=True)
def _guess(level, band, digit, boxes, configs, pending, tasks, guess_band, guess_cfg):
    """Guess that ``digit`` takes its lowest remaining configuration in ``band`` (its others
    eliminated), on a copy of ``level`` at ``level + 1``, and propagate there. Records the guess
    for :func:`_undo`. Returns :func:`_propagate`'s code (0, -1 contradiction, -2 overflow)."""
    first = -1
    for k in range(6):
        if configs[level, band, k] & digit:
            first = k
            break
    guess_band[level] = band
    guess_cfg[level] = first | (digit << 8)  # configuration and digit of the guess
    _copy_level(boxes, configs, pending, level)
    for k in range(first + 1, 6):
        if configs[level, band, k] & digit:
            pending[level + 1, band, k] |= digit
    tasks[0, 0], tasks[0, 1], tasks[0, 2] = TASK_BAND, band, 0
    return _propagate(level + 1, boxes, configs, pending, tasks, np.int64(1))


@njit(cache=True)
def _undo(level, boxes, configs, pending, tasks, guess_band, guess_cfg):
    """Everything below the guess made at ``level`` failed (or was counted): eliminate the guessed
    configuration there and propagate, going up a level while that fails too. Returns the level
    the search goes on from, -1 when the whole search is done, or -2 (a work buffer ran out)."""
    while level >= 0:
        gb = guess_band[level]
        pending[level, gb, guess_cfg[level] & 0xFF] |= guess_cfg[level] >> 8
        tasks[0, 0], tasks[0, 1], tasks[0, 2] = TASK_BAND, gb, 0
        rc = _propagate(level, boxes, configs, pending, tasks, np.int64(1))
        if rc == -2:
            return -2
        if rc == 0:
            return level
        level -= 1
    return -1


@njit(cache=True)
def count_solutions(grid, limit, boxes, configs, pending, tasks, guess_band, guess_cfg):
    """Solutions of one 9x9 grid, counted up to ``limit`` (>= 1) by the same band-triad DPLL as
    :func:`rate_one`: on each solution the search backtracks as if the last guess had failed, so
    every branch is explored once (a guess and its negation partition the grid's solutions).
    Work space as in :func:`rate_one`. Returns (solutions, status) with status OK or E_OVERFLOW.
    """
    found = 0
    rc = _init_state(grid, boxes, configs, pending, tasks)
    if rc == -2:
        return found, E_OVERFLOW
    if rc == -1:
        return found, OK
    level = np.int64(0)
    while True:
        band, digit = _choose(level, configs)
        if band >= 0:
            if digit == 0 or level + 1 >= MAX_DEPTH:
                return found, E_OVERFLOW
            rc = _guess(level, band, digit, boxes, configs, pending, tasks, guess_band, guess_cfg)
            if rc == -2:
                return found, E_OVERFLOW
            if rc == 0:
                level += 1
                continue
        else:
            # every band fixed: one solution; go on below the last guess's negation
            found += 1
            if found >= limit or level == 0:
                return found, OK
            level -= 1
        level = _undo(level, boxes, configs, pending, tasks, guess_band, guess_cfg)
        if level == -2:
            return found, E_OVERFLOW
        if level == -1:
            return found, OK


@njit(cache=True)
def rate_one(grid, solution, boxes, configs, pending, tasks, guess_band, guess_cfg):
    """Guesses before the first solution of one 9x9 grid, and that solution.

    ``boxes``, ``configs``, ``pending``: work space for (MAX_DEPTH, ...) search levels, indexed
    by level (never sliced into views: in compiled loops each view costs atomic reference
    counting, which took more time than the search itself).
    Returns (guesses, status): status OK with ``solution`` filled, E_NO_SOLUTION (guesses of the
    whole search), or E_OVERFLOW (a work buffer ran out; not seen on real puzzles).
    """
    guesses = 0
    rc = _init_state(grid, boxes, configs, pending, tasks)
    if rc == -2:
        return guesses, E_OVERFLOW
    if rc == -1:
        return guesses, E_NO_SOLUTION
    level = np.int64(0)
    while True:
        band, digit = _choose(level, configs)
        if band < 0:
            for cell in range(81):
                row, col = cell // 9, cell % 9
                m = np.int64((boxes[level, (row // 3) * 3 + col // 3, row % 3] >> U(16 * (col % 3))) & L9)
                d = 0
                while m and not (m >> d) & 1:
                    d += 1
                solution[cell] = d + 1 if m else 0
            return guesses, OK
        if digit == 0 or level + 1 >= MAX_DEPTH:  # neither can happen (see MAX_DEPTH, _choose)
            return guesses, E_OVERFLOW
        guesses += 1
        rc = _guess(level, band, digit, boxes, configs, pending, tasks, guess_band, guess_cfg)
        if rc == -2:
            return guesses, E_OVERFLOW
        if rc == 0:
            level += 1
            continue
        # the guess failed, or everything below it did: eliminate the guessed configuration
        level = _undo(level, boxes, configs, pending, tasks, guess_band, guess_cfg)
        if level == -2:
            return guesses, E_OVERFLOW
        if level == -1:
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
        boxes = np.empty((MAX_DEPTH, 9, 4), np.uint64)
        configs = np.empty((MAX_DEPTH, 6, 6), np.int32)
        pending = np.empty((MAX_DEPTH, 6, 6), np.int32)
        tasks = np.empty((MAX_TASKS, 6), np.int32)
        guess_band = np.empty(MAX_DEPTH, np.int64)
        guess_cfg = np.empty(MAX_DEPTH, np.int64)
        for i in range(ch * b // n_chunks, (ch + 1) * b // n_chunks):
            g, st = rate_one(
                grids[i],
                solutions[i],
                boxes,
                configs,
                pending,
                tasks,
                guess_band,
                guess_cfg,
            )
            stats[i, 0] = g
            stats[i, 1] = st
    return solutions, stats


@njit(cache=True, parallel=True)
def count_batch(grids, limit):
    """Solutions of each (B, 81) int8 grid counted up to ``limit`` by :func:`count_solutions`
    (-1 where a work buffer ran out), one grid per iteration in parallel."""
    b = grids.shape[0]
    counts = np.zeros(b, np.int64)
    for i in prange(b):
        boxes = np.empty((MAX_DEPTH, 9, 4), np.uint64)
        configs = np.empty((MAX_DEPTH, 6, 6), np.int32)
        pending = np.empty((MAX_DEPTH, 6, 6), np.int32)
        tasks = np.empty((MAX_TASKS, 6), np.int32)
        guess_band = np.empty(MAX_DEPTH, np.int64)
        guess_cfg = np.empty(MAX_DEPTH, np.int64)
        c, st = count_solutions(grids[i], limit, boxes, configs, pending, tasks, guess_band, guess_cfg)
        counts[i] = c if st == OK else -1
    return counts
