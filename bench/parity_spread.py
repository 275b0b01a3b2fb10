"""How far the parity comparisons move across kernel paths, thread counts and float32 rounding flips.

The parity tests (``tests/test_reasoners_parity.py``) replay the reference's recorded calls through
gridloop; their tolerances come from this measurement. Each setting runs in a fresh process (the
environment variables are read at start-up):

- ``ATEN_CPU_CAPABILITY`` in default / avx2 / avx512 (PyTorch's vectorised kernels; values the CPU
  lacks fall back), ``MKL_ENABLE_INSTRUCTIONS`` in SSE4_2 / AVX2 / AVX512 (MKL's GEMM paths), 1 and
  2 threads;
- ``--flips N``: N runs on the default path, each with one float32 rounding in one RMSNorm output
  moved by one ulp at a random element (what a machine whose float64 result differs in the last bit
  can cause, rarely, where the reference rounds to float32 in float64 mode).

Printed per fixture: the largest norm-relative error over all float checks, and the largest
elementwise error of the logits and the q-logits (what a halting decision or an argmax could feel).

    python bench/parity_spread.py [--flips 40] [--no-paths] [--only eqr_mlp_sudoku eqr_attention_maze]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def measure(flip_seed: int | None = None, only: list[str] | None = None) -> dict:
    from _parity import CASES, build, compare_case, load_fixture

    import reasoners.layers as layers

    original = layers.rms_norm
    out = {}
    for index, (name, kind) in enumerate(CASES):
        if only and name not in only:
            continue
        if flip_seed is not None:  # one flip per fixture, at a random RMSNorm call and element
            layers.rms_norm = _with_one_flip(original, 1000 * flip_seed + index)
        fx = load_fixture(name)
        every = compare_case(fx, kind, build(fx, kind))
        checks = [c for c in every if not c.exact]
        exact_failures = sum(1 for c in every if c.exact and not c.ok)
        worst = max(checks, key=lambda c: c.rel)
        logits = max(c.absmax for c in checks if c.what.endswith(": logits"))
        q = max(c.absmax for c in checks if "q_halt_logits" in c.what or "q_continue_logits" in c.what)
        out[name] = {
            "rel": worst.rel,
            "where": worst.what,
            "logits_abs": logits,
            "q_abs": q,
            "exact_failures": exact_failures,
        }
    return out


def _with_one_flip(original, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    # every fixture makes more than 150 RMSNorm calls
    state = {"calls": 0, "target": int(torch.randint(1, 150, (1,), generator=g))}

    def rms_norm_with_one_flip(x, eps=1e-5):
        out = original(x, eps)
        state["calls"] += 1
        if state["calls"] != state["target"] or out.dtype != torch.float64:
            return out
        flat = out.contiguous().clone().view(-1)
        i = int(torch.randint(flat.numel(), (1,), generator=g))
        f32 = flat[i].float()
        flat[i] = torch.nextafter(f32, torch.tensor(float("inf"))).double()
        return flat.view(out.shape)

    return rms_norm_with_one_flip


def run_child(env: dict, args: list[str]) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flips", type=int, default=0, help="runs with one injected float32 rounding flip")
    ap.add_argument("--no-paths", action="store_true", help="skip the kernel-path settings")
    ap.add_argument("--only", nargs="+", default=None, help="these fixtures only (default: every case)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--flip-seed", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        print(json.dumps(measure(a.flip_seed, a.only)))
        return

    settings = []
    paths = itertools.product(["default", "avx2", "avx512"], ["SSE4_2", "AVX2", "AVX512"], [1, 2])
    for cap, mkl, threads in [] if a.no_paths else paths:
        env = {"ATEN_CPU_CAPABILITY": cap, "MKL_ENABLE_INSTRUCTIONS": mkl}
        settings.append((f"{cap}/{mkl}/{threads}t", env, ["--threads", str(threads)]))
    for seed in range(a.flips):
        settings.append((f"flip {seed}", {}, ["--flip-seed", str(seed)]))

    worst: dict[str, dict] = {}
    print(f"{'setting':22s} fixture: max norm-relative | logits elementwise | q-logits elementwise")
    only = ["--only", *a.only] if a.only else []
    for label, env, args in settings:
        res = run_child(env, args + only)
        cells = []
        for name, r in res.items():
            kind = "flip" if label.startswith("flip") else "paths"
            w = worst.setdefault(
                f"{name} ({kind})", {"rel": 0.0, "logits_abs": 0.0, "q_abs": 0.0, "exact": 0}
            )
            w["rel"] = max(w["rel"], r["rel"])
            w["logits_abs"] = max(w["logits_abs"], r["logits_abs"])
            w["q_abs"] = max(w["q_abs"], r["q_abs"])
            w["exact"] += r["exact_failures"]
            cells.append(f"{name}: {r['rel']:.1e} | {r['logits_abs']:.1e} | {r['q_abs']:.1e}")
        print(f"{label:22s} " + "; ".join(cells), flush=True)
    print("\nlargest over all settings")
    print("(norm-relative | logits elementwise | q-logits elementwise | exact failures):")
    for key, w in worst.items():
        print(f"  {key:40s} {w['rel']:.2e} | {w['logits_abs']:.2e} | {w['q_abs']:.2e} | {w['exact']}")


if __name__ == "__main__":
    main()
