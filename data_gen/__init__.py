"""Dataset builders: generate -> rate/filter -> dedupe -> split -> augment -> write."""
