"""TRM: the Tiny Recursive Model (Jolicoeur-Martineau, "Less is More: Recursive Reasoning with Tiny
Networks", 2025).

Symbols as in the paper:

- ``x``: the embedded question (puzzle prefix + cells), (B, P + L, D);
- ``y``: the current embedded answer (the reference code's ``z_H``), decoded by the output head;
- ``z``: the latent reasoning state (the reference code's ``z_L``);
- ``n``: latent updates per cycle (``n_inner``), ``T``: cycles per supervision step (``T_cycles``).

One tiny network ``net`` (2 post-norm blocks) does both updates. One supervision step::

    repeat T - 1 times without grad:   (repeat n: z = net(z + y + x));  y = net(y + z)
    once with grad:                    (repeat n: z = net(z + y + x));  y = net(y + z)
    logits = output_head(y)[prefix:],  q = q_head(y[:, 0])

and (y, z) are carried, detached, to the next supervision step. Deep supervision and halting live in
:mod:`reasoners.supervision`. The token mixer is attention with RoPE or, for TRM-MLP, a SwiGLU
along the sequence axis (``mixer="mlp"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from reasoners.layers import (
    NetworkConfig,
    RecursiveReasoner,
    at_least_one,
)
from reasoners.supervision import HaltingConfig, StepOutput


@dataclass
class TRMConfig(NetworkConfig, HaltingConfig):
    """TRM's depth and recursion; the network fields come from :class:`NetworkConfig`, the halting
    fields from :class:`HaltingConfig`."""

    n_layers: int = 2
    prefix_len: int = 16  # P: puzzle-embedding prefix positions (a puzzle row is zero-padded to P*d)
    # recursion
    T_cycles: int = 3  # T
    n_inner: int = 6  # n

    def __post_init__(self):
        super().__post_init__()
        at_least_one(self, "T_cycles", "n_inner", "n_layers")


class TRMState(NamedTuple):
    """The carried state: answer ``y`` and latent ``z``, each (B, P + L, D)."""

    y: torch.Tensor
    z: torch.Tensor


class TRM(RecursiveReasoner):
    """Tiny Recursive Model; ``forward(state, batch)`` is one supervision step."""

    State = TRMState

    def __init__(self, config: TRMConfig):
        super().__init__(config, {"net": config.n_layers})

    # -- recursion -------------------------------------------------------------------------------

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, rotary=None):
        """One cycle: n latent updates ``z = net(z + y + x)`` then the answer update ``y = net(y + z)``."""
        for _ in range(self.config.n_inner):
            z = self.net(z, y + x, rotary)  # (B, P+L, D)
        y = self.net(y, z, rotary)  # (B, P+L, D)
        return y, z

    def forward(self, state: TRMState, batch: dict[str, torch.Tensor]):
        """One supervision step: ``(state, batch) -> StepOutput(state, logits, q_logits, extras)``."""
        rotary = self.rotary() if self.rotary is not None else None
        x = self.embed(batch["inputs"], batch.get("puzzle_identifiers"))  # (B, P+L, D)
        y, z = state
        with torch.no_grad():
            for _ in range(self.config.T_cycles - 1):
                y, z = self.latent_recursion(x, y, z, rotary)
        y, z = self.latent_recursion(x, y, z, rotary)
        logits, q_logits = self.decode(y)
        return StepOutput(self.State(y.detach(), z.detach()), logits, q_logits, {})
