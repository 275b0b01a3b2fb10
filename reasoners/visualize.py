"""Look inside the loop: a reasoner's trajectory on one puzzle, as a figure, a GIF or text.

    python -m reasoners.visualize checkpoint=RUN_DIR 'puzzle="1..4.4.22..3.3.."' [out=FILE] [gif=true]
    python -m reasoners.visualize checkpoint=RUN_DIR/checkpoints/last.pt data=DIR index=0 split=test text=true
    python -m reasoners.visualize checkpoint=RUN_DIR data=DIR index=3 breadth.trajectories=8

(quote the puzzle twice, as shown: the shell keeps a maze's spaces, Hydra keeps the string a string).

:func:`reasoners.trajectory.record_trajectory` records what the reasoner does at every supervision
step (see that module); this module draws it: :func:`plot_trajectory` one PNG, :func:`write_gif` an
animation of the grid (one frame per supervision step), :func:`text_frames` one text picture per
step. Figures are bare matplotlib ``Figure`` objects rendered by Agg (no pyplot, no GUI backend);
files are written atomically.

Test-time breadth (``breadth.trajectories=K``, with ``breadth.init_noise``, ``breadth.step_noise``,
``breadth.seed``, ``breadth.steps``): :func:`reasoners.trajectory.record_breadth` runs the puzzle's K
trajectories as K rows of one batch, row k seeded by ``(seed, puzzle index, k)`` as evaluate's
breadth seeds that test puzzle's rows (the index is ``index`` with ``data=``, 0 for a puzzle string),
so trajectory k is the row evaluate ran; trajectory 0 is plain, the one ``trajectory.png`` draws.
:func:`plot_breadth` writes ``<out stem>_breadth.png`` beside the trajectory figure: per trajectory
against supervision step the cell accuracy (rule validity without a label), the convergence score
(the mean absolute change of the logits averaged over the last 3 steps, as ``breadth_rollout``
computes it) and the halting logit (``q_halt``, or ``q_halt - q_continue`` for HRM-style heads; the
rule fires above 0); solid lines end right (exact; valid without a label), dotted ones wrong; the
trajectory each selector picks at the last step (:func:`reasoners.test_time.select`, the code
evaluate uses) is marked, and a table gives every trajectory's last step, its convergence rank
(1 = moved least) and whether it is *stable* (its answer unchanged over the last 3 steps).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from data_gen.format import atomic_path, atomic_write_bytes
from reasoners.cli import run_hydra, user_errors
from reasoners.layers import LOSSES
from reasoners.tasks import Task
from reasoners.test_time import CONVERGENCE_WINDOW, Breadth
from reasoners.trajectory import (
    BreadthTrajectories,
    LatentPath,
    Trajectory,
    pca_2d,
    record_breadth,
    record_trajectory,
)

__all__ = [
    "BreadthTrajectories",
    "LatentPath",
    "Trajectory",
    "pca_2d",
    "plot_breadth",
    "plot_trajectory",
    "record_breadth",
    "record_trajectory",
    "write_gif",
]

# Figure geometry (inches at ``dpi``): the strip wraps after GRID_COLS grids and shows at most
# MAX_GRIDS steps (evenly spaced, first and last kept); see :func:`figure_size`.
FIG_WIDTH = 16.0
GRID_COLS = 8
MAX_GRIDS = 24
GRID_ROW_HEIGHT = 2.4
HEADER_HEIGHT = 0.7
CURVES_HEIGHT = 3.6
GIF_SIZE = (5.0, 5.6)


# ----------------------------------------------------------------------------------- text


def _step_summary(traj: Trajectory, s: int) -> str:
    """One line about step ``s`` (0-based): accuracy, exact vs valid, halting, changes, solver."""
    parts = [f"step {s + 1}/{traj.n_steps}"]
    if traj.cell_accuracy is not None:
        parts.append(f"cells {traj.cell_accuracy[s]:.0%}  exact {'yes' if traj.exact[s] else 'no'}")
    parts.append(f"valid {'yes' if traj.valid[s] else 'no'}")
    fires = "fires" if traj.halt_fires[s] else "no"
    parts.append(f"halt p={traj.halt_prob[s]:.3f} ({traj.halting_rule}: {fires})")
    if s:
        parts.append(f"changed {int(traj.changed[s].sum())}")
    if traj.solver_residual is not None:
        n = f"{len(traj.solver_trace[s])} iterations, " if traj.solver_trace is not None else ""
        conv = "converged" if traj.solver_converged[s] else "not converged"
        parts.append(f"solver {n}residual {traj.solver_residual[s]:.1e} ({conv})")
    return "  ".join(parts)


def text_frames(traj: Trajectory) -> list[str]:
    """One text frame per supervision step: a summary line, then the decoded grid."""
    return [f"{_step_summary(traj, s)}\n{traj.task.render(traj.preds[s])}" for s in range(traj.n_steps)]


def summary(traj: Trajectory) -> str:
    """A few lines about the whole trajectory (what the entry point prints last)."""
    last = traj.n_steps - 1
    lines = [f"{traj.model_name} on a {traj.task.side}x{traj.task.side} {traj.task.kind}: {traj.source}"]
    if traj.exact is not None:
        first = np.flatnonzero(traj.exact)
        settled = f", first exact at step {first[0] + 1}" if first.size else ""
        lines.append(
            f"final: cells {traj.cell_accuracy[last]:.1%}, exact {bool(traj.exact[last])}, "
            f"valid {bool(traj.valid[last])}{settled}"
        )
    else:
        lines.append(f"final: valid {bool(traj.valid[last])} (no label)")
    fired = bool(traj.halt_fires[: traj.halt_max_steps].any())
    lines.append(
        f"training would halt at step {traj.halt_step} "
        f"({traj.halting_rule}{'' if fired else ' never fires: halt_max_steps'})"
    )
    if traj.solver_residual is not None:
        lines.append(
            f"solver: {int(traj.solver_converged.sum())}/{traj.n_steps} steps converged "
            f"(tol {traj.solver_tol:g}); final residual {traj.solver_residual[last]:.2e}"
        )
    return "\n".join(lines)


def breadth_summary(bt: BreadthTrajectories) -> str:
    """A few lines about the K trajectories (what the entry point prints in breadth mode)."""
    right = "exact" if bt.exact is not None else "valid"
    picks = ", ".join(f"{sel} -> {k}" for sel, k in bt.picks().items())
    return (
        f"breadth: {bt.K} trajectories for {bt.n_steps} steps (init_noise {bt.breadth.init_noise:g}, "
        f"step_noise {bt.breadth.step_noise:g}, seed {bt.breadth.seed}, puzzle {bt.puzzle_index}): "
        f"{int(bt.right.sum())} {right} at the last step, trajectories {np.flatnonzero(bt.right).tolist()}; "
        f"picks: {picks}"
    )


# ----------------------------------------------------------------------------------- drawing

_GIVEN = (0.84, 0.84, 0.84)
_CORRECT = (0.74, 0.91, 0.74)
_WRONG = (0.98, 0.66, 0.66)
_ALT = (0.72, 0.83, 0.98)  # differs from the label, but the whole answer is valid by the rules
_BLANK = (1.0, 1.0, 1.0)
_MAZE = {
    "wall": (0.15, 0.15, 0.18),
    "open": (1.0, 1.0, 1.0),
    "start": (0.15, 0.35, 0.95),
    "goal": (0.65, 0.15, 0.75),
    "path": (0.15, 0.65, 0.25),
    "path_wrong": (0.9, 0.15, 0.15),
    "path_alt": (0.2, 0.55, 0.95),
    "path_unknown": (0.95, 0.6, 0.1),
    "missed": (0.98, 0.75, 0.75),
}
_CHANGED = (1.0, 0.5, 0.0)


def _cell_colors(task: Task, inputs, labels, pred, valid: bool) -> np.ndarray:
    """(side, side, 3) RGB of one decoded grid: givens, correct, wrong, valid-but-different."""
    n = task.side
    inputs, pred = np.asarray(inputs).reshape(-1), np.asarray(pred).reshape(-1)
    lab = None if labels is None else np.asarray(labels).reshape(-1)
    rgb = np.empty((inputs.size, 3))
    if task.kind == "sudoku":
        digit = task.is_digit(pred)
        given = task.is_digit(inputs)
        rgb[:] = _BLANK
        if lab is not None:
            rgb[(lab != 0) & (pred == lab)] = _CORRECT
            rgb[(lab != 0) & (pred != lab)] = _ALT if valid else _WRONG
        elif valid:
            rgb[:] = _CORRECT
        rgb[given & (pred == inputs)] = _GIVEN
        rgb[(given & (pred != inputs)) | ~digit] = _WRONG
        return rgb.reshape(n, n, 3)
    tok = task.maze_tokens
    for name in ("wall", "open", "start", "goal"):
        rgb[inputs == tok[name]] = _MAZE[name]
    path = pred == tok["path"]
    if lab is not None:
        rgb[path & (lab == tok["path"])] = _MAZE["path"]
        rgb[path & (lab != tok["path"])] = _MAZE["path_alt" if valid else "path_wrong"]
        rgb[~path & (lab == tok["path"])] = _MAZE["open"] if valid else _MAZE["missed"]
    else:
        rgb[path] = _MAZE["path" if valid else "path_unknown"]
    # a wall / S / G / open cell decoded as another non-path token: tinted red, the maze stays readable
    other = ~path & (pred != inputs)
    rgb[other] = 0.45 * rgb[other] + 0.55 * np.array(_MAZE["path_wrong"])
    rgb[path & (inputs != tok["open"])] = _MAZE["path_wrong"]  # a path drawn over a wall, S or G
    return rgb.reshape(n, n, 3)


def _draw_grid(ax, traj: Trajectory, s: int, *, big: bool = False) -> None:
    """Step ``s`` (0-based) of the trajectory on ``ax``: colours, digits, changed cells, a title."""
    task, n = traj.task, traj.task.side
    pred = traj.preds[s]
    ax.imshow(
        _cell_colors(task, traj.inputs, traj.labels, pred, bool(traj.valid[s])),
        interpolation="nearest",
        extent=(-0.5, n - 0.5, n - 0.5, -0.5),
    )
    if task.kind == "sudoku":
        text = task.to_text(pred)
        size = (150 if big else 64) / n
        for i, ch in enumerate(text):
            ax.text(i % n, i // n, ch, ha="center", va="center", fontsize=size, color="0.1")
        br, bc = task.box
        for r in range(n + 1):
            lw = 1.6 if r % br == 0 else 0.4
            ax.plot([-0.5, n - 0.5], [r - 0.5, r - 0.5], color="0.2", lw=lw)
        for c in range(n + 1):
            lw = 1.6 if c % bc == 0 else 0.4
            ax.plot([c - 0.5, c - 0.5], [-0.5, n - 0.5], color="0.2", lw=lw)
    changed = np.flatnonzero(traj.changed[s])
    if changed.size:
        from matplotlib.collections import PatchCollection
        from matplotlib.patches import Rectangle

        boxes = [Rectangle((i % n - 0.42, i // n - 0.42), 0.84, 0.84) for i in changed]
        lw = (2.0 if big else 1.0) * (1.0 if task.kind == "sudoku" else 0.6)
        ax.add_collection(
            PatchCollection(boxes, facecolor="none", edgecolor=_CHANGED, linewidth=lw, zorder=3)
        )
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ok, no = "\u2713", "\u2717"
    bits = []
    if traj.exact is not None:
        bits.append(f"{traj.cell_accuracy[s]:.0%}  exact {ok if traj.exact[s] else no}")
    bits.append(f"valid {ok if traj.valid[s] else no}")
    halt = "  HALT" if s + 1 == traj.halt_step else ""
    if big:
        bits.append(f"P(halt) {traj.halt_prob[s]:.2f}")
    title = f"step {s + 1}{halt}\n" + "  ".join(bits)
    ax.set_title(title, fontsize=13 if big else 8.5, color="firebrick" if halt else "black")


def figure_size(traj: Trajectory) -> tuple[float, float]:
    """(width, height) in inches of :func:`plot_trajectory`'s figure: FIG_WIDTH wide; a header, one
    row of GRID_ROW_HEIGHT per GRID_COLS steps drawn (at most MAX_GRIDS), and a row of curves."""
    rows = math.ceil(min(traj.n_steps, MAX_GRIDS) / GRID_COLS)
    return FIG_WIDTH, HEADER_HEIGHT + rows * GRID_ROW_HEIGHT + CURVES_HEIGHT


def _shown_steps(n_steps: int) -> list[int]:
    if n_steps <= MAX_GRIDS:
        return list(range(n_steps))
    return sorted({int(round(i)) for i in np.linspace(0, n_steps - 1, MAX_GRIDS)})


def plot_trajectory(traj: Trajectory, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Write the trajectory figure (PNG, ``figure_size(traj)`` inches at ``dpi``) atomically."""
    from matplotlib.figure import Figure

    # A bare Figure renders with Agg and never touches pyplot's global state or a GUI backend.
    width, height = figure_size(traj)
    fig = Figure(figsize=(width, height))
    shown = _shown_steps(traj.n_steps)
    rows = math.ceil(len(shown) / GRID_COLS)
    curves = ["accuracy", "changes"] + (["solver"] if traj.solver_residual is not None else [])
    curves += [f"latent{i}" for i in range(len(traj.latents))]
    top = 1 - HEADER_HEIGHT / height
    split = CURVES_HEIGHT / height
    grids = fig.add_gridspec(
        rows, GRID_COLS, left=0.02, right=0.98, top=top, bottom=split + 0.03, hspace=0.32, wspace=0.12
    )
    for j, s in enumerate(shown):
        _draw_grid(fig.add_subplot(grids[j // GRID_COLS, j % GRID_COLS]), traj, s)
    lower = fig.add_gridspec(
        1, len(curves), left=0.04, right=0.985, top=split - 0.045, bottom=0.12, wspace=0.55
    )
    axes = {name: fig.add_subplot(lower[0, i]) for i, name in enumerate(curves)}
    _plot_accuracy(axes["accuracy"], traj)
    _plot_changes(axes["changes"], traj)
    if "solver" in axes:
        _plot_solver(axes["solver"], traj)
    for i, latent in enumerate(traj.latents):
        _plot_latent(axes[f"latent{i}"], traj, latent)
    fig.suptitle(_headline(traj), fontsize=11, y=1 - 0.12 / height, va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _headline(traj: Trajectory) -> str:
    t = traj.task
    head = f"{traj.model_name} on a {t.side}x{t.side} {t.kind}"
    head += f" ({traj.source})" if traj.source else ""
    last = traj.n_steps - 1
    facts = []
    if traj.exact is not None:
        facts.append(
            f"final cells {traj.cell_accuracy[last]:.0%}, exact {'yes' if traj.exact[last] else 'no'}"
        )
    facts.append(f"valid by the rules {'yes' if traj.valid[last] else 'no'}")
    facts.append(f"training halts at step {traj.halt_step} ({traj.halting_rule})")
    legend = (
        "grey given, green correct, red wrong, blue differs from the label but valid, orange box changed"
        if t.kind == "sudoku"
        else "green path, red wrong/missed, blue valid other path, orange path (no label), orange box changed"
    )
    return f"{head}: " + "; ".join(facts) + f"\n{legend}"


def _plot_accuracy(ax, traj: Trajectory) -> None:
    steps = np.arange(1, traj.n_steps + 1)
    if traj.cell_accuracy is not None:
        ax.plot(steps, traj.cell_accuracy, "-o", ms=3, color="tab:green", label="cell accuracy")
        ax.plot(steps, traj.exact.astype(float), "s", ms=5, mfc="none", color="tab:green", label="exact")
    ax.plot(steps, traj.valid.astype(float) * 0.98, "d", ms=4, color="tab:blue", label="valid (rules)")
    ax.plot(steps, traj.confidence.mean(-1), "--", color="tab:gray", label="mean confidence")
    ax.plot(steps, traj.halt_prob, "-", color="firebrick", label="P(halt)")
    if traj.halting_rule == "q_halt > q_continue":
        ax.plot(steps, traj.continue_prob, ":", color="firebrick", label="P(continue)")
    if traj.halt_step <= traj.n_steps:
        ax.axvline(traj.halt_step, color="firebrick", lw=0.8, alpha=0.6)
    ax.set_ylim(-0.04, 1.04)
    ax.set_xlabel("supervision step")
    ax.set_title(f"accuracy and halting (halts at {traj.halt_step})", fontsize=9)
    ax.legend(fontsize=6.5, loc="best")


def _plot_changes(ax, traj: Trajectory):
    """Bars: cells whose answer changed since the previous step (a count axis from 0, integer ticks,
    also when nothing changes); line: the loss on a right-hand axis that shows plain values (no
    offset label). The loss's name goes in the title, so no right-hand label runs into the next
    panel. Returns the loss axis (None without labels)."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    steps = np.arange(1, traj.n_steps + 1)
    counts = traj.changed.sum(-1)[1:]
    ax.bar(steps[1:], counts, color=_CHANGED, alpha=0.8, label="cells changed")
    ax.set_xlabel("supervision step")
    ax.set_ylabel("cells changed since last step", fontsize=8)
    ax.set_xlim(0.5, traj.n_steps + 0.5)
    ax.set_ylim(0, max(1, int(counts.max(initial=0))) * 1.1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    title = "cells that flip (bars)"
    twin = None
    if traj.loss is not None:
        twin = ax.twinx()
        twin.plot(steps, traj.loss, "-o", ms=3, color="tab:purple")
        plain = ScalarFormatter(useOffset=False)
        plain.set_scientific(False)
        twin.yaxis.set_major_formatter(plain)
        twin.tick_params(axis="y", labelsize=7, colors="tab:purple")
        title += f" and the {traj.loss_name} loss (purple, right)"
    ax.set_title(title, fontsize=9)
    return twin


def _plot_solver(ax, traj: Trajectory) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    n = traj.n_steps
    if traj.solver_trace is not None:
        for s, trace in enumerate(traj.solver_trace):
            ax.plot(np.arange(len(trace)), trace, "-", lw=1, color=cmap(s / max(n - 1, 1)))
            best = traj.solver_best[s]
            ax.plot([best], [trace[best]], ".", color=cmap(s / max(n - 1, 1)))
        ax.set_xlabel("solver iteration (colour: step 1 dark -> last light)")
    else:  # solver="unroll": one residual per step
        ax.plot(np.arange(1, n + 1), traj.solver_residual, "-o", ms=3)
        ax.set_xlabel("supervision step")
    ax.axhline(traj.solver_tol, color="0.4", ls="--", lw=0.8, label=f"tol {traj.solver_tol:g}")
    ax.set_yscale("log")
    ax.set_title("solver residual ||F(S)-S|| / ||F(S)||", fontsize=9)
    ax.legend(fontsize=7)


def _plot_latent(ax, traj: Trajectory, latent: LatentPath) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    xy, n = latent.coords, traj.n_steps
    ax.plot(xy[:, 0], xy[:, 1], "-", color="0.7", lw=0.6, zorder=1)
    colors = cmap((latent.step - 1).clip(0) / max(n - 1, 1))
    for kind, style in (
        ("iterate", dict(marker=".", s=10)),
        ("state", dict(marker="o", s=22, edgecolors="k", linewidths=0.4)),
    ):
        m = latent.kind == kind
        ax.scatter(xy[m, 0], xy[m, 1], c=colors[m], zorder=2, **style)
    fp = np.flatnonzero(latent.kind == "fixed_point")
    if fp.size:
        ax.scatter(xy[fp, 0], xy[fp, 1], marker="x", s=18, c=colors[fp], zorder=3, label="S* per step")
        ax.scatter(
            *xy[fp[-1]], marker="*", s=160, c="red", edgecolors="k", zorder=4, label="final fixed point"
        )
    ax.scatter(*xy[0], marker="s", s=40, c="k", zorder=4, label="initial")
    ax.set_xlabel(f"PC1 ({latent.explained[0]:.0%})", fontsize=8)
    ax.set_ylabel(f"PC2 ({latent.explained[1]:.0%})", fontsize=8)
    ax.set_title(f"PCA path of {latent.name}", fontsize=9)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6.5, loc="best")


def write_gif(traj: Trajectory, path: str | os.PathLike, *, fps: float = 2.0, dpi: int = 80) -> Path:
    """An animation of the decoded grid, one frame per supervision step (GIF_SIZE inches at ``dpi``),
    written atomically with matplotlib's PillowWriter."""
    from matplotlib.animation import PillowWriter
    from matplotlib.figure import Figure

    fig = Figure(figsize=GIF_SIZE)
    ax = fig.add_axes((0.04, 0.02, 0.92, 0.8))
    writer = PillowWriter(fps=fps)
    with atomic_path(path) as tmp:
        with writer.saving(fig, str(tmp), dpi):
            for s in range(traj.n_steps):
                ax.clear()
                _draw_grid(ax, traj, s, big=True)
                writer.grab_frame()
    return Path(path)


# ----------------------------------------------------------------------------------- breadth

# Breadth figure geometry (inches): a header, a row of three curve panels, a table of one row per
# trajectory (and a header row).
BREADTH_HEADER = 1.1
BREADTH_CURVES = 3.8
BREADTH_ROW = 0.24
PICK_MARKERS = {"convergence": "s", "q_head": "^", "first_halt": "v", "majority": "D"}


def breadth_colors(K: int) -> list:
    """Trajectory 0 (plain) black, the others tab10 (a continuous map beyond 10)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if K <= 11 else "viridis"]
    return ["black"] + [cmap((k - 1) if K <= 11 else (k - 1) / max(K - 2, 1)) for k in range(1, K)]


def breadth_figure_size(bt: BreadthTrajectories) -> tuple[float, float]:
    """(width, height) in inches of :func:`plot_breadth`'s figure: FIG_WIDTH wide; header, curves and
    a table of ``K + 1`` rows of BREADTH_ROW."""
    return FIG_WIDTH, BREADTH_HEADER + BREADTH_CURVES + (bt.K + 1) * BREADTH_ROW + 0.5


def breadth_table(bt: BreadthTrajectories) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of the figure's table: one row per trajectory at the last step."""
    picks = bt.picks()
    ok, no = "\u2713", "\u2717"
    b = bt.breadth
    header = ["trajectory", "noise", "cells", "exact", "valid", "right", "convergence", "rank"]
    header += [f"stable {CONVERGENCE_WINDOW} steps", "halting conf.", "first halt", "picked by"]
    view = bt.view()
    rows = []
    for k in range(bt.K):
        noise = "plain" if k == 0 else f"init {b.init_noise:g}, step {b.step_noise:g}"
        cells = "-" if bt.cell_accuracy is None else f"{bt.cell_accuracy[k, -1]:.0%}"
        exact = "-" if bt.exact is None else (ok if bt.exact[k, -1] else no)
        fired = int(view.first_halt[k]) if bt.halt_fires[k].any() else None
        rows.append(
            [
                str(k),
                noise,
                cells,
                exact,
                ok if bt.valid[k, -1] else no,
                ok if bt.right[k] else no,
                f"{bt.convergence[k, -1]:.2e}",
                str(bt.convergence_rank[k]),
                ok if bt.stable[k] else no,
                f"{bt.confidence[k, -1]:+.2f}",
                "never" if fired is None else str(fired),
                ", ".join(
                    f"{sel} (step {fired})" if sel == "first_halt" and fired is not None else sel
                    for sel, chosen in picks.items()
                    if chosen == k
                ),
            ]
        )
    return header, rows


def plot_breadth(bt: BreadthTrajectories, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Write the breadth figure (PNG, ``breadth_figure_size(bt)`` inches at ``dpi``) atomically: per
    trajectory against supervision step the cell accuracy (rule validity without a label), the
    convergence score and the halting confidence; solid lines end right, dotted ones wrong; each
    selector's pick at the last step marked; a table of every trajectory's last step."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    width, height = breadth_figure_size(bt)
    fig = Figure(figsize=(width, height))
    bottom_curves = 1 - (BREADTH_HEADER + BREADTH_CURVES) / height
    curves = fig.add_gridspec(
        1, 3, left=0.05, right=0.985, top=1 - BREADTH_HEADER / height, bottom=bottom_curves + 0.5 / height,
        wspace=0.22,
    )  # fmt: skip
    ax_acc, ax_conv, ax_halt = (fig.add_subplot(curves[0, i]) for i in range(3))
    colors = breadth_colors(bt.K)
    steps = np.arange(1, bt.n_steps + 1)
    accuracy = bt.cell_accuracy if bt.cell_accuracy is not None else bt.valid.astype(float)
    for k in range(bt.K):
        style = dict(color=colors[k], lw=2.0 if k == 0 else 1.1, ls="-" if bt.right[k] else ":")
        ax_acc.plot(steps, accuracy[k], **style)
        if bt.exact is not None and bt.exact[k].any():
            ax_acc.plot(steps[bt.exact[k]], accuracy[k][bt.exact[k]], "o", ms=3, color=colors[k])
        ax_conv.plot(steps[1:], bt.convergence[k, 1:], **style)
        ax_halt.plot(steps, bt.confidence[k], **style)
    picks = bt.picks()
    first_halt = bt.view().first_halt
    for j, (sel, k) in enumerate(picks.items()):
        # first_halt answers at the step its rule first fires: marked there, on the curve; the
        # others answer at the last step: marked side by side just right of it
        s = int(first_halt[k]) if sel == "first_halt" else bt.n_steps
        x = s if sel == "first_halt" else s + 0.18 * (j + 1) * max(1, bt.n_steps / 16)
        marker = dict(marker=PICK_MARKERS[sel], ms=8, mfc=colors[k], mec="black", ls="none", zorder=5)
        ax_acc.plot([x], [accuracy[k, s - 1]], **marker)
        if s > 1:
            ax_conv.plot([x], [bt.convergence[k, s - 1]], **marker)
        ax_halt.plot([x], [bt.confidence[k, s - 1]], **marker)
    what = "cell accuracy (dots: exact)" if bt.cell_accuracy is not None else "valid by the rules (no label)"
    ax_acc.set(xlabel="supervision step", ylabel=what, ylim=(-0.04, 1.04), title=what)
    ax_conv.set(
        xlabel="supervision step",
        ylabel="mean |change of logits|",
        title=f"convergence score (mean over the last {CONVERGENCE_WINDOW} steps' changes)",
    )
    if bt.n_steps > 1 and np.all(bt.convergence[:, 1:] > 0):
        ax_conv.set_yscale("log")
    rule = bt.halting_rule
    ax_halt.axhline(0, color="firebrick", lw=0.8, ls="--")
    ax_halt.set(
        xlabel="supervision step",
        ylabel="q_halt - q_continue" if rule == "q_halt > q_continue" else "q_halt",
        title=f"halting logit (the rule {rule} fires above the dashed line)",
    )
    for ax in (ax_acc, ax_conv, ax_halt):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.title.set_fontsize(9)
    handles = [
        Line2D([], [], color="0.3", ls="-", label="ends right"),
        Line2D([], [], color="0.3", ls=":", label="ends wrong"),
    ]
    handles += [
        Line2D([], [], marker=PICK_MARKERS[s], ls="none", mfc="white", mec="black", label=f"{s} picks")
        for s in picks
    ]
    ax_acc.legend(handles=handles, fontsize=7, loc="best")

    header, rows = breadth_table(bt)
    table_ax = fig.add_axes((0.03, 0.2 / height, 0.94, (bt.K + 1) * BREADTH_ROW / height))
    table_ax.axis("off")
    widths = np.array([0.6, 1.1, 0.5, 0.5, 0.5, 0.5, 0.8, 0.45, 0.8, 0.8, 0.6, 2.0])  # picked by: widest
    table = table_ax.table(
        cellText=rows, colLabels=header, loc="center", cellLoc="center", colWidths=list(widths / widths.sum())
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for k in range(bt.K):
        cell = table[k + 1, 0]
        cell.set_facecolor(colors[k])
        cell.get_text().set_color("white")
    fig.suptitle(_breadth_headline(bt), fontsize=10, y=1 - 0.1 / height, va="top")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _breadth_headline(bt: BreadthTrajectories) -> str:
    t, b = bt.task, bt.breadth
    head = f"{bt.model_name} on a {t.side}x{t.side} {t.kind}" + (f" ({bt.source})" if bt.source else "")
    calls = "" if bt.calls_per_trajectory is None else f"; {bt.calls_per_trajectory:,.0f} network calls each"
    line1 = (
        f"{head}: {bt.K} trajectories as rows of one batch{calls}\ntrajectory 0 plain, the others with "
        f"initial noise {b.init_noise:g} and step noise {b.step_noise:g} (seed {b.seed}; rows seeded as "
        f"puzzle {bt.puzzle_index}, as evaluate's breadth seeds test puzzle {bt.puzzle_index})"
    )
    picks = ", ".join(f"{sel} \u2192 {k}" for sel, k in bt.picks().items())
    right = "exact" if bt.exact is not None else "valid"
    line2 = (
        f"at step {bt.n_steps}: {int(bt.right.sum())} of {bt.K} {right} (pass@K "
        f"{'yes' if bt.right.any() else 'no'}); picks: {picks}. Stable: the answer did not change over "
        f"the last {CONVERGENCE_WINDOW} steps; rank: by the convergence score (1 moved least)"
    )
    return f"{line1}\n{line2}"


# ----------------------------------------------------------------------------------- entry point


def _loss_name(config: dict) -> str:
    """The training loss named anywhere in a checkpoint's config (a key ``loss`` whose value is a
    known loss), else the reference's stablemax."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            loss = node.get("loss")
            if isinstance(loss, str) and loss in LOSSES:
                return loss
            stack.extend(node.values())
    return "stablemax"


# ------------------------------------------------------------------------ training telemetry

RHO_TARGET_SHARE = 0.95  # issue 14's target: rho < 1 for 95% of the probe puzzles at every evaluation


def run_dir(checkpoint: str | os.PathLike) -> Path:
    """The run directory given, or the one holding the checkpoint file (its parent, or the parent's
    parent when the file sits in ``checkpoints/``)."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    folder = path.parent
    return folder.parent if folder.name == "checkpoints" else folder


def telemetry_out(png: str | os.PathLike) -> Path:
    """The training-telemetry figure beside the trajectory figure: ``<stem>_fixed_point.png``."""
    png = Path(png)
    return png.with_name(f"{png.stem}_fixed_point.png")


def plot_fixed_point_telemetry(
    series: dict, path: str | os.PathLike, *, title: str = "", dpi: int = 100
) -> Path:
    """Four panels against training updates, from :func:`reasoners.compare.fixed_point_series` (a run's
    ``metrics.csv``): the training solves' converged share and mean exit residual; a sample's solver
    iterations (median, 90th percentile, max per window, and evaluations per batched solve); the
    contraction probe's spectral radius (median and 95th percentile, training and EMA weights, the
    line rho = 1); the probe's share below 1 against the 95% target, and the warm start's residual."""
    from matplotlib.figure import Figure

    if not series:
        raise ValueError("no fixed-point telemetry to draw (the run logged no solver columns)")
    fig = Figure(figsize=(FIG_WIDTH, 3.8))
    axes = fig.subplots(1, 4)

    def line(ax, key, label, **kw):
        if key in series:
            steps, values = series[key]
            ax.plot(steps, values, label=label, **kw)
            return True
        return False

    ax = axes[0]
    line(ax, "solver_converged", "converged share", color="C0", marker=".")
    # new puzzles (solved from the initial state) and carried rows apart, where the run logged them
    line(ax, "solver_converged_cold", "new puzzles", color="C0", ls="--", lw=0.8)
    line(ax, "solver_converged_warm", "carried rows", color="C0", ls=":", lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("share of samples below tol", color="C0")
    twins = [ax.twinx()]
    if line(twins[0], "solver_rel_residual", "exit residual", color="C3", marker=".", lw=0.8):
        twins[0].set_yscale("log")
    twins[0].set_ylabel("mean relative exit residual", color="C3")
    ax.set_title("training solves", fontsize=9)

    ax = axes[1]
    for key, label, style in (
        ("solver_iters_p50", "median", "-"),
        ("solver_iters_p90", "90th percentile", "--"),
        ("solver_iters_max", "max", ":"),
        ("solver_nstep", "per batched solve", "-."),
    ):
        line(ax, key, label, ls=style, marker=".", ms=3)
    ax.set_ylabel("map evaluations")
    ax.set_title("a sample's solver iterations", fontsize=9)

    ax = axes[2]
    for key, label, kw in (
        ("eval_rho_median", "median, training", dict(color="C0")),
        ("eval_rho_q95", "q95, training", dict(color="C0", ls="--")),
        ("eval_ema_rho_median", "median, EMA", dict(color="C2")),
        ("eval_ema_rho_q95", "q95, EMA", dict(color="C2", ls="--")),
    ):
        line(ax, key, label, marker="o", ms=3, **kw)
    ax.axhline(1.0, color="0.3", lw=0.8, ls=":", label="rho = 1")
    ax.set_ylabel("spectral radius of the map's Jacobian")
    ax.set_title("contraction probe (fixed probe puzzles)", fontsize=9)

    ax = axes[3]
    line(ax, "eval_rho_below_1", "rho < 1, training", color="C0", marker="o", ms=3)
    line(ax, "eval_ema_rho_below_1", "rho < 1, EMA", color="C2", marker="o", ms=3)
    ax.axhline(RHO_TARGET_SHARE, color="0.3", lw=0.8, ls=":", label=f"target {RHO_TARGET_SHARE:.0%}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("share of probe puzzles")
    twins.append(ax.twinx())
    drew = line(
        twins[1], "eval_warm_start_residual", "warm start, training", color="C3", lw=0.8, marker="x", ms=3
    )
    drew |= line(
        twins[1], "eval_ema_warm_start_residual", "warm start, EMA", color="C1", lw=0.8, marker="x", ms=3
    )
    if drew:
        twins[1].set_yscale("log")
        twins[1].set_ylabel("warm start's relative residual", color="C3")
    ax.set_title("attractor share; warm start", fontsize=9)

    for ax in axes:
        ax.set_xlabel("update")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    for t in twins:
        if t.get_legend_handles_labels()[0]:
            t.legend(fontsize=7, loc="center right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def default_out(checkpoint: str | os.PathLike) -> Path:
    """``<run>/trajectory.png``: the run directory given, or the one holding the checkpoint file
    (its parent, or the parent's parent when the file sits in ``checkpoints/``)."""
    return run_dir(checkpoint) / "trajectory.png"


def load_example(task: Task, *, puzzle=None, data=None, index=None, split: str = "test"):
    """``(inputs, labels or None, puzzle_identifier, description)`` of the puzzle to visualise: a
    puzzle string, or example ``index`` of ``data``'s ``split`` (test by default); clear errors for
    both, neither, or a puzzle / dataset that is not the checkpoint's task."""
    what = f"a {task.side}x{task.side} {task.kind}"
    if (puzzle is None) == (data is None):
        raise ValueError(
            'give exactly one of puzzle="<string>" or data=DIR index=K '
            f"({'both' if puzzle is not None else 'neither'} given)"
        )
    if puzzle is not None:
        if not isinstance(puzzle, str):
            raise ValueError(
                f"puzzle must be a string, got {type(puzzle).__name__} {puzzle!r}: quote it for Hydra, "
                "e.g. 'puzzle=\"1..4.4.22..3.3..\"'"
            )
        try:
            inputs = task.encode(puzzle)
        except ValueError as e:
            raise ValueError(f"puzzle is not {what}, which this checkpoint was trained on: {e}") from e
        return inputs.astype(np.int64), None, 0, "puzzle string"
    from reasoners.data import load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(data)
    try:
        ds = load_dataset(root, task.kind, need_train=split == "train")
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"data={root} does not hold {what} (the checkpoint's task): {e}") from e
    if ds.task != task:
        raise ValueError(
            f"data={root} holds {ds.task.side}x{ds.task.side} {ds.task.kind} puzzles, "
            f"but the checkpoint was trained on {what}"
        )
    table = ds.train if split == "train" else ds.test
    n = table.inputs.shape[0]
    if index is None or not 0 <= int(index) < n:
        raise IndexError(f"index={index} is out of range: the {split} split of {root} has {n} examples")
    from reasoners.data import to_batch

    b = to_batch(table, np.array([int(index)]))
    return (
        b["inputs"][0].numpy().astype(np.int64),
        b["labels"][0].numpy(),
        int(b["puzzle_identifiers"][0]),
        f"{split} example {int(index)} of {root}",
    )


BREADTH_KEYS = ("trajectories", "init_noise", "step_noise", "seed", "steps")


def breadth_options(value) -> tuple[Breadth, int | None] | None:
    """``(Breadth, steps or None)`` from the ``breadth`` group (a dict or DictConfig), or None when
    ``breadth.trajectories`` is null (off); a clear one-line error naming the key otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict):
        from omegaconf import OmegaConf

        if not OmegaConf.is_dict(value):
            raise ValueError(f"breadth must be a group of keys ({', '.join(BREADTH_KEYS)}), got {value!r}")
        value = OmegaConf.to_container(value, resolve=True)
    unknown = sorted(set(value) - set(BREADTH_KEYS))
    if unknown:
        raise ValueError(
            f"unknown breadth keys: {', '.join('breadth.' + k for k in unknown)} "
            f"(expected {', '.join(BREADTH_KEYS)})"
        )
    if value.get("trajectories") is None:
        return None
    steps = value.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"breadth.steps must be a positive integer or null (the steps key), got {steps!r}")
    fields = {k: value[k] for k in ("trajectories", "init_noise", "step_noise", "seed") if k in value}
    try:
        return Breadth(**fields), steps
    except ValueError as e:
        raise ValueError(
            f"breadth.trajectories: {e}" if "trajectories K" in str(e) else f"breadth.{e}"
        ) from None


def breadth_out(png: str | os.PathLike) -> Path:
    """The breadth figure beside the trajectory figure: ``<stem>_breadth.png``."""
    png = Path(png)
    return png.with_name(f"{png.stem}_breadth.png")


def visualize(cfg, log=print) -> dict:
    """The whole command as a plain function of a config (a dict or DictConfig with the keys of
    ``conf/tools/visualize.yaml``): returns ``{"trajectory", "png", "gif"}``."""
    from reasoners.checkpoint import load_reasoner

    get = cfg.get
    if not get("checkpoint"):
        raise ValueError("checkpoint=PATH is required (a checkpoint file or a run directory)")
    breadth = breadth_options(get("breadth"))  # bad keys fail before the checkpoint is read
    telemetry = get("telemetry", "auto")
    if telemetry not in ("auto", True, False):
        raise ValueError(f"telemetry must be auto, true or false, got {telemetry!r}")
    series = {}
    if telemetry is not False:  # read before any figure is drawn, so telemetry=true fails first
        from reasoners.compare import fixed_point_series

        series = fixed_point_series(run_dir(get("checkpoint")))
        if not series and telemetry is True:
            metrics = run_dir(get("checkpoint")) / "metrics.csv"
            raise ValueError(f"telemetry=true: {metrics} has no fixed-point solver columns")
    model, task, ckpt = load_reasoner(get("checkpoint"), ema=bool(get("ema", True)))
    inputs, labels, pid, source = load_example(
        task, puzzle=get("puzzle"), data=get("data"), index=get("index"), split=get("split") or "test"
    )
    traj = record_trajectory(
        model,
        task,
        inputs,
        labels,
        puzzle_identifier=pid,
        steps=get("steps"),
        loss=_loss_name(ckpt.get("config") or {}),
        model_name=ckpt.get("model_name"),
        source=source,
    )
    if get("text"):
        for frame in text_frames(traj):
            log(frame + "\n")
    png = Path(get("out") or default_out(get("checkpoint")))
    plot_trajectory(traj, png)
    gif = write_gif(traj, png.with_suffix(".gif")) if get("gif") else None
    log(summary(traj))
    written = [png] + ([gif] if gif else [])
    result = {"trajectory": traj, "png": png, "gif": gif, "breadth": None, "breadth_png": None}
    if breadth is not None:
        options, breadth_steps = breadth
        bt = record_breadth(
            model,
            task,
            inputs,
            labels,
            breadth=options,
            # the noise rows of evaluate's breadth for this puzzle: its index in the split (0 for a string)
            puzzle_index=int(get("index") or 0) if get("data") is not None else 0,
            puzzle_identifier=pid,
            steps=breadth_steps if breadth_steps is not None else get("steps"),
            model_name=ckpt.get("model_name"),
            source=source,
        )
        result["breadth"], result["breadth_png"] = bt, plot_breadth(bt, breadth_out(png))
        log(breadth_summary(bt))
        written.append(result["breadth_png"])
    result["telemetry_png"] = None
    if series:
        title = f"{ckpt.get('model_name') or 'reasoner'}: {run_dir(get('checkpoint'))}"
        result["telemetry_png"] = plot_fixed_point_telemetry(series, telemetry_out(png), title=title)
        written.append(result["telemetry_png"])
    log("wrote " + ", ".join(str(w) for w in written))
    return result


@hydra.main(version_base="1.3", config_path="conf/tools", config_name="visualize")
@user_errors()
def main(cfg: DictConfig) -> None:
    visualize(cfg)


def cli() -> None:
    """``python -m reasoners.visualize`` / ``gridloop visualize``: user errors end in one line, exit 2."""
    run_hydra(main)


if __name__ == "__main__":
    cli()
