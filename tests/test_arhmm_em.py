"""Baum-Welch for the AR-HMM (``em.arhmm_em``): against hmmlearn's EM at zero lags, monotone
under maximum likelihood, and the generating regimes recovered."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hmmlearn import hmm as hmmlearn_hmm

from grnn_jax import data, gmm
from grnn_jax.em import arhmm_em

K, D = 2, 2


def _start(f: int):
    rng = np.random.default_rng(1)
    return gmm.regression_from_covariances(
        jnp.zeros(K), jnp.asarray(rng.normal(scale=0.1, size=(K, D, f))),
        jnp.asarray([[-1.0, 0.0], [1.0, 0.5]]), jnp.stack([jnp.eye(D)] * K), "full")


def _arrays(seqs, lags):
    return (jnp.asarray(seqs.x), jnp.asarray(data.lagged(seqs.x, lags, lengths=seqs.lengths)),
            jnp.asarray(seqs.mask))


def test_zero_lags_is_hmmlearns_baum_welch(x64):
    seqs, _ = data.sample_switching_ar(data.default_switching_ar(D), seed=0, n_sequences=5, length=40)
    seqs = data.Sequences.from_list([seqs.x[i, : 40 - 3 * i] for i in range(5)])  # unequal lengths
    rm, reg = _start(0), 1e-9
    li, lt = jnp.log(jnp.array([0.6, 0.4])), jnp.log(jnp.array([[0.8, 0.2], [0.3, 0.7]]))
    fit = arhmm_em.fit_arhmm(rm, li, lt, *_arrays(seqs, 0), n_iter=5, reg_covar=reg,
                             prior_concentration=None)
    # hmmlearn: the same start, maximum likelihood (no priors). Its min_covar floors only its
    # start, not its M-step, so both floors are made negligible.
    ref = hmmlearn_hmm.GaussianHMM(K, covariance_type="full", n_iter=5, tol=0.0, init_params="",
                                   params="stmc", min_covar=reg, covars_prior=0.0, covars_weight=0.0)
    ref.startprob_, ref.transmat_ = np.exp(np.asarray(li)), np.exp(np.asarray(lt))
    ref.means_, ref.covars_ = np.asarray(rm.intercept), np.stack([np.eye(D)] * K)
    obs = seqs.observed()
    ref.fit(obs, lengths=seqs.lengths)
    np.testing.assert_allclose(np.exp(fit.log_trans), ref.transmat_, atol=1e-8)
    np.testing.assert_allclose(np.exp(fit.log_init), ref.startprob_, atol=1e-8)
    np.testing.assert_allclose(fit.mixture.intercept, ref.means_, atol=1e-8)
    np.testing.assert_allclose(gmm.covariances(gmm.regression_to_gmm(fit.mixture)), ref.covars_, atol=1e-7)
    np.testing.assert_allclose(fit.log_likelihood, ref.score(obs, lengths=seqs.lengths), rtol=1e-9)


def test_maximum_likelihood_never_decreases_and_finds_the_regimes(x64):
    proc = data.default_switching_ar(D)
    seqs, _ = data.sample_switching_ar(proc, seed=2, n_sequences=30, length=60)
    fit = arhmm_em.fit_arhmm(_start(D), jnp.log(jnp.full(K, 0.5)), jnp.log(jnp.full((K, K), 0.5)),
                             *_arrays(seqs, 1), n_iter=40, prior_concentration=None)
    h = np.asarray(fit.history)
    # Never lower, up to rounding once converged (a few ulps of the total).
    assert np.all(np.diff(h) >= -1e-8 * np.abs(h[1:]))
    assert float(fit.log_likelihood) >= h[-1] - 1e-8 * abs(h[-1])
    # The Baum-Welch fit scores the data about as well as the generating process does.
    exact = float(np.sum(data.synthetic.log_prob(proc, seqs)))
    assert float(fit.log_likelihood) > exact - 0.02 * seqs.n_steps
