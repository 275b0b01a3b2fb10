"""Reasoners (HRM, TRM, Attractor), deep supervision, training and evaluation.

Imports :mod:`solvers`; :mod:`puzzles` only in :mod:`reasoners.tasks` (every other module asks a
``Task`` for token layouts, rules and rating buckets); of :mod:`data_gen` only :mod:`data_gen.format`
(the on-disk format and the atomic writer). A missing dataset is built by running the data config's
build command, not by importing a builder.
"""
