"""The EM-updated mixture head: global Gaussian components, per-step mixing weights.

The network emits only the mixing logits ``pi_t`` (one linear layer over the hidden
state); the K components (means and precision-Cholesky factors) are shared by every step
and sequence and live in their own Flax variable collection, :data:`EM_COLLECTION`, not
in ``"params"``. Training keeps them out of the optimiser's reach (no gradient, weight
decay or clipping) and sets them by the closed-form M-step of stepwise EM
(:mod:`grnn_jax.train.em_training.em_state`). The model is a neural regime-switching model: the
components are regimes and ``pi_t`` the network's prediction of the next regime.

No per-step mean offsets: with them the component a step belongs to would move with the
hidden state, so the M-step would no longer have a closed form (means and offsets would
have to be fitted jointly by gradient) and the components would stop being fixed,
interpretable regimes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from grnn_jax import gmm as gmm_lib
from grnn_jax.model.heads import add_lag_terms, check_head_covariance_type, declare_coef

EM_COLLECTION = "em"


def unit_prec_chol(n_components: int, n_features: int, covariance_type: str, dtype=jnp.float32):
    """Precision-Cholesky factors of K unit covariances, shaped by covariance type (tied: one
    (D, D) factor)."""
    k, d = n_components, n_features
    if covariance_type == "full":
        return jnp.broadcast_to(jnp.eye(d, dtype=dtype), (k, d, d))
    if covariance_type == "tied":
        return jnp.eye(d, dtype=dtype)
    if covariance_type == "diag":
        return jnp.ones((k, d), dtype)
    return jnp.ones((k,), dtype)


class EMMixtureHead(nn.Module):
    """Hidden state -> mixture with per-step logits and global components.

    The components are the variables ``means`` (K, D) and ``prec_chol`` (shaped by
    covariance type) of collection :data:`EM_COLLECTION`; at initialisation the means are
    drawn from N(0, I) and the covariances are the identity (standardised data). The
    logits start near uniform (a small kernel, zero bias).

    Attributes:
      n_components: K.
      n_features: D.
      covariance_type: "full", "diag", "spherical" or "tied" (one covariance for all K).
      kernel_scale: standard deviation multiplier of the initial kernel (LeCun-normal).
      dtype: computation dtype (``None``: that of the input).
      param_dtype: parameter dtype.

    Call:
      h: (..., H) hidden states.

    Returns:
      a ``gmm.GMM`` with batch shape ``(...)`` whose components are the same at every step.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> head = EMMixtureHead(n_components=3, n_features=2, covariance_type="diag")
      >>> v = head.init(jax.random.key(0), jnp.zeros((4, 8)))
      >>> sorted(v), v["em"]["means"].shape
      (['em', 'params'], (3, 2))
      >>> g = head.apply(v, jnp.ones((4, 8)))
      >>> g.logits.shape, g.means.shape, bool(jnp.all(g.means[0] == g.means[3]))
      ((4, 3), (4, 3, 2), True)
    """

    n_components: int
    n_features: int
    covariance_type: str = "full"
    kernel_scale: float = 0.1
    n_regressors: int = 0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, phi: jax.Array | None = None) -> gmm_lib.GMM:
        check_head_covariance_type(self.covariance_type)
        k, ctype = self.n_components, self.covariance_type
        logits = nn.Dense(
            k,
            kernel_init=nn.initializers.variance_scaling(
                self.kernel_scale**2, "fan_in", "truncated_normal"
            ),
            bias_init=nn.initializers.zeros,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="logits",
        )(h)
        comps = declare_em_components(self)
        means, prec_chol = broadcast_em_components(comps, logits.shape[:-1], phi, logits.dtype)
        return gmm_lib.GMM(logits, means, prec_chol, ctype)


def declare_em_components(module: nn.Module) -> dict:
    """The global components of an EM-updated head as variables of :data:`EM_COLLECTION`:
    ``means`` (K, D) drawn from N(0, I), ``prec_chol`` (unit covariances) and, with
    ``module.n_regressors = F > 0``, the slopes ``ar_coef`` (K, D, F), zeros. Call it from
    ``setup`` or an ``nn.compact`` method; shared by :class:`EMMixtureHead` and the filtering
    head."""
    k, d, ctype = module.n_components, module.n_features, module.covariance_type
    means = module.variable(
        EM_COLLECTION, "means",
        lambda: jax.random.normal(module.make_rng("params"), (k, d), module.param_dtype),
    ).value
    prec_chol = module.variable(
        EM_COLLECTION, "prec_chol", lambda: unit_prec_chol(k, d, ctype, module.param_dtype)
    ).value
    return {"means": means, "prec_chol": prec_chol, "coef": declare_coef(module, EM_COLLECTION)}


def broadcast_em_components(comps: dict, lead: tuple, phi, dtype):
    """``(means (*lead, K, D), prec_chol (*lead, ...))`` of :func:`declare_em_components`'
    values: the intercepts plus ``W_k phi`` with regressors ``phi (*lead, F)``."""
    means = jnp.broadcast_to(comps["means"].astype(dtype), tuple(lead) + comps["means"].shape)
    means = add_lag_terms(means, comps["coef"], phi)
    prec = comps["prec_chol"]
    return means, jnp.broadcast_to(prec.astype(dtype), tuple(lead) + prec.shape)
