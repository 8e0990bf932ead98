"""AR-HMMs of several sizes fitted by Baum-Welch in one compiled program, to choose the number
of regimes K and lags p on held-out sequences.

Every member of the grid (a K, a p and a restart) is an AR-HMM with ``k_max`` regimes of
which the first K are active (:func:`grnn_jax.em.arhmm_em.fit_arhmm` with ``active``) and a
regressor array of ``p_max`` lags of which the first p are read (the others are zero columns,
whose slopes the ridge keeps at exactly 0). So members differ only in data, not in shapes, and
one ``vmap`` fits them all: one compile for the whole grid instead of one per (K, p).

Start of each member: k-means (k-means++ seeding from the restart's key, then Lloyd, as
:mod:`grnn_jax.em.init`) on the steps' ``[x_t, phi_t]``, the regressions' M-step on those
hard labels, and the chain of the labels' initial and transition counts (with the Dirichlet
prior of the fit). Then ``n_iter`` Baum-Welch iterations.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax._util.dtypes import default_float
from grnn_jax.em import hmm
from grnn_jax.em.arhmm_em import DIRICHLET, ARHMMFit, arhmm_log_likelihood, fit_arhmm, mask_chain
from grnn_jax.em.blocks import default_block_size
from grnn_jax.em.init import _LLOYD_TOL, _sq_dist, kmeans_plusplus, lloyd
from grnn_jax.em.regression_em import RegressionStats, regression_m_step_from_stats, regression_stats
from grnn_jax.gmm.regression import RegressionMixture

_FAR = 1e15  # where an inactive k-means centre sits: no step is ever nearer to it


class ARHMMGrid(NamedTuple):
    """What :func:`fit_arhmm_grid` returns; M members, ``k_max`` regimes each.

    Attributes:
      n_components: (M,) K of each member; lags: (M,) p; restart: (M,) its restart index.
      fit: the members' :class:`~grnn_jax.em.arhmm_em.ARHMMFit` s, stacked on a leading M axis
        (inactive regimes have probability 0 in the chain, their parameters are the start's).
      train_log_likelihood: (M,) the training sequences' log-likelihood (sum over steps).
      val_log_likelihood: (M,) the held-out sequences' log-likelihood.
    """

    n_components: np.ndarray
    lags: np.ndarray
    restart: np.ndarray
    fit: ARHMMFit
    train_log_likelihood: np.ndarray
    val_log_likelihood: np.ndarray

    def best(self) -> int:
        """Index of the chosen member: for each (K, p) the restart with the highest training
        log-likelihood; among those, the highest held-out log-likelihood (NaN counts as -inf)."""
        train = np.nan_to_num(self.train_log_likelihood, nan=-np.inf)
        val = np.nan_to_num(self.val_log_likelihood, nan=-np.inf)
        picks = [max(np.flatnonzero((self.n_components == k) & (self.lags == p)), key=lambda i: train[i])
                 for k, p in sorted(set(zip(self.n_components.tolist(), self.lags.tolist())))]
        return int(max(picks, key=lambda i: val[i]))

    def member(self, i: int, n_features: int) -> ARHMMFit:
        """Member ``i`` as an AR-HMM of its own size: an :class:`~grnn_jax.em.arhmm_em.ARHMMFit`
        with its K regimes, whose slopes (and statistics) cover its ``p`` lags only."""
        k, f = int(self.n_components[i]), int(self.lags[i]) * n_features
        fit = self.fit
        cols = np.r_[np.arange(f), fit.stats.spp.shape[-1] - 1]  # the member's lags and the intercept
        tied = fit.mixture.covariance_type == "tied"
        rm = fit.mixture
        regimes = RegressionMixture(rm.logits[i, :k], rm.coef[i, :k, :, :f], rm.intercept[i, :k],
                                    rm.prec_chol[i] if tied else rm.prec_chol[i, :k], rm.covariance_type)
        st = fit.stats
        stats = RegressionStats(st.n[i, :k], st.spp[i, :k][:, cols][:, :, cols], st.sxp[i, :k][..., cols],
                                st.sxx[i] if tied else st.sxx[i, :k])
        return ARHMMFit(regimes, fit.log_init[i, :k], fit.log_trans[i, :k, :k], fit.log_likelihood[i],
                        fit.history[i], stats)


def kmeans_start(x, phi, mask, active, key, *, covariance_type: str, reg_covar, ridge,
                 prior_concentration):
    """The start of one member: ``(regimes, log_init, log_trans)`` from k-means labels of the
    observed steps' ``[x_t, phi_t]`` (see the module doc); inactive regimes get no steps."""
    k_max = active.shape[0]
    n = mask.size
    w = mask.reshape(n).astype(x.dtype)
    xf, pf = x.reshape(n, x.shape[-1]), phi.reshape(n, phi.shape[-1])
    z = jnp.concatenate([xf, pf], axis=1)
    zt1 = jnp.concatenate([z.T, jnp.ones((1, n), z.dtype)], axis=0)
    block = default_block_size(z.shape[1], k_max, "diag")
    centres = kmeans_plusplus(zt1, w, key, k_max, block)
    centres = jnp.where(active[:, None], centres, _FAR)
    mean_var = jnp.mean(jnp.sum(w[:, None] * jnp.square(z), 0) / jnp.sum(w))
    centres = lloyd(zt1, w, centres, _LLOYD_TOL * mean_var, block)
    labels = jnp.argmin(_sq_dist(zt1, centres), axis=0)
    resp = jax.nn.one_hot(labels, k_max, dtype=x.dtype) * w[:, None]
    stats = regression_stats(xf, pf, resp, covariance_type=covariance_type, weights=w)
    rm = regression_m_step_from_stats(stats, covariance_type=covariance_type, reg_covar=reg_covar, ridge=ridge)
    r = resp.reshape(mask.shape + (k_max,))  # (S, T, K), zero at padding
    counts = jnp.einsum("stj,stk->jk", r[:, :-1], r[:, 1:])
    li, lt = hmm.m_step_markov(jnp.sum(r[:, 0], 0), counts, prior_concentration)
    return rm, *mask_chain(li, lt, active)


@functools.partial(jax.jit, static_argnames=("k_max", "covariance_type", "n_iter"))
def _fit_members(x, phi, mask, xv, phiv, maskv, ks, ps, keys, *, k_max, covariance_type, n_iter,
                 reg_covar, ridge, prior_concentration):
    d = x.shape[-1]

    def one(k, p, key):
        active = jnp.arange(k_max) < k
        cols = (jnp.arange(phi.shape[-1]) < p * d).astype(phi.dtype)
        tr_phi, va_phi = phi * cols, phiv * cols
        start = kmeans_start(x, tr_phi, mask, active, key, covariance_type=covariance_type,
                             reg_covar=reg_covar, ridge=ridge, prior_concentration=prior_concentration)
        fit = fit_arhmm(*start, x, tr_phi, mask, n_iter=n_iter, reg_covar=reg_covar, ridge=ridge,
                        prior_concentration=prior_concentration, active=active)
        val = arhmm_log_likelihood(fit.mixture, fit.log_init, fit.log_trans, xv, va_phi, maskv, active)
        return fit, val

    return jax.vmap(one)(ks, ps, keys)


def fit_arhmm_grid(x, phi, mask, val=None, *, ks=(2, 4, 8, 12), lags=(1, 2), n_restarts: int = 2,
                   key: jax.Array, k_max: int | None = None, covariance_type: str = "full",
                   n_iter: int = 50, reg_covar=1e-6, ridge=1e-6,
                   prior_concentration=DIRICHLET) -> ARHMMGrid:
    """Fits an AR-HMM for every K in ``ks``, p in ``lags`` and restart, in one program.

    Args:
      x: (S, T, D) training sequences; phi: (S, T, max(lags) * D) their lagged observations
        (most recent first, zeros before each start, e.g. :func:`grnn_jax.data.lagged`);
        mask: (S, T) True at observed steps (padding may hold anything).
      val: ``(x, phi, mask)`` of the held-out sequences, the same layout (None: none, and
        ``val_log_likelihood`` is NaN).
      ks: numbers of regimes; lags: lag orders (each >= 0, at most phi's).
      n_restarts: k-means starts per (K, p), each from its own key.
      key: PRNG key of the starts (restart r uses ``fold_in(key, r)``).
      k_max: the regimes every member's arrays hold (default ``max(ks)``). The k-means++
        seeding depends on it, so a later fit of one member (``ks=(K,)``, the same ``key``,
        ``k_max`` and p) starts where the grid's did.
      covariance_type, n_iter, reg_covar, ridge, prior_concentration: as
        :func:`grnn_jax.em.arhmm_em.fit_arhmm`.

    Returns:
      :class:`ARHMMGrid`; ``grid.best()`` is the member held-out data choose.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax.data import lagged
      >>> from grnn_jax.em.arhmm_grid import fit_arhmm_grid
      >>> rng = np.random.default_rng(0)
      >>> x = np.zeros((24, 40, 1))
      >>> for t in range(1, 40):  # AR(1) whose slope flips between +0.9 and -0.9 in blocks of 10
      ...     x[:, t] = (0.9 if (t // 10) % 2 else -0.9) * x[:, t - 1] + rng.normal(size=(24, 1))
      >>> arrays = lambda s: (s, lagged(s, 2), np.ones(s.shape[:2], bool))
      >>> grid = fit_arhmm_grid(*arrays(x[:16]), arrays(x[16:]), ks=(1, 2), lags=(0, 1),
      ...                       key=jax.random.key(0))
      >>> i = grid.best()
      >>> int(grid.n_components[i]), int(grid.lags[i])
      (2, 1)
    """
    ks, lags = [int(k) for k in ks], [int(p) for p in lags]
    k_max = max(ks) if k_max is None else int(k_max)
    d = np.shape(x)[-1]
    if not ks or min(ks) < 1 or max(ks) > k_max or not lags or min(lags) < 0 or max(lags) * d > np.shape(phi)[-1]:
        raise ValueError(f"need 1 <= ks <= k_max and 0 <= lags <= {np.shape(phi)[-1] // d} (phi's columns); "
                         f"got ks={ks}, lags={lags}")
    if n_restarts < 1:
        raise ValueError(f"n_restarts must be at least 1; got {n_restarts}")
    members = [(k, p, r) for k in ks for p in lags for r in range(n_restarts)]
    mk, mp, mr = (np.array(c) for c in zip(*members))
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.asarray(mr))
    dtype = default_float()
    held_out = (x, phi, mask) if val is None else val
    arrays = [jnp.asarray(np.nan_to_num(np.asarray(a, np.float64)), dtype) for a in (x, phi, *held_out[:2])]
    fit, val_ll = _fit_members(arrays[0], arrays[1], jnp.asarray(mask, bool), arrays[2], arrays[3],
                               jnp.asarray(held_out[2], bool), jnp.asarray(mk), jnp.asarray(mp), keys,
                               k_max=k_max, covariance_type=covariance_type, n_iter=int(n_iter),
                               reg_covar=reg_covar, ridge=ridge, prior_concentration=prior_concentration)
    val_ll = np.full(len(members), np.nan) if val is None else np.asarray(val_ll, np.float64)
    return ARHMMGrid(mk, mp, mr, fit, np.asarray(fit.log_likelihood, np.float64), val_ll)
