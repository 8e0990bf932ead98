"""The closed-form M-step: mixture parameters from data and responsibilities."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grnn_jax.gmm.container import GMM, check_covariance_type, precision_cholesky


def m_step(
    x: jax.Array,
    resp: jax.Array,
    *,
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
    weights: jax.Array | None = None,
) -> GMM:
    """Maximum-likelihood mixture given (soft) assignments, as scikit-learn computes it.

    Covariances are computed around the new means (two passes), so data far from
    the origin lose no precision. ``reg_covar`` is added to every variance.
    Components that receive no mass keep finite parameters: their count is
    floored at ``10 * eps`` (as scikit-learn does), their mean is 0 and their
    covariance ``reg_covar * I``.

    Args:
      x: (N, D) observations.
      resp: (N, K) responsibilities (rows need not sum to one).
      covariance_type: "full", "diag", "spherical" or "tied".
      reg_covar: non-negative variance floor added to the diagonal.
      weights: optional (N,) non-negative per-point weights; weight 0 ignores a
        point entirely (its value may then be anything finite or not), which is
        how padding and masks are expressed.

    Returns:
      The fitted GMM.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> x = jnp.array([[0.0], [2.0], [10.0], [12.0]])
      >>> resp = jnp.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])
      >>> g = gmm.m_step(x, resp, covariance_type="diag", reg_covar=0.0)
      >>> [round(float(m), 3) for m in g.means[:, 0]], [round(float(v), 3) for v in gmm.covariances(g)[:, 0]]
      ([1.0, 11.0], [1.0, 1.0])
    """
    check_covariance_type(covariance_type)
    if x.ndim != 2 or resp.ndim != 2 or resp.shape[0] != x.shape[0]:
        raise ValueError(f"m_step expects x (N, D) and resp (N, K); got {x.shape} and {resp.shape}")
    if weights is not None:
        keep = weights > 0
        x = jnp.where(keep[:, None], x, 0.0)
        resp = jnp.where(keep[:, None], resp * weights[:, None], 0.0)
    eps = jnp.finfo(x.dtype).eps
    nk = jnp.sum(resp, axis=0) + 10 * eps  # (K,)
    means = (resp.T @ x) / nk[:, None]  # (K, D)
    diff = x[:, None, :] - means  # (N, K, D)
    d = x.shape[1]
    if covariance_type == "full":
        cov = jnp.einsum("nk,nkd,nke->kde", resp, diff, diff) / nk[:, None, None]
        cov = cov + reg_covar * jnp.eye(d, dtype=x.dtype)
    elif covariance_type == "tied":
        cov = jnp.einsum("nk,nkd,nke->de", resp, diff, diff) / jnp.sum(nk)
        cov = cov + reg_covar * jnp.eye(d, dtype=x.dtype)
    else:
        var = jnp.einsum("nk,nkd->kd", resp, jnp.square(diff)) / nk[:, None] + reg_covar
        cov = var if covariance_type == "diag" else jnp.mean(var, axis=-1)
    logits = jnp.log(nk) - jnp.log(jnp.sum(nk))
    return GMM(logits, means, precision_cholesky(cov, covariance_type), covariance_type)
