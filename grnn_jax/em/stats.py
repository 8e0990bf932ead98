"""The E-step as one pass over the data that returns sufficient statistics.

The data arrive standardised and column-major with a row of ones appended,
``xt1 (D+1, N)`` (:func:`~grnn_jax.em.blocks.block_columns`). The pass never
stores the ``N x K`` responsibilities: a ``lax.scan`` over blocks of R columns
computes each block's features ``phi (F, R)`` (:mod:`grnn_jax.em.features`)
and its log-densities (one matmul, :mod:`grnn_jax.em.log_joint`), turns them
into responsibilities ``(K, R)`` and immediately folds them into the M-step
sums ``phi @ resp^T``: counts, first and second moments in one matmul. For
full covariance the second moments are the ``D(D+1)/2`` distinct products
``z_i z_j``, half the flops of the full outer products; when D > 2K, one
``(K*D, R) @ (R, D)`` matmul on responsibility-weighted rows is faster than
building them.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax import lax

from grnn_jax.gmm import GMM, check_covariance_type, log_weights, precision_cholesky
from grnn_jax.em.blocks import data_columns, default_block_size, map_reduce
from grnn_jax.gmm.standardise import Standardiser
from grnn_jax.em.features import n_stat_features, split_sums, stat_features, uses_packed_moments
from grnn_jax.em.log_joint import (
    HIGHEST,
    QUAD_FORM_TOL,
    branch,
    error_bound,
    has_quadratic_form,
    projection_log_joint,
    quadratic_form,
    quadratic_log_joint,
)


class SufficientStats(NamedTuple):
    """Responsibility-weighted sums that determine the M-step.

    A pytree of arrays: statistics of disjoint chunks (or devices) add up with
    ``jax.tree.map(jnp.add, a, b)`` or ``lax.psum``.

    Attributes:
      n: (K,) ``sum_i w_i r_ik``.
      sx: (K, D) ``sum_i w_i r_ik x_i``.
      sxx: second moments about the origin, shaped by covariance type: full
        (K, D, D) ``sum_i w_i r_ik x_i x_i^T``; tied (D, D) ``sum_i w_i x_i x_i^T``;
        diag (K, D) ``sum_i w_i r_ik x_i**2``; spherical (K,) ``sum_i w_i r_ik |x_i|^2``.
    """

    n: jax.Array
    sx: jax.Array
    sxx: jax.Array


def accumulate(resp_fn, xt1, w, n_components: int, ctype: str, block_size: int):
    """Sufficient statistics (in the coordinates of ``xt1``) for any responsibilities.

    Args:
      resp_fn: ``resp_fn(zt1 (D+1, R), phi (F, R), start) -> (resp (K, R), ll (R,))``
        on a block of columns and its
        :func:`~grnn_jax.em.features.stat_features`; ``ll`` is each row's
        log-likelihood (or zeros).
      xt1: (D+1, N) standardised rows as columns plus a row of ones
        (:func:`~grnn_jax.em.blocks.block_columns`).
      w: (N,) weights or None.
      ctype: a covariance type, or "means" for first moments only (k-means).

    Returns:
      ``(SufficientStats, ll_sum)`` with ``ll_sum = sum_i w_i ll_i``.
    """
    d = xt1.shape[0] - 1
    k = n_components
    dtype = xt1.dtype
    batched_outer = ctype == "full" and not uses_packed_moments(d, k)

    def fn(carry, zt1, wb, start):
        # Copy the strided block once: fused into its consumers it would be
        # re-read for each feature and matmul tile.
        zt1 = lax.optimization_barrier(zt1)
        phi = stat_features(zt1, ctype, k)
        resp, ll = resp_fn(zt1, phi, start)
        # Zero-weight rows are zero columns, so their responsibilities are
        # finite and a product drops them; their log-likelihood may be -inf.
        resp = resp * wb
        ll = jnp.where(wb > 0, ll * wb, 0.0)
        s, sxx_acc, ll_sum = carry
        s = s + jnp.matmul(phi, resp.T, precision=HIGHEST)
        zt = zt1[:d]
        if ctype == "tied":
            sxx_acc = sxx_acc + jnp.matmul(zt * wb, zt.T, precision=HIGHEST)
        elif batched_outer:
            # One (K*D, R) @ (R, D) matmul: 1.2x faster than the batched einsum.
            weighted = (resp[:, None, :] * zt).reshape(k * d, -1)
            sxx_acc = sxx_acc + jnp.matmul(weighted, zt.T, precision=HIGHEST).reshape(k, d, d)
        return (s, sxx_acc, ll_sum + jnp.sum(ll)), None

    acc_shape = {"tied": (d, d)}.get(ctype, (k, d, d) if batched_outer else (0,))
    init = (
        jnp.zeros((n_stat_features(d, ctype, k), k), dtype),
        jnp.zeros(acc_shape, dtype),
        jnp.zeros((), dtype),
    )
    (s, sxx_acc, ll_sum), _ = map_reduce(fn, init, xt1, w, block_size, axis=1)
    n, sx, sxx = split_sums(s.T, d, ctype, k)
    if ctype == "tied" or batched_outer:
        sxx = 0.5 * (sxx_acc + jnp.swapaxes(sxx_acc, -1, -2))
    elif sxx is None:  # "means": first moments only (k-means)
        sxx = jnp.zeros((0,), dtype)
    return SufficientStats(n, sx, sxx), ll_sum


def posterior_fn(log_joint, prior: jax.Array):
    """``(zt1, phi, start) -> (resp (K, R), ll (R,))`` from ``log_joint(zt1, phi) (K, R)``.

    Rows that no component can explain (every log-joint -inf) get the prior
    ``exp(prior)`` as responsibilities and log-likelihood -inf.
    """

    prior_probs = jnp.exp(prior)[:, None]

    def resp_fn(zt1, phi, start):
        # A hand-written logsumexp that reuses its exponentials for the
        # responsibilities: per block, every elementwise pass over (K, R) counts.
        joint = log_joint(zt1, phi)
        top = jnp.max(joint, axis=0, keepdims=True)
        top = jnp.where(jnp.isfinite(top), top, 0.0)
        e = jnp.exp(joint - top)
        total = jnp.sum(e, axis=0, keepdims=True)
        resp = jnp.where(total > 0, e / total, prior_probs)
        return resp, (top + jnp.log(total))[0]

    return resp_fn


def e_step_std(g: GMM, xt1, w, block_size: int, sq_norm):
    """E-step on the columns ``xt1 (D+1, N)`` (:func:`~grnn_jax.em.blocks.block_columns`), in their coordinates.

    ``sq_norm`` () bounds the squared norm of every column (see
    :func:`~grnn_jax.em.blocks.max_sq_norm`): with it, the log-densities take
    the fast quadratic form where its rounding-error bound is below
    :data:`~grnn_jax.em.log_joint.QUAD_FORM_TOL`, and the
    projection form otherwise (:mod:`grnn_jax.em.log_joint`).
    """
    k, ctype = g.n_components, g.covariance_type

    def run(log_joint_of):
        def with_operands(ops):
            g, form, xt1, w = ops
            resp_fn = posterior_fn(log_joint_of(g, form), log_weights(g))
            return accumulate(resp_fn, xt1, w, k, ctype, block_size)

        return with_operands

    def projection(g, form):
        log_joint = projection_log_joint(g)
        return lambda zt1, phi: log_joint(zt1)

    def quadratic(g, form):
        log_joint = quadratic_log_joint(form)
        return lambda zt1, phi: log_joint(phi)

    if not has_quadratic_form(g):
        return run(projection)((g, None, xt1, w))
    form = quadratic_form(g)
    ok = error_bound(form, sq_norm) <= QUAD_FORM_TOL
    return branch(ok, run(quadratic), run(projection), (g, form, xt1, w))


def _shift_stats(stats: SufficientStats, r: jax.Array, ctype: str) -> SufficientStats:
    """Statistics of ``x' = x - r`` -> statistics of ``x``."""
    n, sx, sxx = stats
    sx_raw = sx + n[:, None] * r
    if ctype == "full":
        cross = sx[:, :, None] * r[None, None, :]
        sxx = sxx + cross + jnp.swapaxes(cross, 1, 2) + n[:, None, None] * jnp.outer(r, r)
    elif ctype == "tied":
        s1 = jnp.sum(sx, axis=0)
        sxx = sxx + jnp.outer(s1, r) + jnp.outer(r, s1) + jnp.sum(n) * jnp.outer(r, r)
    elif ctype == "diag":
        sxx = sxx + 2.0 * sx * r + n[:, None] * jnp.square(r)
    else:
        sxx = sxx + 2.0 * (sx @ r) + n * jnp.sum(jnp.square(r))
    return SufficientStats(n, sx_raw, sxx)


@functools.partial(jax.jit, static_argnames=("block_size",))
def e_step(g: GMM, x: jax.Array, weights: jax.Array | None = None, *, block_size: int | None = None):
    """One pass over the data: sufficient statistics and the log-likelihood.

    Rows are processed in blocks (see :func:`default_block_size`) of one
    column-major copy of ``x`` ((D+1) x N); the ``N x K`` responsibilities are
    never stored. Log-densities are computed relative to
    the mixture's mean so they stay accurate for data far from the origin; the
    returned statistics are moments about the origin, so for float32 data far
    from the origin centre the data first (:func:`fit` does this itself).

    Args:
      g: mixture (no batch dimensions; ``vmap`` for several).
      x: (N, D) observations.
      weights: optional (N,) non-negative weights; weight 0 ignores a row (its
        values may be anything, NaN included).
      block_size: rows per block; None picks one from D and K.

    Returns:
      ``(stats, ll_sum)``: :class:`SufficientStats` and ``sum_i w_i log p(x_i)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em, gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.array([[-2.0], [2.0]]), jnp.ones((2, 1, 1)), "full")
      >>> stats, ll_sum = em.e_step(g, jnp.array([[-2.0], [2.0], [0.0]]))
      >>> [round(v, 3) for v in stats.n.tolist()]
      [1.5, 1.5]
      >>> new = em.m_step_from_stats(stats, covariance_type="full", reg_covar=1e-6)
      >>> [round(v, 3) for v in new.means[:, 0].tolist()]
      [-1.332, 1.332]
    """
    ctype = g.covariance_type
    d = g.n_features
    bs = block_size or default_block_size(d, g.n_components, ctype)
    x = jnp.asarray(x)
    chex.assert_shape(x, (None, d))
    chex.assert_shape(g.means, (g.n_components, d))
    if weights is not None:
        chex.assert_shape(weights, x.shape[:1])
    dtype = jnp.result_type(x.dtype, g.means.dtype)
    x = x.astype(dtype)
    r = jnp.sum(jnp.exp(log_weights(g))[:, None] * g.means, axis=0).astype(dtype)
    std = Standardiser(r, jnp.ones(d, dtype))
    xt1, sq_norm = data_columns(x, weights, std, bs)
    stats, ll_sum = e_step_std(std.gmm_to(g), xt1, weights, bs, sq_norm)
    return _shift_stats(stats, r, ctype), ll_sum


def m_step_std(stats: SufficientStats, ctype: str, reg_covar) -> GMM:
    """The M-step; ``reg_covar`` is a scalar or a (D,) vector of variance floors."""
    n, sx, sxx = stats
    dtype = sx.dtype
    d = sx.shape[-1]
    reg = jnp.broadcast_to(jnp.asarray(reg_covar, dtype), (d,))
    eps = jnp.finfo(dtype).eps
    nk = n + 10 * eps  # scikit-learn's floor: an empty component stays finite
    mu = sx / nk[:, None]
    # The centred moment written so that it equals scikit-learn's two-pass
    # sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / nk exactly, floor included.
    corr = 2.0 - n / nk
    if ctype == "full":
        outer = mu[:, :, None] * mu[:, None, :]
        cov = sxx / nk[:, None, None] - corr[:, None, None] * outer
        prec_chol = _safe_prec_chol(cov, reg)
    elif ctype == "tied":
        cov = (sxx - jnp.einsum("k,kd,ke->de", nk, mu, mu)) / jnp.sum(nk)
        prec_chol = _safe_prec_chol(cov[None], reg)[0]
    elif ctype == "diag":
        var = jnp.maximum(sxx / nk[:, None] - jnp.square(mu), 0.0) + reg
        prec_chol = lax.rsqrt(var)
    else:
        var = jnp.maximum(sxx / nk - jnp.sum(jnp.square(mu), -1), 0.0) / d + jnp.mean(reg)
        prec_chol = lax.rsqrt(var)
    logits = jnp.log(nk) - jnp.log(jnp.sum(nk))
    return GMM(logits, mu, prec_chol, ctype)


def _safe_prec_chol(cov: jax.Array, reg: jax.Array) -> jax.Array:
    """Cholesky factors of ``cov + diag(reg)``; the documented fallback where it fails.

    One-pass moments can lose positive definiteness to rounding for a component
    that collapsed onto (nearly) one point. Such a component gets the diagonal
    of its covariance (clipped at 0) plus ``reg``, which is positive unless
    ``reg`` is 0.
    """
    d = cov.shape[-1]
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2)) + jnp.diag(reg)
    prec_chol = precision_cholesky(cov, "full")
    bad = ~jnp.all(jnp.isfinite(prec_chol), axis=(-2, -1))
    # With no floor (reg_covar = 0) a failed factor means an ill-defined
    # covariance, which the caller reports (as scikit-learn does), not a
    # fallback; so does one singular at this precision (pivots spanning more
    # than eps**-0.4, condition number above ~4e12 in float64, ~4e5 in
    # float32), which only rounding made factorisable.
    pivots = jnp.abs(jnp.diagonal(prec_chol, axis1=-2, axis2=-1))
    singular = jnp.max(pivots, -1) > jnp.finfo(cov.dtype).eps ** -0.4 * jnp.min(pivots, -1)
    no_floor = ~jnp.all(reg > 0)
    prec_chol = jnp.where((no_floor & singular)[:, None, None], jnp.nan, prec_chol)
    bad = bad & ~no_floor
    diag = jnp.maximum(jnp.diagonal(cov, axis1=-2, axis2=-1), reg)
    fallback = lax.rsqrt(diag)[..., None] * jnp.eye(d, dtype=cov.dtype)
    return jnp.where(bad[:, None, None], fallback, prec_chol)


def m_step_from_stats(stats: SufficientStats, *, covariance_type: str, reg_covar) -> GMM:
    """Closed-form M-step from sufficient statistics, as scikit-learn computes it.

    Equals ``gmm.m_step(x, resp, ...)`` for the responsibilities the statistics
    summarise. Counts are floored at ``10 * eps`` (an empty component keeps a
    negligible weight, its mean at the origin and covariance ``reg_covar``); a
    covariance that rounding made indefinite falls back to its diagonal.

    Args:
      stats: :class:`SufficientStats` (e.g. summed over chunks).
      covariance_type: "full", "diag", "spherical" or "tied"; must match the
        shape of ``stats.sxx``.
      reg_covar: positive variance floor added to the diagonal (scalar or (D,)).

    Returns:
      The new :class:`~grnn_jax.gmm.GMM`.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em
      >>> stats = em.SufficientStats(jnp.array([2.0]), jnp.array([[4.0]]), jnp.array([10.0]))
      >>> g = em.m_step_from_stats(stats, covariance_type="spherical", reg_covar=0.5)
      >>> round(float(g.means[0, 0]), 4), round(float(1 / g.prec_chol[0] ** 2), 4)
      (2.0, 1.5)
    """
    check_covariance_type(covariance_type)
    return m_step_std(stats, covariance_type, reg_covar)
