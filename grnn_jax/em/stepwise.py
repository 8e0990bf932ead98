"""Stepwise (online) EM on :class:`~grnn_jax.em.SufficientStats`.

Cappé & Moulines (2009, "On-line expectation-maximization algorithm for latent data
models", JRSS-B 71(3)) replace the batch E-step's sum over all data by a running
average of per-observation statistics,

    s_{n+1} = (1 - rho_n) s_n + rho_n sbar(batch_n; theta_n),    theta_{n+1} = M(s_{n+1}),

where ``sbar`` is the batch's responsibility-weighted statistics divided by its number of
observations and ``M`` the closed-form M-step (:func:`~grnn_jax.em.m_step_from_stats`,
which only needs the statistics up to a common factor). With step sizes
``rho_n = (n + n0)^(-alpha)``, ``0.5 < alpha <= 1``, ``sum rho_n = inf`` and
``sum rho_n^2 < inf``: the recursion is a Robbins-Monro stochastic approximation whose
mean field is ``E[sbar(theta(s))] - s``, the batch EM map in the space of statistics, so
it converges almost surely to a stationary point of the expected log-likelihood (their
Theorem 1). ``alpha`` close to 1/2 forgets the early, poorly fitted statistics fastest;
averaging the iterates (Polyak-Ruppert) is not needed for consistency. ``n0 >= 1`` makes
``rho_0 = n0^(-alpha) <= 1``; with ``n0 = 1`` the first batch replaces the seed statistics.

:func:`stats_from_responsibilities` gives the statistics of responsibilities computed
outside a single static mixture (e.g. a network's per-step mixing weights); for the
responsibilities of one mixture it equals :func:`~grnn_jax.em.e_step`'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grnn_jax.gmm import check_covariance_type
from grnn_jax.em.stats import SufficientStats
from grnn_jax._util.dtypes import default_float


def stats_from_responsibilities(
    x: jax.Array, resp: jax.Array, *, covariance_type: str, weights: jax.Array | None = None
) -> SufficientStats:
    """Sufficient statistics of observations under given responsibilities.

    Args:
      x: (N, D) observations (a row of weight 0 may hold anything, NaN included).
      resp: (N, K) responsibilities (rows need not sum to one).
      covariance_type: "full", "diag", "spherical" or "tied" (shapes ``sxx``).
      weights: optional (N,) non-negative row weights (0 masks a row).

    Returns:
      :class:`~grnn_jax.em.SufficientStats` with moments about the origin.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em
      >>> x = jnp.array([[0.0], [2.0], [10.0]])
      >>> s = em.stats_from_responsibilities(x, jnp.array([[1.0, 0], [1, 0], [0, 1]]),
      ...                                    covariance_type="diag")
      >>> s.n.tolist(), s.sx[:, 0].tolist(), s.sxx[:, 0].tolist()
      ([2.0, 1.0], [2.0, 10.0], [4.0, 100.0])
    """
    check_covariance_type(covariance_type)
    if x.ndim != 2 or resp.ndim != 2 or resp.shape[0] != x.shape[0]:
        raise ValueError(f"expected x (N, D) and resp (N, K); got {x.shape} and {resp.shape}")
    if weights is not None:
        keep = weights > 0
        x = jnp.where(keep[:, None], x, 0.0)
        resp = jnp.where(keep[:, None], resp * weights[:, None], 0.0)
        w = jnp.where(keep, weights, 0.0)
    else:
        w = jnp.ones(x.shape[:1], x.dtype)
    hi = jax.lax.Precision.HIGHEST
    n = jnp.sum(resp, axis=0)
    sx = jnp.matmul(resp.T, x, precision=hi)
    if covariance_type == "full":
        sxx = jnp.einsum("nk,nd,ne->kde", resp, x, x, precision=hi)
    elif covariance_type == "tied":
        sxx = jnp.matmul((x * w[:, None]).T, x, precision=hi)
    elif covariance_type == "diag":
        sxx = jnp.matmul(resp.T, jnp.square(x), precision=hi)
    else:
        sxx = jnp.matmul(resp.T, jnp.sum(jnp.square(x), axis=-1), precision=hi)
    return SufficientStats(n, sx, sxx)


def step_size(n: jax.Array, *, exponent: float, offset: float) -> jax.Array:
    """``rho_n = (n + offset)^(-exponent)``, the stepwise-EM step size of update ``n``.

    Args:
      n: number of updates already made (0 for the first).
      exponent: alpha in (0.5, 1].
      offset: n0 >= 1.

    Example:
      >>> from grnn_jax import em
      >>> [round(float(em.step_size(n, exponent=1.0, offset=1.0)), 3) for n in (0, 1, 3)]
      [1.0, 0.5, 0.25]
    """
    return jnp.power(jnp.asarray(n, default_float()) + offset, -exponent)


def check_step_schedule(exponent: float, offset: float, *, names=("exponent", "offset")) -> None:
    """Raises ValueError unless ``0.5 < exponent <= 1`` and ``offset >= 1``."""
    if not (0.5 < float(exponent) <= 1.0):
        raise ValueError(f"{names[0]} must lie in (0.5, 1] (stepwise EM); got {exponent!r}")
    if not (float(offset) >= 1.0):
        raise ValueError(f"{names[1]} must be >= 1 (so that the first step size is <= 1); got {offset!r}")


def blend(old: SufficientStats, batch: SufficientStats, n_obs: jax.Array, rho: jax.Array) -> SufficientStats:
    """``(1 - rho) old + rho batch / n_obs``: one stepwise-EM update of per-observation statistics.

    A batch without observations (``n_obs == 0``) leaves ``old`` unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import em
      >>> old = em.SufficientStats(jnp.array([1.0]), jnp.array([[0.0]]), jnp.array([1.0]))
      >>> new = em.SufficientStats(jnp.array([4.0]), jnp.array([[8.0]]), jnp.array([20.0]))
      >>> em.blend(old, new, 4.0, 0.5).sx.tolist()
      [[1.0]]
    """
    n_obs = jnp.asarray(n_obs, old.n.dtype)
    rho = jnp.where(n_obs > 0, rho, 0.0)
    # 1 / n_obs for any positive (possibly fractional) total weight, 0 for an empty batch
    scale = jnp.where(n_obs > 0, 1.0 / jnp.where(n_obs > 0, n_obs, 1.0), 0.0)
    return jax.tree.map(lambda o, b: (1.0 - rho) * o + rho * scale * b, old, batch)
