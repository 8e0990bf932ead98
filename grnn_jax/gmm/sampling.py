"""Drawing samples from a Gaussian mixture."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from grnn_jax.gmm.container import GMM


def _pick(a: jax.Array, labels: jax.Array, n_trailing: int) -> jax.Array:
    """Selects component ``labels`` from a (*S, K, *trailing) broadcast to labels' shape."""
    lead = labels.shape
    a = jnp.broadcast_to(a, lead + a.shape[a.ndim - n_trailing - 1 :])
    idx = labels.reshape(lead + (1,) * (n_trailing + 1))
    return jnp.squeeze(jnp.take_along_axis(a, idx, axis=len(lead)), axis=len(lead))


def sample_with_labels(key: jax.Array, gmm: GMM, shape: tuple[int, ...] = ()):
    """Draws ``shape`` samples per mixture, with the component each came from.

    Args:
      key: PRNG key.
      gmm: mixture with batch shape ``S``.
      shape: sample shape prepended to ``S``.

    Returns:
      ``(x, labels)``: x (*shape, *S, D) and labels (*shape, *S) int32.
    """
    k_label, k_noise = jax.random.split(key)
    out_shape = tuple(shape) + gmm.batch_shape
    labels = jax.random.categorical(k_label, gmm.logits, axis=-1, shape=out_shape)
    mu = _pick(gmm.means, labels, 1)
    z = jax.random.normal(k_noise, out_shape + (gmm.n_features,), dtype=mu.dtype)
    ctype = gmm.covariance_type
    if ctype in ("full", "tied"):
        # x = mu + P^{-T} z has covariance (P P^T)^{-1}.
        if ctype == "full":
            p = _pick(gmm.prec_chol, labels, 2)
        else:
            p = jnp.broadcast_to(gmm.prec_chol, out_shape + gmm.prec_chol.shape[-2:])
        noise = solve_triangular(p, z[..., None], lower=False, trans="T")[..., 0]
    elif ctype == "diag":
        noise = z / _pick(gmm.prec_chol, labels, 1)
    else:
        noise = z / _pick(gmm.prec_chol, labels, 0)[..., None]
    return mu + noise, labels


def sample(key: jax.Array, gmm: GMM, n: int) -> jax.Array:
    """Draws n samples from a mixture (batch shape S gives (n, *S, D)).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.zeros((2, 3)), jnp.ones((2, 3)), "diag")
      >>> gmm.sample(jax.random.key(0), g, 4).shape
      (4, 3)
    """
    return sample_with_labels(key, gmm, (n,))[0]
