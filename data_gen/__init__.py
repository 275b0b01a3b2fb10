"""Dataset builders: generate -> rate/filter -> dedupe -> split -> augment -> write.

Imports :mod:`puzzles` (public modules only) and nothing above it. What crosses the data seam into
:mod:`reasoners` is :mod:`data_gen.format` (the on-disk format's reader and writer, and the atomic
writer every package uses); the builders themselves (:mod:`data_gen.sudoku`, :mod:`data_gen.maze`)
are run as commands (``python -m data_gen.sudoku``), never imported by the reasoners.
"""
