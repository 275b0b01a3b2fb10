"""Fixed-point numerics: iteration, Anderson acceleration, phantom/implicit gradients."""
