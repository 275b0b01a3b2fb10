"""Load weights saved by the reference HRM / TRM / EqR code (SamsungSAILMontreal/TinyRecursiveModels,
sapientinc/HRM, locuslab/EqR) into gridloop's reasoners.

The key map (reference -> gridloop), after stripping the ``_orig_mod.`` (torch.compile) and
``model.`` (``ACTLossHead``) prefixes and the ``inner.`` level:

==============================================  =============================================
reference                                        gridloop
==============================================  =============================================
``embed_tokens.embedding_weight``                ``embed.tokens.weight``
``embed_pos.embedding_weight``                   ``embed.pos.weight``
``puzzle_emb.weights`` (a buffer)                ``embed.puzzle.table`` (a buffer)
``lm_head.weight``                               ``output_head.weight``
``q_head.weight`` / ``q_head.bias``              ``q_head.weight`` / ``q_head.bias``
``H_init`` / ``L_init``                          TRM ``y_init`` / ``z_init``; HRM ``z_H_init`` / ``z_L_init``
``L_level.layers.i.`` (TRM, EqR)                 ``net.layers.i.``
``H_level.layers.i.`` / ``L_level.layers.i.``    HRM ``high_net.layers.i.`` / ``low_net.layers.i.``
``...self_attn.qkv_proj.weight``                 ``...attn.qkv.weight``
``...self_attn.o_proj.weight``                   ``...attn.out.weight``
``...mlp.gate_up_proj.weight``                   ``...mlp.gate_up.weight``
``...mlp.down_proj.weight``                      ``...mlp.down.weight``
``...mlp_t.gate_up_proj.weight`` (TRM-MLP)       ``...token_mlp.mlp.gate_up.weight``
``...mlp_t.down_proj.weight``                    ``...token_mlp.mlp.down.weight``
==============================================  =============================================

The RoPE tables and the puzzle embedding's per-batch buffers are not persistent and not mapped. EqR
has no puzzle embedding, and its ``H_init`` / ``L_init`` buffers (non-persistent, never read: every
puzzle starts from a fresh random state) have no counterpart and are skipped if present.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_COMMON = [
    (r"^embed_tokens\.embedding_weight$", "embed.tokens.weight"),
    (r"^embed_pos\.embedding_weight$", "embed.pos.weight"),
    (r"^puzzle_emb\.weights$", "embed.puzzle.table"),
    (r"^lm_head\.", "output_head."),
    (r"\.self_attn\.qkv_proj\.", ".attn.qkv."),
    (r"\.self_attn\.o_proj\.", ".attn.out."),
    (r"\.mlp_t\.gate_up_proj\.", ".token_mlp.mlp.gate_up."),
    (r"\.mlp_t\.down_proj\.", ".token_mlp.mlp.down."),
    (r"\.mlp\.gate_up_proj\.", ".mlp.gate_up."),
    (r"\.mlp\.down_proj\.", ".mlp.down."),
]
_LEVELS = {
    "trm": [(r"^L_level\.", "net."), (r"^H_init$", "y_init"), (r"^L_init$", "z_init")],
    "hrm": [
        (r"^H_level\.", "high_net."),
        (r"^L_level\.", "low_net."),
        (r"^H_init$", "z_H_init"),
        (r"^L_init$", "z_L_init"),
    ],
    "eqr": [(r"^L_level\.", "net.")],
}
_KINDS = "'trm', 'hrm' or 'eqr'"
_SKIP = re.compile(r"(rotary_emb\.|puzzle_emb\.local_)")
_SKIP_KIND = {"eqr": re.compile(r"^(H_init|L_init)$")}


def reference_key(key: str) -> str:
    """Strip wrapper prefixes from a reference state-dict key."""
    for prefix in ("_orig_mod.", "model.", "inner."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def map_reference_key(kind: str, key: str) -> str | None:
    """gridloop key for a reference key (``kind`` is ``"trm"``, ``"hrm"`` or ``"eqr"``); None for
    skipped keys."""
    if kind not in _LEVELS:
        raise ValueError(f"unknown reference kind {kind!r}: expected {_KINDS}")
    key = reference_key(key)
    if _SKIP.search(key) or (kind in _SKIP_KIND and _SKIP_KIND[kind].search(key)):
        return None
    for pattern, repl in _LEVELS[kind] + _COMMON:
        key = re.sub(pattern, repl, key)
    return key


def convert_reference_state_dict(kind: str, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        mapped = map_reference_key(kind, key)
        if mapped is not None:
            out[mapped] = value
    return out


def load_reference_state_dict(model: nn.Module, kind: str, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a reference checkpoint into ``model`` (strict: every gridloop key must be provided)."""
    model.load_state_dict(convert_reference_state_dict(kind, state_dict), strict=True)


def config_from_reference(kind: str, cfg: dict):
    """A gridloop config equal to a reference ``arch`` config dict (the keys the reference reads)."""
    if kind == "eqr" and cfg.get("pos_encodings") == "rope2d":
        raise ValueError("EqR's pos_encodings='rope2d' is not implemented in gridloop: use 'rope' or 'none'")
    common = dict(
        vocab_size=cfg["vocab_size"],
        seq_len=cfg["seq_len"],
        num_puzzle_ids=cfg.get("num_puzzle_identifiers", 1),
        d_model=cfg["hidden_size"],
        n_heads=cfg["num_heads"],
        expansion=float(cfg["expansion"]),
        mixer="mlp" if cfg.get("mlp_t", False) else "attention",
        positions=cfg["pos_encodings"] if cfg["pos_encodings"] in ("rope", "learned") else "none",
        puzzle_dim=cfg.get("puzzle_emb_ndim", 0),
        rope_base=cfg.get("rope_theta", 10000.0),
        norm_eps=cfg.get("rms_norm_eps", 1e-5),
        halt_max_steps=cfg["halt_max_steps"],
        halt_exploration_prob=cfg["halt_exploration_prob"],
    )
    if kind == "trm":
        from reasoners.trm import TRMConfig

        d, ndim = cfg["hidden_size"], cfg.get("puzzle_emb_ndim", 0)
        prefix = cfg.get("puzzle_emb_len", 16) or -(ndim // -d)
        return TRMConfig(
            **common,
            n_layers=cfg["L_layers"],
            T_cycles=cfg["H_cycles"],
            n_inner=cfg["L_cycles"],
            prefix_len=prefix,
            q_continue=not cfg.get("no_ACT_continue", True),
        )
    if kind == "hrm":
        from reasoners.hrm import HRMConfig

        return HRMConfig(
            **common,
            H_layers=cfg["H_layers"],
            L_layers=cfg["L_layers"],
            H_cycles=cfg["H_cycles"],
            L_cycles=cfg["L_cycles"],
        )
    if kind == "eqr":
        from reasoners.eqr import EqRConfig

        common.pop("puzzle_dim")  # EqR has no puzzle embedding
        return EqRConfig(
            **common,
            n_layers=cfg["L_layers"],
            T_cycles=cfg["H_cycles"],
            n_inner=cfg["L_cycles"],
            damping=cfg.get("lambda_", 0.95),
            noise_std=cfg.get("noise_scale", 0.01),
            y_init_std=cfg.get("H_init_std", 1.0),
            z_init_std=cfg.get("L_init_std", 1.0),
        )
    raise ValueError(f"unknown reference kind {kind!r}: expected {_KINDS}")
