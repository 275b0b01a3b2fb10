"""Reasoners (HRM, TRM, Attractor), deep supervision, training and evaluation."""
