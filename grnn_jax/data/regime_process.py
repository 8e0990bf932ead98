"""Fixed Gaussian regimes switched by a known recurrent rule: data for the EM head.

Observation ``x_t ~ N(mu_{z_t}, Sigma_{z_t})`` from K fixed Gaussians; the regime follows a
deterministic-plus-noise recurrent rule of the past observations: a leaky running mean
``m_t = decay * m_{t-1} + (1 - decay) * x_{t-1}`` (``m_0 = 0``) of the first feature is
compared with thresholds, ``p(z_t = k | x_<t) = softmax_k(-sharpness * (m_t - c_k)^2)``
with ``c_k`` the first coordinate of ``mu_k``: the process tends to stay near where it has
recently been, with switches when a draw lands in another regime's basin. Because
``p(z_t | x_<t)`` is a known function of the history, the oracle log-density of every step
is exact: ``log sum_k p(z_t = k | x_<t) N(x_t | mu_k, Sigma_k)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import log_softmax, logsumexp
from scipy.stats import multivariate_normal

from grnn_jax.data.sequences import Sequences


class GaussianRegimes(NamedTuple):
    """The process's parameters.

    Attributes:
      means: (K, D) regime means.
      covariances: (K, D, D) regime covariances.
      decay: in [0, 1); memory of the running mean.
      sharpness: > 0; how sharply the running mean selects the next regime.
    """

    means: np.ndarray
    covariances: np.ndarray
    decay: float
    sharpness: float


def default_gaussian_regimes() -> GaussianRegimes:
    """Three well separated 2-D regimes with distinct covariances.

    Example:
      >>> p = default_gaussian_regimes()
      >>> p.means.shape, p.covariances.shape
      ((3, 2), (3, 2, 2))
    """
    means = np.array([[-3.0, 0.0], [0.0, 2.0], [3.0, -1.0]])
    covs = np.array([[[0.5, 0.2], [0.2, 0.4]],
                     [[0.3, 0.0], [0.0, 0.6]],
                     [[0.6, -0.25], [-0.25, 0.35]]])
    return GaussianRegimes(means, covs, decay=0.6, sharpness=0.25)


def _regime_log_probs(proc: GaussianRegimes, m: np.ndarray) -> np.ndarray:
    """(..., K) log p(z_t = k | running mean m (...))."""
    c = proc.means[:, 0]
    return log_softmax(-proc.sharpness * np.square(m[..., None] - c), axis=-1)


def sample_gaussian_regimes(proc: GaussianRegimes, *, seed: int, n_sequences: int,
                            length: int) -> tuple[Sequences, np.ndarray]:
    """Draws sequences and their regimes.

    Returns:
      ``(Sequences (S, T, D), regimes (S, T) int)``.

    Example:
      >>> seqs, z = sample_gaussian_regimes(default_gaussian_regimes(), seed=0, n_sequences=2, length=5)
      >>> seqs.x.shape, z.shape
      ((2, 5, 2), (2, 5))
    """
    if n_sequences < 1 or length < 1:
        raise ValueError(f"n_sequences and length must be >= 1; got {n_sequences}, {length}")
    rng = np.random.default_rng(seed)
    k, d = proc.means.shape
    chol = np.linalg.cholesky(proc.covariances)
    x = np.zeros((n_sequences, length, d))
    z = np.zeros((n_sequences, length), np.int64)
    m = np.zeros(n_sequences)
    prev = np.zeros((n_sequences, d))
    for t in range(length):
        m = proc.decay * m + (1 - proc.decay) * prev[:, 0] if t > 0 else m
        p = np.exp(_regime_log_probs(proc, m))
        u = rng.random(n_sequences)[:, None]
        z[:, t] = np.minimum((np.cumsum(p, axis=-1) < u).sum(-1), k - 1)
        eps = rng.standard_normal((n_sequences, d))
        x[:, t] = proc.means[z[:, t]] + np.einsum("sij,sj->si", chol[z[:, t]], eps)
        prev = x[:, t]
    return Sequences(x), z


def regime_prior(proc: GaussianRegimes, seqs: Sequences) -> np.ndarray:
    """(S, T, K) ``p(z_t = k | x_<t)`` of the process (the oracle predictive weights)."""
    x = seqs.x
    m = np.zeros(x.shape[:2])
    for t in range(1, x.shape[1]):
        m[:, t] = proc.decay * m[:, t - 1] + (1 - proc.decay) * x[:, t - 1, 0]
    return np.exp(_regime_log_probs(proc, m))


def step_log_probs(proc: GaussianRegimes, seqs: Sequences) -> np.ndarray:
    """(S, T) exact ``log p(x_t | x_<t)``; 0 at padded steps.

    Example:
      >>> p = default_gaussian_regimes()
      >>> seqs, _ = sample_gaussian_regimes(p, seed=0, n_sequences=2, length=4)
      >>> step_log_probs(p, seqs).shape
      (2, 4)
    """
    logw = np.log(regime_prior(proc, seqs))
    comp = np.stack([multivariate_normal(proc.means[k], proc.covariances[k]).logpdf(seqs.x)
                     for k in range(proc.means.shape[0])], axis=-1)
    comp = comp.reshape(seqs.x.shape[:2] + (-1,))
    lp = logsumexp(logw + comp, axis=-1)
    mask = seqs.mask
    return np.where(mask, lp, 0.0)
