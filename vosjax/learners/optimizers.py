"""Generic functional least-squares optimizers that run inside ``jit``.

Both minimise the (weighted) sum of squares

    L(w) = 0.5 * sum_i |c_i * r_i(w)|^2

of a residual function ``r = residual_fn(w)`` over any pytree of parameters
``w``; ``r`` may be one array or any pytree of arrays (e.g. a data residual and
a regularisation residual ``sqrt(lambda) * w``), ``c`` are optional per-residual
weights. Everything is matrix-free: one linearisation ``jax.linearize`` per
outer step gives ``p -> J p``, its transpose ``jax.linear_transpose`` gives
``u -> J^T u``; the Jacobian is never materialised.

- :func:`steepest_descent` (LWL / JOINT induction branch): ``g = J^T r`` and the
  exact minimiser of the Gauss-Newton quadratic model along ``-g``,
  ``alpha = |g|^2 / |J g|^2``, then ``w <- w - alpha g``. For linear residuals
  this is exact line search, so the loss never increases.
- :func:`gauss_newton_cg` (FRTM, eq. 3): each Gauss-Newton step solves the
  normal equations ``(J^T J) dw = -J^T r`` with a fixed number of conjugate
  gradient iterations started from ``dw = 0``, then ``w <- w + dw``.

Loops are ``lax.scan`` with static trip counts, so reverse-mode gradients flow
through the unrolled optimisation (w.r.t. the initial parameters and anything
``residual_fn`` closes over: features, labels, learned regularisation). Both
work under ``jit`` and ``vmap``. Step sizes and inner products are accumulated
in float32 (float64 for float64 parameters) whatever the parameter dtype, so
bfloat16 parameters and residuals are supported; the iterates are cast back to
each leaf's dtype. Every division is guarded: a vanishing gradient or a
vanishing curvature gives a zero step instead of NaN.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu
from jax import lax
from jaxtyping import Array, Float, PyTree

from vosjax.errors import VosjaxError

__all__ = ["gauss_newton_cg", "steepest_descent", "sum_of_squares"]

ResidualFn = Callable[[PyTree], PyTree]


# -- small pytree algebra (lists of leaves; optax.tree_utils where it has the operation) --------


def _acc_dtype(dtype: Any) -> Any:
    """Accumulation dtype: float64 for float64 leaves, float32 otherwise."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _to_acc(x: list[Array]) -> list[Array]:
    """Each leaf in its accumulation dtype (per leaf, so one float64 leaf keeps the rest f32)."""
    return [u.astype(_acc_dtype(u.dtype)) for u in x]


def _dot(a: list[Array], b: list[Array]) -> Array:
    """sum_leaves <a, b>, accumulated in float32 (or float64)."""
    return otu.tree_vdot(_to_acc(a), _to_acc(b))


def _axpy(alpha: Array, x: list[Array], y: list[Array]) -> list[Array]:
    """alpha * x + y, leafwise, in the dtypes of ``y`` (a loop carry keeps its dtypes)."""
    return otu.tree_cast_like(otu.tree_add_scale(y, alpha, x), y)


def _safe_div(num: Array, den: Array) -> Array:
    """num / den, and 0 where den is not positive (no NaN in values or gradients)."""
    ok = den > jnp.finfo(den.dtype).tiny
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


# -- the problem: trainable leaves, weighted residual leaves ----------------------------------


def _static_count(fn: str, name: str, value: Any) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise VosjaxError(
            f"{fn}: '{name}' must be a static Python int (a loop trip count), got {value!r}; "
            "pass it as a static argument under jit."
        ) from None
    if n < 0:
        raise VosjaxError(f"{fn}: '{name}' must be >= 0, got {n}.")
    return n


class _Problem:
    """``f(x) -> weighted residual leaves`` over the list ``x`` of trainable leaves."""

    def __init__(
        self,
        fn: str,
        residual_fn: ResidualFn,
        params: PyTree,
        weights: PyTree | None,
        trainable: PyTree | None,
    ):
        if not callable(residual_fn):
            raise VosjaxError(
                f"{fn}: 'residual_fn' must be a callable params -> residuals, got {residual_fn!r}."
            )
        leaves, self.treedef = jax.tree_util.tree_flatten(params)
        if not leaves:
            raise VosjaxError(
                f"{fn}: 'params' has no array leaves; pass the pytree of parameters to fit."
            )
        leaves = [jnp.asarray(p) for p in leaves]
        for i, p in enumerate(leaves):
            if not jnp.issubdtype(p.dtype, jnp.floating):
                raise VosjaxError(
                    f"{fn}: every leaf of 'params' must be floating point; leaf {i} has dtype {p.dtype}."
                )
        self.mask = self._trainable_mask(fn, trainable, params, len(leaves))
        self.leaves = leaves
        self.x0 = [p for p, m in zip(leaves, self.mask) if m]
        self.residual_fn = residual_fn

        out = jax.eval_shape(lambda x: residual_fn(self.merge(x)), self.x0)
        out_leaves, out_tree = jax.tree_util.tree_flatten(out)
        if not out_leaves:
            raise VosjaxError(
                f"{fn}: 'residual_fn' returned no arrays; it must return an array or a pytree of arrays."
            )
        for i, r in enumerate(out_leaves):
            if not jnp.issubdtype(r.dtype, jnp.floating):
                raise VosjaxError(
                    f"{fn}: residual leaf {i} has dtype {r.dtype}; residuals must be floating point."
                )
        self.weights = None
        if weights is not None:
            w_leaves, w_tree = jax.tree_util.tree_flatten(weights)
            if w_tree != out_tree:
                raise VosjaxError(
                    f"{fn}: 'weights' must have the structure of the residuals ({out_tree}), got {w_tree}."
                )
            for i, (w, r) in enumerate(zip(w_leaves, out_leaves)):
                try:
                    np.broadcast_shapes(np.shape(w), r.shape)
                except ValueError:
                    raise VosjaxError(
                        f"{fn}: weight leaf {i} of shape {np.shape(w)} does not broadcast to its residual {r.shape}."
                    ) from None
            self.weights = w_leaves

    @staticmethod
    def _trainable_mask(fn: str, trainable: PyTree | None, params: PyTree, n: int) -> list[bool]:
        if trainable is None:
            return [True] * n
        try:
            full = jax.tree_util.tree_map(
                lambda t, sub: jax.tree_util.tree_map(lambda _: bool(t), sub), trainable, params
            )
        except (ValueError, TypeError, jax.errors.ConcretizationTypeError) as e:
            raise VosjaxError(
                f"{fn}: 'trainable' must be a pytree prefix of 'params' with static Python bools "
                f"(e.g. {{'w1': False, 'w2': True}}): {e}"
            ) from None
        mask = jax.tree_util.tree_leaves(full)
        if not any(mask):
            raise VosjaxError(
                f"{fn}: 'trainable' marks no leaf as trainable; set at least one to True."
            )
        return mask

    def merge(self, x: list[Array]) -> PyTree:
        it = iter(x)
        full = [next(it) if m else p for p, m in zip(self.leaves, self.mask)]
        return jax.tree_util.tree_unflatten(self.treedef, full)

    def f(self, x: list[Array]) -> list[Array]:
        res = jax.tree_util.tree_leaves(self.residual_fn(self.merge(x)))
        if self.weights is not None:
            res = otu.tree_cast_like(otu.tree_mul(res, self.weights), res)
        return res

    def loss(self, x: list[Array]) -> Array:
        r = self.f(x)
        return 0.5 * _dot(r, r)

    def linearize(self, x: list[Array]):
        """Residuals r, ``p -> J p`` and ``u -> J^T u`` (acc-dtype in, acc-dtype out)."""
        r, jvp = jax.linearize(self.f, x)
        vjp = jax.linear_transpose(jvp, x)

        def jmv(p: list[Array]) -> list[Array]:
            return _to_acc(jvp(otu.tree_cast_like(p, x)))

        def jtmv(u: list[Array]) -> list[Array]:
            return _to_acc(vjp(otu.tree_cast_like(u, r))[0])

        return r, jmv, jtmv


def _finish(problem: _Problem, x: list[Array], losses: Array | None, return_losses: bool):
    """Rebuild the params; append the final loss to the per-step losses if asked."""
    params = problem.merge(x)
    if not return_losses:
        return params
    final = problem.loss(x)[None]
    if losses is None:
        return params, final
    return params, jnp.concatenate([losses.astype(final.dtype), final])


def sum_of_squares(
    residual_fn: ResidualFn, params: PyTree, weights: PyTree | None = None
) -> Float[Array, ""]:
    """The objective both optimizers minimise: ``0.5 * sum_i |c_i * r_i(params)|^2``."""
    problem = _Problem("sum_of_squares", residual_fn, params, weights, None)
    return problem.loss(problem.x0)


# -- steepest descent -------------------------------------------------------------------------


def steepest_descent(
    residual_fn: ResidualFn,
    params: PyTree,
    num_iters: int,
    *,
    weights: PyTree | None = None,
    trainable: PyTree | None = None,
    return_losses: bool = False,
) -> PyTree | tuple[PyTree, Float[Array, " steps"]]:
    """Minimise ``0.5 |c * r(w)|^2`` by steepest descent with Gauss-Newton step length.

    Each of the ``num_iters`` steps (LWL; JOINT sec. 3.3)::

        g     = J^T r                      (one vjp)
        alpha = |g|^2 / |J g|^2            (one jvp; 0 where J g = 0)
        w    <- w - alpha * g

    ``alpha`` minimises the Gauss-Newton model ``0.5 |r - alpha J g|^2`` along
    ``-g``; for affine residuals it is the exact line minimum, so the loss
    decreases monotonically.

    Args:
      residual_fn: ``params -> residuals`` (an array or a pytree of arrays),
        differentiable; it may close over traced values (features, labels,
        learned regularisation), and gradients flow to them.
      params: initial parameters, any pytree of floating arrays.
      num_iters: number of steps (static int).
      weights: optional per-residual weights ``c``, a pytree with the
        structure of the residuals whose leaves broadcast to them.
      trainable: optional pytree prefix of ``params`` with Python bools;
        leaves marked False are held fixed (returned unchanged).
      return_losses: also return ``f32[num_iters + 1]``: the loss before each
        step and after the last one.

    Returns:
      The optimised params (same structure and dtypes), and the losses if asked.
    """
    fn = "steepest_descent"
    n = _static_count(fn, "num_iters", num_iters)
    problem = _Problem(fn, residual_fn, params, weights, trainable)

    def step(x, _):
        r, jmv, jtmv = problem.linearize(x)
        g = jtmv(r)
        jg = jmv(g)
        alpha = _safe_div(_dot(g, g), _dot(jg, jg))
        x_acc = otu.tree_cast_like(x, g)
        x = otu.tree_cast_like(otu.tree_sub(x_acc, otu.tree_scale(alpha, g)), x)
        return x, 0.5 * _dot(r, r)

    x, losses = lax.scan(step, problem.x0, None, length=n)
    return _finish(problem, x, losses, return_losses)


# -- Gauss-Newton with conjugate gradient -----------------------------------------------------


def _conjugate_gradient(
    jmv: Callable[[list[Array]], list[Array]],
    jtmv: Callable[[list[Array]], list[Array]],
    b: list[Array],
    num_cg: int,
    precond: list[Array] | None = None,
) -> list[Array]:
    """``num_cg`` CG iterations on the normal equations ``J^T J d = b`` from ``d = 0``.

    Without ``precond``: Hestenes-Stiefel recursion with the curvature computed
    as ``|J p|^2`` (a sum of squares, free of the cancellation in ``p . J^T J p``).
    With ``precond`` (the diagonal ``M`` per trainable leaf, broadcast to it):
    preconditioned CG with ``z = r / M``, ``rho = r . z``, Polak-Ribiere
    ``beta = max(0, (rho_new - r_old . z_new) / rho_old)`` and
    ``alpha = rho / |J p|^2`` (FRTM's optimiser, frtm-vos ``model/optimizer.py``
    ``GaussNewtonCG.run_CG`` with ``fletcher_reeves=False``, ``standard_alpha=True``
    and ``DiscriminatorLoss.M1 = x / diag_M``). An iteration whose residual is
    already at the floating-point floor or whose direction has no curvature
    leaves the state unchanged, so surplus iterations are harmless.
    """
    rr0 = _dot(b, b)
    floor = jnp.finfo(rr0.dtype).eps ** 2 * rr0
    if precond is None:
        def body(state, _):
            d, r, p, rr = state
            jp = jmv(p)
            ap = jtmv(jp)
            pap = _dot(jp, jp)
            active = (rr > floor) & (pap > jnp.finfo(pap.dtype).tiny)
            alpha = _safe_div(rr, pap)
            d_new = _axpy(alpha, p, d)
            r_new = _axpy(-alpha, ap, r)
            rr_new = _dot(r_new, r_new)
            beta = _safe_div(rr_new, rr)
            p_new = _axpy(beta, p, r_new)
            state = otu.tree_where(active, (d_new, r_new, p_new, rr_new), state)
            return state, None

        zeros = otu.tree_zeros_like(b)
        (d, _, _, _), _ = lax.scan(body, (zeros, b, b, rr0), None, length=num_cg)
        return d

    inv = [jnp.asarray(1.0, u.dtype) / jnp.asarray(m, u.dtype) for u, m in zip(b, precond)]
    apply_m = lambda r: [ri * mi for ri, mi in zip(r, inv)]

    def pbody(state, _):
        d, r, p, rho = state
        jp = jmv(p)
        ap = jtmv(jp)
        pap = _dot(jp, jp)
        active = (_dot(r, r) > floor) & (pap > jnp.finfo(pap.dtype).tiny)
        alpha = _safe_div(rho, pap)
        d_new = _axpy(alpha, p, d)
        r_new = _axpy(-alpha, ap, r)
        z_new = apply_m(r_new)
        rho_new = _dot(r_new, z_new)
        beta = jnp.maximum(_safe_div(rho_new - _dot(r, z_new), rho), 0.0)
        p_new = _axpy(beta, p, z_new)
        state = otu.tree_where(active, (d_new, r_new, p_new, rho_new), state)
        return state, None

    zeros = otu.tree_zeros_like(b)
    z0 = apply_m(b)
    (d, _, _, _), _ = lax.scan(pbody, (zeros, b, z0, _dot(b, z0)), None, length=num_cg)
    return d


def _cg_schedule(fn: str, num_gn: int, num_cg: int | Sequence[int]) -> list[tuple[int, int]]:
    """Run-length encode the CG counts per GN step: [(num_cg, num_steps), ...]."""
    if isinstance(num_cg, (list, tuple)):
        counts = [_static_count(fn, f"num_cg[{i}]", c) for i, c in enumerate(num_cg)]
        if len(counts) != num_gn:
            raise VosjaxError(
                f"{fn}: 'num_cg' lists {len(counts)} CG counts but num_gn={num_gn}; give one per GN step or one int."
            )
    else:
        counts = [_static_count(fn, "num_cg", num_cg)] * num_gn
    runs: list[tuple[int, int]] = []
    for c in counts:
        if runs and runs[-1][0] == c:
            runs[-1] = (c, runs[-1][1] + 1)
        else:
            runs.append((c, 1))
    return runs


def gauss_newton_cg(
    residual_fn: ResidualFn,
    params: PyTree,
    num_gn: int,
    num_cg: int | Sequence[int],
    *,
    weights: PyTree | None = None,
    trainable: PyTree | None = None,
    precond: PyTree | None = None,
    return_losses: bool = False,
) -> PyTree | tuple[PyTree, Float[Array, " steps"]]:
    """Minimise ``0.5 |c * r(w)|^2`` by Gauss-Newton steps solved with CG (FRTM eq. 3).

    Each of the ``num_gn`` steps linearises ``r(w + dw) ~ r + J dw`` and
    approximately minimises the quadratic model

        dw^T J^T J dw + 2 dw^T J^T r + r^T r

    i.e. solves ``(J^T J) dw = -J^T r`` with ``num_cg`` conjugate-gradient
    iterations from ``dw = 0`` (each costs one Jacobian-vector and one
    vector-Jacobian product), then ``w <- w + dw``. With affine residuals and
    ``num_cg >= dim(w)`` one step reaches the least-squares solution (exact
    arithmetic).

    Args:
      residual_fn: ``params -> residuals`` (array or pytree), as in
        :func:`steepest_descent`.
      params: initial parameters, any pytree of floating arrays.
      num_gn: number of Gauss-Newton steps (static int).
      num_cg: CG iterations per GN step: one static int, or a sequence of
        ``num_gn`` ints (FRTM's first fit uses ``(5, 10, 10, 10, 10)``).
      precond: optional diagonal preconditioner ``M``: a pytree with the
        structure of ``params`` whose leaves broadcast to them (FRTM: one
        scalar per weight); CG then works on ``M^-1 J^T J`` (see
        :func:`_conjugate_gradient`). Leaves of fixed params are ignored.
      weights: optional per-residual weights ``c`` (structure of the residuals).
      trainable: optional pytree prefix of ``params`` with Python bools; only
        leaves marked True are optimised (FRTM's update: ``{"w1": False, "w2": True}``).
      return_losses: also return ``f32[num_gn + 1]``: the loss before each GN
        step and after the last one.

    Returns:
      The optimised params (same structure and dtypes), and the losses if asked.
    """
    fn = "gauss_newton_cg"
    n = _static_count(fn, "num_gn", num_gn)
    runs = _cg_schedule(fn, n, num_cg)
    problem = _Problem(fn, residual_fn, params, weights, trainable)
    pre = None
    if precond is not None:
        p_leaves, p_tree = jax.tree_util.tree_flatten(precond)
        if p_tree != problem.treedef:
            raise VosjaxError(
                f"{fn}: 'precond' must have the structure of 'params' ({problem.treedef}), got {p_tree}."
            )
        pre = [jnp.asarray(m) for m, t in zip(p_leaves, problem.mask) if t]

    def make_step(cg_iters: int):
        def step(x, _):
            r, jmv, jtmv = problem.linearize(x)
            b = otu.tree_scale(-1.0, jtmv(r))
            dw = _conjugate_gradient(jmv, jtmv, b, cg_iters, pre)
            x = otu.tree_cast_like(otu.tree_add(otu.tree_cast_like(x, dw), dw), x)
            return x, 0.5 * _dot(r, r)

        return step

    x = problem.x0
    losses = []
    for cg_iters, steps in runs:
        x, run_losses = lax.scan(make_step(cg_iters), x, None, length=steps)
        losses.append(run_losses)
    all_losses = jnp.concatenate(losses) if losses else None
    return _finish(problem, x, all_losses, return_losses)
