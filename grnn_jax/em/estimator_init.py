"""Starting mixtures of :class:`grnn_jax.GaussianMixture`, drawn as scikit-learn draws them.

scikit-learn starts each restart from responsibilities that ``init_params`` draws
with one ``RandomState`` (k-means labels, uniform noise, or one-hot rows at
randomly chosen or k-means++ seeds) followed by one M-step; the given
``weights_init``/``means_init``/``precisions_init`` then replace their
estimates. Here the responsibilities are drawn on the host by the same calls in
the same order, so the same ``random_state`` gives the same start as
scikit-learn's (up to rounding), and the M-step and EM run in JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from grnn_jax import gmm

_m_step = jax.jit(gmm.m_step, static_argnames=("covariance_type",))


def responsibilities(x: np.ndarray, sw: np.ndarray, method: str, k: int, rs: np.random.RandomState) -> np.ndarray:
    """(N, K) starting responsibilities of ``init_params=method``, drawn from ``rs`` as scikit-learn does.

    Rows of zero ``sw`` (sample weight) are never chosen as seeds; with all weights one the
    draws are scikit-learn's own.
    """
    n = x.shape[0]
    if method == "random":
        resp = rs.uniform(size=(n, k))
        return resp / resp.sum(axis=1, keepdims=True)
    if method == "kmeans":
        labels = KMeans(n_clusters=k, n_init=1, random_state=rs).fit(x, sample_weight=sw).labels_
        rows, cols = np.arange(n), labels
    elif method == "random_from_data":
        rows, cols = rs.choice(np.flatnonzero(sw > 0), size=k, replace=False), np.arange(k)
    else:  # "k-means++"
        _, rows = kmeans_plusplus(x, k, random_state=rs, sample_weight=sw)
        cols = np.arange(k)
    resp = np.zeros((n, k))
    resp[rows, cols] = 1.0
    return resp


def _log_weights(w: np.ndarray, dtype) -> jax.Array:
    # A zero initial weight becomes a tiny one: logits must stay finite.
    return jnp.asarray(np.log(np.maximum(w, np.finfo(dtype).tiny)), dtype)


def from_given(given: dict[str, np.ndarray], covariance_type: str, dtype) -> gmm.GMM:
    """The mixture of ``weights_init``, ``means_init`` and ``precisions_init``, all three given."""
    return gmm.from_precisions(_log_weights(given["weights_init"], dtype),
                               jnp.asarray(given["means_init"], dtype),
                               jnp.asarray(given["precisions_init"], dtype), covariance_type)


def start(xj, wj, resp: np.ndarray, given: dict[str, np.ndarray], covariance_type: str,
          reg_covar: float, dtype) -> gmm.GMM:
    """One M-step from ``resp`` (N rows; ``xj``, ``wj`` may carry more, padding of weight 0),
    then the given parameters in place of their estimates.
    """
    if len(given) == 3:
        return from_given(given, covariance_type, dtype)
    pad = np.zeros((xj.shape[0] - resp.shape[0], resp.shape[1]))
    resp = jnp.asarray(np.concatenate([resp, pad]), dtype)
    g = _m_step(jnp.asarray(xj, dtype), resp, covariance_type=covariance_type,
                reg_covar=jnp.asarray(reg_covar, dtype), weights=jnp.asarray(wj, dtype))
    logits, means, prec_chol = g.logits, g.means, g.prec_chol
    if "weights_init" in given:
        logits = _log_weights(given["weights_init"], dtype)
    if "means_init" in given:
        means = jnp.asarray(given["means_init"], dtype)
    if "precisions_init" in given:
        p = jnp.asarray(given["precisions_init"], dtype)
        prec_chol = gmm.from_precisions(logits, means, p, covariance_type).prec_chol
    return gmm.GMM(logits, means, prec_chol, covariance_type)
