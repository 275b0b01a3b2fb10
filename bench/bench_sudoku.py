"""Sudoku benchmarks: solver throughput, rating calibration, dataset build time.

    python bench/bench_sudoku.py              # everything (several minutes on 2 cores)
    python bench/bench_sudoku.py --solver     # solver/rater throughput only
    python bench/bench_sudoku.py --calibrate  # a generated set's histogram (stored, re-oriented;
                                              # rater and tdoku), the rater vs the public rating per
                                              # puzzle, its speed vs tdoku's, our count's fitted map
    python bench/bench_sudoku.py --calibrate --data DIR   # the same on a set already built
    python bench/bench_sudoku.py --build      # `python -m data_gen.sudoku --n 1000`, cold and warm

Prints markdown tables; timings are side by side in one run, so ratios are what to compare.

tdoku itself (t-dillon/tdoku) is measured in the same run when ``TDOKU_LIB`` names a shared library
built from its sources (its CMake target ``tdoku_shared``); the library is a measuring instrument,
never part of gridloop. Without it the tdoku columns are skipped.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from puzzles import sudoku as S  # noqa: E402

SHARED = Path(os.environ.get("GRIDLOOP_SHARED", REPO.parent / "shared")) / "benchmarks" / "sudoku"
COLLECTIONS = [
    ("17-clue", "puzzles2_17_clue.csv"),
    ("magictour top1465", "puzzles3_magictour_top1465.csv"),
    ("forum hardest 1905 11+", "puzzles5_forum_hardest_1905_11+.csv"),
    ("forum hardest 1106", "puzzles6_forum_hardest_1106.csv"),
]


def load(name):
    with open(SHARED / name) as f:
        rows = list(csv.DictReader(f))
    return rows


def best_rate(fn, n_items, repeats=3):
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = max(best, n_items / (time.perf_counter() - t))
    return best


def machine_load() -> str:
    """The 1-minute load average against the core count, flagged when others are using the CPUs."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    note = " (busy: timings are noisy, ratios less so)" if load > 0.5 * cores else ""
    return f"load average {load:.2f} on {cores} cores{note}"


def tdoku_solver():
    """A Numba loop over tdoku's ``TdokuSolverDpllTriadSimd`` from ``TDOKU_LIB``, or None.

    Calling it from compiled code keeps per-call overhead (a few ns) out of tdoku's timing, as it
    would be inside tdoku's own benchmark. ``run(text, guesses)`` rates rows of ``text``, (B, 88)
    uint8 puzzle characters with a NUL after the 81st (tdoku reads one byte past the grid to tell
    vanilla from pencil-mark input).
    """
    path = os.environ.get("TDOKU_LIB")
    if not path:
        return None
    fn = ctypes.CDLL(path).TdokuSolverDpllTriadSimd
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p]

    @numba.njit
    def run(text, guesses):
        solution = np.zeros(96, np.uint8)
        count = np.zeros(1, np.uint64)
        for i in range(text.shape[0]):
            fn(text[i].ctypes.data, 1, 0, solution.ctypes.data, count.ctypes.data)
            guesses[i] = count[0]

    return run


def tdoku_text(puzzles) -> np.ndarray:
    text = np.zeros((len(puzzles), 88), np.uint8)
    text[:, :81] = np.frombuffer("".join(puzzles).encode(), np.uint8).reshape(-1, 81)
    return text


def bench_rater_speed(rows):
    """Rater and tdoku, one thread each, best of 3 rounds taken in turn on forum hardest 1905 11+."""
    puzzles = [r["puzzle"] for r in rows]
    grids = np.stack([S.parse(p, check_rules=False) for p in puzzles])
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    tdoku = tdoku_solver()
    text, tdoku_guesses = tdoku_text(puzzles), np.zeros(len(puzzles), np.int64)
    S.rate(grids[:8])  # compile
    if tdoku is not None:
        tdoku(text[:8], tdoku_guesses[:8])
    load_before = machine_load()
    # Best of 3 by wall clock, and by the CPU time of this thread (less sensitive to other users
    # of the machine, which only share the caches then). Rounds alternate, so both solvers see
    # the same load.
    wall = {"ours": 0.0, "tdoku": 0.0}
    cpu = {"ours": 0.0, "tdoku": 0.0}
    runs = {"ours": lambda: S.rate(grids), "tdoku": lambda: tdoku(text, tdoku_guesses)}
    for _ in range(3):
        for name in ("ours", "tdoku") if tdoku is not None else ("ours",):
            t_wall, t_cpu = time.perf_counter(), time.thread_time()
            runs[name]()
            wall[name] = max(wall[name], len(grids) / (time.perf_counter() - t_wall))
            cpu[name] = max(cpu[name], len(grids) / (time.thread_time() - t_cpu))
    numba.set_num_threads(threads)
    if cpu["ours"] > 1.5 * wall["ours"]:  # the threading layer ran the work on another thread
        cpu = {"ours": float("nan"), "tdoku": float("nan")}
    print(f"\n### Rater throughput, forum hardest 1905 11+ ({len(grids)} puzzles), 1 thread, best of 3\n")
    print("| rater | puzzles/s (wall clock) | puzzles/s (thread CPU time) |")
    print("|---|---|---|")
    print(f"| gridloop `sudoku.rate` (Numba) | {wall['ours']:,.0f} | {cpu['ours']:,.0f} |")
    if tdoku is None:
        print("| tdoku | not measured: set TDOKU_LIB to a local build of tdoku's shared library | |")
    else:
        print(f"| tdoku (C++ SIMD, TDOKU_LIB) | {wall['tdoku']:,.0f} | {cpu['tdoku']:,.0f} |")
        same = np.array_equal(tdoku_guesses, S.rate(grids))
        print(
            f"\nratio gridloop / tdoku: {wall['ours'] / wall['tdoku']:.2f}x by wall clock, "
            f"{cpu['ours'] / cpu['tdoku']:.2f}x by CPU time (target >= 0.25x); the two agree on "
            f"{'every' if same else 'NOT every'} puzzle's count in this run"
        )
    print(f"machine: before {load_before}; after {machine_load()}")


def bench_solver():
    rows = load("puzzles5_forum_hardest_1905_11+.csv")
    grids = np.stack([S.parse(r["puzzle"], check_rules=False) for r in rows])
    S.solve_many(grids[:8], limit=2)  # compile
    out = []
    threads = numba.get_num_threads()
    for th in sorted({1, min(2, threads)}):
        numba.set_num_threads(th)
        for limit in (1, 2):
            rate = best_rate(lambda limit=limit: S.solve_many(grids, limit=limit), len(grids))
            out.append((f"gridloop (Numba), {th} thread{'s' if th > 1 else ''}", limit, rate, rate / th))
    numba.set_num_threads(threads)
    # The same algorithm interpreted: Numba's JIT switched off in a subprocess.
    k = 40
    csv_path = str(SHARED / "puzzles5_forum_hardest_1905_11+.csv")
    code = (
        f"import sys,time,numpy as np; sys.path.insert(0, {str(REPO)!r}); from puzzles import sudoku as S;"
        f"import csv; rows=list(csv.DictReader(open({csv_path!r})))[:{k}];"
        "g=np.stack([S.parse(r['puzzle'], check_rules=False) for r in rows]);"
        "t=time.perf_counter(); r=S.solve_many(g, limit=1); dt=time.perf_counter()-t;"
        "print(len(g)/dt, int(r.guesses_first.sum()))"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    py_rate, py_guesses = res.stdout.split()
    py = float(py_rate)
    # the interpreted run must be the same computation, guess for guess
    assert int(py_guesses) == int(S.solve_many(grids[:k]).guesses_first.sum()), "pure-Python run disagrees"
    out.append(("same algorithm, pure Python (NUMBA_DISABLE_JIT=1)", 1, py, py))
    try:
        from sudoku import Sudoku  # py-sudoku

        sub = rows[:10]

        def run_pysudoku():
            for r in sub:
                board = [
                    [int(c) if c != "." else 0 for c in r["puzzle"][i * 9 : (i + 1) * 9]] for i in range(9)
                ]
                Sudoku(3, 3, board=board).solve()

        rate = best_rate(run_pysudoku, len(sub), repeats=1)
        out.append(("py-sudoku (pip), pure Python", 1, rate, rate))
    except ImportError:
        out.append(("py-sudoku (pip): not installed", 1, float("nan"), float("nan")))
    print(f"\n### Solver throughput on forum hardest 1905 11+ ({len(grids)} puzzles)\n")
    print("| solver | solutions | puzzles/s | per core |")
    print("|---|---|---|---|")
    for name, limit, rate, per_core in out:
        print(f"| {name} | {'first' if limit == 1 else 'up to 2'} | {rate:,.0f} | {per_core:,.0f} |")
    fastest = max(r for _, lim, _, r in out if lim == 1)
    tdoku = tdoku_solver()
    if tdoku is not None:
        text, guesses = tdoku_text([r["puzzle"] for r in rows]), np.zeros(len(rows), np.int64)
        tdoku(text[:8], guesses[:8])
        td = best_rate(lambda: tdoku(text, guesses), len(rows))
        print(f"\ntdoku (TDOKU_LIB), 1 thread, first solution: {td:,.0f} /s; per-core {fastest / td:.2f}x")
    else:
        print("\ntdoku not measured (set TDOKU_LIB to a local build of tdoku's shared library)")
    print(f"vs the same algorithm in pure Python: {fastest / py:,.0f}x; machine: {machine_load()}")


def bench_calibrate():
    from scipy.stats import spearmanr

    collections = [(label, load(name)) for label, name in COLLECTIONS]
    print("\n### The rater (`sudoku.rate`) vs the public rating (tdoku_guesses_limit1), per puzzle\n")
    print(
        "| collection | puzzles | exact | within 1 | Spearman rho | mean ours / public |"
        " median ours / public |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, rows in collections:
        ours = S.rate([r["puzzle"] for r in rows]).astype(float)
        pub = np.array([float(r["tdoku_guesses_limit1"]) for r in rows])
        d = np.abs(ours - pub)
        print(
            f"| {label} | {len(rows)} | {(d == 0).mean():.2%} | {(d <= 1).mean():.2%} | "
            f"{spearmanr(ours, pub)[0]:.3f} | {ours.mean():.2f} / {pub.mean():.2f} | "
            f"{np.median(ours):.0f} / {np.median(pub):.0f} |"
        )
    bench_rater_speed(collections[2][1])

    print("\n### Our solver's guesses (`solve_many`, the 4x4/6x6 builder's rating) vs the public rating\n")
    print(
        "| collection | puzzles | public mean / median | ours mean / median | calibrated mean / median |"
        " mean ratio (calibrated) | Spearman rho |"
    )
    print("|---|---|---|---|---|---|---|")
    all_ours, all_pub = [], []
    for label, rows in collections:
        ours = S.solve_many([r["puzzle"] for r in rows]).guesses_first.astype(float)
        pub = np.array([float(r["tdoku_guesses_limit1"]) for r in rows])
        cal = S.to_public_scale(ours)
        rho = spearmanr(ours, pub)[0]
        print(
            f"| {label} | {len(rows)} | {pub.mean():.2f} / {np.median(pub):.0f} | {ours.mean():.2f} / "
            f"{np.median(ours):.0f} | {cal.mean():.2f} / {np.median(cal):.1f} | "
            f"{cal.mean() / pub.mean():.2f} | {rho:.2f} |"
        )
        all_ours.append(ours)
        all_pub.append(pub)
    ours = np.concatenate(all_ours)
    pub = np.concatenate(all_pub)
    # Quantile-matching fit: knots at our values, mapped to the public value at the same quantile.
    knots = np.array([0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256], dtype=float)
    qs = np.array([(ours <= k).mean() for k in knots])
    mapped = np.quantile(pub, np.clip(qs, 0, 1))
    mapped[0] = 0.0
    mapped = np.maximum.accumulate(mapped + np.arange(len(mapped)) * 1e-3)  # strictly increasing
    print("\nfitted knots (paste into puzzles/sudoku.py):")
    print("CALIBRATION_OURS =", json.dumps(knots.tolist()))
    print("CALIBRATION_PUBLIC =", json.dumps([round(v, 3) for v in mapped.tolist()]))


def generated_set(data: str | None) -> tuple[Path, str]:
    """A built dataset to measure: ``data`` when given, else the default 9x9 build in a temp dir."""
    if data:
        return Path(data), f"the set in {data}"
    out = Path(tempfile.mkdtemp(prefix="bench-sudoku-set-")) / "d"
    cmd = [sys.executable, "-m", "data_gen.sudoku", "--n", "1000", "--out", str(out), "--quiet"]
    subprocess.run(cmd, cwd=REPO, check=True)
    return out, "`python -m data_gen.sudoku --n 1000` (seed 0)"


def bench_generated(data: str | None, seed: int = 1):
    """The generated set's rating histogram as shipped and after one random symmetry image per
    puzzle (the same images for every rater), by the rater and, with TDOKU_LIB, by tdoku."""
    from data_gen import sudoku as G
    from data_gen.format import read_public_csv

    out, what = generated_set(data)
    tdoku = tdoku_solver()
    print(f"\n### Rating of {what}, as stored and re-oriented (one random symmetry image per puzzle)\n")
    print("| split | orientation | rated by | " + " | ".join(G.BUCKET_NAMES) + " | mean | median |")
    print("|---|---|---|" + "---|" * (len(G.BUCKET_NAMES) + 2))
    t = dict(zip(G.BUCKET_NAMES, G.TARGET_SHARES, strict=True))
    print("| target | | public Sudoku-Extreme | " + " | ".join(f"{v:.0%}" for v in t.values()) + " | ~22 | |")
    for split in ("train", "test"):
        rows = read_public_csv(out / f"{split}.csv")
        p = np.stack([S.parse(r[1]) for r in rows])
        a = np.stack([S.parse(r[2]) for r in rows])
        shipped = np.array([r[3] for r in rows])
        q, _ = S.random_symmetry(p, a, seed=seed)
        for orient, grids in (("stored", p), ("re-oriented", q)):
            ratings = [("rater", S.rate(grids))]
            if orient == "stored":
                assert np.array_equal(ratings[0][1], shipped), "csv rating differs from the rater's"
            if tdoku is not None:
                g = np.zeros(len(grids), np.int64)
                tdoku(tdoku_text([S.format_grid(x) for x in grids]), g)
                ratings.append(("tdoku (TDOKU_LIB)", g))
            for who, r in ratings:
                h = G.histogram(r)
                print(
                    f"| {split} | {orient} | {who} | "
                    + " | ".join(f"{v:.1%}" for v in h.values())
                    + f" | {r.mean():.1f} | {np.median(r):.0f} |"
                )
    if tdoku is None:
        print("\ntdoku not measured (set TDOKU_LIB to a local build of tdoku's shared library)")
    print(f"machine: {machine_load()}")


def bench_build(n=1000):
    out = Path(tempfile.mkdtemp(prefix="bench-sudoku-"))
    cache = Path(tempfile.mkdtemp(prefix="numba-cache-"))
    results = []
    try:
        for label, env in (
            ("cold (empty Numba cache, compile included)", {"NUMBA_CACHE_DIR": str(cache)}),
            ("warm (cached kernels)", {"NUMBA_CACHE_DIR": str(cache)}),
        ):
            t = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "data_gen.sudoku",
                    "--n",
                    str(n),
                    "--out",
                    str(out / "d"),
                    "--overwrite",
                    "--quiet",
                ],
                cwd=REPO,
                env=dict(os.environ, **env),
                check=True,
            )
            wall = time.perf_counter() - t
            stats = json.loads((out / "d" / "stats.json").read_text())
            results.append((label, wall, stats))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    print(f"\n### `python -m data_gen.sudoku --n {n}` end to end ({numba.get_num_threads()} threads)\n")
    print(machine_load())
    print("| run | wall s | generate s | puzzles | hard puzzles kept per generate second |")
    print("|---|---|---|---|---|")
    for label, wall, stats in results:
        gen = stats["timings_s"]["generate_s"]
        hard = sum(c * (1 - stats["easy_share"][k]) for k, c in stats["counts"].items())
        print(f"| {label} | {wall:.1f} | {gen:.1f} | {sum(stats['counts'].values())} | {hard / gen:.1f} |")
    for split in ("train", "test"):
        for key in ("rating_public_scale", "rating_reoriented"):
            st = results[-1][2][key][split]
            print(f"\n{split} {key}: mean {st['mean']}, histogram {st['histogram']}")
    print(f"target histogram: {results[-1][2]['target_histogram']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--solver", action="store_true")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--build", action="store_true")
    ap.add_argument(
        "--data", default=None, help="--calibrate: a built 9x9 set to measure (default: build --n 1000)"
    )
    args = ap.parse_args()
    everything = not (args.solver or args.calibrate or args.build)
    if args.solver or everything:
        bench_solver()
    if args.calibrate or everything:
        bench_generated(args.data)
        bench_calibrate()
    if args.build or everything:
        bench_build()


if __name__ == "__main__":
    main()
