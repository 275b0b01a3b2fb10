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
from torch import nn

from reasoners.layers import InputEmbedding, Linear, Rotary, Stack, trunc_normal_
from reasoners.supervision import HaltingConfig, StepOutput


@dataclass
class HRMConfig(HaltingConfig):
    """The network and its recursion; the halting fields come from :class:`HaltingConfig`."""

    # data
    vocab_size: int = 11
    seq_len: int = 81
    num_puzzle_ids: int = 1
    # network
    d_model: int = 512
    n_heads: int = 8
    H_layers: int = 4
    L_layers: int = 4
    expansion: float = 4.0
    ffn_multiple: int = 256  # SwiGLU inner width rounded up to a multiple of this (reference: 256)
    mixer: str = "attention"  # "attention" or "mlp"
    positions: str = "rope"  # "rope", "learned" or "none"
    puzzle_dim: int | None = None  # None -> d_model; the prefix is ceil(puzzle_dim / d_model) positions
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    # recursion
    H_cycles: int = 2  # N
    L_cycles: int = 2  # T
    # halting: HaltingConfig's fields; HRM halts on q_halt > q_continue and learns q_continue
    q_continue: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.mixer not in ("attention", "mlp"):
            raise ValueError(f"unknown mixer {self.mixer!r}: expected 'attention' or 'mlp'")
        if self.positions not in ("rope", "learned", "none"):
            raise ValueError(f"unknown positions {self.positions!r}: expected 'rope', 'learned' or 'none'")
        if self.mixer == "attention" and (self.n_heads <= 0 or self.d_model % self.n_heads):
            raise ValueError(f"n_heads={self.n_heads} must be positive and divide d_model={self.d_model}")
        for name in ("H_cycles", "L_cycles", "H_layers", "L_layers", "d_model", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def prefix_len(self) -> int:
        width = self.d_model if self.puzzle_dim is None else self.puzzle_dim
        return -(width // -self.d_model)  # ceil; 0 when there is no puzzle embedding


class HRMState(NamedTuple):
    """The carried state: high-level ``z_H`` and low-level ``z_L``, each (B, P + L, D)."""

    z_H: torch.Tensor
    z_L: torch.Tensor


class HRM(nn.Module):
    """Hierarchical Reasoning Model; ``forward(state, batch)`` is one supervision step."""

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.config = c = config
        P = c.prefix_len
        self.embed = InputEmbedding(
            c.vocab_size, c.d_model, c.seq_len, P, c.num_puzzle_ids, c.puzzle_dim, c.positions
        )
        total_len = P + c.seq_len
        self.rotary = (
            Rotary(c.d_model // c.n_heads, total_len, c.rope_base)
            if c.positions == "rope" and c.mixer == "attention"
            else None
        )
        block = dict(
            dim=c.d_model,
            n_heads=c.n_heads,
            expansion=c.expansion,
            mixer=c.mixer,
            seq_len=total_len,
            eps=c.norm_eps,
            ffn_multiple=c.ffn_multiple,
        )
        self.high_net = Stack(c.H_layers, **block)  # f_H
        self.low_net = Stack(c.L_layers, **block)  # f_L
        self.output_head = Linear(c.d_model, c.vocab_size)
        self.q_head = Linear(c.d_model, 2, bias=True)  # [halt, continue]
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        self.register_buffer("z_H_init", trunc_normal_(torch.empty(c.d_model), std=1.0))
        self.register_buffer("z_L_init", trunc_normal_(torch.empty(c.d_model), std=1.0))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> HRMState:
        shape = (batch_size, self.config.prefix_len + self.config.seq_len, self.config.d_model)
        device = self.z_H_init.device if device is None else device
        return HRMState(
            self.z_H_init.to(device).expand(shape).clone(), self.z_L_init.to(device).expand(shape).clone()
        )

    def reset_state(self, state: HRMState, reset: torch.Tensor) -> HRMState:
        r = reset.view(-1, 1, 1)
        return HRMState(torch.where(r, self.z_H_init, state.z_H), torch.where(r, self.z_L_init, state.z_L))

    def decode(self, z_H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.output_head(z_H)[:, self.config.prefix_len :]  # (B, L, V)
        q_logits = self.q_head(z_H[:, 0]).to(torch.float32)  # (B, 2)
        return logits, q_logits

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
