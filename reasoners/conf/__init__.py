"""Hydra configs of the reasoners entry points (a package so ``pkg://reasoners.conf`` resolves).

Importing it registers the structured configs the YAML files build on (the trainer's schema)."""

import reasoners.train_config  # noqa: F401  (registers trainer/schema with Hydra's ConfigStore)
