"""Functional optimizers that run inside ``jit`` and the target models built on them.

- :mod:`vosjax.learners.optimizers`: :func:`steepest_descent` (Gauss-Newton
  step length, LWL / JOINT) and :func:`gauss_newton_cg` (FRTM), both minimising
  ``0.5 |r(w)|^2`` over any params pytree with ``lax.scan`` loops, matrix-free.
- :mod:`vosjax.learners.frtm`: FRTM's target model ``w2 * (w1 * x)``, pixel
  weights, initial fit and update; with the weighted sample memory and the
  first-frame augmentation of :mod:`vosjax.learners.frtm_samples` re-exported.
- :mod:`vosjax.learners.lwl`: the LWL few-shot learner of JOINT's induction branch.
"""

from vosjax.learners import frtm, lwl
from vosjax.learners.optimizers import gauss_newton_cg, steepest_descent, sum_of_squares

__all__ = ["frtm", "gauss_newton_cg", "lwl", "steepest_descent", "sum_of_squares"]
