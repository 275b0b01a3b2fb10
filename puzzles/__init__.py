"""Rules of each puzzle: parse/format, validate, solve exactly, rate difficulty (Numba kernels)."""
