"""EqR: the Equilibrium Reasoner (Huang, Geng, Kolter, "Equilibrium Reasoners: Learning Attractors
Enables Scalable Reasoning", 2026).

TRM's recursion (:mod:`reasoners.trm`) run as a damped, noisy dynamical system, so that what the
network learns are *attractors*: stable fixed points of the latent dynamics that decode to valid
answers. Symbols as in TRM:

- ``x``: the embedded question, (B, L, D): token embeddings only, no puzzle-embedding prefix;
- ``y``: the answer state (the reference code's ``z_H``), decoded by the output head;
- ``z``: the latent reasoning state (the reference code's ``z_L``);
- ``n``: latent updates per cycle (``n_inner``), ``T``: cycles per supervision step (``T_cycles``);
- ``lambda``: the damping (``damping``, 0.95); ``sigma``: the noise scale (``noise_std``, 0.01).

Every call of the one tiny network ``net`` is a damped, noisy update of the state it refines::

    h <- (1 - lambda) h + lambda net(h + injection) + sigma eps,    eps ~ N(0, I), fresh at every call

with ``(h, injection) = (z, y + x)`` for a latent update and ``(y, z)`` for the answer update. One
supervision step follows TRM's schedule of these updates::

    repeat T - 1 times without grad:   (repeat n: z <- update(z; y + x));  y <- update(y; z)
    once with grad:                    (repeat n: z <- update(z; y + x));  y <- update(y; z)
    logits = output_head(y),  q = q_head(y[:, 0])

and (y, z) are carried, detached, to the next supervision step (deep supervision and halting as TRM's,
:mod:`reasoners.supervision`). Where EqR differs from TRM (docs/reference.md, "EqR"):

- every new puzzle starts from a fresh random (y, z), truncated normal with std 1 (``y_init_std``,
  ``z_init_std``) drawn independently for every element, instead of TRM's fixed buffers
  (``random_init = True``); a puzzle's answer is therefore a random variable, and test-time *breadth*
  runs one puzzle from many initial states;
- the noise is drawn at every update in training *and* in evaluation, as the reference does;
- there is no puzzle-embedding prefix (``prefix_len`` is 0): the q-head reads the first cell. The
  reference's Sudoku model mixes tokens with the MLP mixer (``mixer="mlp"``); its default network,
  used on mazes, is attention with RoPE.

Randomness. The state draws and the noise come from the global torch generator, in the reference's
order, so the parity fixtures can replay them from a recorded ``torch.get_rng_state()``: a reset draws
y, then z, for the rows being reset only (one uniform per element, row order); each network call
then draws its noise after the network, one (B, L, D) draw for the whole batch. A caller who wants
other streams passes ``generator`` to :meth:`EqR.initial_state` and sets :attr:`EqR.noise_generator`,
either one ``torch.Generator`` on the state's device for the whole batch (a row's draws then depend on
its place in the batch) or a sequence of B generators, one per row, each drawing its row's (L, D) on
its own device (CPU generators are fine; the draws are moved to the state's device). With one
generator per row a rollout is reproducible row by row: a puzzle's trajectory is the same whatever
its batch-mates are and whatever else draws from the global generator. None, the default, is the
global generator.
``noise_std=0`` draws no noise at all (the reference would still consume the draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from reasoners.layers import NetworkConfig, at_least_one, trunc_normal_
from reasoners.supervision import HaltingConfig
from reasoners.trm import TRM


@dataclass
class EqRConfig(NetworkConfig, HaltingConfig):
    """EqR's depth, recursion and dynamics; the network fields come from :class:`NetworkConfig`
    (the defaults are the reference's default network, attention with RoPE; its Sudoku model sets
    ``mixer="mlp"``), the halting fields from :class:`HaltingConfig` (``q_halt > 0``, as TRM)."""

    n_layers: int = 2
    # recursion
    T_cycles: int = 3  # T
    n_inner: int = 6  # n
    # dynamics
    damping: float = 0.95  # lambda: h <- (1 - lambda) h + lambda net(h + injection) + sigma eps
    noise_std: float = 0.01  # sigma, in training and in evaluation
    y_init_std: float = 1.0  # std of the random initial answer state (reference H_init_std)
    z_init_std: float = 1.0  # std of the random initial latent state (reference L_init_std)

    def __post_init__(self):
        super().__post_init__()
        at_least_one(self, "T_cycles", "n_inner", "n_layers")
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(
                f"damping (lambda) must be in (0, 1], got {self.damping}: each update is "
                "h <- (1 - lambda) h + lambda net(h + injection) + sigma noise"
            )
        for name in ("noise_std", "y_init_std", "z_init_std"):
            value = getattr(self, name)
            if not value >= 0.0 or value == float("inf"):  # also rejects NaN
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    @property
    def prefix_len(self) -> int:
        """EqR has no puzzle-embedding prefix."""
        return 0


class EqRState(NamedTuple):
    """The carried state: answer ``y`` and latent ``z``, each (B, L, D) (no prefix)."""

    y: torch.Tensor
    z: torch.Tensor


class EqR(TRM):
    """Equilibrium Reasoner; ``forward(state, batch)`` is one supervision step: TRM's
    (:meth:`reasoners.trm.TRM.forward`), with this class's damped, noisy :meth:`latent_recursion`.

    ``noise_generator``: where the recursion noise comes from: None (the global generator), one
    generator, or one generator per batch row (see the module docstring)."""

    State = EqRState
    random_init = True

    def __init__(self, config: EqRConfig):
        super().__init__(config)
        self.noise_generator: torch.Generator | Sequence[torch.Generator] | None = None

    # -- the random initial state ------------------------------------------------------------------

    def _draw(self, rows: int, device, dtypes, generator: torch.Generator | None) -> EqRState:
        """``rows`` fresh states: all of y, then all of z (the reference's order)."""
        c = self.config
        shape = (rows, c.prefix_len + c.seq_len, c.d_model)
        fields = []
        for std, dtype in zip((c.y_init_std, c.z_init_std), dtypes, strict=True):
            empty = torch.empty(shape, device=device, dtype=dtype)
            fields.append(trunc_normal_(empty, std=std, generator=generator))
        return EqRState(*fields)

    def initial_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> EqRState:
        """A random state for ``batch_size`` new puzzles, in the weights' dtype, drawn from
        ``generator`` (on ``device``), from one generator per row (row r's y then z from
        ``generator[r]``, on its own device, moved to ``device``) or, when None, from the global one."""
        weight = self.output_head.weight
        device = weight.device if device is None else device
        dtypes = (weight.dtype, weight.dtype)
        if generator is None or isinstance(generator, torch.Generator):
            return self._draw(batch_size, device, dtypes, generator)
        if len(generator) != batch_size:
            raise ValueError(f"one generator per row: got {len(generator)} for batch_size={batch_size}")
        rows = [self._draw(1, g.device, dtypes, g) for g in generator]
        return EqRState(*(torch.cat(parts).to(device) for parts in zip(*rows, strict=True)))

    def reset_state(self, state: EqRState, reset: torch.Tensor) -> EqRState:
        """Rows where ``reset`` (B,) is true get a fresh random state, drawn from the global generator
        for those rows only (none drawn when no row resets), in each field's dtype; a new state is
        returned, ``state`` is not modified."""
        rows = reset.nonzero().flatten()
        if rows.numel() == 0:
            return state
        fresh = self._draw(rows.numel(), state.y.device, (state.y.dtype, state.z.dtype), None)
        return EqRState(*(s.index_put((rows,), f) for s, f in zip(state, fresh, strict=True)))

    # -- recursion -------------------------------------------------------------------------------

    def update(self, h: torch.Tensor, injection: torch.Tensor, rotary=None) -> torch.Tensor:
        """``(1 - lambda) h + lambda net(h + injection) + sigma eps``, the noise drawn after the network."""
        c = self.config
        out = (1 - c.damping) * h + c.damping * self.net(h, injection, rotary)
        if c.noise_std > 0:
            out = out + c.noise_std * self._noise(h)
        return out

    def _noise(self, h: torch.Tensor) -> torch.Tensor:
        """Standard normal draws of ``h``'s shape from :attr:`noise_generator`."""
        gen = self.noise_generator
        if gen is None or isinstance(gen, torch.Generator):
            return torch.randn(h.shape, generator=gen, device=h.device, dtype=h.dtype)
        if len(gen) != h.shape[0]:
            raise ValueError(f"noise_generator holds {len(gen)} generators for a batch of {h.shape[0]} rows")
        rows = [torch.randn(h.shape[1:], generator=g, device=g.device, dtype=h.dtype) for g in gen]
        return torch.stack(rows).to(h.device)

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, rotary=None):
        """One cycle: n latent updates of ``z`` (injection ``y + x``), then the answer update of ``y``
        (injection ``z``)."""
        for _ in range(self.config.n_inner):
            z = self.update(z, y + x, rotary)  # (B, L, D)
        y = self.update(y, z, rotary)  # (B, L, D)
        return y, z


def convergence_score(logits: Sequence[torch.Tensor], window: int = 3) -> torch.Tensor:
    """EqR's test-time selector: how much the answer still moves at the end of a rollout.

    ``logits``: the (B, L, V) logits of consecutive supervision steps. The score of a row is the
    Euclidean norm over the vocabulary of the change of a cell's logits from one step to the next,
    averaged over the cells and over the last ``window`` changes (all of them when there are not
    more than ``window``); (B,), lower is more converged. Breadth at test time keeps the lowest-scoring
    of a puzzle's trajectories (docs/reference.md, "EqR")."""
    if len(logits) < 2:
        raise ValueError(f"a convergence score needs the logits of at least 2 steps, got {len(logits)}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    stacked = torch.stack([t.float() for t in logits])  # (S, B, L, V)
    deltas = stacked[1:] - stacked[:-1]  # (S - 1, B, L, V)
    return deltas[-window:].norm(dim=-1).mean(dim=(0, 2))  # (B,)
