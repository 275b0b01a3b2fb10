"""Train a reasoner from a Hydra config: ``python -m reasoners.train model=trm size=tiny data=laptop_smoke``.

:func:`train` is a plain function, ``train(cfg, out_dir) -> summary``; :func:`main` is the thin
``@hydra.main`` around it. The loop follows the reference HRM/TRM trainers (REFERENCE.md section 2):

- data in the on-disk format, sampled per epoch by group (:mod:`reasoners.data`); one global batch per
  update, split evenly over ranks;
- deep supervision with the carry persisting across batches (:mod:`reasoners.supervision`): each
  update is one supervision step of every slot; halted slots take the new batch's puzzle;
- the loss summed over the batch and divided by the global batch size; AdamATan2 (or AdamW) for the
  weights, sign-SGD for the puzzle-embedding table, linear warmup then a cosine to ``lr_min_ratio``
  (1.0 = constant, as the reference), EMA of the weights (evaluated and exported), optional gradient
  clipping, bf16 autocast on CUDA, ``torch.compile`` on request;
- every ``eval_interval`` updates: exact, rule-valid and cell accuracy on the test split (all
  supervision steps, EMA weights), sharded over ranks; a checkpoint (``checkpoints/last.pt``).

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

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from data_gen.format import atomic_write_json, atomic_write_text
from reasoners.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from reasoners.data import TrainSampler, ensure_dataset, eval_rows, load_dataset, to_batch
from reasoners.device import pick_device
from reasoners.optim import EMA, SparseSignSGD, build_optimizer, lr_at
from reasoners.presets import build, count_parameters
from reasoners.supervision import Carry, act_loss, initial_carry, supervision_step, unwrap
from reasoners.tasks import Task, score

log = logging.getLogger("reasoners.train")

TRAIN_COLUMNS = (
    "step", "epoch", "wall_s", "lr", "loss", "lm_loss", "q_halt_loss", "q_continue_loss",
    "train_exact", "train_cell", "train_steps", "q_halt_accuracy", "halted",
    "solver_rel_residual", "solver_nstep", "solver_converged", "grad_norm",
    "eval_exact", "eval_valid", "eval_cell",
)  # fmt: skip


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


def _check_config(cfg: DictConfig) -> None:
    t = cfg.trainer
    problems = []
    for key in ("max_steps", "batch_size", "eval_interval", "log_interval", "checkpoint_interval"):
        if t[key] is not None and int(t[key]) <= 0:
            problems.append(f"trainer.{key} must be a positive integer, got {t[key]}")
    if float(t.lr) <= 0 or not math.isfinite(float(t.lr)):
        problems.append(f"trainer.lr must be a positive number, got {t.lr}")
    if t.precision not in ("auto", "fp32", "bf16"):
        problems.append(f"trainer.precision must be auto, fp32 or bf16, got {t.precision!r}")
    if t.grad_clip is not None and float(t.grad_clip) <= 0:
        problems.append(f"trainer.grad_clip must be positive or null, got {t.grad_clip}")
    if t.stop_at_step is not None and int(t.stop_at_step) <= 0:
        problems.append(f"trainer.stop_at_step must be positive or null, got {t.stop_at_step}")
    if t.max_minutes is not None and float(t.max_minutes) <= 0:
        problems.append(f"trainer.max_minutes must be positive or null, got {t.max_minutes}")
    if cfg.model.loss not in ("stablemax", "softmax"):
        problems.append(f"model.loss must be stablemax or softmax, got {cfg.model.loss!r}")
    if cfg.logger.name not in ("csv", "tensorboard", "wandb"):
        problems.append(f"logger.name must be csv, tensorboard or wandb, got {cfg.logger.name!r}")
    if problems:
        raise ValueError("bad config: " + "; ".join(problems))


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
    model, task: Task, split, device, ctx: Dist, *, batch_size: int, max_rows=None, precision="auto"
):
    """Exact, rule-valid and cell accuracy of the final supervision step over the test split (every
    example once, dealt over the ranks). Returns plain floats."""
    was_training = model.training
    model.eval()
    sums = {"exact": 0.0, "valid": 0.0, "cell": 0.0, "count": 0.0}
    for rows in eval_rows(len(split.inputs), batch_size, ctx.rank, ctx.world_size, max_rows):
        batch = to_batch(split, rows, device)
        with _autocast(device, precision):
            # every supervision step, keeping only the carried state (run_steps would keep every
            # step's logits and the Attractor's fixed points)
            state = model.initial_state(len(rows), device)
            for _ in range(model.config.halt_max_steps):
                state, logits, _, _ = model(state, batch)
            preds = logits.argmax(-1)
        s = score(task, split.inputs[rows], split.labels[rows], preds.cpu().numpy())
        sums["exact"] += float(s["exact"].sum())
        sums["valid"] += float(s["valid"].sum())
        sums["cell"] += float(s["cell"].sum())
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
    return {
        "solver_rel_residual": float(info.rel_residual.float().mean()),
        "solver_nstep": float(info.nstep),
        "solver_converged": float(info.converged.float().mean()),
    }


def train(cfg: DictConfig, out_dir: str | os.PathLike) -> dict:
    """Train ``cfg.model`` at ``cfg.size`` on ``cfg.data``; write the run into ``out_dir``.

    Returns the run summary (also written to ``summary.json``): model, size, data, task, parameters,
    steps, wall time and the final evaluation.
    """
    _check_config(cfg)
    t_cfg = cfg.trainer
    device, backend = pick_device(None if t_cfg.device in (None, "auto") else t_cfg.device)
    ctx = init_distributed(backend)
    try:
        if device.type == "cuda" and ctx.world_size > 1:
            device = torch.device("cuda", ctx.local_rank)
            torch.cuda.set_device(device)
        return _train(cfg, Path(out_dir), device, ctx)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _train(cfg: DictConfig, out_dir: Path, device: torch.device, ctx: Dist) -> dict:
    t_cfg = cfg.trainer
    if t_cfg.threads:
        torch.set_num_threads(int(t_cfg.threads))
    torch.set_flush_denormal(True)  # denormals in tiny models slow CPUs down many times
    global_batch = int(t_cfg.batch_size)
    if global_batch % ctx.world_size:
        raise ValueError(
            f"trainer.batch_size={global_batch} (the global batch) must be divisible by the "
            f"{ctx.world_size} ranks"
        )
    local_batch = global_batch // ctx.world_size
    say = log.info if ctx.is_main else (lambda *a, **k: None)

    # ---- data (rank 0 builds it when missing; the others wait)
    root = Path(cfg.data.dir)
    if ctx.is_main:
        ensure_dataset(root, cfg.data.get("build"), bool(cfg.data.get("auto_build", False)), log=say)
    if ctx.world_size > 1:
        dist.barrier()
    data = load_dataset(root, cfg.data.puzzle, side=cfg.data.get("side"))
    task = data.task

    # ---- model, optimisers, EMA
    torch.manual_seed(int(t_cfg.seed))
    arch = cfg.model.get("arch")
    arch = OmegaConf.to_container(arch, resolve=True) if arch is not None else {}
    model = build(cfg.model.name, cfg.size.name, task.preset_puzzle, **{**task.model_overrides(), **arch})
    model.to(device).train()
    n_params = count_parameters(model)
    opt = build_optimizer(
        t_cfg.optimizer, model.parameters(), lr=float(t_cfg.lr), betas=tuple(t_cfg.betas),
        weight_decay=float(t_cfg.weight_decay),
    )  # fmt: skip
    prefix = model.embed.puzzle
    sparse_opt = (
        SparseSignSGD(
            prefix.table, lr=float(t_cfg.puzzle_emb_lr), weight_decay=float(t_cfg.puzzle_emb_weight_decay)
        )
        if prefix is not None
        else None
    )
    ema = EMA(model, float(t_cfg.ema_decay)) if t_cfg.ema else None
    explore_gen = torch.Generator(device=device)
    explore_gen.manual_seed(int(t_cfg.seed) + 1)
    sampler = TrainSampler(data.train, global_batch, int(t_cfg.seed), ctx.rank, ctx.world_size)

    # ---- resume
    step, wall_before, carry = 0, 0.0, None
    ckpt_path = _resolve_resume(t_cfg.resume, out_dir)
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        if ckpt["model_name"] != cfg.model.name or ckpt["task"] != dataclasses.asdict(task):
            raise ValueError(
                f"cannot resume from {ckpt_path}: it trained {ckpt['model_name']} on {ckpt['task']}, this "
                f"config is {cfg.model.name} on {dataclasses.asdict(task)}"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if sparse_opt is not None and ckpt.get("sparse_optimizer") is not None:
            sparse_opt.load_state_dict(ckpt["sparse_optimizer"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        sampler.load_state_dict(ckpt["data"])
        _set_rng_state(ckpt["rng"], explore_gen, device)
        step, wall_before = int(ckpt["step"]), float(ckpt.get("wall_time_s", 0.0))
        if ckpt.get("carry") is not None:
            carry = _carry_from_payload(ckpt["carry"], model, ctx, local_batch, device)
        say(f"resumed from {ckpt_path} at step {step}")

    core = model
    if t_cfg.compile:
        model = torch.compile(model)
    if ctx.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    metrics_log = None
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        metrics_log = MetricsLog(out_dir, cfg, step if ckpt_path is not None else None)
        say(
            f"{cfg.model.name} {cfg.size.name}: {n_params:,} parameters; "
            f"{task.kind} {task.side}x{task.side}, "
            f"{data.train.num_groups} training groups, {len(data.test.inputs)} test examples; "
            f"{ctx.world_size} rank(s) on {device}; run dir {out_dir}"
        )

    def checkpoint(last_eval: dict) -> None:
        payload_carry = _carry_payload(carry, ctx) if t_cfg.checkpoint_carry else None
        if not ctx.is_main:
            return
        save_checkpoint(
            out_dir / "checkpoints" / "last.pt",
            {
                "model_name": cfg.model.name,
                "model_config": dataclasses.asdict(core.config),
                "task": dataclasses.asdict(task),
                "model": core.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": opt.state_dict(),
                "sparse_optimizer": sparse_opt.state_dict() if sparse_opt is not None else None,
                "step": step,
                "data": sampler.state_dict(),
                "rng": _rng_state(explore_gen, device),
                "carry": payload_carry,
                "config": OmegaConf.to_container(cfg, resolve=True),
                "metrics": last_eval,
                "wall_time_s": wall_before + (time.perf_counter() - t0),
            },
        )

    def run_eval() -> dict:
        eval_model = unwrap(core)
        ctx_mgr = ema.swapped_in(eval_model) if ema is not None else contextlib.nullcontext()
        with ctx_mgr:
            return evaluate_split(
                eval_model, task, data.test, device, ctx, batch_size=int(t_cfg.eval_batch_size),
                max_rows=t_cfg.eval_max_puzzles, precision=t_cfg.precision,
            )  # fmt: skip

    max_steps = int(t_cfg.max_steps)
    stop_at = max_steps if t_cfg.stop_at_step is None else min(int(t_cfg.stop_at_step), max_steps)
    deadline = None if t_cfg.max_minutes is None else float(t_cfg.max_minutes) * 60.0
    t0 = time.perf_counter()
    last_eval: dict = {}
    bar = None
    if ctx.is_main and t_cfg.progress:
        from tqdm import tqdm

        bar = tqdm(
            total=max_steps, initial=step, desc=f"{cfg.model.name}-{cfg.size.name}", dynamic_ncols=True
        )
    window: dict[str, float] = {}
    stop_reason = "max_steps" if stop_at == max_steps else "stop_at_step"
    try:
        while step < stop_at:
            batch = to_batch(data.train, sampler.next_rows(), device)
            if carry is None:
                carry = initial_carry(core, batch)
            lr = lr_at(
                step + 1, float(t_cfg.lr), int(t_cfg.lr_warmup_steps), max_steps, float(t_cfg.lr_min_ratio)
            )
            for group in opt.param_groups:
                group["lr"] = lr
            if sparse_opt is not None:
                sparse_opt.param_groups[0]["lr"] = lr * float(t_cfg.puzzle_emb_lr) / float(t_cfg.lr)
            with _autocast(device, t_cfg.precision):
                carry, outputs = supervision_step(
                    model, carry, batch, generator=explore_gen, shard=(ctx.rank, ctx.world_size)
                )
            loss, m = act_loss(outputs, carry, cfg.model.loss)
            # DDP averages gradients over ranks; the reference divides the summed loss by the global batch
            (loss * (ctx.world_size / global_batch)).backward()
            params = [p for p in core.parameters() if p.grad is not None]
            if t_cfg.grad_clip is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, float(t_cfg.grad_clip))
            else:
                grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
            bad = not (math.isfinite(float(loss.detach())) and math.isfinite(float(grad_norm)))
            if _any_rank(bad, ctx, device):
                last = out_dir / "checkpoints" / "last.pt"
                kept = (
                    f"the last good checkpoint is {last}"
                    if last.is_file()
                    else "no checkpoint was written yet"
                )
                raise NonFiniteLossError(
                    f"non-finite loss or gradient at update {step + 1} (loss {float(loss.detach()):.4g}, "
                    f"gradient norm {float(grad_norm):.4g}); the run stopped and {kept}. Try a lower "
                    "trainer.lr, "
                    "trainer.grad_clip=1.0, or trainer.precision=fp32, and resume with trainer.resume=auto"
                )
            opt.step()
            if (
                sparse_opt is not None
                and prefix.batch_rows is not None
                and prefix.batch_rows.grad is not None
            ):
                sparse_opt.step(prefix.batch_ids, prefix.batch_rows.grad)
            opt.zero_grad(set_to_none=True)
            prefix_rows_reset(prefix)
            if ema is not None:
                ema.update(core)
            step += 1

            # ---- metrics: sums over the halted sequences of every rank
            sums = {k: float(v) for k, v in m.items()}
            for k, v in sums.items():
                window[k] = window.get(k, 0.0) + v
            window["updates"] = window.get("updates", 0.0) + 1
            for k, v in _solver_metrics(outputs["extras"]).items():
                window[k] = window.get(k, 0.0) + v
            window["grad_norm"] = window.get("grad_norm", 0.0) + float(grad_norm)
            elapsed = wall_before + time.perf_counter() - t0
            out_of_time = deadline is not None and _any_rank(elapsed >= deadline, ctx, device)
            if out_of_time:
                stop_reason = "max_minutes"
            is_last = step >= stop_at or out_of_time
            if step % int(t_cfg.log_interval) == 0 or is_last:
                row = _train_row(_all_reduce_sum(window, ctx, device), ctx.world_size, global_batch)
                row.update(step=step, epoch=sampler.epoch, wall_s=elapsed, lr=lr)
                window = {}
                if metrics_log is not None:
                    metrics_log.write(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.3f}", exact=f"{row.get('train_exact', 0):.2f}")
            if step % int(t_cfg.eval_interval) == 0 or is_last:
                last_eval = run_eval()
                if metrics_log is not None:
                    metrics_log.write(
                        {
                            "step": step,
                            "epoch": sampler.epoch,
                            "wall_s": elapsed,
                            **{f"eval_{k}": v for k, v in last_eval.items()},
                        }
                    )
                say(
                    f"step {step}: test exact {last_eval['exact']:.3f}, valid {last_eval['valid']:.3f}, "
                    f"cell {last_eval['cell']:.3f} ({elapsed:.0f} s)"
                )
            interval = t_cfg.checkpoint_interval or t_cfg.eval_interval
            if step % int(interval) == 0 or is_last:
                checkpoint(last_eval)
            if bar is not None:
                bar.update(1)
            if out_of_time:
                say(f"stopping at step {step}: trainer.max_minutes={t_cfg.max_minutes} reached")
                break
    finally:
        if bar is not None:
            bar.close()
        if metrics_log is not None:
            metrics_log.close()

    summary = {
        "model": cfg.model.name,
        "size": cfg.size.name,
        "data": cfg.data.name,
        "task": dataclasses.asdict(task),
        "parameters": n_params,
        "steps": step,
        "stop_reason": stop_reason,
        "world_size": ctx.world_size,
        "device": str(device),
        "wall_s": wall_before + time.perf_counter() - t0,
        "final": last_eval,
    }
    if ctx.is_main:
        atomic_write_json(out_dir / "summary.json", summary)
    return summary


def prefix_rows_reset(prefix) -> None:
    """Forget the puzzle-embedding rows of the step just taken (a fresh leaf is made every forward)."""
    if prefix is not None:
        prefix.batch_rows, prefix.batch_ids = None, None


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
    for key in ("lm_loss", "q_halt_loss", "q_continue_loss"):
        if key in w:
            row[key] = w[key] / seqs
    if count > 0:
        row["train_exact"] = w["exact_accuracy"] / count
        row["train_cell"] = w["accuracy"] / count
        row["train_steps"] = w["steps"] / count
        row["q_halt_accuracy"] = w["q_halt_accuracy"] / count
    for key in ("solver_rel_residual", "solver_nstep", "solver_converged", "grad_norm"):
        if key in w:
            row[key] = w[key] / (updates * world_size)
    return row


# ----------------------------------------------------------------------------- entry point


def _hydra_main():
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base="1.3", config_path="conf", config_name="train")
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


if __name__ == "__main__":
    _hydra_main()
