"""Baum-Welch for an autoregressive HMM: regimes that are linear regressions on the past,
switching by a Markov chain.

E-step: each sequence's smoothed regime posteriors and expected transitions by the exact
forward-backward recursion (:func:`grnn_jax.em.hmm.forward_backward`), with per-regime
densities ``N(x_t | W_k phi_t + b_k, Sigma_k)``. M-step: weighted least squares per regime
from summable statistics (:func:`grnn_jax.em.regression_em.regression_m_step_from_stats`) and
the chain's normalised counts (:func:`grnn_jax.em.hmm.m_step_markov`, by default with
dynamax's Dirichlet concentration 1.1, so no transition is ever exactly impossible). The
iterations run in one ``lax.scan`` under ``jit``; every sequence is one row of a padded
batch, so sequences of any lengths share one program.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from grnn_jax.em import hmm
from grnn_jax.em.regression_em import RegressionStats, regression_m_step_from_stats, regression_stats
from grnn_jax.gmm.regression import RegressionMixture, regression_component_log_prob

DIRICHLET = 1.1  # dynamax's default concentration on the initial and transition probabilities


class ARHMMFit(NamedTuple):
    """What :func:`fit_arhmm` returns.

    Attributes:
      mixture: the regimes (``logits``: the log share of observations each regime explains).
      log_init: (K,) log p(z_1).
      log_trans: (K, K) log p(z_t = k | z_{t-1} = j), rows j.
      log_likelihood: () sum of the sequences' log-likelihoods at the returned parameters.
      history: (n_iter,) the log-likelihood at the start of each iteration (EM never lowers it
        under maximum likelihood, ``prior_concentration=None``).
      stats: :class:`~grnn_jax.em.regression_em.RegressionStats` of the last E-step (sums over
        the observed steps).
    """

    mixture: RegressionMixture
    log_init: jax.Array
    log_trans: jax.Array
    log_likelihood: jax.Array
    history: jax.Array
    stats: RegressionStats


def mask_chain(log_init, log_trans, active):
    """The chain restricted to the ``active`` regimes: the others get probability 0 (``-inf``)
    and every row is renormalised over the active columns. ``active`` None: unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> li, lt = mask_chain(jnp.log(jnp.full(3, 1 / 3)), jnp.log(jnp.full((3, 3), 1 / 3)),
      ...                     jnp.array([True, True, False]))
      >>> jnp.exp(li).tolist(), jnp.exp(lt[2]).tolist()
      ([0.5, 0.5, 0.0], [0.5, 0.5, 0.0])
    """
    if active is None:
        return log_init, log_trans
    li = jnp.where(active, log_init, -jnp.inf)
    lt = jnp.where(active[None, :], log_trans, -jnp.inf)
    return (li - jax.nn.logsumexp(li), lt - jax.nn.logsumexp(lt, axis=-1, keepdims=True))


def arhmm_e_step(rm: RegressionMixture, log_init, log_trans, x, phi, mask, active=None):
    """One E-step over a padded batch of sequences.

    Args:
      rm: the regimes.
      log_init: (K,); log_trans: (K, K).
      x: (S, T, D) observations; phi: (S, T, F) regressors (the lagged observations, zeros
        before each start); mask: (S, T) bool, True at observed steps (padding may hold NaN).
      active: optional (K,) bool: only these regimes are used (the chain never enters the
        others, whose statistics are zero), so one compiled program serves every K up to
        the array's.

    Returns:
      ``(stats, expected_initial (K,), expected_counts (K, K), log_likelihood ())``, summed
      over sequences.
    """
    mask, x, phi, log_init, log_trans, log_emit = _emissions(rm, log_init, log_trans, x, phi, mask, active)
    sm = jax.vmap(hmm.forward_backward, in_axes=(None, None, 0, 0))(log_init, log_trans, log_emit, mask)
    n = mask.size  # explicit row counts: phi may have no columns (no lags)
    stats = regression_stats(x.reshape(n, x.shape[-1]), phi.reshape(n, phi.shape[-1]),
                             sm.smoothed.reshape(n, log_emit.shape[-1]),
                             covariance_type=rm.covariance_type, weights=mask.reshape(n).astype(x.dtype))
    return (stats, jnp.sum(sm.expected_initial, 0), jnp.sum(sm.expected_transitions, 0),
            jnp.sum(sm.log_likelihood))


def arhmm_log_likelihood(rm: RegressionMixture, log_init, log_trans, x, phi, mask, active=None):
    """() Sum over a padded batch of sequences of the AR-HMM's log-likelihood (the forward
    algorithm alone). Arguments as :func:`arhmm_e_step`."""
    mask, _, _, log_init, log_trans, log_emit = _emissions(rm, log_init, log_trans, x, phi, mask, active)
    filt = jax.vmap(hmm.forward, in_axes=(None, None, 0, 0))(log_init, log_trans, log_emit, mask)
    return jnp.sum(filt.log_likelihood)


def _emissions(rm, log_init, log_trans, x, phi, mask, active):
    """``(mask, x, phi, log_init, log_trans, log_emit (S, T, K))``: padding zeroed, and with
    ``active`` the unused regimes' densities and chain entries ``-inf``."""
    mask = jnp.asarray(mask, bool)
    x = jnp.where(mask[..., None], x, 0.0)
    phi = jnp.where(mask[..., None], phi, 0.0)
    log_emit = regression_component_log_prob(rm, x, phi)
    if active is not None:
        log_emit = jnp.where(active, log_emit, -jnp.inf)
        log_init, log_trans = mask_chain(log_init, log_trans, active)
    return mask, x, phi, log_init, log_trans, log_emit


@functools.partial(jax.jit, static_argnames=("n_iter",))
def fit_arhmm(rm: RegressionMixture, log_init, log_trans, x, phi, mask, *, n_iter: int = 50,
              reg_covar=1e-6, ridge=1e-6, prior_concentration=DIRICHLET, active=None) -> ARHMMFit:
    """``n_iter`` Baum-Welch iterations from a start.

    Args:
      rm: the starting regimes (e.g. a static fit, :func:`grnn_jax.em.fit_regression`).
      log_init: (K,) and log_trans: (K, K) the starting chain.
      x, phi, mask: as in :func:`arhmm_e_step`.
      n_iter: iterations (static).
      reg_covar: variance floor of the regimes; ridge: penalty on the slopes.
      prior_concentration: Dirichlet concentration of the chain's M-step (None: maximum
        likelihood).
      active: optional (K,) bool: fit only these regimes (the others keep their starting
        parameters and probability 0 in the returned chain): the fit of an AR-HMM with
        ``active.sum()`` regimes, in a program shared by every K (see
        :func:`grnn_jax.em.arhmm_grid.fit_arhmm_grid`).

    Returns:
      :class:`ARHMMFit`.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> from grnn_jax import gmm
      >>> from grnn_jax.em import arhmm_em
      >>> rng = np.random.default_rng(0)
      >>> x = np.zeros((8, 40, 1))
      >>> for t in range(1, 40):  # AR(1) whose slope flips between +0.9 and -0.9 in blocks of 10
      ...     x[:, t] = (0.9 if (t // 10) % 2 else -0.9) * x[:, t - 1] + rng.normal(size=(8, 1))
      >>> x = jnp.asarray(x, jnp.float32)
      >>> phi = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)  # the last step
      >>> mask = jnp.ones(x.shape[:2], bool)
      >>> start = gmm.regression_from_covariances(jnp.zeros(2), jnp.array([[[0.5]], [[-0.5]]]),
      ...                                         jnp.zeros((2, 1)), jnp.ones((2, 1, 1)), "full")
      >>> fit = arhmm_em.fit_arhmm(start, jnp.log(jnp.full(2, 0.5)), jnp.log(jnp.full((2, 2), 0.5)),
      ...                          x, phi, mask, n_iter=20, prior_concentration=None)
      >>> slopes = sorted(round(v, 1) for v in fit.mixture.coef.ravel().tolist())
      >>> bool(jnp.all(jnp.diff(fit.history) > -1e-3)), slopes
      (True, [-0.9, 0.9])
    """

    def iteration(carry, _):
        rm, li, lt = carry
        stats, e_init, counts, ll = arhmm_e_step(rm, li, lt, x, phi, mask, active)
        new_rm = regression_m_step_from_stats(stats, covariance_type=rm.covariance_type,
                                              reg_covar=reg_covar, ridge=ridge)
        if active is not None:  # an unused regime keeps its (finite) start
            new_rm = _where_regime(active, new_rm, rm)
        new_li, new_lt = mask_chain(*hmm.m_step_markov(e_init, counts, prior_concentration), active)
        return (new_rm, new_li, new_lt), ll

    start = mask_chain(jnp.asarray(log_init), jnp.asarray(log_trans), active)
    (rm, li, lt), history = jax.lax.scan(iteration, (rm, *start), None, length=n_iter)
    stats, _, _, ll = arhmm_e_step(rm, li, lt, x, phi, mask, active)
    return ARHMMFit(rm, li, lt, ll, history, stats)


def _where_regime(active, new: RegressionMixture, old: RegressionMixture) -> RegressionMixture:
    """``new``'s regimes where ``active``, ``old``'s elsewhere (tied covariances: ``new``'s)."""

    def pick(a, b):  # regimes on the leading axis
        return jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)

    return RegressionMixture(pick(new.logits, old.logits), pick(new.coef, old.coef),
                             pick(new.intercept, old.intercept),
                             new.prec_chol if new.covariance_type == "tied" else pick(new.prec_chol, old.prec_chol),
                             new.covariance_type)
