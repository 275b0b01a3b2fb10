"""The Attractor's issue-14 bench: phantom-gradient fidelity against cost, and the issue's targets.

    # (a) cosine of UPG(k, tau)'s parameter gradient to the implicit (IFT) gradient, beside its cost
    python bench/bench_attractor.py fidelity --data data/sudoku-2x3-1k              # fresh tiny model
    python bench/bench_attractor.py fidelity --checkpoint runs/x/checkpoints/last.pt --probe 32
    # (b) the issue's targets with PASS / MISS for a laptop_sudoku Attractor run
    python bench/bench_attractor.py targets runs/x --puzzles 100
    # (c) the update cost of a run's checkpoint under variants of its config, side by side with TRM
    python bench/bench_attractor.py cost runs/x --variant min_iter=1 --variant jac_rows=16,jac_every=4
    # (d) per supervision step, converged share and evaluations of plain iteration / Anderson / restarts
    python bench/bench_attractor.py solves runs/x --puzzles 128 --budget 32
    # (e) the training solves of new-puzzle and carried rows, resumed from the run's checkpoint
    python bench/bench_attractor.py carried runs/x --updates 40 --schedule-steps 4000 [--frozen]
    # (f) the cost batch's unconverged rows: residual traces, and rho where plain iteration lands
    python bench/bench_attractor.py stuck runs/x --dense

(a) ``fidelity``. On a fixed probe batch (the first ``--probe`` test puzzles) the model is rolled out
``--step - 1`` supervision steps (eval mode, as the trainer's evaluation) to a warm-started state, as
training sees it; from that one state, with the same S* (the solve is deterministic), each gradient
option makes one training update's loss (the trainer's ``act_loss``, every row counted) and its
parameter gradient. The reference is ``grad="implicit"`` with a tight backward solve
(``--implicit-iters``, ``--implicit-tol``); its own backward residual is printed, because on an
expansive map (rho >= 1, also printed) the IFT system has no convergent Neumann series and the
"reference" is itself unreliable. Per option: cosine to the reference, the norm ratio, the network
calls made with grad, and the time of one update (forward + backward, median of ``--reps``) measured
interleaved with a TRM-tiny update (the Attractor's mixer) on the same batch and thread count, as a
ratio. The Jacobian penalty is switched off for the grid (it is not part of the gradient being compared).

(b) ``targets``. From the run directory: the share of training solves that exit below tol after update
``--after`` (metrics.csv, mean of the logged windows); the rho < 1 share of the contraction probe at
every evaluation, training and EMA weights (>= 95% each); exact accuracy at test-time ``max_iter``
4 / 8 / 16 / 32 (EMA weights, first ``--puzzles`` test puzzles, through
:func:`reasoners.test_time.attractor_grid`, the code ``reasoners.evaluate`` runs), which must not fall
by more than 1 point from one budget to the next; and the cost of one training update of the run's
own configuration (training weights, penalty included, amortised over ``jac_every`` updates) at a
warm state against a TRM-tiny update (same mixer) on the same batch (at most 1.5x), with the
converged share of the timed solves.

Benchmarks are not tests: times vary with the machine and its load; run with ``--threads 1`` on a
shared CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from reasoners.attractor import Attractor, contraction_probe  # noqa: E402
from reasoners.checkpoint import latest_checkpoint, load_reasoner  # noqa: E402
from reasoners.data import load_dataset, to_batch  # noqa: E402
from reasoners.device import restored_cpu_settings  # noqa: E402
from reasoners.presets import build  # noqa: E402
from reasoners.supervision import Carry, act_loss, rollout  # noqa: E402
from reasoners.test_time import attractor_grid  # noqa: E402
from solvers import implicit_grad  # noqa: E402

# ----------------------------------------------------------------------------- shared pieces


@contextlib.contextmanager
def config_set(model, **over):
    """Temporarily set fields of ``model.config`` (read at every forward)."""
    before = {k: getattr(model.config, k) for k in over}
    for k, v in over.items():
        setattr(model.config, k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            setattr(model.config, k, v)


class GradCalls:
    """Counts the calls of ``model.net`` (batch applications of the tiny network), with and without
    grad, while the block runs."""

    def __init__(self, model):
        self.net, self.with_grad, self.without = model.net, 0, 0

    def _hook(self, module, args, output):
        if torch.is_grad_enabled():
            self.with_grad += 1
        else:
            self.without += 1

    def __enter__(self):
        self._h = self.net.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._h.remove()


def warm_state(model, batch, step: int):
    """The carried state entering supervision step ``step`` (eval-mode rollout from the initial one)."""
    model.eval()
    state = model.initial_state(batch["inputs"].shape[0], batch["inputs"].device)
    if step > 1:
        with torch.no_grad():
            for out in rollout(model, batch, step - 1):
                state = out.state
    return state


def update(model, state, batch, loss_name: str = "stablemax"):
    """One training update's forward and backward from ``state`` (every row counted as halted, so
    that the whole batch enters the loss); returns the forward's extras."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(state, batch)
    B = batch["inputs"].shape[0]
    carry = Carry(
        state=out.state,
        steps=torch.ones(B, dtype=torch.int32),
        halted=torch.ones(B, dtype=torch.bool),
        batch=batch,
    )
    outputs = {"logits": out.logits, "q_halt_logits": out.q_halt, "q_continue_logits": out.q_continue}
    outputs["extras"] = out.extras
    loss, _ = act_loss(outputs, carry, loss_name)
    (loss / B).backward()
    return out.extras


def flat_grad(model) -> torch.Tensor:
    return torch.cat(
        [p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()]
    )


def timed(fns: list, reps: int) -> list[float]:
    """Median wall time of each function, run interleaved (A, B, C, A, B, C, ...) after one warm-up,
    so that load from other processes hits them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def trm_like(task, attractor, seed: int = 0):
    """The cost yardstick: TRM-tiny for the task with the Attractor's token mixer (TRM-MLP for an
    ``attractor_mlp``, the laptop tier's TRM recipe on Sudoku; attention TRM for an ``attractor``), so
    that equal mixers are compared."""
    torch.manual_seed(seed)
    name = "trm_mlp" if attractor.config.mixer == "mlp" else "trm"
    return build(name, "tiny", task.preset_puzzle, **task.model_overrides())


def load_model(checkpoint: str | None, data: str | None, ema: bool, seed: int):
    """(Attractor, task, test split, where it came from): the checkpoint's weights, or a freshly
    initialised tiny Attractor for the dataset at ``data``."""
    if checkpoint:
        path = Path(checkpoint)
        path = latest_checkpoint(path) or path if path.is_dir() else path
        model, task, ckpt = load_reasoner(path, ema=ema)
        root = data or (ckpt.get("config") or {}).get("data", {}).get("dir")
        source = (
            f"{path} (step {ckpt.get('step')}, {'EMA' if ema and ckpt.get('ema') else 'training'} weights)"
        )
    else:
        if not data:
            raise SystemExit("give --checkpoint or --data (a dataset folder for a fresh model)")
        root = data
        task = load_dataset(root, "sudoku", need_train=False).task
        torch.manual_seed(seed)
        model = build("attractor", "tiny", task.preset_puzzle, **task.model_overrides())
        source = f"fresh tiny Attractor (seed {seed})"
    if not isinstance(model, Attractor):
        raise SystemExit(f"{source} is not an Attractor")
    split = load_dataset(root, task.kind, need_train=False).test
    return model, task, split, source


# ----------------------------------------------------------------------------- (a) fidelity


def fidelity(args) -> list[dict]:
    model, task, split, source = load_model(args.checkpoint, args.data, ema=False, seed=args.seed)
    batch = to_batch(split, np.arange(min(args.probe, len(split.inputs))), "cpu")
    state = warm_state(model, batch, args.step)
    trm = trm_like(task, model, args.seed)
    trm_state = warm_state(trm, batch, args.step)
    probe = contraction_probe(model, batch, steps=args.step)
    print(f"# phantom-gradient fidelity: {source}")
    print(
        f"probe: {batch['inputs'].shape[0]} test puzzles, supervision step {args.step}, "
        f"{torch.get_num_threads()} thread(s); map at S*: rho median {probe['rho_median']:.3f}, "
        f"q95 {probe['rho_q95']:.3f}, share < 1 {probe['rho_below_1']:.0%}"
    )
    off = dict(jac_weight=0.0)

    def run(**over):
        with config_set(model, **off, **over), GradCalls(model) as calls:
            extras = update(model, state, batch)
        return flat_grad(model), extras["solver"], calls

    g_ref, info, ref_calls = run(
        grad="implicit", implicit_max_iter=args.implicit_iters, implicit_tol=args.implicit_tol
    )
    back = implicit_grad.last_info
    print(
        f"solve: {info.nstep} map evaluations, {info.converged.float().mean():.0%} converged; implicit "
        f"reference: backward solve residual median {back.rel_residual.median():.2e} "
        f"({back.converged.float().mean():.0%} of rows below {args.implicit_tol:g}, {back.nstep} iterations)"
    )
    configs = [
        (
            "implicit",
            dict(grad="implicit", implicit_max_iter=args.implicit_iters, implicit_tol=args.implicit_tol),
        )
    ]
    configs += [("one_step", dict(grad="one_step"))]
    configs += [
        (f"UPG({k}, {tau:g})", dict(grad="phantom", phantom_k=k, phantom_tau=tau))
        for k in args.ks
        for tau in args.taus
    ]
    rows = []
    for name, over in configs:
        g, _, calls = run(**over)
        cos = float(torch.nn.functional.cosine_similarity(g, g_ref, dim=0))
        rows.append(
            dict(
                name=name,
                over=over,
                cosine=cos,
                norm_ratio=float(g.norm() / g_ref.norm()),
                grad_calls=calls.with_grad,
            )
        )

    def attractor_fn(over):
        def fn():
            with config_set(model, **off, **over):
                update(model, state, batch)

        return fn

    fns = [lambda: update(trm, trm_state, batch)] + [attractor_fn(over) for _, over in configs]
    with GradCalls(trm) as trm_calls:
        update(trm, trm_state, batch)
    t = timed(fns, args.reps)
    print(
        f"\n{type(trm).__name__}-tiny ({trm.config.mixer}) update on the same batch: {t[0] * 1e3:.0f} ms, "
        f"{trm_calls.with_grad} network calls "
        f"with grad, {trm_calls.without} without\n"
    )
    print("(net calls with grad: in the forward; the implicit gradient adds one vector-Jacobian product per")
    print("backward iteration)\n")
    print("| gradient | cosine to implicit | norm / implicit | net calls with grad | ms / update | x TRM |")
    print("|---|---:|---:|---:|---:|---:|")
    for row, sec in zip(rows, t[1:], strict=True):
        row["ms"], row["x_trm"] = sec * 1e3, sec / t[0]
        print(
            f"| {row['name']} | {row['cosine']:.4f} | {row['norm_ratio']:.3f} | {row['grad_calls']} "
            f"| {row['ms']:.0f} | {row['x_trm']:.2f} |"
        )
    return rows


# ----------------------------------------------------------------------------- (b) targets


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _num(row: dict, key: str) -> float | None:
    v = row.get(key)
    return float(v) if v not in (None, "") else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def targets(args) -> dict:
    run_dir = Path(args.run_dir)
    rows = _metrics(run_dir)
    last_step = max((int(r["step"]) for r in rows), default=0)
    print(f"# issue-14 targets: {run_dir} (last logged update {last_step})\n")
    results = {}

    # 1. training solves below tol after update --after
    conv = [_num(r, "solver_converged") for r in rows if int(r["step"]) > args.after]
    conv = [c for c in conv if c is not None]
    share = sum(conv) / len(conv) if conv else None
    results["converged"] = share
    ok1 = None if share is None else share >= 0.9
    where = (
        f"{share:.1%} over {len(conv)} logged windows"
        if share is not None
        else "no training rows logged there"
    )
    print(f"- training solves below tol after update {args.after}: {where} (>= 90%): {_verdict(ok1)}")

    # 2. rho < 1 share at every evaluation, training and EMA weights
    evals = [r for r in rows if _num(r, "eval_rho_below_1") is not None]
    ok2 = None
    if evals:
        ok2 = True
        print("- rho < 1 share of the probe puzzles at every evaluation (>= 95%, training and EMA weights):")
        for r in evals:
            raw, ema = _num(r, "eval_rho_below_1"), _num(r, "eval_ema_rho_below_1")
            good = raw >= 0.95 and (ema is None or ema >= 0.95)
            ok2 &= good
            ema_s = f"{ema:.0%} (median {_num(r, 'eval_ema_rho_median'):.2f})" if ema is not None else "none"
            print(
                f"    update {r['step']}: training {raw:.0%} (median {_num(r, 'eval_rho_median'):.2f}), "
                f"EMA {ema_s}: {_verdict(good)}"
            )
        print(f"  every evaluation: {_verdict(ok2)}")
    else:
        print("- rho < 1 share: no evaluation row with the contraction probe: n/a")
    results["rho_rows"] = [
        (int(r["step"]), _num(r, "eval_rho_below_1"), _num(r, "eval_ema_rho_below_1")) for r in evals
    ]

    # 3. exact accuracy against test-time max_iter
    ckpt = latest_checkpoint(run_dir)
    model, task, split, source = load_model(str(ckpt), args.data, ema=True, seed=0)
    n = min(args.puzzles, len(split.inputs))
    grid = attractor_grid(model, task, split, np.arange(n), args.max_iter, [model.config.tol], batch_size=256)
    exact = [g["exact"] for g in grid]
    ok3 = all(b >= a - 0.01 for a, b in zip(exact, exact[1:], strict=False))
    results["max_iter_exact"] = dict(zip(args.max_iter, exact, strict=True))
    curve = " / ".join(f"{e:.1%}" for e in exact)
    evals_s = " / ".join(f"{g['map_evals_per_step']:.1f}" for g in grid)
    print(
        f"- exact at test-time max_iter {' / '.join(map(str, args.max_iter))} ({source}, first {n} test "
        f"puzzles, tol {model.config.tol:g}): {curve} (map evaluations per step {evals_s}); "
        f"never more than 1 point lower than the budget before: {_verdict(ok3)}"
    )

    # 4. update cost against TRM at a warm (converged) state
    model, task, split, _ = load_model(str(ckpt), args.data, ema=False, seed=0)
    batch = to_batch(split, np.arange(min(args.cost_batch, len(split.inputs))), "cpu")
    state = warm_state(model, batch, args.step)
    trm = trm_like(task, model)
    trm_state = warm_state(trm, batch, args.step)
    info = update(model, state, batch)["solver"]
    c = model.config
    # A penalty due every jac_every updates: time blocks of jac_every updates (each holds exactly one
    # penalised update), so the ratio is the amortised cost the run paid.
    every = c.jac_every if c.jac_weight > 0 else 1

    def attractor_block():
        for _ in range(every):
            update(model, state, batch)

    t_trm, t_att = timed([lambda: update(trm, trm_state, batch), attractor_block], args.reps)
    t_att /= every
    ratio = t_att / t_trm
    results["cost_ratio"] = ratio
    print(
        f"- one training update (the run's config: grad {c.grad}, k {c.phantom_k}, tau {c.phantom_tau:g}, "
        f"jac_weight {c.jac_weight:g} every {c.jac_every}, damping {c.damping:g}; amortised) at "
        f"supervision step {args.step}, batch "
        f"{batch['inputs'].shape[0]}, {torch.get_num_threads()} thread(s): {t_att * 1e3:.0f} ms against "
        f"{type(trm).__name__}-tiny's ({trm.config.mixer}) {t_trm * 1e3:.0f} ms = {ratio:.2f}x (its "
        f"solve: {info.nstep} map evaluations, "
        f"{info.converged.float().mean():.0%} converged) (<= 1.5x): {_verdict(ratio <= 1.5)}"
    )
    results["verdicts"] = dict(converged=ok1, rho=ok2, max_iter=ok3, cost=ratio <= 1.5)
    return results


# ----------------------------------------------------------------------------- (c) cost of settings


def _parse_variant(text: str) -> dict:
    """ "min_iter=1,jac_rows=16" -> {"min_iter": 1, "jac_rows": 16} (ints, floats, none, true/false)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: expected key=value[,key=value...]")
        low = raw.strip().lower()
        if low in ("none", "null"):
            value = None
        elif low in ("true", "false"):
            value = low == "true"
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        out[key.strip()] = value
    return out


def cost(args) -> list[dict]:
    """One training update of a run's checkpoint (training weights) under each variant of its config,
    timed interleaved with a TRM-tiny update of the same mixer on the same batch and thread count, at a
    warm state (supervision step ``--step``); a penalty due every jac_every updates is amortised. With
    ``--batches N`` the same on N consecutive batches of test puzzles (the first is the targets' batch),
    each batch its own interleaved comparison, then the median and range of the ratio over them: one
    batch's figure is set by its slowest row."""
    path = Path(args.run_dir)
    ckpt = latest_checkpoint(path) or path if path.is_dir() else path
    model, task, split, source = load_model(str(ckpt), args.data, ema=False, seed=0)
    trm = trm_like(task, model)
    variants = [("as trained", {})] + [(v, _parse_variant(v)) for v in args.variant]
    for _, over in variants:
        unknown = [k for k in over if not hasattr(model.config, k)]
        if unknown:
            raise SystemExit(f"unknown AttractorConfig field(s) {', '.join(unknown)}")
    size = min(args.cost_batch, len(split.inputs))
    n_batches = min(args.batches, len(split.inputs) // size)
    if n_batches < args.batches:
        print(f"note: the test split holds {n_batches} batch(es) of {size}, not {args.batches}")
    rows = []
    for b in range(n_batches):
        batch = to_batch(split, np.arange(b * size, (b + 1) * size), "cpu")
        state = warm_state(model, batch, args.step)
        trm_state = warm_state(trm, batch, args.step)
        fns, infos = [lambda trm_state=trm_state, batch=batch: update(trm, trm_state, batch)], []
        for _, over in variants:
            with config_set(model, **over):
                c = model.config
                every = c.jac_every if c.jac_weight > 0 else 1
                info = update(model, state, batch)["solver"]
                infos.append((info, every))

            def block(over=over, every=every, state=state, batch=batch):
                with config_set(model, **over):
                    for _ in range(every):
                        update(model, state, batch)
                return None

            fns.append(block)
        times = timed(fns, args.reps)
        t_trm = times[0]
        if b == 0:
            print(
                f"# update cost at supervision step {args.step}: {source}, batch {size}, "
                f"{torch.get_num_threads()} thread(s), against {type(trm).__name__}-tiny "
                f"({trm.config.mixer}) {t_trm * 1e3:.0f} ms (median of {args.reps}, interleaved)\n"
            )
            print("| test puzzles | variant | ms per update (amortised) | x TRM | solve evaluations ", end="")
            print("| converged |")
            print("|---|---|---:|---:|---:|---:|")
        for (name, _), t, (info, every) in zip(variants, times[1:], infos, strict=True):
            t /= every
            rows.append(dict(variant=name, batch=b, ms=t * 1e3, ratio=t / t_trm, nstep=info.nstep))
            print(
                f"| {b * size}-{(b + 1) * size - 1} | {name} | {t * 1e3:.0f} | {t / t_trm:.2f}x | "
                f"{info.nstep} | {info.converged.float().mean():.0%} |"
            )
    if n_batches > 1:
        print(f"\nover the {n_batches} batches (x TRM): ", end="")
        summary = []
        for name, _ in variants:
            r = sorted(x["ratio"] for x in rows if x["variant"] == name)
            summary.append(f"{name}: median {statistics.median(r):.2f}x ({r[0]:.2f}-{r[-1]:.2f})")
        print("; ".join(summary))
    return rows


# ----------------------------------------------------------------------------- (d) solver variants


def solves(args) -> list[dict]:
    """Where do a checkpoint's solves need their evaluations? On ``--puzzles`` training (or test)
    puzzles, supervision steps 1 .. ``--steps`` (each step's start is the carry of the checkpoint's own
    solve, eval mode, as the trainer's evaluation rolls out), every solver variant solves that step's
    map from the same start with the same budget; printed per step: converged share and mean
    evaluations a sample needed. Step 1 starts from the initial state (a new puzzle, cold), the others
    from the carried state (warm)."""
    from solvers import anderson, fixed_point_iter

    path = Path(args.run_dir)
    ckpt = latest_checkpoint(path) or path if path.is_dir() else path
    model, task, _, source = load_model(str(ckpt), args.data, ema=args.ema, seed=0)
    root = args.data or str(Path(model_data_dir(ckpt)))
    ds = load_dataset(root, task.kind, need_train=args.split == "train")
    split = getattr(ds, args.split)
    n = min(args.puzzles, len(split.inputs))
    rows = np.random.default_rng(args.seed).choice(len(split.inputs), n, replace=False)
    batch = to_batch(split, np.sort(rows), "cpu")
    c = model.config
    common = dict(max_iter=args.budget, tol=c.tol, min_iter=c.min_iter, rows=True)
    variants = {
        "plain iteration": lambda F, s: fixed_point_iter(F, s, **common),
        f"Anderson({c.anderson_m})": lambda F, s: anderson(
            F, s, m=c.anderson_m, lam=c.anderson_lam, **common
        ),
        f"Anderson({c.anderson_m}), restarts": lambda F, s: anderson(
            F, s, m=c.anderson_m, lam=c.anderson_lam, restart=1.0, **common
        ),
    }
    print(
        f"# solver variants on {source}: {n} {args.split} puzzles, budget {args.budget} evaluations, "
        f"tol {c.tol:g} (cell: converged share / mean evaluations per sample)\n"
    )
    print("| supervision step | start | " + " | ".join(variants) + " |")
    print("|---:|---|" + "---:|" * len(variants))
    model.eval()
    out_rows = []
    with torch.no_grad():
        x = model.embed(batch["inputs"], batch["puzzle_identifiers"])
        F = model.fixed_point_map(x, model.rotary() if model.rotary is not None else None)
        state = model.initial_state(n, "cpu")
        for step in range(1, args.steps + 1):
            cells, rec = [], {"step": step}
            for name, solve in variants.items():
                _, info = solve(F, tuple(state))
                conv, ev = float(info.converged.float().mean()), float(info.evals.float().mean())
                rec[name] = (conv, ev)
                cells.append(f"{conv:.1%} / {ev:.1f}")
            out_rows.append(rec)
            print(f"| {step} | {'cold' if step == 1 else 'warm'} | " + " | ".join(cells) + " |")
            state = model(state, batch).state  # the checkpoint's own solve carries the state on
    return out_rows


# ----------------------------------------------------------------------------- (e) carried rows


def carried(args) -> dict:
    """Which training solves fail, and what would they need? The run's last checkpoint is resumed into
    the trainer (its own config, optimiser state, sampler and carry; written into a temporary folder,
    the run is not touched) for ``--updates`` training updates, at the lr its schedule gives when the
    schedule is ``--schedule-steps`` long (default: the run's own), or with the weights held still
    (``--frozen``: no optimiser step, no EMA). Per row of every update: a new puzzle (cold: the
    initial state) or carried (warm); converged within the run's own budget; the relative residual of a
    warm start whose previous solve had converged. Each row that did not converge is solved again from
    the same start with a budget of ``--budget`` by the run's solver, plain iteration and plain
    Anderson, and its spectral radius is estimated at the point the run's solver reaches."""
    import tempfile

    from omegaconf import OmegaConf

    import reasoners.attractor as attractor_mod
    import reasoners.train as train_mod
    from solvers import anderson, fixed_point_iter, spectral_radius

    run_dir = Path(args.run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None or not (run_dir / "config.yaml").is_file():
        raise SystemExit(f"{run_dir} is not a trainer run directory with a checkpoint and config.yaml")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    # the solve measured is the checkpoint's own: the trainer's resume keeps its model_config wherever
    # the run's overrides are silent (a preset changed since the run cannot change it)
    cfg.trainer.resume = str(ckpt)
    cfg.trainer.threads = args.threads
    cfg.trainer.progress = False
    if args.schedule_steps:
        cfg.trainer.max_steps = args.schedule_steps
    tc = train_mod.check_config(cfg)
    ctx = train_mod.init_distributed("gloo")
    records: list[dict] = []
    original = attractor_mod.Attractor.solve

    def recording_solve(self, F, s0, cold=None):
        s, info = original(self, F, s0, cold)
        if not self.training:
            return s, info
        c = self.config
        cold = self.cold_rows(s0) if cold is None else cold
        with torch.no_grad(), attractor_mod._eval_mode(self):
            start_res, _ = attractor_mod._joint_residual(s0, F(s0))
            rec = dict(cold=cold.clone(), converged=info.converged.clone(), start_res=start_res)
            fail = (~info.converged).nonzero().flatten()
            if len(fail):

                def F_fail(st, rows=None):
                    return F(st, fail if rows is None else fail[rows])

                sub = tuple(t[fail] for t in s0)
                common = dict(max_iter=args.budget, tol=c.tol, min_iter=1, rows=True)
                kw = dict(m=c.anderson_m, lam=c.anderson_lam, beta=c.anderson_beta)
                end, own = anderson(F_fail, sub, restart=c.anderson_restart, **kw, **common)
                _, plain = fixed_point_iter(F_fail, sub, **common)
                _, bare = anderson(F_fail, sub, **kw, **common)
                with torch.enable_grad():
                    rho = spectral_radius(F_fail, tuple(t.detach() for t in end), iters=20).float()
                need = {}
                for name, i in (("run's solver", own), ("plain iteration", plain), ("Anderson", bare)):
                    need[name] = torch.where(i.converged, i.evals, torch.full_like(i.evals, args.budget + 1))
                rec.update(fail=fail, need=need, rho=rho)
            records.append(rec)
        return s, info

    with tempfile.TemporaryDirectory() as tmp:
        run = train_mod._setup(cfg, tc, Path(tmp), torch.device("cpu"), ctx)
        if args.frozen:
            run.opt.step = lambda *a, **k: None
            if run.sparse_opt is not None:
                run.sparse_opt.step = lambda *a, **k: None
            run.ema = None
        before = [p.detach().clone() for p in run.core.parameters()]
        start_step = run.step
        attractor_mod.Attractor.solve = recording_solve
        try:
            window: dict[str, float] = {}
            lrs = [train_mod._update(run, window) for _ in range(args.updates)]
        finally:
            attractor_mod.Attractor.solve = original
        moved = max(
            float((p.detach() - b).abs().max()) for p, b in zip(run.core.parameters(), before, strict=True)
        )
    out = {
        "moved": moved,
        "lr": (min(lrs), max(lrs)),
        "budget": args.budget,
        "max_iter": run.core.config.max_iter,
    }
    for kind in ("cold", "warm"):
        rows = conv = 0
        for r in records:
            mask = r["cold"] if kind == "cold" else ~r["cold"]
            rows += int(mask.sum())
            conv += int((mask & r["converged"]).sum())
        out[kind] = {"rows": rows, "converged": conv}
    prev_conv = [
        r["start_res"][~r["cold"] & p["converged"]] for p, r in zip(records, records[1:], strict=False)
    ]
    warm_res = torch.cat(prev_conv) if prev_conv else torch.zeros(0)
    out["warm_start_residual"] = (
        (float(warm_res.median()), float(warm_res.quantile(0.9))) if len(warm_res) else (None, None)
    )
    print(
        f"# training solves resumed from {ckpt} (update {start_step}), {args.updates} updates at lr "
        f"{out['lr'][0]:.2e}-{out['lr'][1]:.2e}{' with the weights held still' if args.frozen else ''} "
        f"(largest weight change {moved:.2e})\n"
    )
    for kind in ("cold", "warm"):
        o = out[kind]
        print(f"- {kind} rows: {o['rows']}, converged within the run's budget {o['converged']}")
    med, q90 = out["warm_start_residual"]
    if med is not None:
        print(f"- warm start after a converged solve: relative residual median {med:.2e}, 90th pct {q90:.2e}")
    cuts = [q for q in (16, 24, 32, 48, 64, 96) if q <= args.budget]
    print(f"\n| failed rows | count | rho > 1 | needed within {' / '.join(map(str, cuts))} evaluations |")
    print("|---|---:|---:|---|")
    for kind in ("cold", "warm"):
        for name in ("run's solver", "plain iteration", "Anderson"):
            need, rho = [], []
            for r in records:
                if "fail" in r:
                    sel = r["cold"][r["fail"]] if kind == "cold" else ~r["cold"][r["fail"]]
                    need.append(r["need"][name][sel])
                    rho.append(r["rho"][sel])
            need_t = torch.cat(need) if need else torch.zeros(0, dtype=torch.long)
            rho_t = torch.cat(rho) if rho else torch.zeros(0)
            within = [int((need_t <= q).sum()) for q in cuts]
            out[f"{kind} {name}"] = {
                "count": len(need_t),
                "rho_above_1": int((rho_t > 1).sum()),
                "within": within,
            }
            print(
                f"| {kind}, {name} | {len(need_t)} | {int((rho_t > 1).sum())} | "
                + " / ".join(map(str, within))
                + " |"
            )
    return out


# ----------------------------------------------------------------------------- (f) the stuck rows


def _flat_map(F, state: tuple):
    """F as a map on one flat vector (the joint (y, z) of one row), and that state flattened."""
    shapes, sizes = [t.shape for t in state], [t.numel() for t in state]

    def f(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, sizes)
        return torch.cat(
            [t.flatten() for t in F(tuple(p.reshape(sh) for p, sh in zip(parts, shapes, strict=True)))]
        )

    return f, torch.cat([t.flatten() for t in state]).detach()


def stuck(args) -> list[dict]:
    """The rows of the cost batch whose solve does not converge, and why. The timed update's batch (the
    first ``--cost-batch`` test puzzles, the state entering supervision step ``--step``, training
    weights) is solved as the run solves it; each row that ends above tol is solved alone from the same
    warm start by plain iteration for ``--budget`` evaluations (its residual trace: where it starts, how
    far it grows before it falls, when it reaches tol), by Anderson with restarts (the run's solver) and
    by plain Anderson; at the point plain iteration reaches, the spectral radius of the map's Jacobian is
    estimated by the probe's power method (20 iterations, seeded) and, with ``--dense``, read from the
    eigenvalues of the dense Jacobian (numpy), an instrument independent of the power method."""
    from solvers import anderson, fixed_point_iter, spectral_radius

    path = Path(args.run_dir)
    ckpt = latest_checkpoint(path) or path if path.is_dir() else path
    model, task, split, source = load_model(str(ckpt), args.data, ema=False, seed=0)
    batch = to_batch(split, np.arange(min(args.cost_batch, len(split.inputs))), "cpu")
    state = warm_state(model, batch, args.step)
    c = model.config
    model.eval()
    rotary = model.rotary() if model.rotary is not None else None
    with torch.no_grad():
        x = model.embed(batch["inputs"], batch["puzzle_identifiers"])
        _, info = model.solve(model.fixed_point_map(x, rotary), tuple(state))
    bad = (~info.converged).nonzero().flatten().tolist()
    print(
        f"# unconverged rows of the cost batch: {source}, supervision step {args.step}, "
        f"{batch['inputs'].shape[0]} test puzzles, the run's solve (max_iter {c.max_iter}, tol {c.tol:g}): "
        f"{len(bad)} row(s) {bad}\n"
    )
    head = (
        "| row | run's solve: evaluations, residual | plain iteration: start residual, peak (at evaluation), "
    )
    head += (
        f"below tol after | Anderson with restarts: below tol after | plain Anderson: best in {args.budget} "
    )
    head += "| rho there: power method (20) | rho there: dense eigenvalues |"
    print(head)
    print("|---:|---|---|---:|---:|---:|---:|")
    out = []
    for r in bad:
        Fr = model.fixed_point_map(x[r : r + 1], rotary)
        s0 = tuple(t[r : r + 1] for t in state)
        kw = dict(max_iter=args.budget, tol=c.tol, min_iter=1)
        with torch.no_grad():
            plain_x, plain = fixed_point_iter(Fr, s0, trace=True, **kw)
            _, restarted = anderson(Fr, s0, m=c.anderson_m, lam=c.anderson_lam, restart=1.0, **kw)
            _, pure = anderson(Fr, s0, m=c.anderson_m, lam=c.anderson_lam, **kw)
        tr = plain.trace[:, 0]
        peak = int(tr.argmax())
        torch.manual_seed(r)  # the power method's random start: the same figure on every run
        with torch.enable_grad():
            rho_pm = float(spectral_radius(Fr, tuple(plain_x), iters=20))
        rho_dense = None
        if args.dense:
            f, v = _flat_map(Fr, tuple(plain_x))
            J = torch.autograd.functional.jacobian(f, v, vectorize=True)
            rho_dense = float(np.abs(np.linalg.eigvals(J.double().numpy())).max())

        def when(i):
            return f"{int(i.evals[0])}" if bool(i.converged[0]) else f"not in {args.budget}"

        rec = dict(
            row=r, run_evals=int(info.evals[r]), run_residual=float(info.rel_residual[r]),
            start=float(tr[0]), peak=float(tr[peak]), peak_at=peak + 1, plain=when(plain),
            restarted=when(restarted), anderson_best=float(pure.rel_residual[0]), rho_power=rho_pm,
            rho_dense=rho_dense,
        )  # fmt: skip
        out.append(rec)
        dense = "-" if rho_dense is None else f"{rho_dense:.3f}"
        print(
            f"| {r} | {rec['run_evals']}, {rec['run_residual']:.1e} | {rec['start']:.1e}, {rec['peak']:.1e} "
            f"({rec['peak_at']}), {rec['plain']} | {rec['restarted']} | {rec['anderson_best']:.1e} | "
            f"{rho_pm:.3f} | {dense} |"
        )
    return out


def model_data_dir(ckpt: Path) -> str:
    data = (torch.load(ckpt, map_location="cpu", weights_only=False).get("config") or {}).get("data", {})
    if not data.get("dir"):
        raise SystemExit(f"{ckpt} names no dataset folder: give --data")
    return data["dir"]


# ----------------------------------------------------------------------------- entry point

last_results = None  # what the last main() call measured (for callers that import the bench)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--step", type=int, default=3, help="supervision step whose update is measured")
    p.add_argument("--reps", type=int, default=25, help="timed repeats per update (median)")
    p.add_argument("--data", default=None, help="dataset folder (default: the checkpoint's)")
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("fidelity", help="phantom-gradient cosine to the implicit gradient, and its cost")
    f.add_argument("--checkpoint", default=None, help="a .pt or run dir (default: a fresh tiny model)")
    f.add_argument("--probe", type=int, default=32, help="probe puzzles (the first test puzzles)")
    f.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 5])
    f.add_argument("--taus", type=float, nargs="+", default=[0.5, 0.8, 1.0])
    f.add_argument("--implicit-iters", type=int, default=64)
    f.add_argument("--implicit-tol", type=float, default=1e-6)
    f.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("targets", help="the issue's targets for a run directory, PASS / MISS")
    t.add_argument("run_dir")
    t.add_argument("--after", type=int, default=500, help="updates after which solves must converge")
    t.add_argument("--puzzles", type=int, default=100, help="test puzzles for the max_iter grid")
    t.add_argument("--max-iter", type=int, nargs="+", default=[4, 8, 16, 32])
    t.add_argument("--cost-batch", type=int, default=64, help="batch of the cost comparison (training's)")
    c = sub.add_parser("cost", help="update cost of a run under variants of its config, against TRM")
    c.add_argument("run_dir", help="a run directory or checkpoint")
    c.add_argument("--variant", action="append", default=[], help="key=value[,key=value]; repeatable")
    c.add_argument("--cost-batch", type=int, default=64)
    c.add_argument("--batches", type=int, default=1, help="consecutive batches of test puzzles timed")
    v = sub.add_parser("solves", help="converged share and evaluations of solver variants, per step")
    v.add_argument("run_dir", help="a run directory or checkpoint")
    v.add_argument("--split", choices=["train", "test"], default="train")
    v.add_argument("--puzzles", type=int, default=128)
    v.add_argument("--steps", type=int, default=4)
    v.add_argument("--budget", type=int, default=32, help="max_iter of every variant")
    v.add_argument("--seed", type=int, default=1, help="which puzzles (a random sample of the split)")
    v.add_argument("--ema", action="store_true", help="the EMA weights (default: the training weights)")
    e = sub.add_parser("carried", help="training solves of new-puzzle and carried rows, resumed")
    e.add_argument("run_dir", help="a trainer run directory (config.yaml and checkpoints/)")
    e.add_argument("--updates", type=int, default=40)
    e.add_argument("--schedule-steps", type=int, default=None, help="the lr schedule's length")
    e.add_argument("--frozen", action="store_true", help="hold the weights still (no optimiser step)")
    e.add_argument("--budget", type=int, default=96, help="max_iter of the re-solves of failed rows")
    k = sub.add_parser("stuck", help="the cost batch's unconverged rows: their residual traces and rho")
    k.add_argument("run_dir", help="a run directory or checkpoint")
    k.add_argument("--cost-batch", type=int, default=64)
    k.add_argument("--budget", type=int, default=200, help="evaluations of each re-solve")
    k.add_argument("--dense", action="store_true", help="also rho from the dense Jacobian's eigenvalues")
    args = p.parse_args(argv)
    with restored_cpu_settings():  # called in-process by the tests: leave their settings as they were
        torch.set_num_threads(args.threads)
        torch.set_flush_denormal(True)
        t0 = time.perf_counter()
        global last_results
        last_results = {
            "fidelity": fidelity,
            "targets": targets,
            "cost": cost,
            "solves": solves,
            "carried": carried,
            "stuck": stuck,
        }[args.what](args)
        print(f"\n({time.perf_counter() - t0:.0f} s, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
