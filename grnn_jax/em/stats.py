"""The E-step as one pass over the data that returns sufficient statistics.

The pass never stores the ``N x K`` responsibilities: a ``lax.scan`` over row
blocks computes each block's log-densities with one large matmul, turns them into
responsibilities and immediately folds them into the M-step sums. For full
covariance the per-row second moments are the packed upper triangle of
``x x^T`` (``D(D+1)/2`` columns), so ``resp.T @ packed`` costs half the flops of
the full outer products; when D > K, one batched ``(D, R) @ (R, D)`` product per
component is faster than building the packed columns (see ``_packed``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from grnn_jax.gmm import GMM, check_covariance_type, log_weights, precision_cholesky
from grnn_jax.em.blocks import (
    Standardizer,
    default_block_size,
    map_reduce,
    standardize_block,
)

_HI = lax.Precision.HIGHEST  # EM sums need full float32 on accelerators too


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


def _triu(d: int):
    return np.triu_indices(d)


def _packed_outer(x: jax.Array) -> jax.Array:
    """(R, D(D+1)/2) products ``x_i x_j`` for i <= j, row-major over the triangle."""
    d = x.shape[1]
    return jnp.concatenate([x[:, i : i + 1] * x[:, i:] for i in range(d)], axis=1)


def _unpack(packed: jax.Array, d: int) -> jax.Array:
    """(..., D(D+1)/2) -> (..., D, D) symmetric."""
    iu, ju = _triu(d)
    index = np.zeros((d, d), np.int32)
    index[iu, ju] = np.arange(iu.size)
    index[ju, iu] = np.arange(iu.size)
    return packed[..., index]


def _log_joint_fn(g: GMM):
    """A function ``xb (R, D) -> (R, K)`` of ``log pi_k + log N(x | k)``.

    Everything that depends only on the parameters is computed once here, not
    per block; per block there is one matmul.
    """
    ctype = g.covariance_type
    d = g.n_features
    k = g.n_components
    p = g.prec_chol
    mu = g.means
    if ctype in ("full", "tied"):
        log_det = jnp.sum(jnp.log(jnp.diagonal(p, axis1=-2, axis2=-1)), axis=-1)
    elif ctype == "diag":
        log_det = jnp.sum(jnp.log(p), axis=-1)
    else:
        log_det = d * jnp.log(p)
    const = log_weights(g) + log_det - 0.5 * d * math.log(2 * math.pi)

    if ctype == "full":
        # All K factors side by side: one (R, D) @ (D, K*D) matmul per block.
        p_all = jnp.transpose(p, (1, 0, 2)).reshape(d, k * d)
        offset = jnp.einsum("kd,kde->ke", mu, p, precision=_HI).reshape(k * d)

        def log_joint(xb):
            y = jnp.matmul(xb, p_all, precision=_HI) - offset
            maha = jnp.sum(jnp.square(y.reshape(xb.shape[0], k, d)), axis=-1)
            return const - 0.5 * maha

    elif ctype == "tied":
        mp = jnp.matmul(mu, p, precision=_HI)  # (K, D)
        rhs = jnp.concatenate([jnp.eye(d, dtype=p.dtype), -2.0 * mp.T], axis=1)
        mp_sq = jnp.sum(jnp.square(mp), axis=-1)

        def log_joint(xb):
            y = jnp.matmul(xb, jnp.matmul(p, rhs, precision=_HI), precision=_HI)
            yy = jnp.sum(jnp.square(y[:, :d]), axis=-1, keepdims=True)
            maha = jnp.maximum(yy + y[:, d:] + mp_sq, 0.0)
            return const - 0.5 * maha

    else:
        prec = jnp.square(p)  # (K, D) or (K,)
        if ctype == "spherical":
            rhs = jnp.concatenate([prec[None, :], -2.0 * (mu * prec[:, None]).T], axis=0)
            mu_term = jnp.sum(jnp.square(mu), axis=-1) * prec

            def feats(xb):
                return jnp.concatenate([jnp.sum(jnp.square(xb), -1, keepdims=True), xb], axis=1)

        else:
            rhs = jnp.concatenate([prec.T, -2.0 * (mu * prec).T], axis=0)  # (2D, K)
            mu_term = jnp.sum(jnp.square(mu) * prec, axis=-1)

            def feats(xb):
                return jnp.concatenate([jnp.square(xb), xb], axis=1)

        def log_joint(xb):
            maha = jnp.maximum(jnp.matmul(feats(xb), rhs, precision=_HI) + mu_term, 0.0)
            return const - 0.5 * maha

    return log_joint


def _packed(d: int, k: int) -> bool:
    """Whether full-covariance second moments go through the packed triangle.

    Building the ``D(D+1)/2`` packed columns costs the same for any K, while
    the batched ``(D, R) @ (R, D)`` products scale with K; on a 2-core EPYC the
    packed form was faster for D <= K (1.3-2x at D=16, K=32) and the batched
    form for D > K (1.2x at D=64, K=32; 3x at D=64, K=8).
    """
    return d <= k


def _stat_features(xb: jax.Array, ctype: str, k: int = 0) -> jax.Array:
    """Per-row features whose responsibility-weighted sums give ``sx`` and ``sxx``."""
    if ctype == "full" and _packed(xb.shape[1], k):
        return jnp.concatenate([xb, _packed_outer(xb)], axis=1)
    if ctype == "diag":
        return jnp.concatenate([xb, jnp.square(xb)], axis=1)
    if ctype == "spherical":
        return jnp.concatenate([xb, jnp.sum(jnp.square(xb), -1, keepdims=True)], axis=1)
    return xb


def accumulate(resp_fn, x, w, std: Standardizer, n_components: int, ctype: str, block_size: int):
    """Sufficient statistics (in standardised coordinates) for any responsibilities.

    Args:
      resp_fn: ``resp_fn(zb (R, D), start) -> (resp (R, K), ll (R,))`` on
        standardised rows; ``ll`` is each row's log-likelihood (or zeros).
      x, w: raw rows (N, D) and weights (N,) or None.
      std: the coordinates to work in.

    Returns:
      ``(SufficientStats, ll_sum)`` with ``ll_sum = sum_i w_i ll_i``.
    """
    d = x.shape[1]
    k = n_components
    dtype = x.dtype
    n_feat = _stat_features(jnp.zeros((1, d), dtype), ctype, k).shape[1]
    batched_outer = ctype == "full" and not _packed(d, k)

    def fn(carry, xb, wb, start):
        # Materialise the standardised block once: fused into its consumers it
        # would be recomputed for each of the D(D+1)/2 packed columns.
        zb = lax.optimization_barrier(standardize_block(xb, wb, std))
        resp, ll = resp_fn(zb, start)
        keep = wb > 0
        resp = jnp.where(keep[:, None], resp * wb[:, None], 0.0)
        ll = jnp.where(keep, ll * wb, 0.0)
        n, s, sxx_acc, ll_sum = carry
        n = n + jnp.sum(resp, axis=0)
        s = s + jnp.matmul(resp.T, _stat_features(zb, ctype, k), precision=_HI)
        if ctype == "tied":
            sxx_acc = sxx_acc + jnp.matmul((zb * wb[:, None]).T, zb, precision=_HI)
        elif batched_outer:
            sxx_acc = sxx_acc + jnp.einsum("rk,rd,re->kde", resp, zb, zb, precision=_HI)
        return (n, s, sxx_acc, ll_sum + jnp.sum(ll)), None

    acc_shape = {"tied": (d, d)}.get(ctype, (k, d, d) if batched_outer else (0,))
    init = (
        jnp.zeros(k, dtype),
        jnp.zeros((k, n_feat), dtype),
        jnp.zeros(acc_shape, dtype),
        jnp.zeros((), dtype),
    )
    (n, s, sxx_acc, ll_sum), _ = map_reduce(fn, init, x, w, block_size)
    sx = s[:, :d]
    sxx_tied = sxx_acc
    if batched_outer:
        sxx = 0.5 * (sxx_acc + jnp.swapaxes(sxx_acc, 1, 2))
    elif ctype == "full":
        sxx = _unpack(s[:, d:], d)
    elif ctype == "tied":
        sxx = 0.5 * (sxx_tied + sxx_tied.T)
    elif ctype == "diag":
        sxx = s[:, d:]
    elif ctype == "spherical":
        sxx = s[:, d]
    else:  # "means": first moments only (k-means)
        sxx = jnp.zeros((0,), dtype)
    return SufficientStats(n, sx, sxx), ll_sum


def posterior_fn(g: GMM):
    """``zb -> (resp, ll)`` for the E-step; rows no component can explain get the prior."""
    log_joint = _log_joint_fn(g)
    prior = log_weights(g)

    def resp_fn(zb, start):
        joint = log_joint(zb)
        ll = jax.nn.logsumexp(joint, axis=-1)
        hopeless = jnp.isneginf(ll)
        log_resp = jnp.where(hopeless[:, None], prior, joint - jnp.where(hopeless, 0.0, ll)[:, None])
        return jnp.exp(log_resp), ll

    return resp_fn


def e_step_std(g: GMM, x, w, std: Standardizer, block_size: int):
    """E-step of a mixture given in standardised coordinates, on raw rows."""
    return accumulate(posterior_fn(g), x, w, std, g.n_components, g.covariance_type, block_size)


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

    Rows are processed in blocks (see :func:`default_block_size`); the ``N x K``
    responsibilities are never stored. Log-densities are computed relative to
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
    dtype = jnp.result_type(x.dtype, g.means.dtype)
    x = x.astype(dtype)
    r = jnp.sum(jnp.exp(log_weights(g))[:, None] * g.means, axis=0).astype(dtype)
    std = Standardizer(r, jnp.ones(d, dtype))
    stats, ll_sum = e_step_std(std.gmm_to(g), x, weights, std, bs)
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
    of its covariance (clipped at 0) plus ``reg``, which is always positive.
    """
    d = cov.shape[-1]
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2)) + jnp.diag(reg)
    prec_chol = precision_cholesky(cov, "full")
    bad = ~jnp.all(jnp.isfinite(prec_chol), axis=(-2, -1))
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
