"""Pick the compute device and the matching torch.distributed backend (the only place that knows)."""

from __future__ import annotations

import contextlib

import torch


def pick_device(prefer: str | None = None) -> tuple[torch.device, str]:
    """``(device, ddp_backend)``: CUDA with nccl if available, else MPS, else CPU, both with gloo.

    ``prefer`` ("cuda", "mps", "cpu", or e.g. "cuda:1") forces a choice; an unavailable one raises.
    """
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError("device 'mps' requested but MPS is not available")
        return device, "nccl" if device.type == "cuda" else "gloo"
    if torch.cuda.is_available():
        return torch.device("cuda"), "nccl"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), "gloo"
    return torch.device("cpu"), "gloo"


def flushes_denormals() -> bool:
    """Whether this CPU thread flushes subnormal floats to zero now (torch has no getter for it)."""
    tiny = torch.tensor(torch.finfo(torch.float32).tiny, dtype=torch.float32)
    return bool((tiny / 2) == 0)


@contextlib.contextmanager
def restored_cpu_settings():
    """Give back torch's thread count and subnormal handling on exit: the trainer and the benches set
    both process-wide, and a caller that runs them in its own process (a notebook, the tests) keeps its
    own (hypothesis, for one, refuses to draw floats once subnormals are flushed)."""
    threads, flushing = torch.get_num_threads(), flushes_denormals()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushing)
