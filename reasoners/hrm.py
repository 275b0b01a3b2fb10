"""HRM: the Hierarchical Reasoning Model (Wang et al., "Hierarchical Reasoning Model", 2025).

Symbols as in the paper:

- ``x``: the embedded question (one puzzle-embedding position + cells), (B, 1 + L, D);
- ``z_H``: the slow, high-level state (decoded by the output head); ``z_L``: the fast, low-level one;
- ``N`` high-level cycles (``H_cycles``) of ``T`` low-level updates each (``L_cycles``).

Two stacks of post-norm blocks, ``f_L`` and ``f_H``. One supervision step::

    for each of the N * T low-level updates:     z_L = f_L(z_L + z_H + x)
    after each block of T low-level updates:     z_H = f_H(z_H + z_L)

all without grad except the very last ``z_L`` and ``z_H`` updates (the "1-step gradient"). The
halting head reads ``z_H`` at position 0 and emits (q_halt, q_continue); training halts when
``q_halt > q_continue`` and learns q_continue from a bootstrapped target (one more no-grad step),
see :mod:`reasoners.supervision`.
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
class HRMConfig(NetworkConfig, HaltingConfig):
    """HRM's two stacks and cycles; the network fields come from :class:`NetworkConfig` (here
    ``puzzle_dim`` None -> d_model, and the prefix is ceil(puzzle_dim / d_model) positions), the
    halting fields from :class:`HaltingConfig`, HRM halting on q_halt > q_continue."""

    H_layers: int = 4
    L_layers: int = 4
    # recursion
    H_cycles: int = 2  # N
    L_cycles: int = 2  # T
    q_continue: bool = True  # learn q_continue by bootstrapping

    def __post_init__(self):
        super().__post_init__()
        at_least_one(self, "H_cycles", "L_cycles", "H_layers", "L_layers")

    @property
    def prefix_len(self) -> int:
        width = self.d_model if self.puzzle_dim is None else self.puzzle_dim
        return -(width // -self.d_model)  # ceil; 0 when there is no puzzle embedding


class HRMState(NamedTuple):
    """The carried state: high-level ``z_H`` and low-level ``z_L``, each (B, P + L, D)."""

    z_H: torch.Tensor
    z_L: torch.Tensor


class HRM(RecursiveReasoner):
    """Hierarchical Reasoning Model; ``forward(state, batch)`` is one supervision step."""

    State = HRMState

    def __init__(self, config: HRMConfig):
        super().__init__(config, {"high_net": config.H_layers, "low_net": config.L_layers})  # f_H, f_L

    def forward(self, state: HRMState, batch: dict[str, torch.Tensor]):
        """One supervision step: ``(state, batch) -> StepOutput(state, logits, q_logits, extras)``."""
        c = self.config
        rotary = self.rotary() if self.rotary is not None else None
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])  # (B, P+L, D)
        z_H, z_L = state
        with torch.no_grad():
            for h in range(c.H_cycles):
                for t in range(c.L_cycles):
                    if not (h == c.H_cycles - 1 and t == c.L_cycles - 1):
                        z_L = self.low_net(z_L, z_H + x, rotary)
                if h < c.H_cycles - 1:
                    z_H = self.high_net(z_H, z_L, rotary)
        # the 1-step gradient: only the last low and high updates are differentiated
        z_L = self.low_net(z_L, z_H + x, rotary)
        z_H = self.high_net(z_H, z_L, rotary)
        logits, q_logits = self.decode(z_H)
        return StepOutput(HRMState(z_H.detach(), z_L.detach()), logits, q_logits, {})
