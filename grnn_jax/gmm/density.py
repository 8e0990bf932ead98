"""Log-densities and responsibilities of a Gaussian mixture, in log space.

Every function takes a mixture with any leading batch shape and observations
whose leading shape broadcasts against it: one mixture ``(K, ...)`` and
``x (N, D)``, or per-step mixtures ``(B, T, K, ...)`` and ``x (B, T, D)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from grnn_jax.gmm.container import GMM, log_weights


def log_det_precision(gmm: GMM) -> jax.Array:
    """(..., K), or (...,) for tied: ``log |precision|^(1/2)``, the sum of the log-diagonal of ``prec_chol``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 2)), jnp.array([[4.0, 0.25]]), "diag")
      >>> float(gmm.log_det_precision(g)[0])  # log(1/2) + log(2)
      0.0
    """
    p = gmm.prec_chol
    ctype = gmm.covariance_type
    if ctype in ("full", "tied"):
        return jnp.sum(jnp.log(jnp.diagonal(p, axis1=-2, axis2=-1)), axis=-1)
    if ctype == "diag":
        return jnp.sum(jnp.log(p), axis=-1)
    return gmm.n_features * jnp.log(p)


def _mahalanobis_sq(gmm: GMM, x: jax.Array) -> jax.Array:
    """(..., K) squared Mahalanobis distances of x (..., D) to every component."""
    diff = x[..., None, :] - gmm.means  # (..., K, D)
    p = gmm.prec_chol
    ctype = gmm.covariance_type
    if ctype == "full":
        y = jnp.einsum("...kd,...kde->...ke", diff, p)
    elif ctype == "tied":
        y = jnp.einsum("...kd,...de->...ke", diff, p)
    elif ctype == "diag":
        y = diff * p
    else:
        return jnp.sum(jnp.square(diff), axis=-1) * jnp.square(p)
    return jnp.sum(jnp.square(y), axis=-1)


def component_log_prob(gmm: GMM, x: jax.Array) -> jax.Array:
    """Log-density of x under every component, without the mixture weights.

    Args:
      gmm: mixture with batch shape ``S``.
      x: (..., D) observations whose leading shape broadcasts against ``S``.

    Returns:
      (..., K) ``log N(x | mu_k, Sigma_k)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.zeros((2, 1)), jnp.ones((2, 1)), "diag")
      >>> gmm.component_log_prob(g, jnp.zeros((5, 1))).shape
      (5, 2)
    """
    d = gmm.n_features
    log_det = log_det_precision(gmm)
    if gmm.covariance_type == "tied":
        log_det = log_det[..., None]
    return -0.5 * (d * math.log(2 * math.pi) + _mahalanobis_sq(gmm, x)) + log_det


def joint_log_prob(gmm: GMM, x: jax.Array) -> jax.Array:
    """(..., K) ``log pi_k + log N(x | k)``: the E-step's unnormalised log-responsibilities."""
    return log_weights(gmm) + component_log_prob(gmm, x)


def log_prob(gmm: GMM, x: jax.Array) -> jax.Array:
    """Mixture log-density ``log sum_k pi_k N(x | k)``.

    Args:
      gmm: mixture with batch shape ``S``.
      x: (..., D) observations broadcasting against ``S``.

    Returns:
      (...,) log-densities; ``-inf`` (never NaN) where every component is ``-inf``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1, 1)), "full")
      >>> print(round(float(gmm.log_prob(g, jnp.zeros(1))), 4))
      -0.9189
    """
    return jax.nn.logsumexp(joint_log_prob(gmm, x), axis=-1)


def log_responsibilities(gmm: GMM, x: jax.Array) -> jax.Array:
    """(..., K) ``log p(k | x)``.

    Where every component gives ``-inf`` (a point infinitely far from all of
    them), the posterior is undefined; the prior log-weights are returned there,
    so the result is always a normalised, NaN-free distribution.
    """
    joint = joint_log_prob(gmm, x)
    norm = jax.nn.logsumexp(joint, axis=-1, keepdims=True)
    hopeless = jnp.isneginf(norm)
    safe = jnp.where(hopeless, 0.0, joint - jnp.where(hopeless, 0.0, norm))
    return jnp.where(hopeless, jnp.broadcast_to(log_weights(gmm), joint.shape), safe)


def responsibilities(gmm: GMM, x: jax.Array) -> jax.Array:
    """(..., K) posterior component probabilities ``p(k | x)``; rows sum to one.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.array([[-1.0], [1.0]]), jnp.ones((2, 1)), "diag")
      >>> gmm.responsibilities(g, jnp.zeros((1, 1))).tolist()
      [[0.5, 0.5]]
    """
    return jnp.exp(log_responsibilities(gmm, x))
