"""Hydra configs of the tools (visualize) whose keys must not collide with the trainer's groups."""
