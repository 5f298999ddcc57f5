"""Tests of vosjax.learners.optimizers: steepest descent and Gauss-Newton-CG.

References are closed-form least-squares solutions (numpy.linalg.solve of the
normal equations) and plain NumPy loops of the two recursions.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vosjax.errors import VosjaxError
from vosjax.learners import gauss_newton_cg, steepest_descent, sum_of_squares

M, NA, NB = 24, 5, 3  # residuals, and the two parameter leaves
N = NA + NB


def make_problem(seed: int, cond: float = 1.0):
    """A random ridge problem: residual [A p - b, sqrt(lam) p] with p = concat(a, b_)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(M, N)))
    v, _ = np.linalg.qr(rng.normal(size=(N, N)))
    s = np.geomspace(1.0, 1.0 / cond, N)
    a = (u * s) @ v.T * 3.0
    y = rng.normal(size=M)
    lam = rng.uniform(0.05, 0.5)
    return a.astype(np.float32), y.astype(np.float32), np.float32(lam)


def residual_fn(a, y, lam):
    def r(p):
        w = jnp.concatenate([p["a"], p["b"]])
        return {"data": a @ w - y, "reg": jnp.sqrt(lam) * w}

    return r


def ridge_solution(a, y, lam, c=None):
    a64, y64 = a.astype(np.float64), y.astype(np.float64)
    c2 = np.ones(M) if c is None else np.asarray(c, np.float64) ** 2
    return np.linalg.solve(a64.T @ (c2[:, None] * a64) + lam * np.eye(N), a64.T @ (c2 * y64))


def zeros_params(dtype=jnp.float32):
    return {"a": jnp.zeros(NA, dtype), "b": jnp.zeros(NB, dtype)}


def flat(p):
    return np.concatenate([np.asarray(p["a"], np.float64), np.asarray(p["b"], np.float64)])


@functools.partial(jax.jit, static_argnames=("num_gn", "num_cg"))
def run_gn(a, y, lam, p0, num_gn, num_cg):
    return gauss_newton_cg(residual_fn(a, y, lam), p0, num_gn, num_cg, return_losses=True)


@functools.partial(jax.jit, static_argnames=("num_iters",))
def run_sd(a, y, lam, p0, num_iters):
    return steepest_descent(residual_fn(a, y, lam), p0, num_iters, return_losses=True)


def numpy_cg(amat, rhs, iters):
    """Textbook CG from zero, in float64."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    p = r.copy()
    for _ in range(iters):
        ap = amat @ p
        alpha = (r @ r) / (p @ ap)
        x = x + alpha * p
        r_new = r - alpha * ap
        beta = (r_new @ r_new) / (r @ r)
        p = r_new + beta * p
        r = r_new
    return x


# -- convergence to the closed form ----------------------------------------------------------


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1))
def test_gauss_newton_cg_solves_linear_problem_in_one_step(seed):
    a, y, lam = make_problem(seed, cond=10.0)
    # N iterations are exact in exact arithmetic; float32 CG needs a few more to reach 1e-4
    p, losses = run_gn(a, y, lam, zeros_params(), num_gn=1, num_cg=2 * N)
    want = ridge_solution(a, y, lam)
    np.testing.assert_allclose(flat(p), want, rtol=2e-4, atol=2e-4)
    # the loss reported after the step is the minimum of the quadratic
    a64 = a.astype(np.float64)
    fmin = 0.5 * (np.sum((a64 @ want - y) ** 2) + lam * np.sum(want**2))
    np.testing.assert_allclose(losses, [0.5 * np.sum(y.astype(np.float64) ** 2), fmin], rtol=1e-4)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1))
def test_cg_iterations_match_numpy_cg(seed):
    """Fewer CG iterations than unknowns: the GN step is exactly k steps of textbook CG."""
    a, y, lam = make_problem(seed, cond=5.0)
    a64 = a.astype(np.float64)
    x0 = np.random.default_rng(seed + 1).normal(size=N)
    p0 = {"a": jnp.asarray(x0[:NA], jnp.float32), "b": jnp.asarray(x0[NA:], jnp.float32)}
    p, _ = run_gn(a, y, lam, p0, num_gn=1, num_cg=3)
    hess = a64.T @ a64 + lam * np.eye(N)
    grad = a64.T @ (a64 @ x0 - y) + lam * x0
    want = x0 + numpy_cg(hess, -grad, 3)
    np.testing.assert_allclose(flat(p), want, rtol=1e-4, atol=1e-4)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1))
def test_steepest_descent_converges_monotonically(seed):
    a, y, lam = make_problem(seed, cond=3.0)
    p, losses = run_sd(a, y, lam, zeros_params(), num_iters=150)
    np.testing.assert_allclose(flat(p), ridge_solution(a, y, lam), rtol=1e-3, atol=1e-3)
    losses = np.asarray(losses)
    assert losses.shape == (151,)
    assert np.all(np.diff(losses) <= 1e-6 * losses[0]), "steepest descent loss increased"
    assert losses[-1] < losses[0]


def test_steepest_descent_step_matches_numpy():
    a, y, lam = make_problem(3, cond=4.0)
    a64 = a.astype(np.float64)
    x = np.zeros(N)
    for _ in range(4):
        g = a64.T @ (a64 @ x - y) + lam * x
        jg2 = np.sum((a64 @ g) ** 2) + lam * np.sum(g**2)
        x = x - (g @ g) / jg2 * g
    p, _ = run_sd(a, y, lam, zeros_params(), num_iters=4)
    np.testing.assert_allclose(flat(p), x, rtol=1e-4, atol=1e-5)


def test_cg_schedule_runs_in_order():
    """num_cg=(3, 2N) is one GN step with 3 CG iterations, then one with 2N (same compiled pieces as above)."""
    a, y, lam = make_problem(5, cond=30.0)
    p2, l2 = run_gn(a, y, lam, zeros_params(), num_gn=2, num_cg=(3, 2 * N))
    p1, l1 = run_gn(a, y, lam, zeros_params(), num_gn=1, num_cg=3)
    p1, l1b = run_gn(a, y, lam, p1, num_gn=1, num_cg=2 * N)
    np.testing.assert_allclose(flat(p2), flat(p1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l2, [l1[0], l1[1], l1b[1]], rtol=1e-5)
    assert l1[1] > l1b[1] + 1e-3  # the first step alone had not converged


# -- options: per-residual weights, trainable leaves ------------------------------------------


def test_weights_give_weighted_least_squares():
    a, y, lam = make_problem(7, cond=5.0)
    c = np.random.default_rng(0).uniform(0.2, 2.0, size=M).astype(np.float32)
    weights = {"data": c, "reg": 1.0}

    @jax.jit
    def solve(a, y, lam, c):
        return gauss_newton_cg(
            residual_fn(a, y, lam), zeros_params(), 1, N, weights={"data": c, "reg": 1.0}
        )

    np.testing.assert_allclose(
        flat(solve(a, y, lam, c)), ridge_solution(a, y, lam, c), rtol=3e-4, atol=3e-4
    )
    loss = sum_of_squares(residual_fn(a, y, lam), zeros_params(), weights)
    np.testing.assert_allclose(loss, 0.5 * np.sum((c * y) ** 2), rtol=1e-5)


@pytest.mark.parametrize("method", ["gn", "sd"])
def test_frozen_leaves_stay_fixed_and_rest_is_optimal(method):
    a, y, lam = make_problem(11, cond=3.0)
    a0 = np.random.default_rng(1).normal(size=NA).astype(np.float32)
    p0 = {"a": jnp.asarray(a0), "b": jnp.zeros(NB)}
    if method == "gn":
        p = gauss_newton_cg(residual_fn(a, y, lam), p0, 1, NB, trainable={"a": False, "b": True})
    else:
        p = steepest_descent(residual_fn(a, y, lam), p0, 200, trainable={"a": False, "b": True})
    np.testing.assert_array_equal(np.asarray(p["a"]), a0)
    a64 = a.astype(np.float64)
    ab = a64[:, NA:]
    want = np.linalg.solve(ab.T @ ab + lam * np.eye(NB), ab.T @ (y - a64[:, :NA] @ a0))
    np.testing.assert_allclose(np.asarray(p["b"]), want, rtol=5e-4, atol=5e-4)


# -- robustness: vanishing gradients, jit / vmap, bfloat16 -----------------------------------


def test_start_at_optimum_stays():
    a, y, lam = make_problem(4, cond=2.0)
    sol = ridge_solution(a, y, lam)
    p0 = {"a": jnp.asarray(sol[:NA], jnp.float32), "b": jnp.asarray(sol[NA:], jnp.float32)}
    p_gn, _ = run_gn(a, y, lam, p0, num_gn=1, num_cg=2 * N)
    p_sd, _ = run_sd(a, y, lam, p0, num_iters=150)
    np.testing.assert_allclose(flat(p_gn), sol, atol=1e-5)
    np.testing.assert_allclose(flat(p_sd), sol, atol=1e-5)


def test_vmap_over_problems_matches_loop():
    """One learner per problem, batched: equals solving each problem on its own."""
    probs = [make_problem(s, cond=4.0) for s in (20, 21, 22)]
    a, y, lam = (np.stack([p[i] for p in probs]) for i in range(3))
    p0 = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3), zeros_params())

    @jax.jit
    @jax.vmap
    def both(a, y, lam, p):
        return run_gn(a, y, lam, p, 1, 2 * N), run_sd(a, y, lam, p, 150)

    (p_gn, l_gn), (p_sd, l_sd) = both(a, y, lam, p0)
    for i, (ai, yi, li) in enumerate(probs):
        pick = functools.partial(jax.tree_util.tree_map, lambda x, i=i: x[i])
        one_gn, one_l_gn = run_gn(ai, yi, li, zeros_params(), num_gn=1, num_cg=2 * N)
        one_sd, one_l_sd = run_sd(ai, yi, li, zeros_params(), num_iters=150)
        np.testing.assert_allclose(flat(pick(p_gn)), flat(one_gn), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(flat(pick(p_sd)), flat(one_sd), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(l_gn[i], one_l_gn, rtol=1e-5)
        np.testing.assert_allclose(l_sd[i], one_l_sd, rtol=1e-5)
        np.testing.assert_allclose(
            flat(pick(p_gn)), ridge_solution(ai, yi, li), rtol=3e-4, atol=3e-4
        )


@pytest.mark.parametrize("method", ["gn", "sd"])
def test_bfloat16_params_and_residuals(method):
    a, y, lam = make_problem(9, cond=2.0)
    bf = jnp.bfloat16

    def r(p):
        w = jnp.concatenate([p["a"], p["b"]])
        return {
            "data": jnp.asarray(a, bf) @ w - jnp.asarray(y, bf),
            "reg": jnp.asarray(np.sqrt(lam), bf) * w,
        }

    p0 = zeros_params(bf)
    if method == "gn":
        p, losses = gauss_newton_cg(r, p0, 2, N, return_losses=True)
    else:
        p, losses = steepest_descent(r, p0, 40, return_losses=True)
    assert p["a"].dtype == bf and p["b"].dtype == bf
    assert losses.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(losses)))
    sol = ridge_solution(a, y, lam)
    a64 = a.astype(np.float64)
    fmin = 0.5 * (np.sum((a64 @ sol - y) ** 2) + lam * np.sum(sol**2))
    assert float(losses[-1]) < fmin + 0.02 * (float(losses[0]) - fmin)
    np.testing.assert_allclose(flat(p), sol, atol=0.05 * np.abs(sol).max())


# -- gradients through the unrolled optimisation ---------------------------------------------


@pytest.mark.parametrize("method", ["gn", "sd"])
def test_gradients_through_learner_match_finite_differences(method):
    """d(solution)/d(matrix, labels, regularisation, init) of a nonlinear problem, in float64.

    Also: at a zero residual (y = 0, start at w = 0, the optimum) the learner
    returns exactly its input and the gradient has no NaN (guarded divisions).
    """
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):  # all arguments are float64 NumPy arrays: one compilation each
        args = (rng.normal(size=(10, 4)), rng.normal(size=10), np.float64(0.3), np.full((4,), 0.1))
        probe = rng.normal(size=(4,))

        @jax.jit
        def solve(a, y, lam, w0):
            def r(p):  # nonlinear in the params: tanh features, ridge with learned lambda
                return [jnp.tanh(a @ p["w"]) * 2.0 - y, jnp.sqrt(lam) * p["w"]]

            if method == "gn":
                p = gauss_newton_cg(r, {"w": w0}, 2, 3)
            else:
                p = steepest_descent(r, {"w": w0}, 4)
            return jnp.dot(p["w"], probe)

        grad = jax.jit(jax.grad(solve, argnums=(0, 1, 2, 3)))
        g = [np.asarray(x) for x in grad(*args)]
        h = 1e-6
        for _ in range(4):  # central differences along random directions
            d = [rng.normal(size=np.shape(x)) for x in args]
            plus = float(solve(*[x + h * u for x, u in zip(args, d)]))
            minus = float(solve(*[x - h * u for x, u in zip(args, d)]))
            fd = (plus - minus) / (2 * h)
            an = sum(float(np.vdot(gi, u)) for gi, u in zip(g, d))
            np.testing.assert_allclose(an, fd, rtol=1e-6, atol=1e-8)

        zero = (args[0], np.zeros(10), args[2], np.zeros(4))
        assert float(solve(*zero)) == 0.0
        assert all(np.all(np.isfinite(np.asarray(gi))) for gi in grad(*zero))


# -- argument checking -------------------------------------------------------------------------


def test_bad_arguments_raise_vosjax_error():
    a, y, lam = make_problem(0)
    r = residual_fn(a, y, lam)
    with pytest.raises(VosjaxError, match="num_iters"):
        steepest_descent(r, zeros_params(), 2.5)
    with pytest.raises(VosjaxError, match="num_gn"):
        gauss_newton_cg(r, zeros_params(), -1, 3)
    with pytest.raises(VosjaxError, match="num_cg"):
        gauss_newton_cg(r, zeros_params(), 3, (5, 10))
    with pytest.raises(VosjaxError, match="trainable"):
        gauss_newton_cg(r, zeros_params(), 1, 3, trainable={"a": False, "b": False})
    with pytest.raises(VosjaxError, match="trainable"):
        gauss_newton_cg(r, zeros_params(), 1, 3, trainable={"a": False})
    with pytest.raises(VosjaxError, match="weights"):
        gauss_newton_cg(r, zeros_params(), 1, 3, weights={"data": 1.0})
    with pytest.raises(VosjaxError, match="weight leaf"):
        gauss_newton_cg(r, zeros_params(), 1, 3, weights={"data": np.ones(M + 1), "reg": 1.0})
    with pytest.raises(VosjaxError, match="floating"):
        steepest_descent(lambda p: p["a"], {"a": jnp.zeros(3, jnp.int32)}, 1)
    with pytest.raises(VosjaxError, match="residual_fn"):
        steepest_descent(None, zeros_params(), 1)
    with pytest.raises(VosjaxError, match="params"):
        steepest_descent(r, {}, 1)
