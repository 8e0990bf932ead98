"""Fitting Gaussian mixtures by EM, built on :mod:`grnn_jax.gmm`.

* :func:`e_step` — one blocked pass over the data returning
  :class:`SufficientStats` (summable over chunks and devices) and the
  log-likelihood; :func:`m_step_from_stats` — the closed-form M-step.
* :func:`fit` — checked entry point (restarts, batched data sets);
  :func:`fit_from` — the pure jitted EM loop from given parameters;
  :func:`initialize` — k-means++, k-means, random initial mixtures.
* :func:`fit_chunked` — exact EM over chunks of data larger than memory (and
  over processes); :func:`fit_sharded` — EM with rows sharded over a device
  mesh; :func:`fit_online` — stepwise EM over mini-batches of a stream.
* :func:`stats_from_responsibilities`, :func:`step_size`, :func:`blend` — stepwise
  (online) EM on the same statistics (:mod:`grnn_jax.em.stepwise`).
* :func:`score`, :func:`bic`, :func:`aic` (all three in one pass: :func:`criteria`),
  :func:`select_n_components`.
* :func:`fit_regression`, :func:`regression_stats`, :func:`regression_m_step_from_stats` —
  mixtures of linear regressions (:mod:`grnn_jax.em.regression_em`); :mod:`grnn_jax.em.hmm` —
  the forward algorithm, smoothing and the Markov M-step of a hidden Markov model;
  :mod:`grnn_jax.em.arhmm_em` — Baum-Welch for an autoregressive HMM (both together).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from grnn_jax import em, gmm
  >>> x = jax.random.normal(jax.random.key(0), (200, 2))
  >>> res = em.fit(x, 1, key=jax.random.key(1), covariance_type="diag")
  >>> # One component's maximum-likelihood fit: the sample mean and variance.
  >>> bool(res.converged), bool(jnp.allclose(res.gmm.means[0], x.mean(0), atol=1e-5))
  (True, True)
  >>> bool(jnp.allclose(gmm.covariances(res.gmm)[0], x.var(0), rtol=1e-4))
  True
"""

from grnn_jax.em.blocks import default_block_size
from grnn_jax.gmm.standardise import Standardiser
from grnn_jax.em.chunked import fit_chunked, log_likelihood_chunked
from grnn_jax.em.fit import FitResult, fit, fit_from
from grnn_jax.em.init import INIT_METHODS, initialize
from grnn_jax.em.options import EMOptions
from grnn_jax.em.online import OnlineResult, fit_online
from grnn_jax.em.sharded import data_mesh, fit_sharded
from grnn_jax.em.select import (
    Criteria,
    Selection,
    SelectionResult,
    aic,
    bic,
    criteria,
    log_likelihood_sum,
    score,
    select_n_components,
)
from grnn_jax.em.stats import SufficientStats, e_step, m_step_from_stats
from grnn_jax.em import arhmm_em, hmm
from grnn_jax.em.regression_em import (
    RegressionFitResult,
    RegressionStats,
    fit_regression,
    regression_e_step,
    regression_m_step_from_stats,
    regression_stats,
)
from grnn_jax.em.stepwise import blend, check_step_schedule, stats_from_responsibilities, step_size

__all__ = [
    "aic",
    "bic",
    "blend",
    "check_step_schedule",
    "criteria",
    "Criteria",
    "data_mesh",
    "default_block_size",
    "e_step",
    "EMOptions",
    "fit",
    "fit_chunked",
    "fit_from",
    "fit_online",
    "fit_regression",
    "fit_sharded",
    "FitResult",
    "arhmm_em",
    "hmm",
    "INIT_METHODS",
    "initialize",
    "log_likelihood_chunked",
    "log_likelihood_sum",
    "m_step_from_stats",
    "OnlineResult",
    "regression_e_step",
    "regression_m_step_from_stats",
    "regression_stats",
    "RegressionFitResult",
    "RegressionStats",
    "score",
    "select_n_components",
    "Selection",
    "SelectionResult",
    "Standardiser",
    "stats_from_responsibilities",
    "step_size",
    "SufficientStats",
]
