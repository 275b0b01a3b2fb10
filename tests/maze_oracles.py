"""Independent oracles for the maze tests: scipy BFS (from S and between all cells), a heapq A* written
from the public recipe's description, brute-force enumeration of simple paths, and a count of
far-apart pairs with a unique shortest path from distances alone."""

from __future__ import annotations

import heapq

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from puzzles import maze as pm


def random_question(rng: np.random.Generator, side: int, wall_share: float) -> np.ndarray:
    grid = np.where(rng.random((side, side)) < wall_share, pm.WALL, pm.OPEN).astype(np.uint8)
    free = np.argwhere(grid == pm.OPEN)
    if len(free) < 2:
        grid[0, 0] = grid[0, 1] = pm.OPEN
        free = np.argwhere(grid == pm.OPEN)
    a, b = rng.choice(len(free), 2, replace=False)
    grid[tuple(free[a])] = pm.START
    grid[tuple(free[b])] = pm.GOAL
    return grid


def scipy_distances(grid: np.ndarray) -> np.ndarray:
    """BFS distances from S through scipy's graph routines (unit weights), -1 when unreachable."""
    side = grid.shape[0]
    openm = grid != pm.WALL
    rows, cols = [], []
    for r, c in zip(*np.nonzero(openm), strict=True):
        for rr, cc in ((r + 1, c), (r, c + 1)):
            if rr < side and cc < side and openm[rr, cc]:
                rows += [r * side + c, rr * side + cc]
                cols += [rr * side + cc, r * side + c]
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(side * side, side * side)).tocsr()
    s = int(np.flatnonzero(grid == pm.START)[0])
    d = shortest_path(g, unweighted=True, indices=s)
    out = np.where(np.isinf(d), -1, d).astype(np.int64).reshape(side, side)
    out[~openm] = -1
    return out


def all_pairs_distances(grid: np.ndarray) -> np.ndarray:
    """(side^2, side^2) BFS distances between all cells through scipy, -1 when unreachable or a wall."""
    side = grid.shape[0]
    openm = (grid != pm.WALL).reshape(-1)
    rows, cols = [], []
    for p in np.flatnonzero(openm):
        r, c = divmod(int(p), side)
        for rr, cc in ((r + 1, c), (r, c + 1)):
            if rr < side and cc < side and openm[rr * side + cc]:
                rows += [p, rr * side + cc]
                cols += [rr * side + cc, p]
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(side * side, side * side)).tocsr()
    d = shortest_path(g, unweighted=True)
    d = np.where(np.isinf(d), -1, d).astype(np.int64)
    d[~openm, :] = -1
    d[:, ~openm] = -1
    return d


def unique_far_pairs(grid: np.ndarray, t: int) -> int:
    """Ordered pairs (a, b) of open cells at distance >= t joined by exactly one shortest path.

    Counted without path counts: the cells on some shortest a-b path are those v with
    d(a, v) + d(v, b) = d(a, b), and each of the d(a, b) + 1 layers holds at least one of them, so the
    path is unique exactly when there are d(a, b) + 1 such cells.
    """
    d = all_pairs_distances(grid)
    total = 0
    for a in np.flatnonzero(grid.reshape(-1) != pm.WALL):
        da = d[a]  # (n,) distances from a
        ok = da >= 0
        on = ok[:, None] & (d >= 0) & (da[:, None] + d == da[None, :])  # (v, b): v on a shortest a-b path
        unique = on.sum(axis=0) == da + 1
        total += int((ok & (da >= t) & unique).sum())
    return total


def reference_astar(grid: np.ndarray) -> list[tuple[int, int]] | None:
    """Searchformer's deterministic A*, written from its description (docs/reference.md, "Maze-Hard"):
    f = g + Manhattan, ties to the smaller x + 100000*y, children in the order y+1, y-1, x-1, x+1;
    an open node is replaced only by a strictly cheaper one, a closed node only if cheaper."""
    side = grid.shape[0]
    (sy, sx), (gy, gx) = np.argwhere(grid == pm.START)[0], np.argwhere(grid == pm.GOAL)[0]

    def h(x, y):
        return abs(x - gx) + abs(y - gy)

    heap = [(h(sx, sy), sx + 100000 * sy, 0, (sx, sy), None)]
    open_cost = {(sx, sy): h(sx, sy)}
    closed: dict = {}
    parents: dict = {}
    while heap:
        f, _, g, node, parent = heapq.heappop(heap)
        if node in closed or open_cost.get(node) != f:
            continue  # removed from the recipe's open list
        del open_cost[node]
        closed[node] = f
        parents[node] = parent
        if node == (gx, gy):
            path = [node]
            while parents[path[-1]] is not None:
                path.append(parents[path[-1]])
            return [(y, x) for x, y in reversed(path)]
        x, y = node
        for cx, cy in ((x, y + 1), (x, y - 1), (x - 1, y), (x + 1, y)):
            if not (0 <= cx < side and 0 <= cy < side) or grid[cy, cx] == pm.WALL:
                continue
            child, cf = (cx, cy), g + 1 + h(cx, cy)
            if child in open_cost and open_cost[child] <= cf:
                continue
            if child in closed and closed[child] <= cf:
                continue
            closed.pop(child, None)
            open_cost[child] = cf
            heapq.heappush(heap, (cf, cx + 100000 * cy, g + 1, child, node))
    return None


def all_simple_paths(grid: np.ndarray) -> list[list[tuple[int, int]]]:
    """Every simple S-G path through open cells, by exhaustive DFS (small grids only)."""
    side = grid.shape[0]
    s = tuple(np.argwhere(grid == pm.START)[0])
    g = tuple(np.argwhere(grid == pm.GOAL)[0])
    out, path, on = [], [s], {s}

    def dfs(u):
        if u == g:
            out.append(list(path))
            return
        r, c = u
        for v in ((r + 1, c), (r - 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= v[0] < side and 0 <= v[1] < side and grid[v] != pm.WALL and v not in on:
                on.add(v)
                path.append(v)
                dfs(v)
                path.pop()
                on.remove(v)

    dfs(s)
    return out


def chordless(path) -> bool:
    pos = {cell: i for i, cell in enumerate(path)}
    for (r, c), i in pos.items():
        for v in ((r + 1, c), (r, c + 1)):
            if v in pos and abs(pos[v] - i) != 1:
                return False
    return True


def mark(grid: np.ndarray, cells) -> np.ndarray:
    a = grid.copy()
    for cell in cells:
        if a[cell] == pm.OPEN:
            a[cell] = pm.PATH
    return a
