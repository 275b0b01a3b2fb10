"""The trainer's keys as a dataclass: Hydra's structured config for the ``trainer`` group.

``conf/trainer/cpu.yaml`` and ``gpu.yaml`` start from this schema (``defaults: [schema]``) and
state only what differs, so a key is defined, typed and documented once; a misspelt or mistyped
key fails at composition with Hydra's own message. :meth:`TrainerConfig.from_cfg` turns the composed
``cfg.trainer`` into this dataclass, whose ``__post_init__`` checks the values and names the bad key.
The defaults are the laptop tier's (``trainer=cpu`` differs only in pinning the device and fp32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

PRECISIONS = ("auto", "fp32", "bf16")
OPTIMIZERS = ("adamw", "adam_atan2")


@dataclass
class TrainerConfig:
    device: str = "auto"  # cpu, cuda, mps, or auto
    precision: str = "auto"  # fp32, bf16 (autocast), or auto (bf16 on CUDA, fp32 elsewhere)
    compile: bool = False
    threads: int | None = None  # torch intra-op threads; null = torch's default
    max_steps: int = 2000
    max_minutes: float | None = None  # stop earlier when this much training time has passed (eval included)
    stop_at_step: int | None = None  # stop here as if interrupted, keeping max_steps' schedule (resume later)
    batch_size: int = 64  # global: split over the ranks
    lr: float = 1.0e-3
    lr_warmup_steps: int = 100
    lr_min_ratio: float = 1.0  # 1.0 = constant after warmup; < 1 = half cosine down to lr * ratio
    optimizer: str = "adamw"  # adamw or adam_atan2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    puzzle_emb_lr: float = 1.0e-2  # sign-SGD on the puzzle-embedding table, scheduled like lr
    puzzle_emb_weight_decay: float = 0.1
    grad_clip: float | None = None  # max gradient norm, or null
    ema: bool = True
    ema_decay: float = 0.999
    seed: int = 0
    resume: str | None = None  # null, auto (this run dir's last checkpoint), or a checkpoint / run dir
    log_interval: int = 10
    eval_interval: int = 250
    checkpoint_interval: int | None = None  # null = at every evaluation
    checkpoint_carry: bool = True  # save the deep-supervision carry too (exact resume)
    eval_batch_size: int = 256
    eval_max_puzzles: int | None = None
    progress: bool = True

    def __post_init__(self):
        problems = []
        for key in ("max_steps", "batch_size", "eval_interval", "log_interval", "eval_batch_size"):
            if getattr(self, key) <= 0:
                problems.append(f"trainer.{key} must be a positive integer, got {getattr(self, key)}")
        for key in ("checkpoint_interval", "stop_at_step", "eval_max_puzzles", "threads"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                problems.append(f"trainer.{key} must be positive or null, got {getattr(self, key)}")
        for key in ("grad_clip", "max_minutes"):
            if getattr(self, key) is not None and not getattr(self, key) > 0:
                problems.append(f"trainer.{key} must be positive or null, got {getattr(self, key)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"trainer.lr must be a positive number, got {self.lr}")
        if self.precision not in PRECISIONS:
            problems.append(f"trainer.precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"trainer.optimizer must be adamw or adam_atan2, got {self.optimizer!r}")
        if len(self.betas) != 2:
            problems.append(f"trainer.betas must be two numbers, got {self.betas}")
        if problems:
            raise ValueError("bad config: " + "; ".join(problems))

    @classmethod
    def from_cfg(cls, trainer: DictConfig | dict) -> TrainerConfig:
        """The dataclass of a composed ``cfg.trainer`` (interpolations resolved)."""
        if isinstance(trainer, DictConfig):
            trainer = OmegaConf.to_container(trainer, resolve=True)
        return cls(**trainer)

    @property
    def stop_step(self) -> int:
        """The update to stop at: ``max_steps``, or ``stop_at_step`` when that comes first."""
        return self.max_steps if self.stop_at_step is None else min(self.stop_at_step, self.max_steps)


# ``defaults: [schema]`` in conf/trainer/*.yaml names this node.
ConfigStore.instance().store(group="trainer", name="schema", node=TrainerConfig)
