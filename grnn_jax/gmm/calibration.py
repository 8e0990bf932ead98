"""Calibration of predictive Gaussian mixtures: PIT values, interval coverage, PIT histograms.

A forecaster is calibrated when its predictive distribution matches the
frequency of what happens. For one dimension this is checked with the
probability integral transform (PIT) ``u = F(x)`` of the observation under the
predictive CDF: for a calibrated forecaster ``u`` is uniform on [0, 1], so the
central ``p``-interval ``[F^-1((1-p)/2), F^-1((1+p)/2)]`` holds the observation a
fraction ``p`` of the time and the PIT histogram is flat. A U-shaped histogram
means over-confident (too narrow) predictions, a hump means too-wide ones.

The mixtures here are ``grnn_jax.gmm.GMM`` with any batch shape (e.g. ``(B, T)``
per-step predictions of a GRNN); each dimension is judged through its marginal,
itself a 1-D mixture ``sum_k w_k N(mu_kd, Sigma_k[d, d])``. Optional boolean
masks leave padded steps out of every average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from grnn_jax import gmm as gmm_lib

DEFAULT_LEVELS = (0.5, 0.8, 0.95)


def marginal_std(g: gmm_lib.GMM) -> jax.Array:
    """Per-dimension standard deviations of every component.

    Args:
      g: mixture with batch shape ``S``, ``K`` components in ``D`` dimensions.

    Returns:
      (*S, K, D) ``sqrt(Sigma_k[d, d])``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 2)), jnp.array([4.0]), "spherical")
      >>> marginal_std(g).tolist()
      [[2.0, 2.0]]
    """
    cov = gmm_lib.covariances(g)
    k, d = g.n_components, g.n_features
    ctype = g.covariance_type
    if ctype == "full":
        var = jnp.diagonal(cov, axis1=-2, axis2=-1)
    elif ctype == "diag":
        var = cov
    elif ctype == "spherical":
        var = jnp.broadcast_to(cov[..., None], cov.shape + (d,))
    else:  # tied: one (D, D) covariance shared by the K components
        diag = jnp.diagonal(cov, axis1=-2, axis2=-1)
        var = jnp.broadcast_to(diag[..., None, :], diag.shape[:-1] + (k, d))
    return jnp.sqrt(var)


def marginal_cdf(g: gmm_lib.GMM, x: jax.Array) -> jax.Array:
    """Per-dimension marginal CDF of a mixture: the PIT values of ``x``.

    Args:
      g: mixture with batch shape ``S``.
      x: (..., D) observations whose leading shape broadcasts against ``S``.

    Returns:
      (..., D) ``F_d(x_d) = sum_k w_k Phi((x_d - mu_kd) / sigma_kd)`` in [0, 1].

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.array([[-1.0], [1.0]]), jnp.ones((2, 1)), "diag")
      >>> print(round(float(marginal_cdf(g, jnp.zeros(1))[0]), 4))
      0.5
    """
    z = (x[..., None, :] - g.means) / marginal_std(g)  # (..., K, D)
    w = gmm_lib.weights(g)[..., None]
    return jnp.clip(jnp.sum(w * ndtr(z), axis=-2), 0.0, 1.0)


def marginal_quantile(g: gmm_lib.GMM, q: jax.Array | float, *, n_iter: int = 60) -> jax.Array:
    """Per-dimension quantiles of the marginals of a mixture, by bisection.

    The mixture CDF has no closed-form inverse; it is monotone, so bisection on
    a bracket that holds every component's ±12 sigma converges to the float
    resolution in ~50 halvings.

    Args:
      g: mixture with batch shape ``S``, ``D`` dimensions.
      q: probabilities in (0, 1), a scalar or an array broadcasting against ``(*S, D)``
        (e.g. ``(Q, 1, ..., 1)`` for several quantiles at once).
      n_iter: number of halvings.

    Returns:
      values ``x_d`` with ``F_d(x_d) = q``, shaped ``broadcast(q, (*S, D))``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.ones((1, 1)), jnp.ones((1, 1)), "diag")
      >>> print(round(float(marginal_quantile(g, 0.975)[0]), 3))
      2.96
    """
    std = marginal_std(g)
    lo = jnp.min(g.means - 12.0 * std, axis=-2)
    hi = jnp.max(g.means + 12.0 * std, axis=-2)
    q = jnp.asarray(q, lo.dtype)
    shape = jnp.broadcast_shapes(q.shape, lo.shape)
    q, lo, hi = (jnp.broadcast_to(a, shape) for a in (q, lo, hi))

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = marginal_cdf(g, mid) < q
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, n_iter, halve, (lo, hi))
    return 0.5 * (lo + hi)


def _mask_weights(shape: tuple[int, ...], mask: jax.Array | None, dtype) -> jax.Array:
    """(..., 1) float weights from a boolean mask over the leading axes of ``shape``."""
    if mask is None:
        return jnp.ones(shape[:-1] + (1,), dtype)
    return jnp.broadcast_to(jnp.asarray(mask), shape[:-1]).astype(dtype)[..., None]


def interval_coverage(
    pit: jax.Array, levels: Sequence[float] = DEFAULT_LEVELS, mask: jax.Array | None = None
) -> jax.Array:
    """Fraction of observations inside the central predictive intervals.

    ``x`` lies in the central ``p``-interval of a continuous ``F`` exactly when
    its PIT value lies in ``[(1-p)/2, (1+p)/2]``, so no quantile is inverted.

    Args:
      pit: (..., D) PIT values, from ``marginal_cdf``.
      levels: nominal probabilities of the intervals, each in (0, 1).
      mask: optional (...) bool; False entries (padding) are left out.

    Returns:
      (len(levels), D) empirical coverage; close to ``levels`` when calibrated.

    Example:
      >>> import jax.numpy as jnp
      >>> pit = (jnp.arange(100.0)[:, None] + 0.5) / 100
      >>> print(interval_coverage(pit, levels=(0.5, 0.9))[:, 0])
      [0.5 0.9]
    """
    lv = np.asarray(levels, dtype=float)
    if lv.ndim != 1 or lv.size == 0 or not np.all((lv > 0) & (lv < 1)):
        raise ValueError(f"levels must be a non-empty list of numbers in (0, 1); got {levels!r}")
    levels = jnp.asarray(lv, pit.dtype)
    w = _mask_weights(pit.shape, mask, pit.dtype)
    lower = (1.0 - levels) / 2.0
    upper = (1.0 + levels) / 2.0
    inside = (pit[..., None, :] >= lower[:, None]) & (pit[..., None, :] <= upper[:, None])
    axes = tuple(range(pit.ndim - 1))
    counts = jnp.sum(w[..., None, :] * inside, axis=axes)  # (L, D)
    return counts / jnp.maximum(jnp.sum(w, axis=axes), 1.0)


def pit_histogram(pit: jax.Array, n_bins: int = 10, mask: jax.Array | None = None) -> jax.Array:
    """Histogram of PIT values on [0, 1], as a density (1 everywhere when calibrated).

    Args:
      pit: (..., D) PIT values.
      n_bins: number of equal-width bins.
      mask: optional (...) bool; False entries are left out.

    Returns:
      (n_bins, D) bin heights ``count / (n * bin_width)``.

    Example:
      >>> import jax.numpy as jnp
      >>> pit = (jnp.arange(100.0)[:, None] + 0.5) / 100
      >>> pit_histogram(pit, n_bins=4).tolist()
      [[1.0], [1.0], [1.0], [1.0]]
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1; got {n_bins}")
    w = _mask_weights(pit.shape, mask, pit.dtype)
    idx = jnp.clip(jnp.floor(pit * n_bins).astype(jnp.int32), 0, n_bins - 1)
    onehot = jax.nn.one_hot(idx, n_bins, dtype=pit.dtype)  # (..., D, n_bins)
    axes = tuple(range(pit.ndim - 1))
    counts = jnp.sum(w[..., None] * onehot, axis=axes)  # (D, n_bins)
    total = jnp.maximum(jnp.sum(w, axis=axes), 1.0)  # (1,)
    return (counts * n_bins / total[:, None]).T


def summary(
    g: gmm_lib.GMM,
    x: jax.Array,
    mask: jax.Array | None = None,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    n_bins: int = 10,
) -> dict[str, jax.Array]:
    """PIT values, interval coverage and the PIT histogram of predictions ``g`` for ``x``.

    Args:
      g: predictive mixtures with batch shape ``S`` (e.g. ``(B, T)``).
      x: (*S, D) what happened.
      mask: optional ``S`` bool, False at padded steps.
      levels: nominal central-interval probabilities.
      n_bins: PIT histogram bins.

    Returns:
      dict with ``pit`` (*S, D), ``levels`` (L,), ``coverage`` (L, D),
      ``histogram`` (n_bins, D) and ``max_abs_error`` (): the largest
      ``|coverage - level|`` over levels and dimensions.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1)), "diag")
      >>> s = summary(g, jnp.array([[0.0], [0.5], [-3.0]]), levels=(0.9,))
      >>> print(round(float(s["coverage"][0, 0]), 3))
      0.667
    """
    pit = marginal_cdf(g, x)
    coverage = interval_coverage(pit, levels, mask)
    lv = jnp.asarray(levels, pit.dtype)
    return {
        "pit": pit,
        "levels": lv,
        "coverage": coverage,
        "histogram": pit_histogram(pit, n_bins, mask),
        "max_abs_error": jnp.max(jnp.abs(coverage - lv[:, None])),
    }


def ecdf_band(n: int, alpha: float = 0.05) -> float:
    """Half-width of the simultaneous ``1 - alpha`` confidence band of an empirical CDF.

    By the Dvoretzky-Kiefer-Wolfowitz inequality (Massart's constant), the ECDF ``F_n`` of
    ``n`` independent draws from ``F`` stays within ``eps = sqrt(log(2 / alpha) / (2 n))``
    of ``F`` everywhere with probability at least ``1 - alpha``. For PIT values the null
    ``F`` is the uniform CDF: a PIT ECDF leaving the band is evidence of miscalibration at
    level ``alpha``; staying inside it is all that ``n`` points can show.

    Args:
      n: number of points, >= 1.
      alpha: level, in (0, 1).

    Returns:
      the half-width ``eps``.

    Example:
      >>> print(round(ecdf_band(1000), 4))
      0.0429
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    return math.sqrt(math.log(2.0 / float(alpha)) / (2.0 * int(n)))


def pit_ks_distance(pit: jax.Array) -> jax.Array:
    """Largest distance between the ECDF of PIT values and the uniform CDF, per dimension
    (the Kolmogorov-Smirnov statistic against uniformity).

    Args:
      pit: (N, D) PIT values of N observations (padding already removed).

    Returns:
      (D,) ``sup_u |F_N(u) - u|``, in [0, 1]; compare with ``ecdf_band(N)``.

    Example:
      >>> import jax.numpy as jnp
      >>> pit = (jnp.arange(4.0)[:, None] + 0.5) / 4  # evenly spread: 1 / (2 N)
      >>> pit_ks_distance(pit).tolist()
      [0.125]
    """
    if pit.ndim != 2 or pit.shape[0] == 0:
        raise ValueError(f"pit must be a non-empty (N, D) array; got shape {pit.shape}")
    u = jnp.sort(pit, axis=0)
    n = u.shape[0]
    above = jnp.arange(1, n + 1, dtype=u.dtype)[:, None] / n - u  # F_N just after each point
    below = u - jnp.arange(n, dtype=u.dtype)[:, None] / n  # and just before it
    return jnp.max(jnp.maximum(above, below), axis=0)
