"""Look inside the loop: a reasoner's trajectory on one puzzle, as a figure, a GIF or text.

    python -m reasoners.visualize checkpoint=RUN_DIR 'puzzle="1..4.4.22..3.3.."' [out=FILE] [gif=true]
    python -m reasoners.visualize checkpoint=RUN_DIR/checkpoints/last.pt data=DIR index=0 split=test text=true

(quote the puzzle twice, as shown: the shell keeps a maze's spaces, Hydra keeps the string a string).

:func:`reasoners.trajectory.record_trajectory` records what the reasoner does at every supervision
step (see that module); this module draws it: :func:`plot_trajectory` one PNG, :func:`write_gif` an
animation of the grid (one frame per supervision step), :func:`text_frames` one text picture per
step. Figures are bare matplotlib ``Figure`` objects rendered by Agg (no pyplot, no GUI backend);
files are written atomically.
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
from reasoners.trajectory import LatentPath, Trajectory, pca_2d, record_trajectory

__all__ = ["LatentPath", "Trajectory", "pca_2d", "record_trajectory", "plot_trajectory", "write_gif"]

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


def default_out(checkpoint: str | os.PathLike) -> Path:
    """``<run>/trajectory.png``: the run directory given, or the one holding the checkpoint file
    (its parent, or the parent's parent when the file sits in ``checkpoints/``)."""
    path = Path(checkpoint)
    if path.is_dir():
        return path / "trajectory.png"
    folder = path.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder / "trajectory.png"


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


def visualize(cfg, log=print) -> dict:
    """The whole command as a plain function of a config (a dict or DictConfig with the keys of
    ``conf/tools/visualize.yaml``): returns ``{"trajectory", "png", "gif"}``."""
    from reasoners.checkpoint import load_reasoner

    get = cfg.get
    if not get("checkpoint"):
        raise ValueError("checkpoint=PATH is required (a checkpoint file or a run directory)")
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
    log(f"wrote {png}" + (f" and {gif}" if gif else ""))
    return {"trajectory": traj, "png": png, "gif": gif}


@hydra.main(version_base="1.3", config_path="conf/tools", config_name="visualize")
@user_errors()
def main(cfg: DictConfig) -> None:
    visualize(cfg)


def cli() -> None:
    """``python -m reasoners.visualize`` / ``gridloop visualize``: user errors end in one line, exit 2."""
    run_hydra(main)


if __name__ == "__main__":
    cli()
