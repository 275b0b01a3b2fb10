"""Fixed-point numerics: iteration, Anderson acceleration, phantom/implicit gradients.

Independent of puzzles and models: every function takes a map `f` from a state (a tensor (B, ...) or a
tuple of such tensors, e.g. the reasoner's (y, z)) to a state of the same structure.
"""

from solvers.fixed_point import SolverInfo, anderson, fixed_point_iter
from solvers.gradients import implicit_grad, neumann_grad, phantom_grad

__all__ = ["SolverInfo", "anderson", "fixed_point_iter", "implicit_grad", "neumann_grad", "phantom_grad"]
