"""The GRNN with the EM-updated head (:class:`grnn_jax.model.em_head.EMMixtureHead`).

Same cells, encoder, one-step function and log-likelihood as :class:`GRNN`; only the
head differs. Its variables are ``{"params": ..., "em": {"head": {"means", "prec_chol"}}}``
(:func:`em_components` and :func:`em_collection` convert the ``"em"`` part): every
function of :mod:`grnn_jax.model` (``step_log_probs``, ``generate``, ``forecast``,
``hidden_states``) takes the whole dict.
"""

from __future__ import annotations

import flax.linen as nn

from grnn_jax.model.heads import check_head_covariance_type
from grnn_jax.model.em_head import EMMixtureHead
from grnn_jax.model.grnn import GRNN

_HEAD = "head"  # the attribute GRNN.setup assigns the head to, hence its variables' scope


class EMGRNN(GRNN):
    """A :class:`GRNN` whose head emits mixing logits over K global components.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import model
      >>> net = model.EMGRNN(n_features=2, n_components=3, hidden_size=8, covariance_type="diag")
      >>> x = jnp.zeros((4, 5, 2))
      >>> v = net.init(jax.random.key(0), x)
      >>> means, prec_chol = model.em_components(v["em"])
      >>> means.shape, prec_chol.shape, net.apply(v, x).means.shape
      ((3, 2), (3, 2), (4, 5, 3, 2))
      >>> model.step_log_probs(net, v, x).shape
      (4, 5)
    """

    def make_head(self) -> nn.Module:
        check_head_covariance_type(self.covariance_type)
        return EMMixtureHead(
            n_components=self.n_components,
            n_features=self.n_features,
            covariance_type=self.covariance_type,
            n_regressors=self.n_regressors,
            dtype=self.dtype,
            param_dtype=self.dtype,
        )


def em_components(em_vars: dict):
    """``(means (K, D), prec_chol)`` from the ``"em"`` collection of an :class:`EMGRNN` (or of
    the filtering head); with lags the means are the regressions' intercepts
    (:func:`em_coefficients` gives their slopes)."""
    return em_vars[_HEAD]["means"], em_vars[_HEAD]["prec_chol"]


def em_coefficients(em_vars: dict):
    """The regressions' slopes ``W`` (K, D, F) of an EM head with lags, or None without."""
    return em_vars[_HEAD].get("ar_coef")


def em_collection(means, prec_chol, coef=None) -> dict:
    """The ``"em"`` collection of an :class:`EMGRNN` holding these components (and, with
    lags, the slopes ``coef`` (K, D, F)).

    Example:
      >>> import jax.numpy as jnp
      >>> c = em_collection(jnp.zeros((2, 1)), jnp.ones((2, 1)))
      >>> [a.shape for a in em_components(c)], em_coefficients(c)
      ([(2, 1), (2, 1)], None)
    """
    out = {"means": means, "prec_chol": prec_chol}
    if coef is not None:
        out["ar_coef"] = coef
    return {_HEAD: out}
