"""A Markov-switching autoregression: synthetic sequences whose log-density is exact.

A hidden regime ``s_t`` follows a Markov chain (``init``, ``trans``); given it,

    x_t = A[s_t] x_{t-1} + b[s_t] + e_t,   e_t ~ N(0, cov[s_t]),   x_0 = 0.

``x_0 = 0`` matches the recurrent model's convention that step 1 is predicted from a zero
input. The one-step predictive density ``p(x_t | x_<t)`` is a mixture of R Gaussians whose
weights are the forward filter's predicted regime probabilities, so a mixture-density RNN
with ``K >= R`` components can represent the process exactly; ``step_log_probs`` is the
oracle it is measured against.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from grnn_jax.data.sequences import Sequences


def logsumexp(a, axis=None) -> np.ndarray:
    """Numerically stable ``log(sum(exp(a)))`` (numpy; -inf only when every term is -inf)."""
    a = np.asarray(a, dtype=np.float64)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


class SwitchingAR(NamedTuple):
    """Parameters of the process (numpy, float64).

    Attributes:
      init: (R,) initial regime probabilities.
      trans: (R, R) transition matrix, ``trans[i, j] = P(s_t = j | s_{t-1} = i)``.
      A: (R, D, D) autoregressive matrices.
      b: (R, D) offsets.
      cov: (R, D, D) noise covariances.
    """

    init: np.ndarray
    trans: np.ndarray
    A: np.ndarray
    b: np.ndarray
    cov: np.ndarray

    @property
    def n_regimes(self) -> int:
        return self.init.shape[0]

    @property
    def n_features(self) -> int:
        return self.b.shape[1]


def default_switching_ar(n_features: int = 2) -> SwitchingAR:
    """A sticky two-regime process: a slow, quiet rotation and a fast, noisy reversal.

    Example:
      >>> from grnn_jax.data import default_switching_ar
      >>> p = default_switching_ar(2)
      >>> p.A.shape, p.trans.sum(axis=1).tolist()
      ((2, 2, 2), [1.0, 1.0])
    """
    d = int(n_features)
    if d < 1:
        raise ValueError(f"n_features must be >= 1; got {n_features}")
    rot = np.eye(d)
    if d >= 2:
        c, s = np.cos(0.4), np.sin(0.4)
        rot[:2, :2] = [[c, -s], [s, c]]
    a = np.stack([0.9 * rot, -0.5 * np.eye(d)])
    b = np.stack([np.full(d, 0.2), np.linspace(-1.0, 1.0, d) if d > 1 else np.array([-1.0])])
    cov = np.stack([0.05 * np.eye(d), 0.3 * np.eye(d) + 0.1 * (np.ones((d, d)) - np.eye(d))])
    trans = np.array([[0.95, 0.05], [0.10, 0.90]])
    init = np.array([0.5, 0.5])
    return SwitchingAR(init, trans, a, b, cov)


def classic_switching_ar(n_features: int = 10, n_regimes: int = 3, *, seed: int = 0) -> SwitchingAR:
    """The shape of the classic GRNN write-up's example: 10-dimensional observations whose
    next-step density is a mixture of three Gaussians with history-dependent weights.

    Each regime contracts the previous observation towards its own centre with a random
    rotation (``A_r = rho_r Q_r``, ``rho_r`` in [0.5, 0.8]); the centres ``b_r / (1 - rho_r)``
    are about three noise scales apart, so the regimes overlap but can be told apart from a
    few steps; the noise covariances are correlated and differ in scale; the chain is sticky
    (stay with probability 0.9). The predictive density is a 3-component full-covariance
    mixture whose means are linear in ``x_{t-1}`` and whose weights follow the forward
    filter, which a 2-layer LSTM with 50 units and a K=3 head can represent closely.

    Args:
      n_features: D.
      n_regimes: R (the number of mixture components the predictive density has).
      seed: seed of the random construction (the process is a fixed function of it).

    Example:
      >>> from grnn_jax.data import synthetic
      >>> p = synthetic.classic_switching_ar()
      >>> p.A.shape, p.cov.shape, p.trans.diagonal().tolist()
      ((3, 10, 10), (3, 10, 10), [0.9, 0.9, 0.9])
    """
    d, r = int(n_features), int(n_regimes)
    if d < 1 or r < 1:
        raise ValueError(f"n_features and n_regimes must be >= 1; got {n_features}, {n_regimes}")
    rng = np.random.default_rng(seed)
    rho = np.linspace(0.5, 0.8, r)
    q = np.linalg.qr(rng.standard_normal((r, d, d)))[0]  # (R, D, D) orthogonal
    a = rho[:, None, None] * q
    centres = 1.5 * rng.standard_normal((r, d))
    b = centres * (1.0 - rho)[:, None]
    scales = np.linspace(0.3, 0.6, r)
    mix = rng.standard_normal((r, d, d)) / np.sqrt(d)
    cov = scales[:, None, None] ** 2 * (0.5 * np.eye(d) + mix @ np.swapaxes(mix, -1, -2))
    trans = np.full((r, r), 0.1 / max(r - 1, 1)) + (0.9 - 0.1 / max(r - 1, 1)) * np.eye(r)
    if r == 1:
        trans = np.ones((1, 1))
    init = np.full(r, 1.0 / r)
    return SwitchingAR(init, trans, a, b, cov)


def _check(proc: SwitchingAR) -> None:
    r, d = proc.n_regimes, proc.n_features
    shapes = {"init": (r,), "trans": (r, r), "A": (r, d, d), "b": (r, d), "cov": (r, d, d)}
    for name, shape in shapes.items():
        if np.shape(getattr(proc, name)) != shape:
            raise ValueError(f"{name} must have shape {shape}; got {np.shape(getattr(proc, name))}")
    if not np.allclose(proc.trans.sum(axis=1), 1.0) or not np.isclose(proc.init.sum(), 1.0):
        raise ValueError("init and the rows of trans must be probability vectors")


def sample_switching_ar(
    proc: SwitchingAR, *, seed: int, n_sequences: int, length: int
) -> tuple[Sequences, np.ndarray]:
    """Draws sequences of equal length from the process.

    Returns:
      (Sequences with x (S, T, D), regimes (S, T) int).

    Example:
      >>> from grnn_jax.data import default_switching_ar, sample_switching_ar
      >>> seqs, reg = sample_switching_ar(default_switching_ar(2), seed=0, n_sequences=3, length=4)
      >>> seqs.x.shape, reg.shape
      ((3, 4, 2), (3, 4))
    """
    _check(proc)
    rng = np.random.default_rng(seed)
    r, d = proc.n_regimes, proc.n_features
    chol = np.linalg.cholesky(proc.cov)
    x = np.zeros((n_sequences, length, d))
    regimes = np.zeros((n_sequences, length), dtype=np.int64)
    prev = np.zeros((n_sequences, d))
    cum_trans = np.cumsum(proc.trans, axis=1)
    s = rng.choice(r, size=n_sequences, p=proc.init)
    for t in range(length):
        if t > 0:
            u = rng.random(n_sequences)
            s = np.minimum((u[:, None] > cum_trans[s]).sum(axis=1), r - 1)
        noise = np.einsum("nde,ne->nd", chol[s], rng.standard_normal((n_sequences, d)))
        prev = np.einsum("nde,ne->nd", proc.A[s], prev) + proc.b[s] + noise
        x[:, t] = prev
        regimes[:, t] = s
    return Sequences(x), regimes


def _emission_log_probs(proc: SwitchingAR, x: np.ndarray) -> np.ndarray:
    """(S, T, R) log N(x_t | A_r x_{t-1} + b_r, cov_r) with x_0 = 0."""
    x = np.asarray(x, dtype=np.float64)
    prev = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    mean = np.einsum("rde,ste->strd", proc.A, prev) + proc.b  # (S, T, R, D)
    diff = x[:, :, None, :] - mean
    chol = np.linalg.cholesky(proc.cov)  # (R, D, D)
    # Solve L y = diff per regime: y = L^{-1} diff.
    inv_chol = np.linalg.inv(chol)
    y = np.einsum("rde,stre->strd", inv_chol, diff)
    log_det = np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)  # (R,)
    d = proc.n_features
    return -0.5 * (d * np.log(2 * np.pi) + np.sum(y**2, axis=-1)) - log_det


def step_log_probs(proc: SwitchingAR, seqs: Sequences) -> np.ndarray:
    """Exact ``log p(x_t | x_<t)`` by the forward algorithm (in log space).

    Returns:
      (S, T) float64; 0 at padded steps. Summing over steps gives ``log p(x_1..x_T)``.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import default_switching_ar, sample_switching_ar, synthetic
      >>> p = default_switching_ar(1)
      >>> s, _ = sample_switching_ar(p, seed=0, n_sequences=2, length=5)
      >>> synthetic.step_log_probs(p, s).shape
      (2, 5)
    """
    _check(proc)
    if seqs.n_features != proc.n_features:
        raise ValueError(f"data have {seqs.n_features} features; the process has {proc.n_features}")
    emis = _emission_log_probs(proc, np.where(seqs.mask[..., None], seqs.x, 0.0))
    log_trans = np.log(proc.trans)
    log_alpha = np.log(proc.init)[None, :] + emis[:, 0]  # (S, R)
    norm = logsumexp(log_alpha, axis=1)
    out = np.zeros(emis.shape[:2])
    out[:, 0] = norm
    log_alpha = log_alpha - norm[:, None]
    for t in range(1, emis.shape[1]):
        pred = logsumexp(log_alpha[:, :, None] + log_trans[None], axis=1)  # (S, R)
        joint = pred + emis[:, t]
        norm = logsumexp(joint, axis=1)
        out[:, t] = norm
        log_alpha = joint - norm[:, None]
    return np.where(seqs.mask, out, 0.0)


def log_prob(proc: SwitchingAR, seqs: Sequences) -> np.ndarray:
    """(S,) exact ``log p(x_1..x_{len})`` of each sequence."""
    return step_log_probs(proc, seqs).sum(axis=1)


def log_prob_brute_force(proc: SwitchingAR, x: np.ndarray) -> float:
    """``log p(x_1..x_T)`` of one sequence (T, D) by summing over all R^T regime paths
    (for testing the forward algorithm on tiny T)."""
    _check(proc)
    x = np.asarray(x, dtype=np.float64)
    emis = _emission_log_probs(proc, x[None])[0]  # (T, R)
    t_len, r = emis.shape
    terms = []
    for path in itertools.product(range(r), repeat=t_len):
        lp = np.log(proc.init[path[0]]) + emis[0, path[0]]
        for t in range(1, t_len):
            lp += np.log(proc.trans[path[t - 1], path[t]]) + emis[t, path[t]]
        terms.append(lp)
    return float(logsumexp(terms))
