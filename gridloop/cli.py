"""``gridloop COMMAND [ARGS...]``: every entry point a user types, under one command.

    gridloop quickstart                 # the main job: 4x4 data, a tiny TRM, evaluation, a trajectory
    gridloop sudoku --n 1000            # = python -m data_gen.sudoku --n 1000
    gridloop train experiment=laptop_sudoku model=trm
    gridloop evaluate checkpoint=runs/x
    gridloop --debug evaluate ...       # full tracebacks (as HYDRA_FULL_ERROR=1)

Each subcommand is the module's own entry point, so ``python -m reasoners.train ...`` and the others
keep working and behave alike: a user error ends in one line, ``error: ...``, and exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys

# name: (module, its entry function, one line of help)
SUBCOMMANDS = {
    "quickstart": ("reasoners.quickstart", "cli", "the main job: 4x4 Sudoku, TRM, evaluation, a trajectory"),
    "sudoku": ("data_gen.sudoku", "main", "build a Sudoku dataset"),
    "maze": ("data_gen.maze", "main", "build a maze dataset"),
    "train": ("reasoners.train", "cli", "train a reasoner from Hydra configs (key=value overrides)"),
    "evaluate": ("reasoners.evaluate", "cli", "evaluate a checkpoint by the puzzle's rules"),
    "compare": ("reasoners.compare", "main", "one table and figure across runs and sweeps"),
    "visualize": ("reasoners.visualize", "cli", "draw a reasoner's trajectory on one puzzle"),
    "summary": ("reasoners.summary", "main", "every preset's parameter count"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    rows = "\n".join(f"  {name:{width}s}  {entry[2]}" for name, entry in SUBCOMMANDS.items())
    return (
        "usage: gridloop [--debug] COMMAND [ARGS...]\n\ncommands:\n" + rows + "\n\n"
        "ARGS are the command's own: Hydra overrides (key=value) for quickstart, train, evaluate and\n"
        "visualize, --flags for sudoku, maze and compare (gridloop COMMAND --help)."
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--debug":
        os.environ["HYDRA_FULL_ERROR"] = "1"
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] not in SUBCOMMANDS:
        names = ", ".join(SUBCOMMANDS)
        print(f"error: unknown command {argv[0]!r}: expected one of {names}", file=sys.stderr)
        return 2
    module, function, _ = SUBCOMMANDS[argv[0]]
    entry = getattr(importlib.import_module(module), function)
    if function == "cli":  # Hydra apps read sys.argv
        sys.argv = [f"gridloop {argv[0]}", *argv[1:]]
        return entry() or 0
    return entry(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
