"""Fixed-point numerics: iteration, Anderson acceleration, phantom/implicit gradients, diagnostics.

Independent of puzzles and models: every function takes a map `f` from a state (a tensor (B, ...) or a
tuple of such tensors, e.g. the reasoner's (y, z)) to a state of the same structure.

    x_star, info = anderson(f, x0, m=5, max_iter=16, tol=1e-3)   # no grad, per-sample info
    x = phantom_grad(f, x_star, k=3, tau=0.5)                    # grad reaches what f closes over
"""

from solvers.diagnostics import SavedTensorBytes, contraction_hinge, jacobian_reg, spectral_radius
from solvers.fixed_point import SolverInfo, anderson, fixed_point_iter
from solvers.gradients import implicit_grad, neumann_grad, phantom_grad

__all__ = [
    "SavedTensorBytes",
    "SolverInfo",
    "anderson",
    "contraction_hinge",
    "fixed_point_iter",
    "implicit_grad",
    "jacobian_reg",
    "neumann_grad",
    "phantom_grad",
    "spectral_radius",
]
