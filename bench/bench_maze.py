"""Maze-Hard generator benchmark: mazes per second of the exact fast generator against the public
draw-and-reject recipe in plain Python and in Numba, the end-to-end time of a 1000 + 1000 set, and
the fast generator's path-length / wall-share histograms against the naive recipe's (two-sample
tests).

    python bench/bench_maze.py            # full run (the 2000-maze build takes minutes on 2 cores)
    python bench/bench_maze.py --quick    # smaller counts, same table

Timings are warm (every kernel compiled before the clock starts). Python's mazes/s at the public
threshold cannot be measured to completion (one maze per ~20-30 s): it is its measured draws/s times
the naive yield, which the fast generator measures exactly as the mean keep chance over its layouts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen import maze as dm  # noqa: E402


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def python_rate(size: int, t_edges: int, budget_s: float, yield_hint: float) -> tuple[float, str, int, int]:
    """Mazes/s of the plain-Python recipe: measured when it keeps any maze in the budget, else
    draws/s x yield."""
    draws = kept = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget_s:
        kept += len(dm.naive_recipe_python(200, size=size, t_edges=t_edges, seed=draws))
        draws += 200
    dt = time.perf_counter() - t0
    if kept >= 5:
        return kept / dt, "measured", draws, kept
    return draws / dt * yield_hint, "draws/s x yield", draws, kept


def speed_table(settings, quick: bool) -> list[str]:
    rows = [
        "| setting | pure Python recipe | Numba recipe | fast exact generator "
        "| fast / Python | fast / Numba recipe |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(rows), flush=True)
    for size, min_cells, n_fast, py_budget, numba_draws in settings:
        t_edges = min_cells  # "> L cells" = at least L moves
        # warm-up: compile every kernel (one signature serves all sizes); the pilot stays timed
        dm.generate_mazes(1, size=10, t_edges=10, seed=99, envelope=1.0)
        dm.naive_recipe_numba(1000, size=10, t_edges=10, seed=99)
        ms, t_fast = timed(dm.generate_mazes, n_fast, size=size, t_edges=t_edges, seed=1)
        fast = n_fast / t_fast
        yld = dm.pilot_envelope(size, t_edges, seed=7)[4]  # exact naive yield from a pilot (untimed)
        (lengths, _), t_nb = timed(dm.naive_recipe_numba, numba_draws, size=size, t_edges=t_edges, seed=2)
        nb = len(lengths) / t_nb if len(lengths) else numba_draws / t_nb * yld
        nb_how = "measured" if len(lengths) else "draws/s x yield"
        py, py_how, draws, kept = python_rate(size, t_edges, py_budget, yld)
        rows.append(
            f"| {size}x{size}, > {min_cells} cells (naive yield {yld:.2e}, envelope {ms.stats['envelope']}) "
            f"| {py:.4g} /s ({py_how}: {draws} draws, {kept} kept) "
            f"| {nb:.4g} /s ({nb_how}: {len(lengths)} of {numba_draws}) "
            f"| {fast:.4g} /s ({n_fast} in {t_fast:.1f} s) | {fast / py:,.0f}x | {fast / nb:.1f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def end_to_end(n: int) -> str:
    dm.build_generated(
        Path(tempfile.mkdtemp()) / "warm", n=2, test_n=2, size=30, seed=98, envelope=0.125, progress=False
    )
    out = Path(tempfile.mkdtemp()) / "maze"
    stats, dt = timed(dm.build_generated, out, n=n, test_n=n, size=30, seed=0, progress=False)
    g = stats["generation"]
    return (
        f"end to end: {2 * n} mazes (train {n} + test {n}) at 30x30, > 110 cells, seed 0: {dt:.1f} s "
        f"({g['candidates']:,} layouts, envelope {g['envelope']}, clipped {g['clipped_layouts']}, "
        f"max keep chance {g['max_keep_chance_counted']:.4f}); train path cells mean "
        f"{stats['train']['path_length_cells_mean']:.1f}, wall share {stats['train']['wall_share_mean']:.3f}"
    )


def distribution(size: int, min_cells: int, n: int, draws: int) -> list[str]:
    fast = dm.generate_mazes(n, size=size, t_edges=min_cells, seed=3, dedupe=False)
    lengths, walls = dm.naive_recipe_numba(draws, size=size, t_edges=min_cells, seed=4)
    p_len = sps.ks_2samp(lengths, fast.lengths).pvalue
    p_wall = sps.ks_2samp(walls, fast.walls).pvalue
    lines = [
        f"distribution at {size}x{size}, > {min_cells} cells: fast exact generator {len(fast.lengths)} mazes "
        f"vs naive recipe {len(lengths)} kept of {draws} draws; KS p-value path length {p_len:.3f}, "
        f"wall count {p_wall:.3f}",
        "",
        "| path cells | naive share | fast share |",
        "|---|---|---|",
    ]
    for v in range(min(lengths.min(), fast.lengths.min()), max(lengths.max(), fast.lengths.max()) + 1):
        a, b = np.mean(lengths == v), np.mean(fast.lengths == v)
        if a or b:
            lines.append(f"| {v + 1} | {a:.3f} | {b:.3f} |")
    n_cells = size * size
    lines += ["", "| wall share | naive share | fast share |", "|---|---|---|"]
    edges = np.arange(0.30, 0.51, 0.02)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        a = np.mean((walls / n_cells >= lo) & (walls / n_cells < hi))
        b = np.mean((fast.walls / n_cells >= lo) & (fast.walls / n_cells < hi))
        lines.append(f"| {lo:.2f}-{hi:.2f} | {a:.3f} | {b:.3f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    print(f"numba threads: {numba.get_num_threads()}", flush=True)
    if args.quick:
        settings = [(30, 80, 100, 10.0, 200_000), (30, 110, 20, 10.0, 500_000)]
        e2e_n, dist = 100, (15, 39, 1500, 1_500_000)
    else:
        settings = [(30, 80, 400, 30.0, 1_000_000), (30, 110, 100, 30.0, 3_000_000)]
        e2e_n, dist = 1000, (15, 39, 3000, 3_000_000)
    speed_table(settings, args.quick)
    print("\n" + "\n".join(distribution(*dist)) + "\n", flush=True)
    print(end_to_end(e2e_n), flush=True)


if __name__ == "__main__":
    main()
