"""Hydra configs of the reasoners entry points (a package so ``pkg://reasoners.conf`` resolves)."""
