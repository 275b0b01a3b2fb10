"""Building blocks shared by HRM, TRM and the Attractor.

Everything here follows the reference HRM/TRM code numerically (docs/reference.md, "HRM and TRM"):

- post-norm blocks ``h = rmsnorm(h + mix(h)); h = rmsnorm(h + swiglu(h))`` with a *weightless* RMSNorm
  computed in float32 (eps 1e-5);
- non-causal multi-head attention with a fused qkv projection, rotate-half RoPE (base 1e4) and
  PyTorch SDPA; or, for the MLP variant, a SwiGLU that mixes along the sequence axis;
- no biases except on the q (halting) head;
- a JAX-style truncated normal initialiser whose *realised* std is the requested one; linear weights
  std 1/sqrt(fan_in), embeddings std 1/sqrt(d) and multiplied by sqrt(d) in the forward pass;
- a puzzle-embedding prefix of P positions read from a table that is a *buffer* trained by sign-SGD
  (see :class:`PuzzlePrefix`), and an optional learned position embedding;
- stablemax and softmax cross entropy, per cell, with ``-100`` as the ignored label.

Modules never create tensors on a fixed device: everything derives from the input or a buffer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_LABEL = -100

# ----------------------------------------------------------------------------- initialisation


def trunc_normal_(
    tensor: torch.Tensor,
    std: float = 1.0,
    lower: float = -2.0,
    upper: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill ``tensor`` in place from a normal truncated at ``[lower, upper]`` standard deviations.

    ``torch.nn.init.trunc_normal_`` truncates a normal of the requested std, so the realised std is
    ~12% smaller at +-2 sigma. Like JAX/Flax (and the reference code) we widen the underlying normal
    so that the *truncated* distribution has std ``std``. One uniform draw per element, in memory
    order, from ``generator`` (the global generator when None), as the reference draws.
    """
    if tensor.device.type == "meta":  # shapes only (parameter counts): nothing to fill
        return tensor
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2.0)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        mass = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_lo, pdf_hi = c * math.exp(-0.5 * lower**2), c * math.exp(-0.5 * upper**2)
        var_ratio = 1 - (upper * pdf_hi - lower * pdf_lo) / mass - ((pdf_hi - pdf_lo) / mass) ** 2
        corrected = std / math.sqrt(var_ratio)
        tensor.uniform_(a, b, generator=generator).erfinv_().mul_(sqrt2 * corrected).clamp_(
            lower * corrected, upper * corrected
        )
    return tensor


# ----------------------------------------------------------------------------- basic layers


def rms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Weightless RMSNorm over the last axis, computed in float32, returned in the input dtype."""
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    return x32.to(dtype)


class Linear(nn.Module):
    """Bias-free (by default) linear layer, truncated-normal LeCun init (std 1/sqrt(fan_in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(
            trunc_normal_(torch.empty(out_features, in_features), std=in_features**-0.5)
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cast to the activation dtype so a bf16 autocast region and fp32 params mix cleanly.
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class Embedding(nn.Module):
    """Token (or position) embedding table, truncated-normal init with std ``init_std``."""

    def __init__(self, num_embeddings: int, dim: int, init_std: float):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_(torch.empty(num_embeddings, dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


def find_multiple(a: int, b: int) -> int:
    """Smallest multiple of ``b`` that is >= ``a``."""
    return -(a // -b) * b


def swiglu_width(dim: int, expansion: float, multiple: int = 256) -> int:
    """Inner width of the reference SwiGLU: round(expansion * dim * 2/3) rounded up to ``multiple``
    (256 in the reference; at d=64 that makes the inner width 256 instead of 171)."""
    if multiple <= 0:
        raise ValueError(f"ffn_multiple must be positive, got {multiple}")
    return find_multiple(round(expansion * dim * 2 / 3), multiple)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` with gate and up fused into one projection."""

    def __init__(self, dim: int, expansion: float, multiple: int = 256):
        super().__init__()
        inner = swiglu_width(dim, expansion, multiple)
        self.gate_up = Linear(dim, 2 * inner)
        self.down = Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


# ----------------------------------------------------------------------------- attention with RoPE


class Rotary(nn.Module):
    """Rotate-half rotary position embedding tables (cos, sin), shape (L, head_dim)."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (L, head_dim/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (L, head_dim)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        # float32 whatever the module's dtype (``model.double()`` converts buffers too): the reference
        # rotates q and k in float32 under every forward dtype, float64 included.
        return self.cos.float(), self.sin.float()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, L, H, hd) by position; cos/sin are (L, hd) in float32."""
    dtype = x.dtype
    x = x.to(cos.dtype)
    out = x * cos.unsqueeze(-2) + _rotate_half(x) * sin.unsqueeze(-2)
    return out.to(dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention: fused qkv, RoPE, SDPA, output projection."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        if n_heads <= 0 or dim % n_heads != 0:
            raise ValueError(f"n_heads={n_heads} must be positive and divide d_model={dim}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.qkv = Linear(dim, 3 * dim)
        self.out = Linear(dim, dim)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3 * self.n_heads, self.head_dim)  # (B, L, 3H, hd)
        q, k, v = qkv.split(self.n_heads, dim=2)  # each (B, L, H, hd)
        if rotary is not None:
            cos, sin = rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, hd)
        h = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # (B, H, L, hd)
        return self.out(h.transpose(1, 2).reshape(B, L, D))


class TokenMixer(nn.Module):
    """MLP-mixer style token mixing (TRM-MLP): a SwiGLU along the sequence axis.

    The residual and its RMSNorm run over the *token* axis (the reference transposes to (B, D, L)).
    """

    def __init__(self, seq_len: int, expansion: float, eps: float = 1e-5, multiple: int = 256):
        super().__init__()
        self.mlp = SwiGLU(seq_len, expansion, multiple)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # (B, D, L)
        return rms_norm(xt + self.mlp(xt), self.eps).transpose(1, 2)  # (B, L, D)


class Block(nn.Module):
    """Post-norm block: ``h = norm(h + mix(h)); h = norm(h + swiglu(h))``.

    ``mixer`` is ``"attention"`` (self-attention with RoPE) or ``"mlp"`` (token-mixing SwiGLU over a
    fixed sequence length ``seq_len``, which then must include the prefix).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        expansion: float,
        mixer: str = "attention",
        seq_len: int = 0,
        eps: float = 1e-5,
        ffn_multiple: int = 256,
    ):
        super().__init__()
        self.eps = eps
        if mixer == "attention":
            self.attn = Attention(dim, n_heads)
            self.token_mlp = None
        elif mixer == "mlp":
            if seq_len <= 0:
                raise ValueError("the mlp token mixer needs the full sequence length (prefix + cells)")
            self.attn = None
            self.token_mlp = TokenMixer(seq_len, expansion, eps, ffn_multiple)
        else:
            raise ValueError(f"unknown mixer {mixer!r}: expected 'attention' or 'mlp'")
        self.mlp = SwiGLU(dim, expansion, ffn_multiple)

    def forward(
        self, h: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        if self.attn is not None:
            h = rms_norm(h + self.attn(h, rotary), self.eps)
        else:
            h = self.token_mlp(h)
        return rms_norm(h + self.mlp(h), self.eps)


class Stack(nn.Module):
    """A stack of blocks applied to ``state + injection`` (the reference 'reasoning module')."""

    def __init__(self, n_layers: int, **block_kwargs):
        super().__init__()
        if n_layers <= 0:
            raise ValueError(f"n_layers must be positive, got {n_layers}")
        self.layers = nn.ModuleList(Block(**block_kwargs) for _ in range(n_layers))

    def forward(
        self,
        state: torch.Tensor,
        injection: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        h = state + injection
        for layer in self.layers:
            h = layer(h, rotary)
        return h


# ----------------------------------------------------------------------------- embeddings


class PuzzlePrefix(nn.Module):
    """Per-puzzle embedding, P * d wide, read from a table that is a buffer (not a parameter).

    The reference trains this table with sign-SGD, separately from the weights, so it is not an
    ``nn.Parameter`` (it stays out of ``model.parameters()`` and of the reference parameter counts).
    In training mode the rows of the current batch are copied into a fresh leaf tensor
    ``batch_rows`` (B, P*d) that requires grad; after ``backward`` its ``.grad`` and ``batch_ids``
    are what the sign-SGD step needs. A forward with grad disabled leaves them untouched. The table
    is zero-initialised as in the reference.
    """

    def __init__(self, num_ids: int, width: int):
        super().__init__()
        self.register_buffer("table", torch.zeros(num_ids, width))
        self.batch_rows: torch.Tensor | None = None
        self.batch_ids: torch.Tensor | None = None

    def pop_grad(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(ids, grad of their rows)`` of the last training forward, for the sign-SGD step, or None
        when no gradient reached the rows; forgets both, so a step never sees an older batch's rows."""
        rows, ids = self.batch_rows, self.batch_ids
        self.batch_rows, self.batch_ids = None, None
        if rows is None or rows.grad is None:
            return None
        return ids, rows.grad

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.table[ids]  # (B, P*d)
        if self.training and torch.is_grad_enabled():
            rows = rows.detach().requires_grad_(True)
            self.batch_rows, self.batch_ids = rows, ids
        return rows


class InputEmbedding(nn.Module):
    """x = sqrt(d) * [puzzle prefix (P positions); token embeddings], optionally + learned positions.

    The puzzle table row is ``puzzle_dim`` wide (default d) and zero-padded to P * d.

    Output (B, P + L, D). ``positions`` is ``"rope"`` (nothing added here), ``"learned"`` (a learned
    table added and scaled by 1/sqrt(2) to keep the variance) or ``"none"``.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        seq_len: int,
        prefix_len: int,
        num_puzzle_ids: int,
        puzzle_dim: int | None = None,
        positions: str = "rope",
    ):
        super().__init__()
        if positions not in ("rope", "learned", "none"):
            raise ValueError(f"unknown positions {positions!r}: expected 'rope', 'learned' or 'none'")
        puzzle_dim = dim if puzzle_dim is None else puzzle_dim
        if prefix_len > 0 and not 0 < puzzle_dim <= prefix_len * dim:
            raise ValueError(f"puzzle_dim={puzzle_dim} must be in 1..prefix_len*d_model={prefix_len * dim}")
        self.dim, self.prefix_len, self.positions = dim, prefix_len, positions
        self.scale = math.sqrt(dim)
        self.tokens = Embedding(vocab_size, dim, init_std=1.0 / self.scale)
        # The table row may be narrower than the prefix (TRM: d wide, 16 positions): zero-padded.
        self.puzzle = PuzzlePrefix(num_puzzle_ids, puzzle_dim) if prefix_len > 0 else None
        self.pos = (
            Embedding(prefix_len + seq_len, dim, init_std=1.0 / self.scale)
            if positions == "learned"
            else None
        )

    def forward(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(inputs.to(torch.long))  # (B, L, D)
        if self.puzzle is not None:
            prefix = self.puzzle(puzzle_ids.to(torch.long)).to(x.dtype)  # (B, puzzle_dim)
            prefix = F.pad(prefix, (0, self.prefix_len * self.dim - prefix.shape[-1]))  # (B, P*D)
            x = torch.cat((prefix.view(-1, self.prefix_len, self.dim), x), dim=-2)  # (B, P+L, D)
        if self.pos is not None:
            x = 0.707106781 * (x + self.pos.weight.to(x.dtype))
        return self.scale * x


# ----------------------------------------------------------------------------- losses


def _stablemax_s(x: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    # s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0 (eps as in the reference)
    return torch.where(x < 0, 1 / (1 - x + eps), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = _stablemax_s(x)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def _wide_float(device: torch.device) -> torch.dtype:
    # float64 where the device has it (MPS does not)
    return torch.float32 if device.type == "mps" else torch.float64


def stablemax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL
) -> torch.Tensor:
    """Per-cell stablemax cross entropy in float64, 0 at ignored cells. (B, L, V), (B, L) -> (B, L)."""
    logprobs = log_stablemax(logits.to(_wide_float(logits.device)), dim=-1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, 0).to(torch.long)
    picked = logprobs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL
) -> torch.Tensor:
    """Per-cell softmax cross entropy in float32, 0 at ignored cells. (B, L, V), (B, L) -> (B, L)."""
    flat = logits.to(torch.float32).reshape(-1, logits.shape[-1])
    ce = F.cross_entropy(flat, labels.to(torch.long).reshape(-1), ignore_index=ignore_index, reduction="none")
    return ce.view(labels.shape)


LOSSES = {"stablemax": stablemax_cross_entropy, "softmax": softmax_cross_entropy}


# ----------------------------------------------------------------------------- shared by the reasoners


@dataclass
class NetworkConfig:
    """The fields of the network that HRM's and TRM's configs share (data shape, block, embedding);
    each model config adds its depth and recursion."""

    # data
    vocab_size: int = 11  # Sudoku: PAD, blank, 1..9
    seq_len: int = 81
    num_puzzle_ids: int = 1
    # network
    d_model: int = 512
    n_heads: int = 8
    expansion: float = 4.0
    ffn_multiple: int = 256  # SwiGLU inner width rounded up to a multiple of this (reference: 256)
    mixer: str = "attention"  # "attention" or "mlp" (token-mixing SwiGLU, as TRM-MLP)
    positions: str = "rope"  # "rope", "learned" or "none"
    puzzle_dim: int | None = None  # width of a puzzle-table row; None -> d_model
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self):
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:  # the other bases' checks (HaltingConfig)
            super_post_init()
        if self.mixer not in ("attention", "mlp"):
            raise ValueError(f"unknown mixer {self.mixer!r}: expected 'attention' or 'mlp'")
        if self.positions not in ("rope", "learned", "none"):
            raise ValueError(f"unknown positions {self.positions!r}: expected 'rope', 'learned' or 'none'")
        if self.mixer == "attention" and (self.n_heads <= 0 or self.d_model % self.n_heads):
            raise ValueError(f"n_heads={self.n_heads} must be positive and divide d_model={self.d_model}")
        at_least_one(self, "d_model", "seq_len", "vocab_size")


def at_least_one(cfg, *names: str) -> None:
    """A clear ``ValueError`` for the first of ``names`` below 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def embedding_and_rotary(cfg) -> tuple[InputEmbedding, Rotary | None]:
    """The input embedding (puzzle prefix + tokens) and, for attention with RoPE, the rotary table."""
    embed = InputEmbedding(
        cfg.vocab_size,
        cfg.d_model,
        cfg.seq_len,
        cfg.prefix_len,
        cfg.num_puzzle_ids,
        cfg.puzzle_dim,
        cfg.positions,
    )
    total_len = cfg.prefix_len + cfg.seq_len
    use_rope = cfg.positions == "rope" and cfg.mixer == "attention"
    return embed, (Rotary(cfg.d_model // cfg.n_heads, total_len, cfg.rope_base) if use_rope else None)


def stack_for(cfg, n_layers: int) -> Stack:
    """``n_layers`` post-norm blocks over prefix + cells, as the config describes them."""
    return Stack(
        n_layers,
        dim=cfg.d_model,
        n_heads=cfg.n_heads,
        expansion=cfg.expansion,
        mixer=cfg.mixer,
        seq_len=cfg.prefix_len + cfg.seq_len,
        eps=cfg.norm_eps,
        ffn_multiple=cfg.ffn_multiple,
    )


def halting_head(dim: int) -> Linear:
    """The q-head, (B, D) -> (B, 2) = [halt, continue]: weight 0 and bias -5, so training starts from
    "never halt" (sigmoid(-5) ~ 0.007), as the reference does."""
    head = Linear(dim, 2, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-5.0)
    return head


class RecursiveReasoner(nn.Module):
    """What HRM and TRM share around their recursion: a carried state of ``State`` fields (each
    (B, P + L, D)) that starts from fixed random buffers ``<field>_init`` (std 1, not trained: the
    reference's H_init / L_init), and the decoding of the answer state into logits and q-logits.
    A subclass sets ``State`` and names its stacks of blocks: ``{"net": n_layers}`` (TRM) or
    ``{"high_net": H_layers, "low_net": L_layers}`` (HRM, f_H and f_L).

    ``random_init``: False here (every puzzle starts from the same buffers); a subclass that draws a
    fresh random state for every new puzzle (EqR) sets it True, has no ``<field>_init`` buffers and
    overrides ``initial_state`` and ``reset_state``."""

    State: type  # a NamedTuple of state tensors
    random_init = False

    def __init__(self, config, stacks: dict[str, int]):
        super().__init__()
        self.config = c = config
        # built in this order, which is the order of the random draws of the initialisation
        self.embed, self.rotary = embedding_and_rotary(c)
        for name, n_layers in stacks.items():
            self.add_module(name, stack_for(c, n_layers))
        self.output_head = Linear(c.d_model, c.vocab_size)
        self.q_head = halting_head(c.d_model)  # [halt, continue]
        if not self.random_init:
            for name in self.State._fields:  # one fixed buffer per state field
                self.register_buffer(f"{name}_init", trunc_normal_(torch.empty(c.d_model), std=1.0))

    def _inits(self) -> list[torch.Tensor]:
        return [getattr(self, f"{name}_init") for name in self.State._fields]

    def initial_state(self, batch_size: int, device: torch.device | str | None = None):
        shape = (batch_size, self.config.prefix_len + self.config.seq_len, self.config.d_model)
        inits = self._inits()
        device = inits[0].device if device is None else device
        return self.State(*(t.to(device).expand(shape).clone() for t in inits))

    def reset_state(self, state, reset: torch.Tensor):
        """Rows where ``reset`` (B,) is true go back to the initial state."""
        r = reset.view(-1, 1, 1)
        return self.State(*(torch.where(r, t, s) for t, s in zip(self._inits(), state, strict=True)))

    def decode(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, L, V) from the cells of the answer state ``h``; halting logits (B, 2) =
        [halt, continue] in fp32 from its position 0."""
        logits = self.output_head(h)[:, self.config.prefix_len :]
        q_logits = self.q_head(h[:, 0]).to(torch.float32)
        return logits, q_logits
