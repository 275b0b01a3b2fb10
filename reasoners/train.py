"""Train a reasoner from a Hydra config: ``python -m reasoners.train model=trm size=tiny data=laptop_smoke``.

:func:`train` is a plain function, ``train(cfg, out_dir) -> summary``; :func:`main` is the thin
``@hydra.main`` around it. The loop follows the reference HRM/TRM trainers (docs/reference.md,
"Loss and optimiser"):

- data in the on-disk format, sampled per epoch by group (:mod:`reasoners.data`); one global batch per
  update, split evenly over ranks;
- deep supervision with the carry persisting across batches (:mod:`reasoners.supervision`): each
  update is one supervision step of every slot; halted slots take the new batch's puzzle;
- the loss summed over the batch and divided by the global batch size; AdamATan2 (or AdamW) for the
  weights, sign-SGD for the puzzle-embedding table, linear warmup then a cosine to ``lr_min_ratio``
  (1.0 = constant, as the reference), EMA of the weights (evaluated and exported), optional gradient
  clipping, bf16 autocast on CUDA, ``torch.compile`` on request;
- every ``eval_interval`` updates: exact, rule-valid and cell accuracy on the test split (all
  supervision steps, EMA weights), sharded over ranks; a checkpoint (``checkpoints/last.pt``);
- ``metrics.csv``'s ``train_calls``: the forward network calls of training so far (every call of the
  reasoner's network stacks times its batch rows, all ranks; :class:`reasoners.test_time.CallCounter`),
  the compute axis of a comparison beside updates and wall time (left empty under ``trainer.compile``).

Checkpoints carry everything an exact resume needs: weights, EMA, both optimisers, the update count,
the sampler position, the RNG states and the deep-supervision carry of the whole global batch. A
non-finite loss or gradient stops the run with a clear error; the last checkpoint written is the
last good one. Many GPUs: ``torchrun --nproc-per-node N -m reasoners.train ...`` (DDP; NCCL on CUDA,
gloo on CPU); rank 0 alone chooses the run directory, logs and writes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from data_gen.format import atomic_write_json, atomic_write_text
from reasoners.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from reasoners.data import Dataset, TrainSampler, ensure_dataset, eval_rows, load_dataset, to_batch
from reasoners.device import pick_device, restored_cpu_settings
from reasoners.optim import EMA, SparseSignSGD, build_optimizer, lr_at
from reasoners.presets import MODELS, count_parameters, preset_config
from reasoners.supervision import (
    Carry,
    act_loss,
    halts,
    initial_carry,
    rollout,
    supervision_step,
    unwrap,
)
from reasoners.tasks import Task, score
from reasoners.test_time import CallCounter
from reasoners.train_config import TrainerConfig

log = logging.getLogger("reasoners.train")

TRAIN_COLUMNS = (
    "step", "epoch", "wall_s", "lr", "train_calls", "loss", "lm_loss", "q_halt_loss", "q_continue_loss",
    "aux_loss",
    "train_exact", "train_cell", "train_steps", "q_halt_accuracy", "halted",
    "solver_rel_residual", "solver_nstep", "solver_evals_per_sample", "solver_converged",
    "solver_iters_p50", "solver_iters_p90", "solver_iters_max", "solver_converged_cold",
    "solver_converged_warm", "grad_norm",
    "eval_exact", "eval_valid", "eval_cell", "eval_halt_exact", "eval_halt_valid", "eval_halt_step",
    "eval_rho_median", "eval_rho_q95", "eval_rho_below_1", "eval_warm_start_residual",
    "eval_ema_rho_median", "eval_ema_rho_q95", "eval_ema_rho_below_1", "eval_ema_warm_start_residual",
)  # fmt: skip
PROBE_PUZZLES = 32  # the Attractor's contraction probe: the first test puzzles, at every evaluation


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or infinite; nothing after the last checkpoint was kept."""


# ----------------------------------------------------------------------------- distributed


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this train() call initialised the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str) -> Dist:
    """A process group from torchrun's environment (WORLD_SIZE > 1), or a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def _all_reduce_sum(values: dict[str, float], ctx: Dist, device) -> dict[str, float]:
    if ctx.world_size == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


def _any_rank(flag: bool, ctx: Dist, device) -> bool:
    if ctx.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def _gather_rows(t: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0 (bools travel as uint8: gloo has no bool)."""
    if ctx.world_size == 1:
        return t
    is_bool = t.dtype == torch.bool
    src = t.to(torch.uint8) if is_bool else t
    out = [torch.empty_like(src) for _ in range(ctx.world_size)]
    dist.all_gather(out, src.contiguous())
    cat = torch.cat(out)
    return cat.bool() if is_bool else cat


# ----------------------------------------------------------------------------- config checks

LOSS_NAMES = ("stablemax", "softmax")
LOGGERS = ("csv", "tensorboard", "wandb")


def check_config(cfg: DictConfig) -> TrainerConfig:
    """The trainer's settings as a :class:`TrainerConfig` (which checks its own values), after the
    two keys of other groups the trainer relies on; a ``ValueError`` naming the bad key."""
    problems = []
    if cfg.model.loss not in LOSS_NAMES:
        problems.append(f"model.loss must be stablemax or softmax, got {cfg.model.loss!r}")
    if cfg.logger.name not in LOGGERS:
        problems.append(f"logger.name must be csv, tensorboard or wandb, got {cfg.logger.name!r}")
    if problems:
        raise ValueError("bad config: " + "; ".join(problems))
    return TrainerConfig.from_cfg(cfg.trainer)


def _autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- loggers


class MetricsLog:
    """``metrics.csv`` (always) plus TensorBoard or W&B when chosen; rank 0 only."""

    def __init__(self, out_dir: Path, cfg: DictConfig, resume_step: int | None):
        self.path = out_dir / "metrics.csv"
        if resume_step is not None and self.path.is_file():
            # drop rows written after the checkpoint we resume from: they will be written again
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            buf = io.StringIO()
            w = csv.DictWriter(buf, TRAIN_COLUMNS)
            w.writeheader()
            w.writerows(rows)
            atomic_write_text(self.path, buf.getvalue())
        else:
            atomic_write_text(self.path, ",".join(TRAIN_COLUMNS) + "\n")
        self.file = open(self.path, "a", newline="")  # noqa: SIM115 - closed in close()
        self.writer = csv.DictWriter(self.file, TRAIN_COLUMNS)
        self.backend = None
        name = cfg.logger.name
        if name == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    "logger=tensorboard needs the tensorboard package: pip install tensorboard"
                ) from e
            self.backend = ("tensorboard", SummaryWriter(log_dir=str(out_dir / "tensorboard")))
        elif name == "wandb":
            try:
                import wandb
            except ImportError as e:
                raise ImportError("logger=wandb needs the wandb package: pip install wandb") from e
            run = wandb.init(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                mode=cfg.logger.mode,
                dir=str(out_dir),
                config=OmegaConf.to_container(cfg, resolve=True),
                resume="allow",
            )
            self.backend = ("wandb", run)

    def write(self, row: dict) -> None:
        self.writer.writerow({k: _fmt(v) for k, v in row.items() if k in TRAIN_COLUMNS})
        self.file.flush()
        if self.backend is None:
            return
        kind, handle = self.backend
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if kind == "tensorboard":
            for k, v in scalars.items():
                handle.add_scalar(k, v, row["step"])
        else:
            handle.log(scalars, step=row["step"])

    def close(self) -> None:
        self.file.close()
        if self.backend is not None:
            kind, handle = self.backend
            handle.close() if kind == "tensorboard" else handle.finish()


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_split(
    model,
    task: Task,
    split,
    device,
    ctx: Dist,
    *,
    batch_size: int,
    max_rows=None,
    precision="auto",
    seed: int = 0,
):
    """Exact, rule-valid and cell accuracy of the final supervision step over the test split (every
    example once, dealt over the ranks), and exact / valid accuracy at the step where the reasoner's
    own halting head first fires (``halt_exact``, ``halt_valid``; ``halt_step`` its mean; the last
    step where it never fires, as :mod:`reasoners.evaluate` reports it). Returns plain floats.

    The global generator is seeded with ``seed`` for the evaluation and restored after it, so a
    reasoner that draws at evaluation (EqR: its initial state and its noise) scores the same on
    every call with the same weights, and evaluating does not change the training run's draws."""
    was_training = model.training
    model.eval()
    core = unwrap(model)
    halt_max = core.config.halt_max_steps
    keys = ("exact", "valid", "cell", "halt_exact", "halt_valid", "halt_step", "count")
    sums = dict.fromkeys(keys, 0.0)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for rows in eval_rows(len(split.inputs), batch_size, ctx.rank, ctx.world_size, max_rows):
            batch = to_batch(split, rows, device)
            pending = torch.ones(len(rows), dtype=torch.bool, device=device)
            halt_preds = halt_step = None
            with _autocast(device, precision):
                for step, out in enumerate(rollout(model, batch), start=1):
                    preds = out.logits.argmax(-1)
                    if halt_preds is None:
                        halt_preds = preds.clone()
                        halt_step = torch.full_like(pending, halt_max, dtype=torch.long)
                    newly = pending & (halts(out, core.config, step) | (step == halt_max))
                    halt_preds[newly], halt_step[newly] = preds[newly], step
                    pending &= ~newly
            inputs, labels = split.inputs[rows], split.labels[rows]
            s = score(task, inputs, labels, preds.cpu().numpy())
            h = score(task, inputs, labels, halt_preds.cpu().numpy())
            sums["exact"] += float(s["exact"].sum())
            sums["valid"] += float(s["valid"].sum())
            sums["cell"] += float(s["cell"].sum())
            sums["halt_exact"] += float(h["exact"].sum())
            sums["halt_valid"] += float(h["valid"].sum())
            sums["halt_step"] += float(halt_step.sum())
            sums["count"] += len(rows)
    model.train(was_training)
    sums = _all_reduce_sum(sums, ctx, device)
    n = max(sums.pop("count"), 1.0)
    return {k: v / n for k, v in sums.items()}


# ----------------------------------------------------------------------------- the loop


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "explore": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["explore"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _carry_payload(carry: Carry | None, ctx: Dist) -> dict | None:
    if carry is None:
        return None
    return {
        "state": [_gather_rows(t, ctx).cpu() for t in carry.state],
        "steps": _gather_rows(carry.steps, ctx).cpu(),
        "halted": _gather_rows(carry.halted, ctx).cpu(),
        "batch": {k: _gather_rows(v, ctx).cpu() for k, v in carry.batch.items()},
    }


def _carry_from_payload(payload: dict, model, ctx: Dist, local_batch: int, device) -> Carry:
    rows = slice(ctx.rank * local_batch, (ctx.rank + 1) * local_batch)
    template = unwrap(model).initial_state(1, device)
    state = type(template)(*(t[rows].to(device) for t in payload["state"]))
    return Carry(
        state=state,
        steps=payload["steps"][rows].to(device),
        halted=payload["halted"][rows].to(device),
        batch={k: v[rows].to(device) for k, v in payload["batch"].items()},
    )


def _resolve_resume(resume, out_dir: Path) -> Path | None:
    if resume in (None, False, "", "none", "null"):
        return None
    if resume == "auto":
        return latest_checkpoint(out_dir)
    path = Path(str(resume))
    found = latest_checkpoint(path) if path.is_dir() else path
    if found is None or not found.is_file():
        raise FileNotFoundError(
            f"trainer.resume={resume}: no checkpoint there (give a .pt file or a run dir)"
        )
    return found


def _solver_metrics(extras: dict) -> dict[str, float]:
    info = extras.get("solver") if isinstance(extras, dict) else None
    if info is None:
        return {}
    rows = max(info.rel_residual.numel(), 1)
    return {
        "solver_rel_residual": float(info.rel_residual.float().mean()),
        "solver_nstep": float(info.nstep),
        # the map evaluations a sample actually got (the solve stops evaluating converged rows)
        "solver_evals_per_sample": float(info.row_evals) / rows,
        "solver_converged": float(info.converged.float().mean()),
        **_iteration_quantiles(info),
        **_cold_warm_counts(info, extras.get("solve_cold")),
    }


def _cold_warm_counts(info, cold) -> dict[str, float]:
    """Rows solved from the initial state (new puzzles) and from a carried state, and how many of each
    converged: summed over the window, so each share is over the rows of its kind (see _train_row)."""
    if cold is None:
        return {}
    cold = cold.to(info.converged.device)
    conv = info.converged
    return {
        "solver_cold_rows": float(cold.sum()),
        "solver_cold_converged": float((conv & cold).sum()),
        "solver_warm_rows": float((~cold).sum()),
        "solver_warm_converged": float((conv & ~cold).sum()),
    }


def _iteration_quantiles(info) -> dict[str, float]:
    """The median, 90th percentile and maximum of the evaluations each sample's solve needed
    (``SolverInfo.evals``): how the batch's iterations spread, which the batch count hides."""
    if getattr(info, "evals", None) is None:
        return {}
    e = info.evals.double()
    return {
        "solver_iters_p50": float(e.quantile(0.5)),
        "solver_iters_p90": float(e.quantile(0.9)),
        "solver_iters_max": float(e.max()),
    }


def train(cfg: DictConfig, out_dir: str | os.PathLike) -> dict:
    """Train ``cfg.model`` at ``cfg.size`` on ``cfg.data``; write the run into ``out_dir``.

    Returns the run summary (also written to ``summary.json``): model, size, data, task, parameters,
    steps, wall time and the final evaluation.
    """
    tc = check_config(cfg)
    device, backend = pick_device(None if tc.device in (None, "auto") else tc.device)
    ctx = init_distributed(backend)
    try:
        if device.type == "cuda" and ctx.world_size > 1:
            device = torch.device("cuda", ctx.local_rank)
            torch.cuda.set_device(device)
        with restored_cpu_settings():  # _setup sets threads and flushes denormals process-wide
            return _train(_setup(cfg, tc, Path(out_dir), device, ctx))
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


@dataclasses.dataclass
class _Run:
    """Everything the training loop holds between updates."""

    cfg: DictConfig
    tc: TrainerConfig
    out_dir: Path
    device: torch.device
    ctx: Dist
    data: Dataset
    core: torch.nn.Module  # the reasoner itself: what is saved, evaluated and averaged
    opt: torch.optim.Optimizer
    sparse_opt: SparseSignSGD | None  # the puzzle-embedding table's sign-SGD
    ema: EMA | None
    explore_gen: torch.Generator  # halting exploration, seeded alike on every rank
    sampler: TrainSampler
    model: torch.nn.Module | None = None  # what runs forward: the reasoner, compiled / in DDP
    step: int = 0
    wall_before: float = 0.0  # training time of the runs this one resumes
    carry: Carry | None = None
    resumed: bool = False
    t0: float = 0.0
    last_eval: dict = dataclasses.field(default_factory=dict)
    metrics_log: MetricsLog | None = None
    train_calls: float = 0.0  # network calls (rows x Stack calls, all ranks) of the logged updates
    counter: CallCounter | None = None  # hooked once per run; None under torch.compile (not counted)

    @property
    def say(self):
        return log.info if self.ctx.is_main else (lambda *a, **k: None)

    def elapsed(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0


# ----------------------------------------------------------------------------- setup


def _setup(cfg: DictConfig, tc: TrainerConfig, out_dir: Path, device: torch.device, ctx: Dist) -> _Run:
    """Data, reasoner, optimisers, EMA, sampler; the checkpoint to resume from; the wrappers."""
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.set_flush_denormal(True)  # denormals in tiny models slow CPUs down many times
    if tc.batch_size % ctx.world_size:
        raise ValueError(
            f"trainer.batch_size={tc.batch_size} (the global batch) must be divisible by the "
            f"{ctx.world_size} ranks"
        )
    data = _load_data(cfg, ctx)
    torch.manual_seed(tc.seed)
    arch = cfg.model.get("arch")
    arch = OmegaConf.to_container(arch, resolve=True) if arch is not None else {}
    explicit = {**data.task.model_overrides(), **arch}
    config = preset_config(cfg.model.name, cfg.size.name, data.task.preset_puzzle, **explicit)
    ckpt_path = _resolve_resume(tc.resume, out_dir)
    ckpt = load_checkpoint(ckpt_path, map_location=device) if ckpt_path is not None else None
    if ckpt is not None:
        _check_resumable(ckpt, ckpt_path, cfg.model.name, data.task)
        config, notes = resumed_model_config(config, ckpt.get("model_config"), set(explicit))
        for note in notes if ctx.is_main else ():
            log.warning("resume from %s: %s", ckpt_path, note)
    core = MODELS[cfg.model.name][0](config)
    core.to(device).train()
    opt = build_optimizer(
        tc.optimizer, core.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay
    )
    prefix = core.embed.puzzle
    sparse_opt = (
        SparseSignSGD(prefix.table, lr=tc.puzzle_emb_lr, weight_decay=tc.puzzle_emb_weight_decay)
        if prefix is not None
        else None
    )
    explore_gen = torch.Generator(device=device)
    explore_gen.manual_seed(tc.seed + 1)
    run = _Run(
        cfg, tc, out_dir, device, ctx, data, core, opt, sparse_opt,
        ema=EMA(core, tc.ema_decay) if tc.ema else None,
        explore_gen=explore_gen,
        sampler=TrainSampler(data.train, tc.batch_size, tc.seed, ctx.rank, ctx.world_size),
    )  # fmt: skip
    if ckpt is not None:
        _resume(run, ckpt, ckpt_path)
    run.model = torch.compile(core) if tc.compile else core
    if ctx.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        run.model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=ids, broadcast_buffers=False
        )
    return run


def _load_data(cfg: DictConfig, ctx: Dist) -> Dataset:
    """The dataset of ``cfg.data`` (rank 0 builds it when missing; the others wait)."""
    root = Path(cfg.data.dir)
    if ctx.is_main:
        ensure_dataset(root, cfg.data.get("build"), bool(cfg.data.get("auto_build", False)), log=log.info)
    if ctx.world_size > 1:
        dist.barrier()
    return load_dataset(root, cfg.data.puzzle, side=cfg.data.get("side"))


def _check_resumable(ckpt: dict, ckpt_path: Path, model_name: str, task: Task) -> None:
    """A clear error when a checkpoint trained another reasoner or on another task."""
    task_dict = dataclasses.asdict(task)
    if ckpt["model_name"] != model_name or ckpt["task"] != task_dict:
        raise ValueError(
            f"cannot resume from {ckpt_path}: it trained {ckpt['model_name']} on {ckpt['task']}, this "
            f"config is {model_name} on {task_dict}"
        )


def _same(a, b) -> bool:
    """Config values equal up to list/tuple (a checkpoint keeps tuples, Hydra gives lists)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def resumed_model_config(config, saved: dict | None, explicit: set[str]):
    """The reasoner config a resumed run continues with, and one note per field that it takes from
    elsewhere than today's preset.

    ``config`` is what the command builds today (preset plus ``explicit``, the fields the command or
    task sets); ``saved`` the checkpoint's ``model_config``. The run continues as it was trained: every
    field the command does not set keeps the checkpoint's value, so a preset changed since the run was
    started cannot silently change its solver, and a field the command does set wins (noted when it
    differs from the checkpoint's). A field the checkpoint lacks (added since) keeps today's value, and
    a field it has that the config no longer knows is dropped; both are noted. ``saved`` None (a
    checkpoint written before it was stored): ``config`` unchanged, with a note."""
    if saved is None:
        return config, ["the checkpoint has no model_config: the reasoner is built from today's preset"]
    today = dataclasses.asdict(config)
    merged, notes = dict(today), []
    for name, now in today.items():
        if name not in saved:
            notes.append(f"{name}={now!r} (not in the checkpoint, which predates it)")
        elif _same(saved[name], now):
            continue
        elif name in explicit:
            notes.append(f"{name} changed by the command: {saved[name]!r} -> {now!r}")
        else:
            merged[name] = saved[name]
            notes.append(
                f"{name}={saved[name]!r} kept from the checkpoint (the preset now gives {now!r}; set "
                f"model.arch.{name} to change it)"
            )
    for name in sorted(set(saved) - set(today)):
        notes.append(f"{name}={saved[name]!r} dropped (no longer a field of {type(config).__name__})")
    return type(config)(**merged), notes


def _resume(run: _Run, ckpt: dict, ckpt_path: Path) -> None:
    """Load weights, EMA, optimisers, sampler position, RNG states and the carry of a checkpoint."""
    run.core.load_state_dict(ckpt["model"])
    run.opt.load_state_dict(ckpt["optimizer"])
    if run.sparse_opt is not None and ckpt.get("sparse_optimizer") is not None:
        run.sparse_opt.load_state_dict(ckpt["sparse_optimizer"])
    if run.ema is not None and ckpt.get("ema") is not None:
        run.ema.load_state_dict(ckpt["ema"])
    run.sampler.load_state_dict(ckpt["data"])
    run.step, run.wall_before = int(ckpt["step"]), float(ckpt.get("wall_time_s", 0.0))
    run.train_calls = float(ckpt.get("train_calls", 0.0))  # checkpoints before it was counted: from 0
    if ckpt.get("carry") is not None:
        local_batch = run.tc.batch_size // run.ctx.world_size
        run.carry = _carry_from_payload(ckpt["carry"], run.core, run.ctx, local_batch, run.device)
    # last: building the carry's template state draws from the global generator for a reasoner whose
    # initial state is random (EqR), which would shift its noise and resets after the resume
    _set_rng_state(ckpt["rng"], run.explore_gen, run.device)
    run.resumed = True
    run.say(f"resumed from {ckpt_path} at step {run.step}")


def _open_run_dir(run: _Run) -> None:
    """Rank 0: the run's config, its metrics log (cut back to the resumed step) and a first line."""
    if not run.ctx.is_main:
        return
    cfg, task, data = run.cfg, run.data.task, run.data
    run.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    run.metrics_log = MetricsLog(run.out_dir, cfg, run.step if run.resumed else None)
    run.say(
        f"{cfg.model.name} {cfg.size.name}: {count_parameters(run.core):,} parameters; "
        f"{task.kind} {task.side}x{task.side}, "
        f"{data.train.num_groups} training groups, {len(data.test.inputs)} test examples; "
        f"{run.ctx.world_size} rank(s) on {run.device}; run dir {run.out_dir}"
    )


# ----------------------------------------------------------------------------- the loop


def _train(run: _Run) -> dict:
    """Updates until ``max_steps`` / ``stop_at_step`` / ``max_minutes``; returns the run summary."""
    tc, cfg = run.tc, run.cfg
    _open_run_dir(run)
    stop_at = tc.stop_step
    stop_reason = "max_steps" if stop_at == tc.max_steps else "stop_at_step"
    run.t0 = time.perf_counter()
    bar = None
    if run.ctx.is_main and tc.progress:
        from tqdm import tqdm

        bar = tqdm(
            total=tc.max_steps, initial=run.step, desc=f"{cfg.model.name}-{cfg.size.name}", dynamic_ncols=True
        )
    window: dict[str, float] = {}
    # hooks registered once for the run (not per update: a compiled model would re-trace on every change
    # of its hooks); under torch.compile the calls are not counted and train_calls stays empty
    run.counter = None if tc.compile else CallCounter(run.model).__enter__()
    try:
        while run.step < stop_at:
            lr = _update(run, window)
            out_of_time = _after_update(run, window, lr, bar)
            if out_of_time:
                stop_reason = "max_minutes"
                run.say(f"stopping at step {run.step}: trainer.max_minutes={tc.max_minutes} reached")
                break
    finally:
        if run.counter is not None:
            run.counter.__exit__(None, None, None)
        if bar is not None:
            bar.close()
        if run.metrics_log is not None:
            run.metrics_log.close()
    summary = {
        "model": cfg.model.name,
        "size": cfg.size.name,
        "data": cfg.data.name,
        "task": dataclasses.asdict(run.data.task),
        "parameters": count_parameters(run.core),
        "steps": run.step,
        "stop_reason": stop_reason,
        "world_size": run.ctx.world_size,
        "device": str(run.device),
        "wall_s": run.elapsed(),
        "final": run.last_eval,
    }
    if run.ctx.is_main:
        atomic_write_json(run.out_dir / "summary.json", summary)
    return summary


def _update(run: _Run, window: dict[str, float]) -> float:
    """One optimiser update (one supervision step of every slot); adds its metrics to ``window``
    and returns the learning rate it used."""
    tc, ctx = run.tc, run.ctx
    batch = to_batch(run.data.train, run.sampler.next_rows(), run.device)
    if run.carry is None:
        run.carry = initial_carry(run.core, batch)
    lr = lr_at(run.step + 1, tc.lr, tc.lr_warmup_steps, tc.max_steps, tc.lr_min_ratio)
    for group in run.opt.param_groups:
        group["lr"] = lr
    if run.sparse_opt is not None:
        run.sparse_opt.param_groups[0]["lr"] = lr * tc.puzzle_emb_lr / tc.lr
    calls_before = run.counter.rows if run.counter is not None else 0
    with _autocast(run.device, tc.precision):
        run.carry, outputs = supervision_step(
            run.model, run.carry, batch, generator=run.explore_gen, shard=(ctx.rank, ctx.world_size)
        )
    loss, m = act_loss(outputs, run.carry, run.cfg.model.loss)
    # DDP averages gradients over ranks; the reference divides the summed loss by the global batch
    (loss * (ctx.world_size / tc.batch_size)).backward()
    params = [p for p in run.core.parameters() if p.grad is not None]
    if tc.grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    bad = not (math.isfinite(float(loss.detach())) and math.isfinite(float(grad_norm)))
    if _any_rank(bad, ctx, run.device):
        raise _non_finite(run, float(loss.detach()), float(grad_norm))
    run.opt.step()
    rows = run.core.embed.puzzle.pop_grad() if run.core.embed.puzzle is not None else None
    if run.sparse_opt is not None and rows is not None:
        run.sparse_opt.step(*rows)
    run.opt.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.core)
    run.step += 1
    # metrics: sums over the halted sequences of this rank, reduced over ranks when logged
    update = {k: float(v) for k, v in m.items()}
    update.update(updates=1.0, **_solver_metrics(outputs["extras"]), grad_norm=float(grad_norm))
    if run.counter is not None:  # forward network calls of this rank's rows (backward not counted)
        update["calls"] = float(run.counter.rows - calls_before)
    for k, v in update.items():
        window[k] = window.get(k, 0.0) + v
    return lr


def _non_finite(run: _Run, loss: float, grad_norm: float) -> NonFiniteLossError:
    last = run.out_dir / "checkpoints" / "last.pt"
    kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    return NonFiniteLossError(
        f"non-finite loss or gradient at update {run.step + 1} (loss {loss:.4g}, gradient norm "
        f"{grad_norm:.4g}); the run stopped and {kept}. Try a lower trainer.lr, trainer.grad_clip=1.0, "
        "or trainer.precision=fp32, and resume with trainer.resume=auto"
    )


def _after_update(run: _Run, window: dict[str, float], lr: float, bar) -> bool:
    """Log the metric window, evaluate and checkpoint when their intervals (or the end) come;
    returns whether ``max_minutes`` ran out."""
    tc, ctx, step = run.tc, run.ctx, run.step
    elapsed = run.elapsed()
    out_of_time = tc.max_minutes is not None and _any_rank(elapsed >= tc.max_minutes * 60.0, ctx, run.device)
    is_last = step >= tc.stop_step or out_of_time
    if step % tc.log_interval == 0 or is_last:
        reduced = _all_reduce_sum(window, ctx, run.device)
        run.train_calls += reduced.get("calls", 0.0)
        row = _train_row(reduced, ctx.world_size, tc.batch_size)
        row.update(step=step, epoch=run.sampler.epoch, wall_s=elapsed, lr=lr)
        if run.counter is not None:
            row["train_calls"] = run.train_calls
        window.clear()
        if run.metrics_log is not None:
            run.metrics_log.write(row)
        if bar is not None:
            bar.set_postfix(_bar_fields(row, run.last_eval), refresh=False)
    evaluate = step % tc.eval_interval == 0 or is_last
    checkpoint = step % (tc.checkpoint_interval or tc.eval_interval) == 0 or is_last
    if evaluate or checkpoint:
        # the calls so far: the logged ones and those of updates not logged yet (an interval that
        # log_interval does not divide), so a resumed run counts on exactly as the uninterrupted one
        pending = _all_reduce_sum({"calls": window.get("calls", 0.0)}, ctx, run.device)["calls"]
        calls = run.train_calls + pending
    if evaluate:
        _evaluate(run, elapsed, calls)
    if checkpoint:
        _checkpoint(run, calls)
    if bar is not None:
        bar.update(1)
    return out_of_time


def _bar_fields(row: dict, last_eval: dict | None) -> dict[str, str]:
    """What the progress bar shows: the loss, the training exact accuracy (halted sequences), the last
    test evaluation's exact accuracy, and the solver's residual where the reasoner has a solver."""
    fields = {"loss": f"{row['loss']:.3f}", "train_exact": f"{row.get('train_exact') or 0:.2f}"}
    if last_eval:
        fields["test_exact"] = f"{last_eval['exact']:.3f}"
        if "halt_exact" in last_eval:
            fields["at_halt"] = f"{last_eval['halt_exact']:.3f}"
    if row.get("solver_rel_residual") is not None:
        fields["residual"] = f"{row['solver_rel_residual']:.1e}"
    return fields


def _evaluate(run: _Run, elapsed: float, train_calls: float) -> None:
    """Test-split accuracy with the EMA weights swapped in; logged (with the training network calls
    so far) and kept for the checkpoint."""
    eval_model = unwrap(run.core)
    swapped = run.ema.swapped_in(eval_model) if run.ema is not None else contextlib.nullcontext()
    with swapped:
        run.last_eval = ev = evaluate_split(
            eval_model, run.data.task, run.data.test, run.device, run.ctx, batch_size=run.tc.eval_batch_size,
            max_rows=run.tc.eval_max_puzzles, precision=run.tc.precision, seed=run.tc.seed,
        )  # fmt: skip
    evals = {f"eval_{k}": v for k, v in ev.items()}
    evals.update(_contraction(run, eval_model))
    if run.metrics_log is not None:
        row = {"step": run.step, "epoch": run.sampler.epoch, "wall_s": elapsed}
        if run.counter is not None:
            row["train_calls"] = train_calls
        run.metrics_log.write({**row, **evals})
    run.say(
        f"step {run.step}: test exact {ev['exact']:.3f}, valid {ev['valid']:.3f}, "
        f"cell {ev['cell']:.3f} at the last step; exact {ev['halt_exact']:.3f} at the halting step "
        f"(mean {ev['halt_step']:.2f}) ({elapsed:.0f} s)"
    )


def _contraction(run: _Run, model) -> dict[str, float]:
    """For a reasoner that solves a fixed point: the spectral radius of its map and the warm start's
    residual on a fixed probe batch, with the training weights and with the EMA weights (rank 0's
    first test puzzles; empty for other reasoners or the unrolled solver)."""
    from reasoners.attractor import Attractor, contraction_probe

    if not isinstance(model, Attractor) or model.config.solver == "unroll":
        return {}
    rows = np.arange(min(PROBE_PUZZLES, len(run.data.test.inputs)))
    batch = to_batch(run.data.test, rows, run.device)
    out = {f"eval_{k}": v for k, v in contraction_probe(model, batch).items()}
    if run.ema is not None:
        with run.ema.swapped_in(model):
            out.update({f"eval_ema_{k}": v for k, v in contraction_probe(model, batch).items()})
    return out


def _checkpoint(run: _Run, train_calls: float) -> None:
    """``checkpoints/last.pt`` (every rank joins in gathering the carry; rank 0 writes)."""
    payload_carry = _carry_payload(run.carry, run.ctx) if run.tc.checkpoint_carry else None
    if not run.ctx.is_main:
        return
    save_checkpoint(
        run.out_dir / "checkpoints" / "last.pt",
        {
            "model_name": run.cfg.model.name,
            "model_config": dataclasses.asdict(run.core.config),
            "task": dataclasses.asdict(run.data.task),
            "model": run.core.state_dict(),
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "optimizer": run.opt.state_dict(),
            "sparse_optimizer": run.sparse_opt.state_dict() if run.sparse_opt is not None else None,
            "step": run.step,
            "data": run.sampler.state_dict(),
            "rng": _rng_state(run.explore_gen, run.device),
            "carry": payload_carry,
            "config": OmegaConf.to_container(run.cfg, resolve=True),
            "metrics": run.last_eval,
            "wall_time_s": run.elapsed(),
            "train_calls": train_calls,
        },
    )


def _train_row(w: dict[str, float], world_size: int, global_batch: int) -> dict:
    """Means of a window of summed metrics: losses per sequence of every slot (as optimised),
    accuracies per sequence that halted in the window (as the reference logs them)."""
    updates = max(w.get("updates", 1.0) / world_size, 1.0)
    count = w.get("count", 0.0)
    seqs = updates * global_batch
    row = {
        "loss": (w.get("lm_loss", 0.0) + 0.5 * (w.get("q_halt_loss", 0.0) + w.get("q_continue_loss", 0.0)))
        / seqs,
        "halted": count / seqs,
    }
    for key in ("lm_loss", "q_halt_loss", "q_continue_loss", "aux_loss"):
        if key in w:
            row[key] = w[key] / seqs
    if count > 0:
        row["train_exact"] = w["exact_accuracy"] / count
        row["train_cell"] = w["accuracy"] / count
        row["train_steps"] = w["steps"] / count
        row["q_halt_accuracy"] = w["q_halt_accuracy"] / count
    for key in (
        "solver_rel_residual",
        "solver_nstep",
        "solver_evals_per_sample",
        "solver_converged",
        "solver_iters_p50",  # window means of each update's quantiles
        "solver_iters_p90",
        "solver_iters_max",
        "grad_norm",
    ):
        if key in w:
            row[key] = w[key] / (updates * world_size)
    for kind in ("cold", "warm"):
        if w.get(f"solver_{kind}_rows", 0.0) > 0:
            row[f"solver_converged_{kind}"] = w[f"solver_{kind}_converged"] / w[f"solver_{kind}_rows"]
    return row


# ----------------------------------------------------------------------------- entry point


def _hydra_main():
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from reasoners.cli import user_errors

    @hydra.main(version_base="1.3", config_path="conf", config_name="train")
    @user_errors(extra=(NonFiniteLossError, ImportError))
    def main(cfg: DictConfig) -> float:
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            # rank 0 chooses the run dir (the others may have computed another timestamp)
            _, backend = pick_device(None if cfg.trainer.device in (None, "auto") else cfg.trainer.device)
            dist.init_process_group(backend=backend)
            chosen = [str(out_dir)]
            dist.broadcast_object_list(chosen, src=0)
            if dist.get_rank() != 0:
                logging.getLogger().setLevel(logging.WARNING)
                if chosen[0] != str(out_dir) and _only_hydra_files(out_dir):
                    shutil.rmtree(out_dir, ignore_errors=True)
            out_dir = Path(chosen[0])
        try:
            summary = train(cfg, out_dir)
        finally:
            if world > 1 and dist.is_initialized():
                dist.destroy_process_group()
        log.info("summary: %s", json.dumps(summary["final"]))
        return float(summary["final"].get("exact", float("nan")))

    main()


def _only_hydra_files(path: Path) -> bool:
    return path.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in path.iterdir())


def cli() -> None:
    """``python -m reasoners.train`` / ``gridloop train``: user errors (a bad value, a missing dataset,
    a missing logger package, a non-finite loss) end in one line and exit code 2."""
    from reasoners.cli import run_hydra

    run_hydra(_hydra_main)


if __name__ == "__main__":
    cli()
