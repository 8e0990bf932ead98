"""Baselines a GRNN must beat, scored per observed step like the GRNN.

* static GMM — one mixture for every step, fitted by the library's own EM: the
  best a model can do that ignores the order of the steps;
* Gaussian HMM (hmmlearn) — a K-state Markov chain with Gaussian emissions; its
  one-step predictive density is a mixture whose weights come from forward
  filtering, computed here as a (T, K) array so that calibration and plots can
  judge it like the GRNN;
* the single-Gaussian RNN is the GRNN with K=1 and is trained by ``main.py``.

Every baseline is fitted on standardised training sequences; K is chosen on the
validation split (never on test). Log-likelihoods are sums over observed steps
in standardised units; ``nll_per_step`` turns them into nats per step in the
data's original units with the standardiser's log-Jacobian.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax import em, gmm
from grnn_jax.data import Sequences

COMPONENTS_GRID = (1, 2, 3, 4, 5, 6)


def nll_per_step(total_log_likelihood: float, n_steps: int, log_jacobian: float) -> float:
    """Nats per observed step in original units from a summed standardised log-likelihood."""
    return -float(total_log_likelihood) / int(n_steps) + float(log_jacobian)


# ----------------------------------------------------------------------------- static GMM


def fit_static_gmm(train: Sequences, n_components: int, *, seed: int,
                   covariance_type: str = "full", n_init: int = 5) -> gmm.GMM:
    """EM (best of ``n_init`` k-means++ restarts) on the observed steps of ``train`` pooled,
    ignoring their order."""
    x = jnp.asarray(train.observed(), jnp.float32)
    result = em.fit(x, n_components, key=jax.random.key(seed), covariance_type=covariance_type,
                    n_init=n_init, max_iter=500, tol=1e-5)
    return result.gmm


_log_prob = jax.jit(gmm.log_prob)  # one compiled program instead of one per primitive


def static_gmm_log_probs(g: gmm.GMM, seqs: Sequences) -> np.ndarray:
    """(S, T) per-step log-densities (0 at padded steps)."""
    lp = np.asarray(_log_prob(g, jnp.asarray(np.nan_to_num(seqs.x), jnp.float32)), np.float64)
    return np.where(seqs.mask, lp, 0.0)


def static_gmm_predictive(g: gmm.GMM, seqs: Sequences) -> gmm.GMM:
    """The same mixture at every step, broadcast to batch shape (S, T)."""
    shape = (seqs.n_sequences, seqs.max_length)
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, shape + a.shape), g)


# ----------------------------------------------------------------------------- Gaussian HMM


def fit_hmm(train: Sequences, n_components: int, *, seed: int, n_iter: int = 200,
            covariance_type: str = "full") -> Any:
    """hmmlearn ``GaussianHMM`` fitted by Baum-Welch on the training sequences."""
    from hmmlearn import hmm

    model = hmm.GaussianHMM(n_components=n_components, covariance_type=covariance_type,
                            n_iter=n_iter, tol=1e-4, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("hmmlearn").setLevel(logging.ERROR)
        model.fit(train.observed(), train.lengths)
    return model


def hmm_converged(model) -> bool:
    """Whether Baum-Welch stopped because its log-likelihood gain fell below ``tol``
    (hmmlearn's ``monitor_.converged`` also says True when it ran out of iterations)."""
    history = list(model.monitor_.history)
    return len(history) >= 2 and history[-1] - history[-2] < model.monitor_.tol


def hmm_score(model, seqs: Sequences) -> float:
    """hmmlearn's own ``score``: the log-likelihood summed over every observed step."""
    return float(model.score(seqs.observed(), seqs.lengths))


def _hmm_forward(model, seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """(S, T) per-step log-densities (0 at padding) and (S, T, K) log P(s_t | x_<t)."""
    x = np.nan_to_num(seqs.x)
    # scipy on the host: no compilation for every new (S, T)
    emis = np.stack([multivariate_normal(m, c, allow_singular=True).logpdf(x).reshape(x.shape[:2])
                     for m, c in zip(model.means_, model.covars_)], axis=-1)  # (S, T, K)
    log_a = np.log(np.maximum(model.transmat_, 1e-300))
    log_pred = np.empty_like(emis)
    log_pred[:, 0] = np.log(np.maximum(model.startprob_, 1e-300))
    for t in range(1, seqs.max_length):
        joint = log_pred[:, t - 1] + emis[:, t - 1]
        filt = joint - logsumexp(joint, axis=-1, keepdims=True)
        log_pred[:, t] = logsumexp(filt[:, :, None] + log_a[None], axis=1)
    lp = logsumexp(log_pred + emis, axis=-1)
    return np.where(seqs.mask, lp, 0.0), log_pred


def hmm_log_probs(model, seqs: Sequences) -> np.ndarray:
    """(S, T) one-step predictive log-densities of an HMM by forward filtering (0 at padding).

    ``p(x_t | x_<t) = sum_k P(s_t = k | x_<t) N(x_t | mu_k, Sigma_k)``: the
    filtered state probabilities pushed through the transition matrix (the start
    distribution at t = 0). Their sum over steps equals hmmlearn's ``score``.
    """
    return _hmm_forward(model, seqs)[0]


def hmm_predictive(model, seqs: Sequences) -> gmm.GMM:
    """The HMM's one-step predictive mixtures, batch shape (S, T), full covariances."""
    log_pred = _hmm_forward(model, seqs)[1]
    shape = log_pred.shape[:2]
    k, d = model.means_.shape
    means = np.broadcast_to(model.means_, shape + (k, d))
    covs = np.broadcast_to(np.asarray(model.covars_), shape + (k, d, d))  # (K, D, D) for every type
    return gmm.from_covariances(jnp.asarray(log_pred, jnp.float32), jnp.asarray(means, jnp.float32),
                                jnp.asarray(covs, jnp.float32), "full")


# ----------------------------------------------------------------------------- selection


@dataclasses.dataclass
class BaselineResult:
    """A baseline with K chosen on validation.

    Attributes:
      name: what to call it in a report.
      n_components: the chosen K.
      model: the fitted model (a ``gmm.GMM`` or an hmmlearn model).
      val_nll: {K: validation nats per step, original units} for every K tried.
      log_probs: callable Sequences -> (S, T) per-step log-densities, standardised units.
      predictive: callable Sequences -> predictive GMM with batch shape (S, T).
    """

    name: str
    n_components: int
    model: Any
    val_nll: dict[int, float]
    log_probs: Callable[[Sequences], np.ndarray]
    predictive: Callable[[Sequences], gmm.GMM]

    def nll(self, seqs: Sequences, log_jacobian: float) -> float:
        """Nats per observed step of ``seqs`` (standardised) in original units."""
        return nll_per_step(self.log_probs(seqs).sum(), seqs.n_steps, log_jacobian)


def _select(name, fit, log_probs, predictive, train, val, ks, log_jacobian) -> BaselineResult:
    best = None
    val_nll = {}
    for k in ks:
        model = fit(train, k)
        v = nll_per_step(log_probs(model, val).sum(), val.n_steps, log_jacobian)
        val_nll[k] = v
        if np.isfinite(v) and (best is None or v < val_nll[best[0]]):
            best = (k, model)
    if best is None:
        raise RuntimeError(f"{name}: no K gave a finite validation NLL ({val_nll})")
    k, model = best
    return BaselineResult(name, k, model, val_nll, lambda s: log_probs(model, s),
                          lambda s: predictive(model, s))


def static_gmm_baseline(train: Sequences, val: Sequences, *, log_jacobian: float, seed: int = 0,
                        ks=COMPONENTS_GRID, covariance_type: str = "full") -> BaselineResult:
    """Static GMM with K chosen on validation; ``train``/``val`` standardised."""
    ks = [k for k in ks if k <= train.n_steps]
    return _select(
        "static GMM",
        lambda s, k: fit_static_gmm(s, k, seed=seed, covariance_type=covariance_type),
        static_gmm_log_probs, static_gmm_predictive, train, val, ks, log_jacobian)


def hmm_baseline(train: Sequences, val: Sequences, *, log_jacobian: float, seed: int = 0,
                 ks=COMPONENTS_GRID, covariance_type: str = "full", n_iter: int = 200) -> BaselineResult:
    """Gaussian HMM with K chosen on validation; ``train``/``val`` standardised."""
    ks = [k for k in ks if k <= train.n_steps]
    return _select(
        "Gaussian HMM",
        lambda s, k: fit_hmm(s, k, seed=seed, covariance_type=covariance_type, n_iter=n_iter),
        hmm_log_probs, hmm_predictive,
        train, val, ks, log_jacobian)
