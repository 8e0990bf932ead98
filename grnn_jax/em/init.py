"""Initial mixtures for EM, mirroring scikit-learn's ``init_params`` in JAX.

All initialisations run under ``jit`` (``n_components`` and the method static)
in standardised coordinates and read the data in blocks:

* ``"k-means++"``: k-means++ seeding (greedy, ``2 + log K`` candidates per
  centre, as scikit-learn's ``kmeans_plusplus``); the mixture is the M-step of
  one-hot responsibilities at the seeds: equal weights, means at the seeds,
  covariance ``reg_covar``.
* ``"kmeans"``: the same seeding, Lloyd iterations to convergence (at most 100,
  scikit-learn's tolerance), then the M-step on the hard labels.
* ``"random"``: the M-step of uniformly random, normalised responsibilities.
* ``"random_from_data"``: like k-means++ but the seeds are distinct random rows.

Two deliberate differences from scikit-learn: seed-based mixtures have
normalised weights (scikit-learn's first lower bound uses ``1/N`` per seed), and
``tied`` seeds get covariance ``reg_covar`` (scikit-learn's comes from all rows
regardless of the one-hot responsibilities).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from grnn_jax.gmm import GMM, check_covariance_type
from grnn_jax.em.blocks import block_columns, default_block_size, fit_standardiser, map_reduce
from grnn_jax.em.log_joint import HIGHEST
from grnn_jax.em.stats import accumulate, m_step_std

INIT_METHODS = ("k-means++", "kmeans", "random", "random_from_data")
_LLOYD_MAX_ITER = 100
_LLOYD_TOL = 1e-4


def _sq_dist(zt1: jax.Array, centers: jax.Array) -> jax.Array:
    """(C, R) squared distances of augmented columns ``zt1 (D+1, R)`` to ``centers (C, D)``.

    Rows and centres are standardised, so the expansion does not cancel badly.
    """
    d = centers.shape[1]
    coef = jnp.concatenate([-2.0 * centers, jnp.sum(jnp.square(centers), -1, keepdims=True)], axis=1)
    dist = jnp.sum(jnp.square(zt1[:d]), 0, keepdims=True) + jnp.matmul(coef, zt1, precision=HIGHEST)
    return jnp.maximum(dist, 0.0)


def _distances(xt1, w, centers, block_size):
    """(N, C) squared distances of every column of ``xt1`` to ``centers``; 0 where w = 0."""

    def fn(c, zt1, wb, start):
        d = _sq_dist(zt1, centers).T
        return c, jnp.where((wb > 0)[:, None], d, 0.0)

    return map_reduce(fn, (), xt1, w, block_size, axis=1)[1]


def _rows(xt1, idx):
    """(len(idx), D) the rows ``idx`` of the columns ``xt1 (D+1, N)``."""
    return xt1[:-1, idx].T


def kmeans_plusplus(xt1, w, key, n_components: int, block_size: int):
    """(K, D) k-means++ centres among the columns of ``xt1`` (greedy, weighted)."""
    d, n = xt1.shape[0] - 1, xt1.shape[1]
    dtype = xt1.dtype
    n_trials = 2 + int(math.log(n_components))
    wp = jnp.ones(n, dtype) if w is None else w
    log_wp = jnp.log(wp)
    key, k0 = jax.random.split(key)
    first = _rows(xt1, jax.random.categorical(k0, log_wp)[None])
    closest = _distances(xt1, w, first, block_size)[:, 0]
    centers = jnp.zeros((n_components, d), dtype).at[0].set(first[0])

    def body(j, carry):
        centers, closest = carry
        kj = jax.random.fold_in(key, j)
        k_u, k_fallback = jax.random.split(kj)
        cum = jnp.cumsum(wp * closest)
        total = cum[-1]
        u = jax.random.uniform(k_u, (n_trials,), dtype) * total
        picks = jnp.searchsorted(cum, u, method="compare_all")
        picks = jnp.clip(picks, 0, n - 1)
        # All remaining rows coincide with a centre: any (weighted) row will do.
        random_rows = jax.random.categorical(k_fallback, log_wp, shape=(n_trials,))
        picks = jnp.where(total > 0, picks, random_rows)
        cand = _rows(xt1, picks)  # (L, D)
        dist = jnp.minimum(closest[:, None], _distances(xt1, w, cand, block_size))
        best = jnp.argmin(wp @ dist)
        return centers.at[j].set(cand[best]), dist[:, best]

    centers, _ = lax.fori_loop(1, n_components, body, (centers, closest))
    return centers


def _hard_resp_fn(centers):
    k = centers.shape[0]

    def resp_fn(zt1, phi, start):
        labels = jnp.argmin(_sq_dist(zt1, centers), axis=0)
        return jax.nn.one_hot(labels, k, dtype=zt1.dtype, axis=0), jnp.zeros(zt1.shape[1], zt1.dtype)

    return resp_fn


def lloyd(xt1, w, centers, tol, block_size: int):
    """Lloyd iterations until the centres move less than ``tol`` (squared); empty clusters stay put."""
    k, d = centers.shape

    def step(centers):
        stats, _ = accumulate(_hard_resp_fn(centers), xt1, w, k, "means", block_size)
        new = jnp.where(stats.n[:, None] > 0, stats.sx / jnp.maximum(stats.n, 1e-30)[:, None], centers)
        return new, jnp.sum(jnp.square(new - centers))

    def cond(c):
        return (c[1] < _LLOYD_MAX_ITER) & (c[2] > tol)

    def body(c):
        new, shift = step(c[0])
        return new, c[1] + 1, shift

    inf = jnp.asarray(jnp.inf, centers.dtype)
    return lax.while_loop(cond, body, (centers, 0, inf))[0]


def _seed_mixture(centers, ctype: str, reg: jax.Array) -> GMM:
    """M-step of one-hot responsibilities at the seeds: equal weights, covariance ``reg``."""
    k, d = centers.shape
    inv_sd = lax.rsqrt(reg)
    if ctype == "full":
        prec_chol = jnp.broadcast_to(jnp.diag(inv_sd), (k, d, d))
    elif ctype == "tied":
        prec_chol = jnp.diag(inv_sd)
    elif ctype == "diag":
        prec_chol = jnp.broadcast_to(inv_sd, (k, d))
    else:
        prec_chol = jnp.full((k,), inv_sd[0], centers.dtype)
    return GMM(jnp.zeros(k, centers.dtype), centers, prec_chol, ctype)


def init_std(xt1, w, mean_var, key, n_components: int, ctype: str, method: str, reg, block_size: int) -> GMM:
    """An initial mixture in the coordinates of the columns ``xt1 (D+1, N)`` (:func:`~grnn_jax.em.blocks.block_columns`).

    ``mean_var`` is the data's mean feature variance there (for the k-means
    tolerance) and ``reg`` the (D,) variance floors.
    """
    k = n_components
    if method in ("k-means++", "kmeans"):
        centers = kmeans_plusplus(xt1, w, key, k, block_size)
        if method == "k-means++":
            return _seed_mixture(centers, ctype, reg)
        # scikit-learn's KMeans tolerance: 1e-4 times the mean feature variance.
        centers = lloyd(xt1, w, centers, _LLOYD_TOL * mean_var, block_size)
        stats, _ = accumulate(_hard_resp_fn(centers), xt1, w, k, ctype, block_size)
        return m_step_std(stats, ctype, reg)
    if method == "random_from_data":
        p = None if w is None else w / jnp.sum(w)
        idx = jax.random.choice(key, xt1.shape[1], (k,), replace=False, p=p)
        return _seed_mixture(_rows(xt1, idx), ctype, reg)
    if method == "random":

        def resp_fn(zt1, phi, start):
            u = jax.random.uniform(jax.random.fold_in(key, start), (k, zt1.shape[1]), zt1.dtype)
            return u / jnp.sum(u, 0, keepdims=True), jnp.zeros(zt1.shape[1], zt1.dtype)

        stats, _ = accumulate(resp_fn, xt1, w, k, ctype, block_size)
        return m_step_std(stats, ctype, reg)
    raise ValueError(f"unknown init {method!r}; expected a GMM or one of {INIT_METHODS}")


@functools.partial(jax.jit, static_argnames=("n_components", "covariance_type", "init", "block_size"))
def initialize(
    x: jax.Array,
    n_components: int,
    *,
    key: jax.Array,
    covariance_type: str = "full",
    init: str = "k-means++",
    reg_covar: float = 1e-6,
    weights: jax.Array | None = None,
    block_size: int | None = None,
) -> GMM:
    """An initial mixture for EM (pure and jitted; no input checks).

    Args:
      x: (N, D) observations.
      n_components: K.
      key: PRNG key.
      covariance_type: "full", "diag", "spherical" or "tied".
      init: "k-means++", "kmeans", "random" or "random_from_data" (see the module doc).
      reg_covar: variance floor.
      weights: optional (N,) non-negative row weights.
      block_size: rows per block; None picks one from D and K.

    Returns:
      A :class:`~grnn_jax.gmm.GMM` in the data's coordinates.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import em
      >>> x = jnp.array([[0.0], [0.1], [10.0], [10.1]])
      >>> g = em.initialize(x, 2, key=jax.random.key(0), init="kmeans")
      >>> sorted(round(m, 2) for m in g.means[:, 0].tolist())
      [0.05, 10.05]
    """
    check_covariance_type(covariance_type)
    x = jnp.asarray(x)
    bs = block_size or default_block_size(x.shape[1], n_components, covariance_type)
    std, _, mean_var = fit_standardiser(x, weights, bs, isotropic=covariance_type == "spherical")
    reg = reg_covar / jnp.square(std.scale)
    g = init_std(block_columns(x, weights, std), weights, mean_var, key, n_components, covariance_type, init, reg, bs)
    return std.gmm_from(g)
