"""Throughput of one supervision step (forward + backward) for every reasoner, against the machine's
measured matmul peak; the Attractor's solver iterations and peak memory as ``max_iter`` grows; and,
when the reference TRM code is given, the throughput ratio gridloop / reference in the same run.

    python bench/bench_reasoners.py                                   # tiny + 7m, Sudoku, batch 32, CPU
    python bench/bench_reasoners.py --reference /tmp/trm_ref          # + reference TRM side by side
    python bench/bench_reasoners.py --device cuda --sizes 7m 27m      # on a GPU (fp32)

The reference checkout needs ``einops`` and ``pydantic`` (not gridloop dependencies); it is imported
from the given directory only, never installed. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention, forward and backward) on one
step; the peak is the best of several large fp32 matmuls at the same thread count. Step times are the
best of ``--steps`` timed steps (after a warm-up), interleaved with the reference's when it is given.
On a shared CPU, ``--threads 1`` avoids the large slow-downs of oversubscribed OpenMP threads.
Benchmarks are not tests: numbers vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasoners.presets import PRESETS, build  # noqa: E402
from reasoners.supervision import initial_carry, train_step  # noqa: E402

MODELS = ("hrm", "trm", "trm_mlp", "attractor")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best observed fp32 GFLOP/s of an n x n x n matmul."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def sudoku_batch(B: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": torch.randint(1, 11, (B, 81), generator=g).to(device),
        "labels": torch.randint(2, 11, (B, 81), generator=g).to(device),
        "puzzle_identifiers": torch.zeros(B, dtype=torch.int32, device=device),
    }


def time_steps(step_fns: list, steps: int, device: torch.device) -> list[list[float]]:
    """Per step function, ``steps`` wall times after one warm-up each. With several functions the
    steps are interleaved (A, B, A, B, ...) so that load from other processes hits them alike."""
    for fn in step_fns:
        fn()  # warm-up (and the first, cold solve for the Attractor)
    times: list[list[float]] = [[] for _ in step_fns]
    for _ in range(steps):
        for i, fn in enumerate(step_fns):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[i].append(time.perf_counter() - t)
    return times


def count_flops(step_fn) -> float:
    with FlopCounterMode(display=False) as counter:
        step_fn()
    return float(counter.get_total_flops())


def gridloop_step(model_name: str, size: str, B: int, device: torch.device):
    """A closure running one training supervision step (forward + backward); and its solver log."""
    torch.manual_seed(0)
    model = build(model_name, size, "sudoku").to(device).train()
    batch = sudoku_batch(B, device)
    state = {"carry": initial_carry(model, batch), "nstep": [], "res": []}

    def step():
        model.zero_grad(set_to_none=True)
        state["carry"], loss, _, out = train_step(model, state["carry"], batch)
        (loss / B).backward()
        info = out["extras"].get("solver")
        if info is not None:
            state["nstep"].append(info.nstep)
            state["res"].append(info.rel_residual.mean().item())

    return step, state


def reference_step(ref_dir: str, size: str, B: int, device: torch.device):
    """The reference TRM (attention) at the same config: fp32, compile off, stablemax ACT loss head."""
    if ref_dir not in sys.path:
        sys.path.insert(0, ref_dir)
    from models.losses import ACTLossHead  # type: ignore
    from utils.functions import load_model_class  # type: ignore

    cfg = dict(
        batch_size=B,
        seq_len=81,
        vocab_size=11,
        num_puzzle_identifiers=1,
        puzzle_emb_ndim=512,
        hidden_size=512,
        num_heads=8,
        expansion=4,
        H_cycles=3,
        L_cycles=6,
        H_layers=0,
        L_layers=2,
        pos_encodings="rope",
        halt_max_steps=16,
        halt_exploration_prob=0.1,
        forward_dtype="float32",
        mlp_t=False,
        puzzle_emb_len=16,
        no_ACT_continue=True,
    )
    if size == "tiny":
        cfg.update(hidden_size=64, num_heads=2, puzzle_emb_ndim=64, H_cycles=2, L_cycles=2)
    elif size != "7m":
        raise ValueError(f"no reference config for size {size!r}")
    torch.manual_seed(0)
    with torch.device(device):
        model = ACTLossHead(
            load_model_class("recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1")(cfg),
            loss_type="stablemax_cross_entropy",
        ).train()
    batch = sudoku_batch(B, device)
    with torch.device(device):
        holder = {"carry": model.initial_carry(batch)}

    def step():
        model.zero_grad(set_to_none=True)
        holder["carry"], loss, _, _, _ = model(return_keys=[], carry=holder["carry"], batch=batch)
        (loss / B).backward()

    return step


def result_row(name: str, size: str, B: int, times: list[float], flops: float, state=None) -> dict:
    # best of N: other processes on a shared machine only ever add time
    t = min(times)
    row = dict(
        model=name, size=size, batch=B, step_s=t, samples_s=B / t, gflop=flops / 1e9, gflops=flops / t / 1e9
    )
    if state and state["nstep"]:
        row["solver_iters"] = statistics.mean(state["nstep"])
        row["rel_residual"] = statistics.mean(state["res"])
    return row


def memory_probe(size: str, max_iter: int, B: int, device: torch.device) -> dict:
    """One training step of the Attractor with tol=0 (every solve runs all max_iter evaluations)."""
    torch.manual_seed(0)
    model = build("attractor", size, "sudoku", max_iter=max_iter, tol=0.0).to(device).train()
    batch = sudoku_batch(B, device)
    carry = initial_carry(model, batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()
        before = _proc_status_bytes("VmRSS")
    carry, loss, _, out = train_step(model, carry, batch)
    (loss / B).backward()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _proc_status_bytes("VmHWM")
    info = out["extras"]["solver"]
    return dict(
        max_iter=max_iter,
        solver_iters=info.nstep,
        before_mib=before / 2**20,
        peak_mib=peak / 2**20,
        step_mib=(peak - before) / 2**20,
    )


def _reset_peak_rss() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux; ignored elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _proc_status_bytes(key: str) -> int:
    """VmRSS (current) or VmHWM (peak since exec or the last reset) from /proc/self/status, in bytes.
    (``ru_maxrss`` would not do: Linux carries it across exec from the parent.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def fmt_table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:,.2f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--sizes", nargs="+", default=["tiny", "7m"])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (best reported)")
    p.add_argument("--reference", default=None, help="path to a TinyRecursiveModels checkout")
    p.add_argument("--max-iters", nargs="*", type=int, default=[2, 4, 8, 16, 32])
    p.add_argument("--memory-size", default="7m")
    p.add_argument("--memory-batch", type=int, default=8)
    p.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    if args.memory_probe is not None:  # child process: one measurement, JSON on stdout
        print(json.dumps(memory_probe(args.memory_size, args.memory_probe, args.memory_batch, device)))
        return

    step_table(args, device)
    if args.max_iters:
        memory_table(args, device)


def step_table(args, device: torch.device) -> None:
    """Time one supervision step (forward + backward) of each model and size; print the table."""
    peak = max(matmul_peak(device, 1024), matmul_peak(device, 2048))
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"measured fp32 matmul peak {peak:.1f} GFLOP/s\n"
    )
    rows = []
    for size in args.sizes:
        for name in args.models:
            if size not in PRESETS[name]:
                print(f"(no {size} preset for {name}: skipped)\n")
                continue
            step, state = gridloop_step(name, size, args.batch, device)
            with_reference = args.reference and name == "trm" and size in ("tiny", "7m")
            fns = (
                [step, reference_step(args.reference, size, args.batch, device)] if with_reference else [step]
            )
            times = time_steps(fns, args.steps, device)
            row = result_row(name, size, args.batch, times[0], count_flops(step), state)
            new_rows = [row]
            if with_reference:
                ref = result_row("reference trm", size, args.batch, times[1], count_flops(fns[1]))
                row["vs_reference"] = ref["step_s"] / row["step_s"]
                new_rows.append(ref)
            for r in new_rows:
                r["pct_peak"] = 100 * r["gflops"] / peak
            rows += new_rows
            print(fmt_table(new_rows, list(new_rows[-1] | row)), flush=True)
    peak_after = matmul_peak(device)
    if peak_after > peak:  # the machine is shared: keep the best peak seen, and say so
        print(f"(matmul peak re-measured after the runs: {peak_after:.1f} GFLOP/s; percentages use the best)")
        for r in rows:
            r["pct_peak"] = 100 * r["gflops"] / peak_after
    cols = [
        "model",
        "size",
        "batch",
        "step_s",
        "samples_s",
        "gflop",
        "gflops",
        "pct_peak",
        "solver_iters",
        "rel_residual",
        "vs_reference",
    ]
    print("\n## Supervision step (forward + backward)\n")
    print(fmt_table(rows, cols))


def memory_table(args, device: torch.device) -> None:
    """The Attractor's memory per training step against max_iter, each in a fresh process."""
    mem = []
    for max_iter in args.max_iters:
        cmd = [
            sys.executable,
            __file__,
            "--device",
            args.device,
            "--memory-size",
            args.memory_size,
            "--memory-batch",
            str(args.memory_batch),
            "--memory-probe",
            str(max_iter),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
        mem.append(json.loads(out.stdout.strip().splitlines()[-1]))
    what = "CUDA memory allocated" if device.type == "cuda" else "process RSS"
    print(
        f"\n## Attractor {args.memory_size}, batch {args.memory_batch}: memory vs max_iter (tol=0, "
        f"one training step in a fresh process each; {what} before the step and its peak)\n"
    )
    print(fmt_table(mem, ["max_iter", "solver_iters", "before_mib", "peak_mib", "step_mib"]))


if __name__ == "__main__":
    main()
