"""Fitting Gaussian mixtures by EM, built on :mod:`grnn_jax.gmm`.

* :func:`e_step` — one blocked pass over the data returning
  :class:`SufficientStats` (summable over chunks and devices) and the
  log-likelihood; :func:`m_step_from_stats` — the closed-form M-step.
* :func:`fit` — checked entry point (restarts, batched data sets);
  :func:`fit_from` — the pure jitted EM loop from given parameters;
  :func:`initialize` — k-means++, k-means, random initial mixtures.
* :func:`stats_from_responsibilities`, :func:`step_size`, :func:`blend` — stepwise
  (online) EM on the same statistics (:mod:`grnn_jax.em.stepwise`).
* :func:`score`, :func:`bic`, :func:`aic`, :func:`select_n_components`.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from grnn_jax import em
  >>> x = jax.random.normal(jax.random.key(0), (200, 2))
  >>> res = em.fit(x, 1, key=jax.random.key(1), covariance_type="diag")
  >>> int(res.n_iter), bool(res.converged)
  (3, True)
"""

from grnn_jax.em.blocks import Standardizer, default_block_size
from grnn_jax.em.fit import FitResult, fit, fit_from
from grnn_jax.em.init import INIT_METHODS, initialize
from grnn_jax.em.select import Selection, aic, bic, log_likelihood_sum, score, select_n_components
from grnn_jax.em.stats import SufficientStats, e_step, m_step_from_stats
from grnn_jax.em.stepwise import blend, check_step_schedule, stats_from_responsibilities, step_size

__all__ = [
    "FitResult",
    "INIT_METHODS",
    "Selection",
    "Standardizer",
    "SufficientStats",
    "aic",
    "bic",
    "blend",
    "check_step_schedule",
    "default_block_size",
    "e_step",
    "fit",
    "fit_from",
    "initialize",
    "log_likelihood_sum",
    "m_step_from_stats",
    "score",
    "select_n_components",
    "stats_from_responsibilities",
    "step_size",
]
