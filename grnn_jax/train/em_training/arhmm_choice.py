"""The filtering head's size chosen on validation data by Baum-Welch alone, before training.

:func:`choose_arhmm` fits AR-HMMs over a grid of regime counts K and lag orders p to the
(standardised) training sequences, in one compiled program
(:func:`grnn_jax.em.arhmm_grid.fit_arhmm_grid`), and keeps the (K, p) whose fit scores the
validation sequences best: the model a classical AR-HMM baseline would choose, in seconds.
:func:`arhmm_start` refits one (K, p) from the same starts for a run's ``--em-init``, so a
filtering head built with the chosen K and p starts at (up to rounding) the AR-HMM the choice
scored.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import jax
import numpy as np

from grnn_jax.data import Sequences, lagged
from grnn_jax.em.arhmm_em import ARHMMFit
from grnn_jax.em.arhmm_grid import fit_arhmm_grid
from grnn_jax.gmm.standardise import Standardiser
from grnn_jax.train.em_training.em_state import EM_HEAD_RIDGE

ARHMM_KS = (2, 4, 8, 12)
ARHMM_LAGS = (1, 2)
ARHMM_RESTARTS = 2
ARHMM_ITERATIONS = 100  # as many as the AR-HMM baseline (experiments/baselines.py) gets


class ARHMMChoice(NamedTuple):
    """What :func:`choose_arhmm` found.

    Attributes:
      n_components: the chosen K; lags: the chosen p.
      val_nll: its validation NLL per observed step, original units.
      table: one dict per (K, p): ``n_components``, ``lags``, ``train_nll`` and ``val_nll`` (per
        step, original units) of its best-on-training restart.
    """

    n_components: int
    lags: int
    val_nll: float
    table: list


def supported_lags(train_seqs: Sequences, lags=ARHMM_LAGS) -> tuple:
    """The lag orders every training sequence is longer than (``(0,)`` when none is)."""
    ok = tuple(p for p in lags if p < int(train_seqs.lengths.min()))
    return ok or (0,)


def _arrays(seqs: Sequences, p: int):
    return seqs.x, lagged(seqs.x, p, lengths=seqs.lengths, check=False), seqs.mask


# The last grid :func:`choose_arhmm` fitted, under the fingerprint of its training data and
# settings: a run started right after it (the race's) takes its start from the grid instead of
# compiling and fitting it again, and so starts at exactly the AR-HMM the choice scored.
_LAST_GRID: dict = {}


def _fingerprint(seqs: Sequences, covariance_type: str, key: jax.Array) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(np.where(seqs.mask[..., None], seqs.x, 0.0), np.float64).tobytes())
    h.update(np.asarray(seqs.lengths, np.int64).tobytes())
    h.update(np.asarray(jax.random.key_data(key)).tobytes())
    h.update(covariance_type.encode())
    return h.hexdigest()


def _k_max(ks) -> int:
    """The regimes the grid's arrays hold: the k-means++ seeding depends on it, so the choice
    and a run's start use the same."""
    return max(*ks, *ARHMM_KS)


def start_key(seed: int) -> jax.Array:
    """The key of the k-means starts: the run's EM key (``fold_in(key(seed), 1)``)."""
    return jax.random.fold_in(jax.random.key(seed), 1)


def choose_arhmm(train_seqs: Sequences, val_seqs: Sequences, *, ks=ARHMM_KS, lags=ARHMM_LAGS,
                 covariance_type: str = "full", seed: int = 0) -> ARHMMChoice:
    """The (K, p) of the Baum-Welch AR-HMM that scores ``val_seqs`` best.

    Args:
      train_seqs, val_seqs: original units; both are standardised by the training split, as
        a run's model sees them.
      ks, lags: the grid (lags the training sequences cannot support are left out).
      covariance_type: the regimes' covariances.
      seed: the run's seed (the starts' key is :func:`start_key`).

    Returns:
      :class:`ARHMMChoice`.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> rng = np.random.default_rng(0)
      >>> x = np.zeros((40, 30, 1))
      >>> for t in range(1, 30):
      ...     x[:, t] = 0.9 * x[:, t - 1] + rng.normal(size=(40, 1))
      >>> c = choose_arhmm(Sequences(x[:30]), Sequences(x[30:]), ks=(1, 2))
      >>> c.lags >= 1, len(c.table)
      (True, 4)
    """
    std = Standardiser.fit(train_seqs)
    tr, va = std.transform(train_seqs), std.transform(val_seqs)
    lags = supported_lags(train_seqs, lags)
    p = max(lags)
    grid = fit_arhmm_grid(*_arrays(tr, p), _arrays(va, p), ks=ks, lags=lags, n_restarts=ARHMM_RESTARTS,
                          key=start_key(seed), k_max=_k_max(ks), covariance_type=covariance_type,
                          n_iter=ARHMM_ITERATIONS, ridge=EM_HEAD_RIDGE)
    _LAST_GRID.clear()
    _LAST_GRID[_fingerprint(tr, covariance_type, start_key(seed))] = grid
    log_det = float(std.log_det)
    train_nll = log_det - grid.train_log_likelihood / tr.n_steps
    val_nll = log_det - grid.val_log_likelihood / va.n_steps
    table = []
    for k in sorted(set(grid.n_components.tolist())):
        for q in sorted(set(grid.lags.tolist())):
            idx = np.flatnonzero((grid.n_components == k) & (grid.lags == q))
            i = idx[np.argmin(np.nan_to_num(train_nll[idx], nan=np.inf))]
            table.append({"n_components": k, "lags": q, "train_nll": float(train_nll[i]),
                          "val_nll": float(val_nll[i])})
    best = grid.best()
    return ARHMMChoice(int(grid.n_components[best]), int(grid.lags[best]), float(val_nll[best]), table)


def arhmm_start(seqs: Sequences, n_components: int, lags: int, *, covariance_type: str,
                key: jax.Array) -> ARHMMFit:
    """The Baum-Welch AR-HMM with ``n_components`` regimes on ``lags`` lags fitted to ``seqs``
    (model units) from the starts :func:`choose_arhmm` uses for that (K, p), best of its
    restarts on ``seqs``. When :func:`choose_arhmm` just fitted that (K, p) on the same data,
    with the same key and covariance type, its fit is returned as it is.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax.data import Sequences
      >>> seqs = Sequences(np.random.default_rng(0).normal(size=(6, 20, 2)))
      >>> fit = arhmm_start(seqs, 3, 1, covariance_type="diag", key=jax.random.key(0))
      >>> fit.mixture.coef.shape, fit.log_trans.shape
      ((3, 2, 2), (3, 3))
    """
    grid = _LAST_GRID.get(_fingerprint(seqs, covariance_type, key))
    if grid is not None:
        same = np.flatnonzero((grid.n_components == n_components) & (grid.lags == lags))
        if same.size:
            best = same[np.argmax(np.nan_to_num(grid.train_log_likelihood[same], nan=-np.inf))]
            return grid.member(int(best), seqs.n_features)
    grid = fit_arhmm_grid(*_arrays(seqs, lags), ks=(n_components,), lags=(lags,),
                          n_restarts=ARHMM_RESTARTS, key=key, k_max=_k_max([n_components]),
                          covariance_type=covariance_type, n_iter=ARHMM_ITERATIONS, ridge=EM_HEAD_RIDGE)
    return grid.member(grid.best(), seqs.n_features)
