"""Rules of each puzzle: parse/format, validate, solve exactly, rate difficulty (Numba kernels).

Imports nothing else of gridloop. Each puzzle's module is the one definition of what both sides of
the data seam share: its token layout in the on-disk format and (Sudoku) its rating buckets, read by
the builders in :mod:`data_gen` and by :mod:`reasoners.tasks` alone. The ``_*_kernels`` modules are
private: other packages use the public API of :mod:`puzzles.sudoku` and :mod:`puzzles.maze`.
"""
