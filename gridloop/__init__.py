"""The ``gridloop`` command: one entry point over the four packages (see :mod:`gridloop.cli`).

It sits above puzzles, data_gen, solvers and reasoners and imports them only to dispatch; nothing
imports it.
"""
