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
from torch import nn

from reasoners.layers import InputEmbedding, Linear, Rotary, Stack, trunc_normal_
from reasoners.supervision import HaltingConfig, StepOutput


@dataclass
class TRMConfig(HaltingConfig):
    """The network and its recursion; the halting fields come from :class:`HaltingConfig`."""

    # data
    vocab_size: int = 11  # Sudoku: PAD, blank, 1..9
    seq_len: int = 81
    num_puzzle_ids: int = 1
    # network
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 2
    expansion: float = 4.0
    ffn_multiple: int = 256  # SwiGLU inner width rounded up to a multiple of this (reference: 256)
    mixer: str = "attention"  # "attention" or "mlp" (TRM-MLP: token-mixing SwiGLU)
    positions: str = "rope"  # "rope", "learned" or "none"
    prefix_len: int = 16  # P: puzzle-embedding prefix positions
    puzzle_dim: int | None = None  # width of a puzzle-table row; None -> d_model (zero-padded to P*d)
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    # recursion
    T_cycles: int = 3  # T
    n_inner: int = 6  # n

    def __post_init__(self):
        super().__post_init__()
        if self.mixer not in ("attention", "mlp"):
            raise ValueError(f"unknown mixer {self.mixer!r}: expected 'attention' or 'mlp'")
        if self.positions not in ("rope", "learned", "none"):
            raise ValueError(f"unknown positions {self.positions!r}: expected 'rope', 'learned' or 'none'")
        if self.mixer == "attention" and (self.n_heads <= 0 or self.d_model % self.n_heads):
            raise ValueError(f"n_heads={self.n_heads} must be positive and divide d_model={self.d_model}")
        for name in ("T_cycles", "n_inner", "n_layers", "d_model", "seq_len", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class TRMState(NamedTuple):
    """The carried state: answer ``y`` and latent ``z``, each (B, P + L, D)."""

    y: torch.Tensor
    z: torch.Tensor


class TRM(nn.Module):
    """Tiny Recursive Model; ``forward(state, batch)`` is one supervision step."""

    def __init__(self, config: TRMConfig):
        super().__init__()
        self.config = c = config
        self.embed = InputEmbedding(
            c.vocab_size, c.d_model, c.seq_len, c.prefix_len, c.num_puzzle_ids, c.puzzle_dim, c.positions
        )
        total_len = c.prefix_len + c.seq_len
        self.rotary = (
            Rotary(c.d_model // c.n_heads, total_len, c.rope_base)
            if c.positions == "rope" and c.mixer == "attention"
            else None
        )
        self.net = Stack(
            c.n_layers,
            dim=c.d_model,
            n_heads=c.n_heads,
            expansion=c.expansion,
            mixer=c.mixer,
            seq_len=total_len,
            eps=c.norm_eps,
            ffn_multiple=c.ffn_multiple,
        )
        self.output_head = Linear(c.d_model, c.vocab_size)
        self.q_head = Linear(c.d_model, 2, bias=True)  # [halt, continue]
        with torch.no_grad():  # start from "never halt" (sigmoid(-5) ~ 0.007)
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        # Fixed random initial states (buffers, not trained; as the reference's H_init / L_init).
        self.register_buffer("y_init", trunc_normal_(torch.empty(c.d_model), std=1.0))
        self.register_buffer("z_init", trunc_normal_(torch.empty(c.d_model), std=1.0))

    # -- state -----------------------------------------------------------------------------------

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> TRMState:
        shape = (batch_size, self.config.prefix_len + self.config.seq_len, self.config.d_model)
        device = self.y_init.device if device is None else device
        return TRMState(
            self.y_init.to(device).expand(shape).clone(), self.z_init.to(device).expand(shape).clone()
        )

    def reset_state(self, state: TRMState, reset: torch.Tensor) -> TRMState:
        """Rows where ``reset`` (B,) is true go back to the initial state."""
        r = reset.view(-1, 1, 1)
        return TRMState(torch.where(r, self.y_init, state.y), torch.where(r, self.z_init, state.z))

    # -- recursion -------------------------------------------------------------------------------

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, rotary=None):
        """One cycle: n latent updates ``z = net(z + y + x)`` then the answer update ``y = net(y + z)``."""
        for _ in range(self.config.n_inner):
            z = self.net(z, y + x, rotary)  # (B, P+L, D)
        y = self.net(y, z, rotary)  # (B, P+L, D)
        return y, z

    def decode(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, L, V) from the cells of ``y``; halting logits (B, 2) = [halt, continue] in fp32."""
        logits = self.output_head(y)[:, self.config.prefix_len :]
        q_logits = self.q_head(y[:, 0]).to(torch.float32)
        return logits, q_logits

    def forward(self, state: TRMState, batch: dict[str, torch.Tensor]):
        """One supervision step: ``(state, batch) -> StepOutput(state, logits, q_logits, extras)``."""
        rotary = self.rotary() if self.rotary is not None else None
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])  # (B, P+L, D)
        y, z = state
        with torch.no_grad():
            for _ in range(self.config.T_cycles - 1):
                y, z = self.latent_recursion(x, y, z, rotary)
        y, z = self.latent_recursion(x, y, z, rotary)
        logits, q_logits = self.decode(y)
        return StepOutput(TRMState(y.detach(), z.detach()), logits, q_logits, {})
