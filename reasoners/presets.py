"""Size presets for every reasoner: ``tiny`` (tests, laptops), ``7m`` and ``27m``, on Sudoku or Maze.

=============  ===============================================  ==============================================
preset         network                                          why
=============  ===============================================  ==============================================
hrm 27m        d=512, 8 heads, 4 + 4 layers, N=2, T=2           the reference HRM (27,275,266 on Sudoku)
hrm 7m         d=512, 8 heads, 1 + 1 layers, N=2, T=2           HRM's shape at TRM-7M's size (same count)
trm 7m         d=512, 8 heads, 2 layers, T=3, n=6               the reference TRM (6,828,034 on Sudoku)
trm 27m        d=512, 8 heads, 8 layers, T=3, n=6               as the Attractor paper's 27M TRM
trm_mlp 7m     TRM 7m with the token-mixing MLP (no attention)  the reference TRM-MLP (5,028,866 on Sudoku)
attractor 7m   TRM-7M's network, solved to its (y, z) fixed     the Attractor paper's 7M
               point: Anderson m=5, <= 16 evaluations, tol
               1e-3, n_inner=1, UPG(k=5, tau=0.5)
attractor 27m  the same with 8 layers                           the Attractor paper's 27M
attractor_mlp  the Attractor on TRM-MLP's network (token-mixing  equal mixers against TRM-MLP (the
  7m           MLP, no positions)                               reference's Sudoku model)
attractor_mlp  the same at d=64; UPG(2, 1.0), the hinge Jacobian  the laptop recipe, chosen by 2-seed
  tiny         penalty (2.0 on 8 rows, every 4 updates), 48     runs on TRM-MLP's schedule (README)
               evaluations cold / 16 warm, Anderson restarts
eqr 7m         d=512, 8 heads, 2 layers, T=3, n=6, the token-   the reference EqR Sudoku model (4,855,298
               mixing MLP, no prefix, lambda 0.95, sigma 0.01   on Sudoku; locuslab/EqR eqr_sudoku.yaml)
eqr 27m        d=512, 8 heads, 8 layers, attention + RoPE,      no reference 27M: TRM 27m's network with
               T=3, n=6, no prefix                              EqR's dynamics (the reference's default,
                                                                attention arch; same count as trm 27m)
``* tiny``     d=64, 2 heads, 2 layers (HRM 1 + 1), T=2, n=2,   docs/reference.md's laptop tier, made
               SwiGLU width rounded to 64, one prefix position  cheaper (see ``_TINY_NET``); EqR tiny has
               (EqR: none)                                      7m's MLP mixer and no prefix
=============  ===============================================  ==============================================

All but ``tiny`` keep the reference prefix of 16 positions (HRM: 1; EqR has none), RoPE (TRM-MLP: no
positions, as the TRM README runs it), expansion 4 and halting at 16 supervision steps. The
Attractor presets use a full-width puzzle row (``puzzle_dim = 16 * d``) instead of TRM's d-wide row
zero-padded to 16 positions: where the injected ``x`` is zero the normalised map has a continuum of
fixed points (any unit-RMS ``y = z``), which leaves the solve ill-posed at those positions. The
puzzle table is a buffer, so parameter counts do not change.

A ``trm_mlp`` token mixer is as wide as the sequence: its size grows with ``seq_len`` (Maze's 916
positions make TRM-MLP 7m ~19M parameters; EqR 7m's 900 make it 18.5M). There is no ``trm_mlp 27m`` preset.
An 8-layer EqR with the MLP mixer would have 19,384,322 parameters on Sudoku. The reference's maze
EqR is smaller than any preset (d=128, 1 attention layer, n=4: 263,938 parameters on 30x30 mazes);
build it with overrides (``d_model=128, n_layers=1, n_inner=4``).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from reasoners.attractor import Attractor, AttractorConfig
from reasoners.eqr import EqR, EqRConfig
from reasoners.hrm import HRM, HRMConfig
from reasoners.trm import TRM, TRMConfig

PUZZLES = {
    "sudoku": dict(vocab_size=11, seq_len=81, num_puzzle_ids=1),
    "maze": dict(vocab_size=6, seq_len=900, num_puzzle_ids=1),
}
SIZES = ("tiny", "7m", "27m")
MODELS = {
    "hrm": (HRM, HRMConfig),
    "trm": (TRM, TRMConfig),
    "trm_mlp": (TRM, TRMConfig),
    "attractor": (Attractor, AttractorConfig),
    "attractor_mlp": (Attractor, AttractorConfig),
    "eqr": (EqR, EqRConfig),
}

# The laptop shape: SwiGLU width rounded to 64 (171 -> 192) instead of 256, and (TRM, Attractor) one
# prefix position instead of 16: these sets have one puzzle identifier, so the prefix is a learned
# constant, and at 6x6 sixteen positions would be 30% of the tokens. Measured on 1 CPU thread, 6x6
# Sudoku, batch 64: 1.75x the training throughput of the reference rounding and prefix.
_TINY_NET = dict(d_model=64, n_heads=2, expansion=4.0, ffn_multiple=64)
_BIG_NET = dict(d_model=512, n_heads=8, expansion=4.0)
_ATTRACTOR = dict(
    solver="anderson",
    n_inner=1,
    max_iter=16,
    tol=1e-3,
    min_iter=2,
    anderson_m=5,
    grad="phantom",
    phantom_k=5,
    phantom_tau=0.5,
)

# issue 14, README "Why the training solves stalled" and "A seed no choice saw, and the carried rows":
# every solve gets 48 evaluations (a new puzzle's cold solve needs 20-30; a carried row that failed its
# last solve, or whose weights moved since, often 17-48, so a separate budget of 16 for carried rows
# failed about half of them; bench_attractor carried), Anderson with restarts
# (plain Anderson(5) stalls on the cold plateau), the hinge (target 0.9) at weight 2.0 on 8 rows every 2
# updates. laptop_sudoku, 2,000 updates, seeds 0 / 3 (both used in the choice): exact 99.0 / 98.6% (last
# and halting step), training solves below tol 95.7 / 96.5% after update 500, rho < 1 share at update 1000
# (training weights) 97 / 94%, update cost 1.23 / 1.27x TRM-MLP's. The carried rows' budget of 16 with
# the penalty every 4 updates (the preset before): seeds 0 / 1 / 3 below tol 87.8 / 91.0 / 85.2%.
# The penalised rows are the 8 whose solve exited with the largest residual (jac_select="worst"; README,
# "The penalty on the worst rows"): seeds 0 / 1 / 3 / 5 (1 and 5 in no choice) exact 98.4 / 98.6 / 98.6 /
# 98.6%, below tol 96.1 / 96.9 / 95.2 / 97.0%, rho < 1 share >= 97% at every evaluation (training and
# EMA); the first 8 rows instead missed rho at update 1000 on seed 3 (94%). Update cost 2.07 / 1.71 /
# 1.33 / 1.30x TRM-MLP's: seeds 0 and 1 miss 1.5x where one row of the timed batch does not converge.
# That row sits in the ghost of a fixed point (README, "The stuck row is the ghost of a fixed point"); a
# stall exit near it (solver_stall=8, solver_stall_rows="warm", solver_stall_below=1e-2) was screened on
# two seeds at 2e-3 and 4e-3 and left off: it passed all four targets on one seed of four runs and kept
# one 4e-3 run on the plateau.
_ATTRACTOR_LAPTOP = dict(
    phantom_k=2,
    phantom_tau=1.0,
    jac_weight=2.0,
    jac_every=2,
    jac_rows=8,
    jac_select="worst",
    max_iter=48,
    min_iter=1,
    anderson_restart=1.0,
)

PRESETS: dict[str, dict[str, dict]] = {
    "hrm": {
        "tiny": dict(_TINY_NET, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2),
        "7m": dict(_BIG_NET, H_layers=1, L_layers=1, H_cycles=2, L_cycles=2),
        "27m": dict(_BIG_NET, H_layers=4, L_layers=4, H_cycles=2, L_cycles=2),
    },
    "trm": {
        "tiny": dict(_TINY_NET, n_layers=2, T_cycles=2, n_inner=2, prefix_len=1),
        "7m": dict(_BIG_NET, n_layers=2, T_cycles=3, n_inner=6),
        "27m": dict(_BIG_NET, n_layers=8, T_cycles=3, n_inner=6),
    },
    "trm_mlp": {
        "tiny": dict(
            _TINY_NET, n_layers=2, T_cycles=2, n_inner=2, mixer="mlp", positions="none", prefix_len=1
        ),
        "7m": dict(_BIG_NET, n_layers=2, T_cycles=3, n_inner=6, mixer="mlp", positions="none"),
    },
    "attractor": {
        # tiny: puzzle_dim unset is d_model, the full width of its one prefix position at any width
        "tiny": dict(**_TINY_NET, **_ATTRACTOR, n_layers=2, prefix_len=1),
        "7m": dict(**_BIG_NET, **_ATTRACTOR, n_layers=2, prefix_len=16, puzzle_dim=16 * 512),
        "27m": dict(**_BIG_NET, **_ATTRACTOR, n_layers=8, prefix_len=16, puzzle_dim=16 * 512),
    },
    # TRM-MLP's network (tiny and 7m as trm_mlp's) under the Attractor's solve: equal mixers
    # tiny: the laptop recipe chosen by measurement (README, "the Attractor"; laptop_sudoku, 2,000 updates,
    # seeds 0 and 1): UPG(2, 1.0), the most faithful phantom gradient within 1.5x TRM's update (bench
    # fidelity); the hinge penalty (0.5 every 2 updates) on the plain map, which beat the damped map (0.5)
    # on accuracy and on the rho < 1 share. 7m keeps the paper's UPG(5, 0.5), no penalty: not measured.
    "attractor_mlp": {
        "tiny": dict(
            **_TINY_NET,
            **_ATTRACTOR,
            n_layers=2,
            prefix_len=1,  # puzzle_dim unset: d_model, full width at any width (a --axis d_model sweep)
            mixer="mlp",
            positions="none",
        )
        | _ATTRACTOR_LAPTOP,
        "7m": dict(
            **_BIG_NET,
            **_ATTRACTOR,
            n_layers=2,
            prefix_len=16,
            puzzle_dim=16 * 512,
            mixer="mlp",
            positions="none",
        ),
    },
    # EqR's damping (0.95), noise (0.01) and random initial state are EqRConfig's defaults
    "eqr": {
        "tiny": dict(_TINY_NET, n_layers=2, T_cycles=2, n_inner=2, mixer="mlp"),
        "7m": dict(_BIG_NET, n_layers=2, T_cycles=3, n_inner=6, mixer="mlp"),
        "27m": dict(_BIG_NET, n_layers=8, T_cycles=3, n_inner=6),
    },
}


def preset_config(model: str, size: str, puzzle: str = "sudoku", **overrides):
    """The config of ``model`` ("hrm", "trm", "trm_mlp", "attractor", "attractor_mlp", "eqr") at ``size``
    on ``puzzle`` ("sudoku", "maze"); keyword overrides win (e.g. ``seq_len=36, vocab_size=6`` for 6x6
    mazes)."""
    if model not in PRESETS:
        raise ValueError(f"unknown model {model!r}: expected one of {', '.join(PRESETS)}")
    if size not in PRESETS[model]:
        raise ValueError(f"no {size!r} preset for {model!r}: expected one of {', '.join(PRESETS[model])}")
    if puzzle not in PUZZLES:
        raise ValueError(f"unknown puzzle {puzzle!r}: expected one of {', '.join(PUZZLES)}")
    _, config_cls = MODELS[model]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} fields: {', '.join(sorted(unknown))}")
    return config_cls(**{**PUZZLES[puzzle], **PRESETS[model][size], **overrides})


def build(model: str, size: str, puzzle: str = "sudoku", **overrides) -> nn.Module:
    """A reasoner from a preset, e.g. ``build("trm", "7m", "sudoku")``."""
    cls, _ = MODELS[model] if model in MODELS else (None, None)
    config = preset_config(model, size, puzzle, **overrides)
    return cls(config)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (the puzzle-embedding table is a buffer and is not counted, as in the
    reference counts)."""
    return sum(p.numel() for p in model.parameters())
