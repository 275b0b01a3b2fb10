"""Independent Sudoku oracles for the tests (no code shared with puzzles.sudoku)."""

import numba
import numpy as np


@numba.njit(cache=True)
def _plain_count(grid, n, br, bc, limit):
    """Independent solution counter: cell-by-cell backtracking with used-digit masks only."""
    ncell = n * n
    g = grid.copy()
    rowm = np.zeros(n, np.int64)
    colm = np.zeros(n, np.int64)
    boxm = np.zeros(n, np.int64)
    for c in range(ncell):
        if g[c]:
            r, k = c // n, c % n
            b = (r // br) * (n // bc) + k // bc
            bit = 1 << g[c]
            if (rowm[r] | colm[k] | boxm[b]) & bit:
                return 0
            rowm[r] |= bit
            colm[k] |= bit
            boxm[b] |= bit
    empties = np.flatnonzero(g == 0)
    ne = empties.shape[0]
    stack = np.zeros(ne + 1, np.int64)  # next digit to try at each depth
    depth = 0
    count = 0
    stack[0] = 1
    while depth >= 0:
        if depth == ne:
            count += 1
            if count >= limit:
                return count
            depth -= 1
            continue
        c = empties[depth]
        r, k = c // n, c % n
        b = (r // br) * (n // bc) + k // bc
        if g[c]:  # undo the previous placement at this depth
            bit = 1 << g[c]
            rowm[r] &= ~bit
            colm[k] &= ~bit
            boxm[b] &= ~bit
            g[c] = 0
        d = stack[depth]
        placed = False
        while d <= n:
            bit = 1 << d
            if not ((rowm[r] | colm[k] | boxm[b]) & bit):
                g[c] = d
                rowm[r] |= bit
                colm[k] |= bit
                boxm[b] |= bit
                stack[depth] = d + 1
                placed = True
                break
            d += 1
        if placed:
            depth += 1
            if depth < ne:
                stack[depth] = 1
        else:
            depth -= 1
    return count


def plain_count(grid, box=(3, 3), limit=2):
    br, bc = box
    return _plain_count(np.asarray(grid, dtype=np.int64), br * bc, br, bc, limit)
