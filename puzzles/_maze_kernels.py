"""Numba kernels for the maze: BFS, the canonical A*, path checks, shortest-path counts, and the
Maze-Hard candidate filter and builder.

Pure functions (arrays in, arrays out), ``cache=True``. Kernels work on *padded* grids: a side x side
maze becomes a flat uint8 array of (side + 2)^2 cells, 1 = open, 0 = wall or border, so a neighbour
is always ``p +- 1`` or ``p +- (side + 2)`` with no bounds checks. Row-major padded indices order the
cells exactly as the public recipe's hash ``x + 100000 * y`` does (y = row, x = column).

Randomness: every candidate ``i`` draws from its own counter-based stream (SplitMix64 keyed by
``(seed, i)``), so a candidate's layout and decisions never depend on which thread ran it or on the
batch it came in. We do not call ``np.random.seed(seed + i)`` per candidate as the Sudoku kernels do:
Mersenne-Twister reseeding costs ~1.6 us, about half the whole per-layout budget here, and
``seed + i`` would make ``--seed 1`` replay ``--seed 0``'s candidates shifted by one.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

# Check codes (shared with puzzles/maze.py, which turns them into messages).
OK = 0
Q_BAD_TOKEN = 1
Q_START_COUNT = 2
Q_GOAL_COUNT = 3
A_BAD_TOKEN = 4
A_WALL_REMOVED = 5
A_WALL_ADDED = 6
A_START_CHANGED = 7
A_GOAL_CHANGED = 8
A_BRANCH = 9
A_DEAD_END = 10
A_DISCONNECTED = 11

# Tokens: 0 PAD, '#' 1, ' ' 2, 'S' 3, 'G' 4, 'o' 5.
T_WALL = 1
T_OPEN = 2
T_START = 3
T_GOAL = 4
T_PATH = 5

# Candidate statuses written by the filter.
ST_NO_PAIR = 0
ST_REJECTED = 1
ST_ACCEPTED = 2

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_INV53 = 1.0 / 9007199254740992.0
_CHUNKS = 64  # fixed work partition of a batch: output never depends on the thread count


# ----------------------------------------------------------------------------- randomness


@njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def stream_key(seed):
    """The 64-bit key of a run; candidate ``i`` starts its stream at ``_start(key, i)``."""
    return _mix64(np.uint64(seed) + _GOLDEN)


@njit(cache=True, inline="always")
def _start(state, key, i):
    state[0] = _mix64(key ^ _mix64(np.uint64(i) + _GOLDEN))


@njit(cache=True, inline="always")
def _uniform(state):
    state[0] += _GOLDEN
    return np.float64(_mix64(state[0]) >> np.uint64(11)) * _INV53


@njit(cache=True, inline="always")
def _below(state, n):
    # floor(u * n) with a 53-bit u: the bias (n / 2^53) is far below anything measurable here.
    return np.int64(_uniform(state) * n)


# ----------------------------------------------------------------------------- grids and BFS


@njit(cache=True)
def wall_bounds(n_cells):
    """The public recipe's wall count range: ``randint(n // 10 * 3, n // 10 * 5)``, both inclusive."""
    return (n_cells // 10) * 3, (n_cells // 10) * 5


@njit(cache=True)
def _sample_layout(state, side, perm, open_, wall_lo, wall_hi):
    """Walls = the first k cells of a uniform shuffle, k ~ U{wall_lo..wall_hi} (the recipe's range is
    ``wall_bounds``); fills ``open_`` (padded)."""
    n = side * side
    k = wall_lo + _below(state, wall_hi - wall_lo + 1)
    for j in range(n):
        perm[j] = j
    # Only the first k positions of the shuffle matter: a partial Fisher-Yates draws exactly them.
    for j in range(k):
        r = j + _below(state, n - j)
        tmp = perm[j]
        perm[j] = perm[r]
        perm[r] = tmp
    open_[:] = 0
    wp = side + 2
    for j in range(k, n):
        c = perm[j]
        open_[(c // side + 1) * wp + c % side + 1] = 1
    return k


@njit(cache=True)
def _bfs(open_, wp, src, dist, queue):
    """Breadth-first search from ``src``; ``dist`` must be -1 wherever it may reach.

    Returns the number of cells reached; ``queue[:count]`` lists them in BFS order, so the last
    one is a farthest cell and ``dist`` of it is the eccentricity of ``src``.
    """
    dist[src] = 0
    queue[0] = src
    head = 0
    tail = 1
    while head < tail:
        u = queue[head]
        head += 1
        d = dist[u] + 1
        v = u + wp
        if open_[v] and dist[v] < 0:
            dist[v] = d
            queue[tail] = v
            tail += 1
        v = u - wp
        if open_[v] and dist[v] < 0:
            dist[v] = d
            queue[tail] = v
            tail += 1
        v = u - 1
        if open_[v] and dist[v] < 0:
            dist[v] = d
            queue[tail] = v
            tail += 1
        v = u + 1
        if open_[v] and dist[v] < 0:
            dist[v] = d
            queue[tail] = v
            tail += 1
    return tail


@njit(cache=True)
def _bfs_unique(open_, wp, src, dist, queue, npaths):
    """``_bfs`` (same visiting order, same return) that also writes ``npaths``: the number of shortest
    ``src``-cell paths saturated at 2, so 1 means unique. A cell is dequeued only after all its
    predecessors (one layer closer), so its count is final by then and feeds the next layer."""
    dist[src] = 0
    npaths[src] = 1
    queue[0] = src
    head = 0
    tail = 1
    while head < tail:
        u = queue[head]
        head += 1
        d = dist[u] + 1
        for v in (u + wp, u - wp, u - 1, u + 1):
            if open_[v]:
                if dist[v] < 0:
                    dist[v] = d
                    npaths[v] = npaths[u]
                    queue[tail] = v
                    tail += 1
                elif dist[v] == d:
                    npaths[v] = 2  # a second predecessor: two or more shortest paths
    return tail


@njit(cache=True)
def bfs_padded(open_, wp, src):
    """Distances from ``src`` on a padded grid (-1 where unreachable or a wall)."""
    dist = np.full(open_.shape[0], -1, np.int32)
    queue = np.empty(open_.shape[0], np.int32)
    _bfs(open_, wp, src, dist, queue)
    return dist


@njit(cache=True)
def count_paths_padded(open_, wp, s, g):
    """Number of shortest s-g paths (float64: exact below 2^53) and their length in edges."""
    n = open_.shape[0]
    dist = np.full(n, -1, np.int32)
    count = np.zeros(n, np.float64)
    queue = np.empty(n, np.int32)
    dist[s] = 0
    count[s] = 1.0
    queue[0] = s
    head = 0
    tail = 1
    while head < tail:
        u = queue[head]
        head += 1
        if u == g:
            break  # every predecessor of g was dequeued earlier, so count[g] is final
        for v in (u + wp, u - wp, u - 1, u + 1):
            if open_[v]:
                if dist[v] < 0:
                    dist[v] = dist[u] + 1
                    queue[tail] = v
                    tail += 1
                if dist[v] == dist[u] + 1:
                    count[v] += count[u]
    return count[g], dist[g]


# ----------------------------------------------------------------------------- canonical A*


@njit(cache=True, inline="always")
def _heap_push(heap, size, key):
    i = size
    heap[i] = key
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= key:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = key
    return size + 1


@njit(cache=True, inline="always")
def _heap_pop(heap, size):
    top = heap[0]
    size -= 1
    last = heap[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= last:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = last
    return top, size


@njit(cache=True)
def astar_padded(open_, wp, s, g, path):
    """The public recipe's deterministic A*; writes the path s..g into ``path``, returns its cell count.

    Open nodes are ordered by (f = g + Manhattan, then the smaller ``x + 100000 * y``), encoded as one
    int64 key ``f * n + p``: padded row-major indices order cells exactly as that hash does. A node's
    parent is replaced only on a strictly shorter cost (the recipe skips equal-cost rediscoveries),
    and closed nodes are never reopened (Manhattan distance is consistent on a unit grid, so their
    cost is already optimal). Stale heap entries (a node re-pushed at a lower cost) always pop after
    the fresh entry, find the node closed and are skipped, which gives the same expansion order as
    the recipe's remove-and-reheapify. Returns -1 when g is unreachable.
    """
    n = open_.shape[0]
    big = np.int32(1 << 30)
    cost = np.full(n, big, np.int32)
    parent = np.full(n, -1, np.int32)
    closed = np.zeros(n, np.uint8)
    heap = np.empty(4 * n + 4, np.int64)
    gy = g // wp
    gx = g - gy * wp
    cost[s] = 0
    size = _heap_push(heap, 0, np.int64(abs(s // wp - gy) + abs(s % wp - gx)) * n + s)
    found = False
    while size > 0:
        key, size = _heap_pop(heap, size)
        u = np.int32(key % n)
        if closed[u]:
            continue
        closed[u] = 1
        if u == g:
            found = True
            break
        # Children in the recipe's order: y+1, y-1, x-1, x+1.
        for v in (u + wp, u - wp, u - 1, u + 1):
            if open_[v] and not closed[v]:
                c = cost[u] + 1
                if c < cost[v]:
                    cost[v] = c
                    parent[v] = u
                    h = abs(v // wp - gy) + abs(v % wp - gx)
                    size = _heap_push(heap, size, np.int64(c + h) * n + v)
    if not found:
        return -1
    m = cost[g] + 1
    v = g
    for j in range(m - 1, -1, -1):
        path[j] = v
        v = parent[v]
    return m


# ----------------------------------------------------------------------------- path check


@njit(cache=True)
def _check_one(q, a, side, mask, dist, queue):
    """Check one answer against its question (flat token arrays); returns (code, length, shortest).

    ``length`` is the answer path's edge count (-1 unless valid); ``shortest`` the BFS distance S-G
    in edges (-1 when unreachable or the question is malformed). A valid answer keeps every wall, S
    and G, and its path cells plus S and G form one chordless 4-connected line from S to G: S and G
    have exactly one marked neighbour, every ``o`` exactly two, and walking from S visits them all.
    """
    n = side * side
    wp = side + 2
    s = -1
    g = -1
    ns = 0
    ng = 0
    for j in range(n):
        t = q[j]
        if t < T_WALL or t > T_GOAL:
            return Q_BAD_TOKEN, -1, -1
        if t == T_START:
            ns += 1
            s = (j // side + 1) * wp + j % side + 1
        elif t == T_GOAL:
            ng += 1
            g = (j // side + 1) * wp + j % side + 1
    if ns != 1:
        return Q_START_COUNT, -1, -1
    if ng != 1:
        return Q_GOAL_COUNT, -1, -1
    # mask: 1 open in the question, plus 2 when marked (S, G or o) in the answer.
    mask[:] = 0
    for j in range(n):
        p = (j // side + 1) * wp + j % side + 1
        if q[j] != T_WALL:
            mask[p] = 1
    for v in range(mask.shape[0]):
        dist[v] = -1
    _bfs(mask, wp, s, dist, queue)
    shortest = dist[g]
    code = OK
    for j in range(n):
        t = q[j]
        b = a[j]
        if b < T_WALL or b > T_PATH:
            return A_BAD_TOKEN, -1, shortest
        if t == T_WALL:
            if b != T_WALL:
                code = A_WALL_REMOVED
                break
        elif b == T_WALL:
            code = A_WALL_ADDED
            break
        elif t == T_START or b == T_START:
            if t != b:
                code = A_START_CHANGED
                break
        elif t == T_GOAL or b == T_GOAL:
            if t != b:
                code = A_GOAL_CHANGED
                break
    if code != OK:
        return code, -1, shortest
    marked = 0
    for j in range(n):
        if a[j] >= T_START:
            mask[(j // side + 1) * wp + j % side + 1] = 3
            marked += 1
    for j in range(n):
        if a[j] >= T_START:
            p = (j // side + 1) * wp + j % side + 1
            deg = (
                np.int64(mask[p + wp] == 3)
                + np.int64(mask[p - wp] == 3)
                + np.int64(mask[p - 1] == 3)
                + np.int64(mask[p + 1] == 3)
            )
            want = 2 if a[j] == T_PATH else 1
            if deg > want:
                return A_BRANCH, -1, shortest
            if deg < want:
                return A_DEAD_END, -1, shortest
    # Degrees are right, so walking from S follows a line that must end at G; a shortfall in the
    # count means the rest of the marks form separate loops.
    prev = -1
    u = s
    steps = 1
    while u != g:
        nxt = -1
        for v in (u + wp, u - wp, u - 1, u + 1):
            if mask[v] == 3 and v != prev:
                nxt = v
                break
        prev = u
        u = nxt
        steps += 1
    if steps != marked:
        return A_DISCONNECTED, -1, shortest
    return OK, steps - 1, shortest


@njit(cache=True, parallel=True)
def check_batch(questions, answers, side):
    """Check a batch of (question, answer) token rows; returns (codes, lengths, shortest)."""
    b = questions.shape[0]
    codes = np.empty(b, np.int32)
    lengths = np.empty(b, np.int32)
    shortest = np.empty(b, np.int32)
    npad = (side + 2) * (side + 2)
    nchunk = min(b, _CHUNKS)
    for c in prange(nchunk):
        mask = np.empty(npad, np.uint8)
        dist = np.empty(npad, np.int32)
        queue = np.empty(npad, np.int32)
        for i in range(c, b, nchunk):
            r = _check_one(questions[i], answers[i], side, mask, dist, queue)
            codes[i] = r[0]
            lengths[i] = r[1]
            shortest[i] = r[2]
    return codes, lengths, shortest


# ----------------------------------------------------------------------------- hard-pair counting


@njit(cache=True)
def _centre(open_, side):
    """The open cell of the middle row nearest its middle (-1 when that row is all wall)."""
    wp = side + 2
    mid = (side // 2 + 1) * wp + side // 2 + 1
    for d in range(side):
        if side // 2 + d < side and open_[mid + d]:
            return mid + d
        if side // 2 - d >= 0 and open_[mid - d]:
            return mid - d
    return -1


@njit(cache=True)
def _count_pairs(
    open_, side, t, max_sources, pick, seen, comp, dist, ub, queue, out, hist, thresh, norm, unique, npaths
):
    """Number of ordered pairs (a, b) of open cells with BFS distance >= ``t`` edges (with ``unique``:
    and exactly one shortest a-b path; ``npaths`` is then scratch for ``_bfs_unique``).

    Component by component: a component of at most ``t`` cells is skipped; otherwise BFS from its
    first cell (the centre cell for the first component), a double sweep, and the midpoint of the
    long path found give eccentricity bounds (lower: any BFS's eccentricity; upper:
    ``ub[w] = min_s ecc(s) + d(s, w)``), and more BFS from the cell of largest ``ub`` follow until
    the component is proven to hold no pair (max ub < t) or to hold one (some eccentricity >= t).
    Only then are pairs counted, by BFS from each cell whose ``ub`` is still >= t (a cell below has
    no partner), tightening ``ub`` as it goes.

    With ``pick >= 0`` it stops at the pick-th pair in that enumeration order and writes its two
    cells to ``out[0], out[1]``. Returns (pair count, BFS count).

    Early rejection for the filter, which only asks whether ``thresh < Q / norm``: after the first
    BFS of a component (source c), d(a, b) <= d(c, a) + d(c, b) bounds its pairs by
    sum_i N_i * #{cells with d(c, .) >= t - i} (N_i = cells at distance i from c). When the pairs
    counted so far plus that bound plus r (r - 1) for the r cells not yet seen cannot pass the
    test, it returns (-1, BFS count). From the centre cell the bound is tiny for most layouts.
    Pass ``thresh < 0`` for the exact count.

    With ``unique`` only the exact count changes (a path-counting BFS per source): the eccentricity
    tests and the bound above concern pairs at distance >= t, a superset, so every early "no pair"
    and every early rejection stays exact.
    """
    wp = side + 2
    npad = wp * wp
    seen[:] = 0
    dist[:] = -1  # invariant: -1 everywhere whenever a component starts (reset per component below)
    total = 0
    nbfs = 0
    remaining = 0
    for p in range(npad):
        remaining += open_[p]
    # Start at the open cell nearest the middle of the middle row: it is usually in the giant
    # component, and a central start often settles it at once (2 ecc < t). Afterwards the scan
    # stops as soon as the unseen cells are too few to hold a component of more than t cells.
    centre = _centre(open_, side)
    for it in range(wp - 1, npad - wp):
        if remaining <= t:
            break
        p = centre if it == wp - 1 else it
        if p < 0 or not open_[p] or seen[p]:
            continue
        m = _bfs(open_, wp, p, dist, queue)
        nbfs += 1
        remaining -= m
        for j in range(m):
            comp[j] = queue[j]
            seen[queue[j]] = 1
        if m <= t:
            for j in range(m):
                dist[comp[j]] = -1
            continue  # m cells hold no two cells t edges apart
        e = dist[queue[m - 1]]
        if thresh >= 0 and 2 * e >= t:
            for i in range(e + 2):
                hist[i] = 0
            for j in range(m):
                hist[dist[comp[j]]] += 1
            for i in range(e - 1, -1, -1):
                hist[i] += hist[i + 1]  # now: cells at distance >= i
            bound = np.float64(total)
            if remaining > t:
                bound += remaining * (remaining - 1.0)
            for i in range(max(0, t - e), e + 1):
                bound += (hist[i] - hist[i + 1]) * np.float64(hist[max(t - i, 0)])
            if not (thresh < bound / norm):
                for j in range(m):
                    dist[comp[j]] = -1
                return -1, nbfs
        for j in range(m):
            ub[comp[j]] = e + dist[comp[j]]
        qualified = e >= t
        decided = qualified or 2 * e < t
        if not decided:
            # Double sweep: BFS from a farthest cell; its eccentricity is a good diameter bound.
            u = queue[m - 1]
            for j in range(m):
                dist[comp[j]] = -1
            _bfs(open_, wp, u, dist, queue)
            nbfs += 1
            e = dist[queue[m - 1]]
            for j in range(m):
                w = comp[j]
                if e + dist[w] < ub[w]:
                    ub[w] = e + dist[w]
            if e >= t:
                qualified = True
                decided = True
            else:
                # The midpoint of that long path is central: BFS from it bounds every
                # eccentricity by about the diameter, which settles most layouts.
                w = queue[m - 1]
                half = e // 2
                while dist[w] > half:
                    dw = dist[w] - 1
                    if dist[w + wp] == dw:
                        w = w + wp
                    elif dist[w - wp] == dw:
                        w = w - wp
                    elif dist[w - 1] == dw:
                        w = w - 1
                    else:
                        w = w + 1
                src = w
                for _ in range(max_sources):
                    for j in range(m):
                        dist[comp[j]] = -1
                    _bfs(open_, wp, src, dist, queue)
                    nbfs += 1
                    e = dist[queue[m - 1]]
                    if e >= t:
                        qualified = True
                        decided = True
                        break
                    best = -1
                    for j in range(m):
                        w = comp[j]
                        if e + dist[w] < ub[w]:
                            ub[w] = e + dist[w]
                        if ub[w] > best:
                            best = ub[w]
                            src = w
                    if best < t:
                        decided = True
                        break
        if not (decided and not qualified):
            # Qualified, or undecided after max_sources BFS: count exactly.
            done, total, nbfs = _count_component(
                open_, wp, npad, t, m, pick, comp, dist, ub, queue, out, total, nbfs, unique, npaths
            )
            if done:
                return total, nbfs
        for j in range(m):
            dist[comp[j]] = -1
    return total, nbfs


@njit(cache=True)
def _count_component(open_, wp, npad, t, m, pick, comp, dist, ub, queue, out, total, nbfs, unique, npaths):
    """Exact pair count of one component (cells ``comp[:m]``); see ``_count_pairs``."""
    for j in range(m):
        w = comp[j]
        if ub[w] < t:
            continue
        for jj in range(m):
            dist[comp[jj]] = -1
        if unique:
            _bfs_unique(open_, wp, w, dist, queue, npaths)
        else:
            _bfs(open_, wp, w, dist, queue)
        nbfs += 1
        e = dist[queue[m - 1]]
        cnt = 0
        for jj in range(m):
            v = comp[jj]
            dv = dist[v]
            if dv >= t and (not unique or npaths[v] == 1):
                cnt += 1
            if e + dv < ub[v]:
                ub[v] = e + dv
        if pick >= 0 and total + cnt > pick:
            r = pick - total
            # npaths is stale off this component, but there dist is -1 and the test fails first
            for v in range(npad):
                if dist[v] >= t and (not unique or npaths[v] == 1):
                    if r == 0:
                        out[0] = w
                        out[1] = v
                        return True, total + cnt, nbfs
                    r -= 1
        total += cnt
    return False, total, nbfs


@njit(cache=True)
def count_pairs_padded(open_, side, t, max_sources, unique=False):
    """Ordered pairs of open cells at BFS distance >= t (with ``unique``: whose shortest path is also
    unique). The exact count; for tests and stats."""
    npad = open_.shape[0]
    seen = np.empty(npad, np.uint8)
    comp = np.empty(npad, np.int32)
    dist = np.empty(npad, np.int32)
    ub = np.empty(npad, np.int32)
    queue = np.empty(npad, np.int32)
    out = np.empty(2, np.int64)
    hist = np.empty(npad + 2, np.int64)
    npaths = np.empty(npad, np.uint8)
    return _count_pairs(
        open_, side, t, max_sources, -1, seen, comp, dist, ub, queue, out, hist, -1.0, 1.0, unique, npaths
    )


# ----------------------------------------------------------------------------- bit-parallel filter
#
# Most layouts are settled by a few BFS that only need level sets, not per-cell distances, so the
# filter runs them on bit rows: row R of the padded grid is one uint64 whose bit C is cell (R, C), 1 =
# open. One BFS level is a dilation (shift left/right, OR the rows above and below) masked by the
# cells not yet reached, and its popcount is the number of cells at that distance. That needs
# side + 2 <= 64; larger grids use the queue BFS throughout.

BITS_MAX_SIDE = 62
_ONE = np.uint64(1)


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64, as int64 (LLVM ctpop: one instruction where the CPU has it)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@intrinsic
def _lowbit(typingctx, x):
    """Index of the lowest set bit of a nonzero uint64, as int64 (LLVM cttz)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        flag = context.get_constant(types.boolean, True)  # the result for 0 is never used
        return builder.cttz(args[0], flag)

    return types.int64(types.uint64), codegen


@njit(cache=True)
def cell_codes(side):
    """``codes[j] = (row << 6) | col`` of cell j in padded coordinates: the bit-row address of the
    cell that ``_sample_layout`` would write at padded index ``row * (side + 2) + col``."""
    codes = np.empty(side * side, np.uint32)
    for j in range(side * side):
        codes[j] = ((j // side + 1) << 6) | (j % side + 1)
    return codes


@njit(cache=True)
def _sample_bits(state, side, perm, codes, swaps, orow, wall_lo, wall_hi):
    """``_sample_layout`` as bit rows: the same draws, so the same layout and stream position.

    The shuffle carries bit-row addresses (``codes``) instead of cell numbers, so a wall costs no
    division. Its k swap positions depend on the stream alone, so they are drawn first, in one
    vectorised loop (``swaps`` is scratch). Swap j fixes position j for good (later swaps touch only
    positions > j), so its value is the j-th wall and is never written back. Indices are unsigned:
    no negative-index wraparound code. Returns the wall count k.
    """
    n = side * side
    k = wall_lo + _below(state, wall_hi - wall_lo + 1)
    z0 = state[0]
    for j in range(k):
        # _below(state, n - j) of the j-th swap, inlined: counter z0 + (j + 1) * golden
        z = z0 + np.uint64(j + 1) * _GOLDEN
        swaps[j] = np.uint64(j + np.int64(np.float64(_mix64(z) >> np.uint64(11)) * _INV53 * (n - j)))
    state[0] = z0 + np.uint64(k) * _GOLDEN
    perm[:] = codes
    full = ((_ONE << np.uint64(side)) - _ONE) << _ONE
    orow[0] = 0
    orow[side + 1] = 0
    for r in range(1, side + 1):
        orow[r] = full
    for j in range(k):
        r = swaps[j]
        v = perm[r]
        perm[r] = perm[np.uint64(j)]
        orow[np.uint64(v >> np.uint32(6))] &= ~(_ONE << np.uint64(v & np.uint32(63)))
    return k


@njit(cache=True)
def _bits_to_bytes(orow, side, open_):
    """Bit rows to the padded uint8 grid of the queue kernels."""
    wp = side + 2
    for r in range(wp):
        x = orow[r]
        for c in range(wp):
            open_[r * wp + c] = (x >> np.uint64(c)) & _ONE


@njit(cache=True)
def _bfs_bits(avail, nrow, sr, sc, levels, hist):
    """BFS from cell (row ``sr``, column ``sc``) through the cells set in ``avail``, removing those it
    reaches from ``avail``. Fills ``levels[i]`` with the rows of the cells at distance i and ``hist[i]``
    with their number, for i = 0..e; returns e, the eccentricity of the source. Rows 0 and
    ``nrow - 1`` of ``levels`` (every level) and of ``avail`` must be zero; they are never written.

    Row indices are unsigned throughout: Numba then emits no negative-index wraparound and LLVM
    vectorises the row loops (a level of a 30 x 30 grid is a handful of AVX-512 instructions).
    """
    top = np.uint64(nrow - 1)
    cur = levels[0]
    for r in range(1, nrow - 1):
        cur[np.uint64(r)] = 0
    bit = _ONE << np.uint64(sc)
    cur[sr] = bit
    avail[sr] &= ~bit
    hist[0] = 1
    e = 0
    while True:
        cur = levels[e]
        nxt = levels[e + 1]
        cnt = 0
        r = _ONE
        while r < top:
            x = ((cur[r] << _ONE) | (cur[r] >> _ONE) | cur[r - _ONE] | cur[r + _ONE]) & avail[r]
            nxt[r] = x
            avail[r] &= ~x
            cnt += _popcount(x)
            r += _ONE
        if cnt == 0:
            return e
        e += 1
        hist[e] = cnt


@njit(cache=True, inline="always")
def _first_cell(level, mask, nrow):
    """(row, column) of the first cell of ``level`` in row-major order that is also in ``mask``
    (-1, -1 if none)."""
    for r in range(1, nrow - 1):
        x = level[r] & mask[r]
        if x:
            return r, _lowbit(x)
    return -1, -1


@njit(cache=True)
def _union_levels(levels, i0, i1, out, nrow):
    """``out[r] |= levels[i, r]`` for i = i0..i1: the cells at those distances."""
    top = np.uint64(nrow - 1)
    for i in range(i0, i1 + 1):
        lv = levels[i]
        r = _ONE
        while r < top:
            out[r] |= lv[r]
            r += _ONE


@njit(cache=True)
def _pair_bound(levels, e, t, a_set, b_set, hist, nrow):
    """Upper bound on the ordered pairs (a, b), a in ``a_set``, b in ``b_set``, with d(a, b) >= t, from
    one BFS (levels 0..e of source s): d(a, b) <= d(s, a) + d(s, b), so they number at most
    sum_i #{a at distance i} * #{b at distance >= t - i}. Both sets must lie at distance >= t - e from
    s. Overwrites ``hist``."""
    top = np.uint64(nrow - 1)
    lo = max(0, t - e)
    for i in range(lo, e + 1):
        lv = levels[i]
        cnt = 0
        r = _ONE
        while r < top:
            cnt += _popcount(lv[r] & b_set[r])
            r += _ONE
        hist[i] = cnt
    hist[e + 1] = 0
    for i in range(e - 1, lo - 1, -1):
        hist[i] += hist[i + 1]  # now: b cells at distance >= i
    bound = 0.0
    for i in range(lo, e + 1):
        lv = levels[i]
        cnt = 0
        r = _ONE
        while r < top:
            cnt += _popcount(lv[r] & a_set[r])
            r += _ONE
        bound += cnt * np.float64(hist[max(t - i, lo)])
    return bound


@njit(cache=True)
def _count_component_bits(comp, alive, todo, keep, levels, hist, nrow, t, thresh, norm, total, rest, nbfs):
    """Exact pair count of one component (cells ``comp``, candidates ``alive``) on bit rows: a BFS
    from each alive cell counts its partners at distance >= t and shrinks ``alive`` (as in
    ``_count_pairs_bits``); a cell that is no longer alive when its turn comes has none. With
    ``thresh >= 0`` it stops as soon as the pairs counted so far (``total`` included) plus a bound on
    those of the cells still to do (``_pair_bound``) plus ``rest`` cannot pass ``thresh < Q / norm``.

    Returns (pairs counted so far plus ``total``, BFS count plus ``nbfs``, stopped early)."""
    for r in range(nrow):
        todo[r] = alive[r]
    scan = 1
    while True:
        while scan < nrow - 1 and todo[scan] == 0:
            scan += 1
        if scan == nrow - 1:
            return total, nbfs, False
        c = _lowbit(todo[scan])
        todo[scan] &= ~(_ONE << np.uint64(c))
        for r in range(nrow):
            keep[r] = comp[r]
        e = _bfs_bits(keep, nrow, scan, c, levels, hist)
        nbfs += 1
        for i in range(t, e + 1):
            total += hist[i]
        lo = t - e
        if lo > 0:
            for r in range(nrow):
                keep[r] = 0
            _union_levels(levels, lo, e, keep, nrow)
            for r in range(nrow):
                alive[r] &= keep[r]
                todo[r] &= keep[r]
        if thresh >= 0 and not (
            thresh < (total + _pair_bound(levels, e, t, todo, alive, hist, nrow) + rest) / norm
        ):
            return total, nbfs, True


@njit(cache=True)
def _count_pairs_bits(
    orow,
    side,
    t,
    max_sources,
    thresh,
    norm,
    nfree,
    unique,
    unseen,
    core,
    comp,
    alive,
    keep,
    todo,
    levels,
    hist,
):
    """``_count_pairs`` for the filter, on bit rows: Q, the ordered pairs at distance >= t, or -1 once
    an upper bound on Q says ``thresh < Q / norm`` fails (never with ``thresh < 0``). Returns (Q or -1
    or -2, BFS count); -2 (only with ``unique``) asks the caller for ``_count_pairs``, because a
    component holds a pair or stays undecided and unique shortest paths need the queue count.

    Components come in another order than in ``_count_pairs``: isolated cells are dropped at once,
    then the centre cell's component, then those of cells with three or four open neighbours (the
    big ones), then the rest; the order changes how soon a layout is settled, never its answer. Each
    component gets the same "too few cells" stops and first-BFS bound. Then every BFS (from s,
    eccentricity e_s) shrinks the set of *alive* cells, those that may still have a partner at
    distance >= t: a cell w with d(s, w) < t - e_s has ecc(w) <= d(w, s) + e_s < t. No alive cell
    means no pair (the test ``max ub < t`` of ``_count_pairs``), and each BFS gives a bound on the
    pairs of the alive cells (``_pair_bound``) that tightens as they shrink. Sources: a farthest
    cell (double sweep), the midpoint of the long path found, then the alive cell farthest from the
    last source, ``1 + max_sources`` BFS at most; a component still undecided, or holding a pair, is
    counted exactly (``_count_component_bits``).
    """
    nrow = side + 2
    # Isolated cells are components of one cell: drop them all at once. Later components are seeded
    # at cells with three or four open neighbours first: those lie in the big components, and once
    # those are seen the unseen cells soon become too few to matter (the order never changes a
    # decision, only how soon it is reached).
    unseen[0] = 0
    unseen[nrow - 1] = 0
    core[0] = 0
    core[nrow - 1] = 0
    up = orow[0 : nrow - 2]
    mid = orow[1 : nrow - 1]
    down = orow[2:nrow]
    un = unseen[1 : nrow - 1]
    co = core[1 : nrow - 1]
    isolated = 0
    for j in range(nrow - 2):
        x = mid[j]
        a = x << _ONE
        b = x >> _ONE
        c = up[j]
        d = down[j]
        un[j] = x & (a | b | c | d)
        co[j] = x & ((a & b & (c | d)) | (c & d & (a | b)))
        isolated += _popcount(x & ~(a | b | c | d))
    remaining = nfree - isolated
    nbfs = 0
    total = 0
    # centre cell: the open cell of the middle row nearest its middle (``_centre``)
    mr = side // 2 + 1
    sr = -1
    sc = -1
    row = orow[mr]
    for d in range(side):
        if side // 2 + d < side and (row >> np.uint64(side // 2 + 1 + d)) & _ONE:
            sr, sc = mr, side // 2 + 1 + d
            break
        if side // 2 - d >= 0 and (row >> np.uint64(side // 2 + 1 - d)) & _ONE:
            sr, sc = mr, side // 2 + 1 - d
            break
    if sr >= 0 and not (unseen[sr] >> np.uint64(sc)) & _ONE:
        sr = -1  # an isolated centre, already counted
    scan = 1  # no unseen cell above this row
    scan_core = 1  # no unseen core cell above this row
    while remaining > t:
        if thresh >= 0 and not (thresh < (total + remaining * (remaining - 1.0)) / norm):
            return -1, nbfs  # the unseen cells hold too few pairs to pass, whatever their layout
        if sr < 0:
            while scan_core < nrow - 1 and core[scan_core] & unseen[scan_core] == 0:
                scan_core += 1
            if scan_core < nrow - 1:
                sr, sc = scan_core, _lowbit(core[scan_core] & unseen[scan_core])
            else:
                while unseen[scan] == 0:
                    scan += 1
                sr, sc = scan, _lowbit(unseen[scan])
        e = _bfs_bits(unseen, nrow, sr, sc, levels, hist)
        sr = -1
        nbfs += 1
        m = 0
        for i in range(e + 1):
            m += hist[i]
        remaining -= m
        if m <= t or 2 * e < t:
            continue  # no two cells t apart: too few cells, or all within e of the source
        rest = remaining * (remaining - 1.0) if remaining > t else 0.0  # pairs among unseen cells
        if thresh >= 0:
            # the first-BFS bound of ``_count_pairs`` (every cell at distance >= t - e is alive)
            hist[e + 1] = 0
            for i in range(e - 1, -1, -1):
                hist[i] += hist[i + 1]
            bound = 0.0
            for i in range(max(0, t - e), e + 1):
                bound += (hist[i] - hist[i + 1]) * np.float64(hist[max(t - i, 0)])
            if not (thresh < (total + bound + rest) / norm):
                return -1, nbfs
        for r in range(nrow):
            comp[r] = 0
            alive[r] = 0
        _union_levels(levels, 0, e, comp, nrow)
        _union_levels(levels, max(t - e, 0), e, alive, nrow)
        if e < t:
            src_r, src_c = _first_cell(levels[e], orow, nrow)  # a farthest cell: the double sweep
            settled = False
            for it in range(max_sources + 1):
                for r in range(nrow):
                    keep[r] = comp[r]
                e = _bfs_bits(keep, nrow, src_r, src_c, levels, hist)
                nbfs += 1
                lo = t - e  # alive cells nearer than this to the source are alive no more
                if lo > 0:
                    for r in range(nrow):
                        keep[r] = 0
                    _union_levels(levels, lo, e, keep, nrow)
                    settled = True
                    for r in range(1, nrow - 1):
                        alive[r] &= keep[r]
                        if alive[r]:
                            settled = False
                    if settled:
                        break
                if thresh >= 0:
                    bound = _pair_bound(levels, e, t, alive, alive, hist, nrow)
                    if not (thresh < (total + bound + rest) / norm):
                        return -1, nbfs
                if e >= t:
                    break
                if it == 0:
                    # the midpoint of the long path just found, walking back from a farthest cell
                    wr, wc = _first_cell(levels[e], orow, nrow)
                    for i in range(e - 1, e // 2 - 1, -1):
                        lv = levels[i]
                        if (lv[wr + 1] >> np.uint64(wc)) & _ONE:
                            wr += 1
                        elif (lv[wr - 1] >> np.uint64(wc)) & _ONE:
                            wr -= 1
                        elif (lv[wr] >> np.uint64(wc - 1)) & _ONE:
                            wc -= 1
                        else:
                            wc += 1
                    src_r, src_c = wr, wc
                else:
                    for i in range(e, lo - 1, -1):  # the alive cell farthest from this source
                        src_r, src_c = _first_cell(levels[i], alive, nrow)
                        if src_r >= 0:
                            break
            if settled:
                continue
        # The component holds a pair, or is still undecided: count its pairs.
        if unique:
            return -2, nbfs  # pairs with one shortest path: the queue count (``_count_pairs``)
        total, nbfs, stopped = _count_component_bits(
            comp, alive, todo, keep, levels, hist, nrow, t, thresh, norm, total, rest, nbfs
        )
        if stopped:
            return -1, nbfs
    return total, nbfs


# ----------------------------------------------------------------------------- generation


@njit(cache=True, parallel=True)
def filter_batch(
    key, first, count, side, wall_lo, wall_hi, t, unique, envelope, max_sources, exact=False, bits=True
):
    """Decide candidates ``first .. first + count - 1`` of the run keyed by ``key``.

    Candidate i draws a layout, then two uniforms (acceptance, pair choice). It is accepted when
    ``u_accept * envelope < Q / (F (F - 1))``, Q = its ordered pairs at distance >= t and F its free
    cells: Q / (F (F - 1)) is exactly the chance that the naive recipe's uniform (S, G) draw on this
    layout is kept, so accepted layouts follow the naive recipe's distribution whenever that chance
    stays <= envelope (``clipped`` counts the candidates where it did not).

    Unless ``exact``, a candidate may be rejected on an upper bound of Q (see ``_count_pairs``):
    its Q is then reported as -1 and its status as rejected (it may hold no pair at all).
    Decisions never depend on ``exact``.

    Layouts have ``wall_lo..wall_hi`` walls (inclusive; 2 <= F needed). With ``unique``,
    Q counts only the pairs whose shortest path is also unique (see ``data_gen.maze`` for why that
    keeps the sample exact).

    Up to ``BITS_MAX_SIDE`` (unless ``bits`` is False, for tests) layouts are drawn and counted on bit
    rows (``_count_pairs_bits``; with ``unique`` it hands the few that need an exact count to
    ``_count_pairs``): the same layouts and decisions, fewer and cheaper BFS.

    Returns per-candidate status (0 no pair, 1 rejected, 2 accepted), Q, BFS count, wall count.
    """
    n = side * side
    npad = (side + 2) * (side + 2)
    nrow = side + 2
    use_bits = bits and side <= BITS_MAX_SIDE
    codes = cell_codes(side)
    status = np.empty(count, np.int8)
    pairs = np.empty(count, np.int32)
    nbfs = np.empty(count, np.int32)
    walls = np.empty(count, np.int16)
    nchunk = min(count, _CHUNKS)
    for c in prange(nchunk):
        state = np.empty(1, np.uint64)
        perm = np.empty(n, np.int32)
        open_ = np.empty(npad, np.uint8)
        orow = np.empty(nrow, np.uint64)
        cperm = np.empty(n, np.uint32)
        swaps = np.empty(n, np.uint64)
        unseen = np.empty(nrow, np.uint64)
        core = np.empty(nrow, np.uint64)
        comp = np.empty(nrow, np.uint64)
        alive = np.empty(nrow, np.uint64)
        keep = np.empty(nrow, np.uint64)
        todo = np.empty(nrow, np.uint64)
        levels = np.zeros((n + 2 if use_bits else 1, nrow), np.uint64)  # rows 0 and nrow - 1 stay 0
        seen = np.empty(npad, np.uint8)
        comp_cells = np.empty(npad, np.int32)
        dist = np.empty(npad, np.int32)
        ub = np.empty(npad, np.int32)
        queue = np.empty(npad, np.int32)
        out = np.empty(2, np.int64)
        hist = np.empty(npad + 2, np.int64)
        npaths = np.empty(npad, np.uint8)
        for j in range(c, count, nchunk):
            _start(state, key, first + j)
            if use_bits:
                k = _sample_bits(state, side, cperm, codes, swaps, orow, wall_lo, wall_hi)
            else:
                k = _sample_layout(state, side, perm, open_, wall_lo, wall_hi)
            u_accept = _uniform(state)
            f = n - k
            walls[j] = k
            # The decision only asks whether u * envelope < Q / (F (F - 1)): the counts may stop
            # early once an upper bound on Q settles it (same decision as the exact count).
            thresh = -1.0 if exact else u_accept * envelope
            q = -2
            b = 0
            if use_bits:
                q, b = _count_pairs_bits(
                    orow,
                    side,
                    t,
                    max_sources,
                    thresh,
                    f * (f - 1.0),
                    f,
                    unique,
                    unseen,
                    core,
                    comp,
                    alive,
                    keep,
                    todo,
                    levels,
                    hist,
                )
                if q == -2:
                    _bits_to_bytes(orow, side, open_)
            if q == -2:
                q, b2 = _count_pairs(
                    open_,
                    side,
                    t,
                    max_sources,
                    -1,
                    seen,
                    comp_cells,
                    dist,
                    ub,
                    queue,
                    out,
                    hist,
                    thresh,
                    f * (f - 1.0),
                    unique,
                    npaths,
                )
                b += b2
            if q < 0:
                status[j] = ST_REJECTED
                pairs[j] = -1
                nbfs[j] = b
                continue
            pairs[j] = q
            nbfs[j] = b
            if q == 0:
                status[j] = ST_NO_PAIR
            elif u_accept * envelope < q / (f * (f - 1.0)):
                status[j] = ST_ACCEPTED
            else:
                status[j] = ST_REJECTED
    return status, pairs, nbfs, walls


@njit(cache=True, parallel=True)
def build_batch(key, indices, pairs, side, wall_lo, wall_hi, t, unique, max_sources):
    """Rebuild accepted candidates (their indices and pair counts from ``filter_batch``, called with
    the same walls and ``unique``): pick (S, G) uniformly among the qualifying ordered pairs and mark
    the canonical A* path.

    Returns questions and answers as (B, side^2) tokens, path length in edges, the number of
    shortest paths (float64) and the wall count.
    """
    n = side * side
    wp = side + 2
    npad = wp * wp
    b = indices.shape[0]
    questions = np.empty((b, n), np.uint8)
    answers = np.empty((b, n), np.uint8)
    lengths = np.empty(b, np.int32)
    npaths = np.empty(b, np.float64)
    walls = np.empty(b, np.int16)
    nchunk = max(1, min(b, _CHUNKS))
    for c in prange(nchunk):
        state = np.empty(1, np.uint64)
        perm = np.empty(n, np.int32)
        open_ = np.empty(npad, np.uint8)
        seen = np.empty(npad, np.uint8)
        comp = np.empty(npad, np.int32)
        dist = np.empty(npad, np.int32)
        ub = np.empty(npad, np.int32)
        queue = np.empty(npad, np.int32)
        out = np.empty(2, np.int64)
        path = np.empty(npad, np.int32)
        npaths_scratch = np.empty(npad, np.uint8)
        for i in range(c, b, nchunk):
            _start(state, key, indices[i])
            k = _sample_layout(state, side, perm, open_, wall_lo, wall_hi)
            _uniform(state)  # the acceptance draw, already used by filter_batch
            u_pair = _uniform(state)
            # pairs[i] is this layout's count from filter_batch; the same enumeration finds the pick.
            pick = np.int64(u_pair * pairs[i])
            _count_pairs(
                open_,
                side,
                t,
                max_sources,
                pick,
                seen,
                comp,
                dist,
                ub,
                queue,
                out,
                out,
                -1.0,
                1.0,
                unique,
                npaths_scratch,
            )
            s = out[0]
            g = out[1]
            m = astar_padded(open_, wp, s, g, path)
            cnt, _ = count_paths_padded(open_, wp, s, g)
            for j in range(n):
                p = (j // side + 1) * wp + j % side + 1
                questions[i, j] = T_OPEN if open_[p] else T_WALL
            questions[i, (s // wp - 1) * side + s % wp - 1] = T_START
            questions[i, (g // wp - 1) * side + g % wp - 1] = T_GOAL
            answers[i] = questions[i]
            for j in range(1, m - 1):
                p = path[j]
                answers[i, (p // wp - 1) * side + p % wp - 1] = T_PATH
            lengths[i] = m - 1
            npaths[i] = cnt
            walls[i] = k
    return questions, answers, lengths, npaths, walls


@njit(cache=True, parallel=True)
def naive_batch(key, first, count, side, wall_lo, wall_hi, unique):
    """The public recipe, one draw per candidate: layout, uniform ordered (S, G) of distinct free
    cells, BFS distance. Returns per-candidate distance in edges (-1 when unreachable; with
    ``unique`` also when S-G has more than one shortest path) and walls.

    Uses its own streams (candidate i of key) so it can run beside ``filter_batch`` on one key.
    """
    n = side * side
    wp = side + 2
    npad = wp * wp
    lengths = np.empty(count, np.int32)
    walls = np.empty(count, np.int16)
    nchunk = min(count, _CHUNKS)
    for c in prange(nchunk):
        state = np.empty(1, np.uint64)
        perm = np.empty(n, np.int32)
        open_ = np.empty(npad, np.uint8)
        dist = np.empty(npad, np.int32)
        queue = np.empty(npad, np.int32)
        npaths = np.empty(npad, np.uint8)
        for j in range(c, count, nchunk):
            _start(state, key, first + j)
            k = _sample_layout(state, side, perm, open_, wall_lo, wall_hi)
            f = n - k
            a = _below(state, f)
            b = _below(state, f - 1)
            if b >= a:
                b += 1  # a uniform ordered pair of distinct free cells
            cs = perm[k + a]
            cg = perm[k + b]
            s = (cs // side + 1) * wp + cs % side + 1
            g = (cg // side + 1) * wp + cg % side + 1
            dist[:] = -1
            if unique:
                _bfs_unique(open_, wp, s, dist, queue, npaths)
                lengths[j] = dist[g] if dist[g] < 0 or npaths[g] == 1 else -1
            else:
                _bfs(open_, wp, s, dist, queue)
                lengths[j] = dist[g]
            walls[j] = k
    return lengths, walls
