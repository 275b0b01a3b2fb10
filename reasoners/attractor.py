"""The Attractor: TRM's deep supervision with the (y, z) recursion solved to its fixed point
("Solve the Loop", 2026), with phantom gradients.

Symbols as in TRM (:mod:`reasoners.trm`): ``x`` the embedded question, ``y`` the answer state,
``z`` the latent state, ``n`` latent updates per map call (``n_inner``). The map on the joint state
``S = (y, z)`` is

    F(S; x) = (net(y + z'), z'),    z' = net(...net(z + y + x)...)   (n latent updates)

A fixed point S* = F(S*) satisfies both TRM equations ``z* = net(z* + y* + x)`` (for n = 1; for
n > 1 it is a fixed point of the n-fold latent update) and ``y* = net(y* + z*)``. One supervision step:

1. S0 = the carried state (rows that halted were reset to the fixed initial state by the
   supervision loop): the previous step *warm-starts* the solve;
2. with no grad and the network in eval mode, ``S*, info = solvers.anderson(F, S0)``;
3. gradients are attached by ``grad``: ``"phantom"`` UPG(k, tau) = k damped steps
   ``S <- (1 - tau) S + tau F(S)`` from S* detached (the default), ``"neumann"`` NPG(k, tau),
   ``"one_step"`` = UPG(1, 1) (the Jacobian-free gradient), or ``"implicit"`` (the IFT solve);
4. decode y; carry S (detached) to the next step; return ``info`` in the extras, so training can log
   per-sample residuals and solver steps honestly.

Options (off by default): ``damping`` lambda < 1 replaces F by the damped map S + lambda (F(S) - S)
in the solve, the gradient, the Jacobian penalty and the probe (the same fixed points);
``halt_on_converged`` halts a slot whose solve converged, from supervision step 2 on, as well as on
the q-head (:func:`reasoners.supervision.halts`); ``jac_weight`` > 0 adds a Jacobian penalty at S*.

``solver="unroll"`` replaces step 2 by T - 1 plain no-grad calls of F (``T_cycles``): with
``n_inner = n`` and ``grad="one_step"`` this *is* TRM, step for step (a test checks it).

The initial (y, z) are fixed random buffers, as in TRM: a learned initial state would receive no
gradient through a no-grad solve.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from reasoners.supervision import StepOutput
from reasoners.trm import TRM, TRMConfig, TRMState
from solvers import (
    SolverInfo,
    anderson,
    contraction_hinge,
    fixed_point_iter,
    implicit_grad,
    jacobian_reg,
    neumann_grad,
    phantom_grad,
    spectral_radius,
)

SOLVERS = ("anderson", "fixed_point", "unroll")
STALL_ROWS = ("all", "warm")
GRADS = ("phantom", "neumann", "one_step", "implicit")
JAC_REGS = ("hinge", "frobenius")
JAC_SELECTS = ("first", "worst")


@dataclass
class AttractorConfig(TRMConfig):
    """TRM's fields (network, data, halting; ``T_cycles`` is used only by ``solver="unroll"``)
    plus the fixed-point solve and its gradient."""

    n_inner: int = 1  # latent updates per map call (changes conditioning, not the fixed point)
    solver: str = "anderson"  # "anderson", "fixed_point" (damped iteration) or "unroll" (T-1 plain calls)
    max_iter: int = 16  # map evaluations per solve
    # The budget of a row warm-started from a carried state (None: max_iter for every row). A row that
    # starts from the initial state (a new puzzle) keeps max_iter: the cold start is where the solve
    # needs its evaluations, the warm start usually sits near the next fixed point already.
    max_iter_warm: int | None = None
    tol: float = 1e-3  # relative residual ||F(S) - S|| / ||F(S)|| per sample
    min_iter: int = 2
    anderson_m: int = 5
    anderson_lam: float = 1e-4
    anderson_beta: float = 1.0
    # Clear a sample's Anderson history when its residual grows past this factor of the previous one
    # (solvers.anderson's `restart`); None: plain Anderson. On the laptop map's cold start (supervision
    # step 1 from the initial state) plain Anderson(5) holds some samples on a plateau that plain
    # iteration leaves (README, "Why the training solves stalled").
    anderson_restart: float | None = None
    # Freeze a row whose best residual has not improved for this many evaluations (solvers' `stall`);
    # None: off. One stuck row otherwise runs the solve to max_iter alone (issue 14's cost target).
    solver_stall: int | None = None
    # Which rows the stall exit applies to: "all", or "warm" (rows carried from a previous step only; a
    # new puzzle's cold solve keeps its whole budget). Trained on every row the exit froze the cold
    # solves of early training on their plateau and the run stopped learning (README, "A stall exit").
    solver_stall_rows: str = "all"
    # The stall exit only for a row whose best relative residual is already at or below this (None: at
    # any residual). The rows it is for sit in the ghost of a fixed point a few times tol from it, where
    # Anderson stagnates and plain iteration leaves only after ~50 evaluations (README, "The stuck row
    # is the ghost of a fixed point"); a row far from any fixed point (the early-training solves) keeps
    # its budget.
    solver_stall_below: float | None = None
    grad: str = "phantom"  # "phantom", "neumann", "one_step" or "implicit"
    phantom_k: int = 5
    phantom_tau: float = 0.5
    implicit_max_iter: int = 16
    implicit_tol: float = 1e-4
    warm_start: bool = True  # False: every step solves from the fixed initial state
    # Evaluate F only on the rows still solving (converged rows are frozen anyway): the same answers,
    # fewer network calls. False evaluates the whole batch until its last row is done.
    solver_rows: bool = True
    # Contraction as a trained property (issue 14): a penalty on the map's Jacobian at S*, added to the
    # loss every `jac_every` training steps with weight `jac_weight` (0 = off, the default until a
    # laptop-tier measurement chooses one). "hinge": mean max(0, rho - jac_target)^2 with rho a
    # `jac_iters`-step power-method estimate (leaves a contractive map alone); "frobenius": the
    # Hutchinson estimate of ||J||_F^2 / dim (Bai et al. 2021).
    jac_reg: str = "hinge"
    jac_weight: float = 0.0
    jac_every: int = 1
    jac_target: float = 0.9
    jac_iters: int = 4
    # The penalty on the first `jac_rows` rows of the batch only (0: every row). The batch's rows are a
    # random sample, so the subset's mean is an unbiased estimate of the batch's at a fraction of the
    # cost (the penalty's double backward is the dearest part of a penalised update).
    jac_rows: int = 0
    # Which `jac_rows` rows: "first" (a random sample, the unbiased estimate above) or "worst" (the rows
    # whose solve exited with the largest relative residual: the penalty where the solve struggles, which
    # on the laptop map is where the Jacobian is near or above 1; a biased, targeted penalty).
    jac_select: str = "first"
    # The damped map S + damping (F(S) - S) (as EqR damps its update): the same fixed points, the
    # Jacobian (1 - damping) I + damping J, so an eigenvalue mu of J becomes 1 - damping + damping mu
    # (damping < 1 pulls negative and large complex eigenvalues towards the unit disc; a real mu > 1
    # stays above 1). Used everywhere the map is: the solve, the phantom / implicit gradient, the
    # Jacobian penalty and the contraction probe. 1.0 (the default) is the plain map, bit for bit.
    damping: float = 1.0
    # Halt a slot when its solve exits below `tol` (from supervision step 2 on), in addition to the
    # q-head: in training and in every evaluation path that scores the halting step
    # (`supervision.halts`). False (the default): the q-head alone, as TRM.
    halt_on_converged: bool = False
    solver_trace: bool | str = (
        False  # True: per-iterate residuals; "iterates": also every (y, z) (visualisation)
    )

    def __post_init__(self):
        super().__post_init__()
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}: expected one of {', '.join(SOLVERS)}")
        if self.grad not in GRADS:
            raise ValueError(f"unknown grad {self.grad!r}: expected one of {', '.join(GRADS)}")
        if self.max_iter < 1 or self.phantom_k < 1:
            raise ValueError("max_iter and phantom_k must be >= 1")
        if self.max_iter_warm is not None and self.max_iter_warm < 1:
            raise ValueError(f"max_iter_warm must be >= 1 or null, got {self.max_iter_warm}")
        if self.solver_stall is not None and self.solver_stall < 1:
            raise ValueError(f"solver_stall must be >= 1 or null, got {self.solver_stall}")
        if self.solver_stall_below is not None and not self.solver_stall_below > 0:
            raise ValueError(f"solver_stall_below must be > 0 or null, got {self.solver_stall_below}")
        if self.solver_stall_rows not in STALL_ROWS:
            raise ValueError(
                f"unknown solver_stall_rows {self.solver_stall_rows!r}: expected one of "
                f"{', '.join(STALL_ROWS)}"
            )
        if self.anderson_restart is not None and not self.anderson_restart > 0:
            raise ValueError(f"anderson_restart must be > 0 or null, got {self.anderson_restart}")
        if not 0 < self.phantom_tau <= 1:
            raise ValueError(f"phantom_tau must be in (0, 1], got {self.phantom_tau}")
        if self.jac_reg not in JAC_REGS:
            raise ValueError(f"unknown jac_reg {self.jac_reg!r}: expected one of {', '.join(JAC_REGS)}")
        if self.jac_weight < 0 or self.jac_every < 1 or self.jac_iters < 1 or self.jac_rows < 0:
            raise ValueError("jac_weight and jac_rows must be >= 0, jac_every and jac_iters >= 1")
        if not 0 < self.damping <= 1:
            raise ValueError(f"damping must be in (0, 1], got {self.damping}")
        if self.jac_select not in JAC_SELECTS:
            raise ValueError(
                f"unknown jac_select {self.jac_select!r}: expected one of {', '.join(JAC_SELECTS)}"
            )


AttractorState = TRMState


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    was_training = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was_training)


def _joint_residual(s: tuple, fs: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) ||F(S) - S|| / ||F(S)|| and ||F(S) - S|| over the joint (y, z), in float32 or wider."""
    diff = torch.cat([(f.float() - a.float()).flatten(1) for a, f in zip(s, fs, strict=True)], 1)
    full = torch.cat([f.float().flatten(1) for f in fs], 1)
    abs_res = diff.norm(dim=1)
    return abs_res / (full.norm(dim=1) + torch.finfo(full.dtype).tiny), abs_res


class Attractor(TRM):
    """TRM's network solved to the (y, z) fixed point; ``forward(state, batch)`` is one supervision step."""

    config: AttractorConfig

    def __init__(self, config: AttractorConfig):
        if not isinstance(config, AttractorConfig):
            raise TypeError("Attractor needs an AttractorConfig")
        super().__init__(config)

    def fixed_point_map(self, x: torch.Tensor, rotary=None):
        """F(S; x) on S = (y, z) as a function of the state alone (closes over x). ``F(S, rows)`` maps
        the states of the batch rows ``rows`` only (the solver's compaction of converged rows). With
        ``damping`` lambda < 1 it is the damped map S + lambda (F(S) - S)."""
        lam = self.config.damping

        def F(state: tuple, rows: torch.Tensor | None = None) -> tuple:
            x_rows = x if rows is None else x[rows]
            y, z = self.latent_recursion(x_rows, state[0], state[1], rotary)
            if lam != 1.0:  # the plain map is left untouched (no 0 * S terms), bit for bit
                y = state[0] + lam * (y - state[0])
                z = state[1] + lam * (z - state[1])
            return (y, z)

        return F

    def solve(self, F, s0: tuple, cold: torch.Tensor | None = None) -> tuple[tuple, SolverInfo]:
        """S* from S0 with no grad and the network in eval mode; ``cold``: :meth:`cold_rows` of S0 when the
        caller has it already (computed here when ``max_iter_warm`` needs it)."""
        c = self.config
        with torch.no_grad(), _eval_mode(self):
            common = dict(
                max_iter=self._budgets(s0, cold),
                tol=c.tol,
                min_iter=c.min_iter,
                trace=c.solver_trace,
                rows=c.solver_rows,
                stall=self._stall(s0, cold),
            )
            if c.solver_stall_below is not None:  # only passed when set: the solvers' default path else
                common["stall_below"] = c.solver_stall_below
            if c.solver == "anderson":
                s, info = anderson(
                    F,
                    s0,
                    m=c.anderson_m,
                    lam=c.anderson_lam,
                    beta=c.anderson_beta,
                    restart=c.anderson_restart,
                    **common,
                )
            elif c.solver == "fixed_point":
                s, info = fixed_point_iter(F, s0, **common)
            else:  # "unroll": exactly TRM's T - 1 no-grad cycles; residual filled in by forward()
                s = s0
                for _ in range(c.T_cycles - 1):
                    s = F(s)
                B = s0[0].shape[0]
                nan = torch.full((B,), float("nan"), device=s0[0].device)
                info = SolverInfo(
                    rel_residual=nan,
                    abs_residual=nan.clone(),
                    converged=torch.zeros(B, dtype=torch.bool, device=nan.device),
                    best_step=torch.full((B,), c.T_cycles - 1, device=nan.device),
                    nstep=c.T_cycles - 1,
                    row_evals=B * (c.T_cycles - 1),
                )
        return tuple(s), info

    def cold_rows(self, s0: tuple) -> torch.Tensor:
        """(B,) bool: the rows of ``s0`` that are the initial state (new puzzles), bit for bit."""
        cold = torch.ones(s0[0].shape[0], dtype=torch.bool, device=s0[0].device)
        for t, init in zip(s0, self._inits(), strict=True):
            cold &= (t == init.to(t.device, t.dtype)).flatten(1).all(dim=1)
        return cold

    def _budgets(self, s0: tuple, cold: torch.Tensor | None = None):
        """The solve's max_iter: an int, or (B,) per-row budgets when ``max_iter_warm`` differs."""
        c = self.config
        if c.solver == "unroll" or c.max_iter_warm is None or c.max_iter_warm == c.max_iter:
            return c.max_iter
        cold = self.cold_rows(s0) if cold is None else cold
        return torch.where(cold, c.max_iter, c.max_iter_warm)

    def _stall(self, s0: tuple, cold: torch.Tensor | None = None):
        """The solve's stall: None, an int, or (B,) per-row values when only warm rows may stall (a cold
        row gets max_iter + 1, which never fires)."""
        c = self.config
        if c.solver_stall is None or c.solver_stall_rows == "all":
            return c.solver_stall
        cold = self.cold_rows(s0) if cold is None else cold
        return torch.where(cold, c.max_iter + 1, c.solver_stall)

    def attach_gradient(self, F, s_star: tuple) -> tuple:
        c = self.config
        if c.grad == "phantom":
            return tuple(phantom_grad(F, s_star, k=c.phantom_k, tau=c.phantom_tau))
        if c.grad == "one_step":
            return tuple(phantom_grad(F, s_star, k=1, tau=1.0))
        if c.grad == "neumann":
            return tuple(neumann_grad(F, s_star, k=c.phantom_k, tau=c.phantom_tau))
        return tuple(implicit_grad(F, s_star, max_iter=c.implicit_max_iter, tol=c.implicit_tol))

    def forward(self, state: TRMState, batch: dict[str, torch.Tensor]):
        """One supervision step: ``(state, batch) -> StepOutput(detached state, logits, q_logits, extras)``.

        ``extras["solver"]`` is the solve's :class:`solvers.SolverInfo` (per-sample relative and
        absolute residuals at S*, steps); ``extras["fixed_point"]`` is S* itself (detached).
        """
        c = self.config
        rotary = self.rotary() if self.rotary is not None else None
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])  # (B, P+L, D)
        if not c.warm_start:
            state = self.initial_state(x.shape[0], x.device)
        F = self.fixed_point_map(x, rotary)
        cold = self.cold_rows(tuple(state))  # (B,) rows solved from the initial state (new puzzles)
        s_star, info = self.solve(F, tuple(state), cold)
        if c.solver == "unroll":
            # The residual of S* costs one more F call; the one-step/phantom gradient makes exactly
            # that call, so measure it there instead of paying twice.
            first = []

            def F_recorded(s):
                out = F(s)
                if not first:
                    first.append(tuple(t.detach() for t in out))
                return out

            y, z = self._attach_and_measure(F_recorded, s_star, first, info)
        else:
            y, z = self.attach_gradient(F, s_star)
        logits, q_logits = self.decode(y)
        extras = {"solver": info, "fixed_point": TRMState(*(t.detach() for t in s_star))}
        extras["solve_cold"] = cold
        reg = self._jacobian_penalty(F, s_star, info)
        if reg is not None:
            # the loss is a sum over the batch (the trainer divides by the global batch): scale the
            # per-sample mean alike
            extras["aux_loss"] = c.jac_weight * reg * x.shape[0]
            extras["jac_penalty"] = reg.detach()
        return StepOutput(TRMState(y.detach(), z.detach()), logits, q_logits, extras)

    def _jacobian_penalty(self, F, s_star: tuple, info: SolverInfo | None = None):
        """The configured Jacobian penalty at S* (a scalar with graph), on the training steps it is
        due, else None; ``info``: the solve's (its residuals choose the rows of ``jac_select="worst"``)."""
        c = self.config
        if not (self.training and torch.is_grad_enabled() and c.jac_weight > 0):
            return None
        self._jac_calls = getattr(self, "_jac_calls", 0) + 1
        if (self._jac_calls - 1) % c.jac_every:
            return None
        from torch.nn.attention import SDPBackend, sdpa_kernel

        s = tuple(t.detach() for t in s_star)
        if 0 < c.jac_rows < s[0].shape[0]:
            if c.jac_select == "worst" and info is not None:
                # largest residual first; a stable sort keeps batch order among equal residuals (NaNs last)
                res = torch.nan_to_num(info.rel_residual.float(), nan=-1.0)
                rows = torch.sort(-res, stable=True).indices[: c.jac_rows].sort().values
            else:
                rows = torch.arange(c.jac_rows, device=s[0].device)
            s = tuple(t[rows] for t in s)
            F = functools.partial(F, rows=rows)
        # The penalty differentiates a vector-Jacobian product (double backward), which the fused
        # attention kernels do not support: the plain-math attention computes the same values.
        with sdpa_kernel(SDPBackend.MATH):
            if c.jac_reg == "hinge":
                return contraction_hinge(F, s, target=c.jac_target, iters=c.jac_iters)
            return jacobian_reg(F, s)

    def _attach_and_measure(self, F_recorded, s_star, first, info):
        out = self.attach_gradient(F_recorded, s_star)
        if first:
            rel, abs_ = _joint_residual(s_star, first[0])
            info.rel_residual, info.abs_residual = rel, abs_
            info.converged = rel <= self.config.tol
        return out


@torch.no_grad()
def contraction_probe(model: Attractor, batch: dict, steps: int = 3, iters: int = 20) -> dict[str, float]:
    """Is the map contractive where the reasoner works? On ``batch`` (the model in eval mode, as the
    solve runs it): the power-method spectral radius of F's Jacobian at the fixed point of supervision
    step ``steps``, and the relative residual of the warm start entering that step (how close the
    carried state already is to the new fixed point). Returns medians, the 95th percentile and the
    share of samples with rho < 1."""
    from reasoners.supervision import rollout

    was_training = model.training
    model.eval()
    try:
        outs = list(rollout(model, batch, steps))
        x = model.embed(batch["inputs"], batch["puzzle_identifiers"])
        F = model.fixed_point_map(x, model.rotary() if model.rotary is not None else None)
        s_star = tuple(outs[-1].extras["fixed_point"])
        with torch.enable_grad():
            rho = spectral_radius(F, s_star, iters=iters).float()
        warm = tuple(outs[-2].state) if steps > 1 else tuple(model.initial_state(x.shape[0], x.device))
        warm_rel, _ = _joint_residual(warm, F(warm))
    finally:
        model.train(was_training)
    return {
        "rho_median": float(rho.median()),
        "rho_q95": float(rho.quantile(0.95)),
        "rho_below_1": float((rho < 1).float().mean()),
        "warm_start_residual": float(warm_rel.median()),
    }
