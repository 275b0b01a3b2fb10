"""Checkpoints: plain dicts written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint written by :mod:`reasoners.train` holds::

    format        "gridloop-checkpoint/1"
    model_name    "hrm" | "trm" | "trm_mlp" | "attractor" | "attractor_mlp" | "eqr"
    model_config  the reasoner's dataclass config as a dict (rebuilds the network without Hydra)
    task          {"kind": "sudoku" | "maze", "side": int}
    model         state_dict of the live weights
    ema           EMA.state_dict() or None
    optimizer, sparse_optimizer, step, data (sampler position), rng (generator states),
    carry         the deep-supervision carry of the whole global batch (for an exact resume)
    config        the run's whole Hydra config as a plain dict
    metrics       the last evaluation's figures (may be empty)
    wall_time_s   training time so far

:func:`load_reasoner` is what evaluation and visualisation use: the network, with the EMA weights
by default (what TRM evaluates and exports), in eval mode, plus the task it was trained on.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from data_gen.format import atomic_path
from reasoners.presets import MODELS
from reasoners.tasks import Task

FORMAT = "gridloop-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint (``weights_only=True``); a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint (*.pt) in {path} or {path / 'checkpoints'}")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False, which would run the file's pickled code
        raise ValueError(
            f"{path} holds pickled Python objects, not only tensors and plain data: gridloop loads "
            "weights only and refuses to run code from a checkpoint; use a checkpoint written by "
            "reasoners.train (or reasoners.compat for the reference code's)"
        ) from e
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        message = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {message})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gridloop checkpoint (expected format {FORMAT!r})")
    return ckpt


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """``last.pt`` of a run directory (or of its ``checkpoints/``), else the newest ``*.pt``, else None."""
    run_dir = Path(run_dir)
    for folder in (run_dir / "checkpoints", run_dir):
        if (folder / "last.pt").is_file():
            return folder / "last.pt"
        # hidden names are temporary files of an interrupted write (data_gen.format.atomic_path)
        found = sorted(
            (p for p in folder.glob("*.pt") if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime
        )
        if found:
            return found[-1]
    return None


def build_from_checkpoint(ckpt: dict) -> nn.Module:
    """The reasoner described by a checkpoint's ``model_name`` / ``model_config`` (weights not loaded)."""
    name = ckpt["model_name"]
    if name not in MODELS:
        raise ValueError(f"checkpoint names an unknown reasoner {name!r}")
    cls, config_cls = MODELS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    return cls(config_cls(**{k: v for k, v in ckpt["model_config"].items() if k in fields}))


def load_reasoner(
    path: str | os.PathLike, *, ema: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Task, dict]:
    """``(model in eval mode, task, checkpoint dict)``; the EMA weights when the checkpoint has them
    and ``ema`` is true."""
    ckpt = load_checkpoint(path)
    model = build_from_checkpoint(ckpt)
    model.load_state_dict(ckpt["model"])
    if ema and ckpt.get("ema"):
        shadow = ckpt["ema"]["shadow"]
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in shadow:
                    p.copy_(shadow[name])
    task = Task(**ckpt["task"])
    return model.to(device).eval(), task, ckpt
