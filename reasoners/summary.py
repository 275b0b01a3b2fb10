"""Print every preset's size: ``python -m reasoners.summary`` (markdown table).

Parameters are counted on the ``meta`` device (nothing is allocated). ``blocks/step`` is the number
of transformer-block evaluations in one supervision step, all / with grad; for the Attractor it is
the most the solve can take (``max_iter`` map calls) plus the phantom steps.
"""

from __future__ import annotations

import argparse

import torch

from reasoners.presets import PRESETS, PUZZLES, build, count_parameters


def blocks_per_step(config) -> tuple[int, int]:
    """(all, with grad) block evaluations in one supervision step."""
    name = type(config).__name__
    if name == "HRMConfig":
        c = config
        total = c.H_cycles * c.L_cycles * c.L_layers + c.H_cycles * c.H_layers
        return total, c.L_layers + c.H_layers
    per_map = (config.n_inner + 1) * config.n_layers
    if name == "AttractorConfig":
        k = {"phantom": config.phantom_k, "one_step": 1, "neumann": 1, "implicit": 1}[config.grad]
        solve = config.max_iter if config.solver != "unroll" else config.T_cycles - 1
        return (solve + k) * per_map, k * per_map
    return config.T_cycles * per_map, per_map


def rows(puzzles=tuple(PUZZLES)):
    for model, sizes in PRESETS.items():
        for size in sizes:
            for puzzle in puzzles:
                with torch.device("meta"):
                    net = build(model, size, puzzle)
                table = net.embed.puzzle.table.numel() if net.embed.puzzle is not None else 0
                total, grad = blocks_per_step(net.config)
                yield model, size, puzzle, count_parameters(net), table, f"{total} / {grad}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puzzle", choices=list(PUZZLES), action="append", help="default: all")
    args = parser.parse_args(argv)
    print("| model | size | puzzle | parameters | puzzle table (buffer) | blocks/step (all / grad) |")
    print("|---|---|---|---:|---:|---:|")
    for model, size, puzzle, n, table, blocks in rows(tuple(args.puzzle or PUZZLES)):
        print(f"| {model} | {size} | {puzzle} | {n:,} | {table:,} | {blocks} |")


if __name__ == "__main__":
    main()
