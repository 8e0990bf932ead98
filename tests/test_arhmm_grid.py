"""AR-HMMs of several sizes in one program: a padded member is exactly the AR-HMM of its own
size; the grid's choice and its held-out scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import data
from grnn_jax.em import arhmm_em
from grnn_jax.em.arhmm_em import arhmm_log_likelihood
from grnn_jax.em.arhmm_grid import fit_arhmm_grid, kmeans_start
from grnn_jax.gmm.regression import RegressionMixture


def _switching(n, seed, length=30):
    seqs, _ = data.sample_switching_ar(data.default_switching_ar(2), seed=seed, n_sequences=n, length=length)
    return seqs


def _arrays(seqs, p):
    return (jnp.asarray(np.nan_to_num(seqs.x)), jnp.asarray(data.lagged(seqs.x, p, lengths=seqs.lengths)),
            jnp.asarray(seqs.mask))


def _slice(rm, k, f):
    return RegressionMixture(rm.logits[:k], rm.coef[:k, :, :f], rm.intercept[:k], rm.prec_chol[:k],
                             rm.covariance_type)


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_padded_member_is_the_ar_hmm_of_its_own_size(x64, ctype):
    """K = 2 regimes of 4 and 1 lag of 2 (a zero column) give the 2-regime, 1-lag fit."""
    x, phi2, mask = _arrays(_switching(6, 0), 2)
    d = x.shape[-1]
    active = jnp.arange(4) < 2
    phi_pad = phi2 * (jnp.arange(2 * d) < d)
    rm0, li0, lt0 = kmeans_start(x, phi_pad, mask, active, jax.random.key(0), covariance_type=ctype,
                                 reg_covar=1e-6, ridge=1e-6, prior_concentration=1.1)
    padded = arhmm_em.fit_arhmm(rm0, li0, lt0, x, phi_pad, mask, n_iter=15, active=active)
    own = arhmm_em.fit_arhmm(_slice(rm0, 2, d), li0[:2], lt0[:2, :2], x, phi2[..., :d], mask, n_iter=15)
    np.testing.assert_allclose(padded.history, own.history, rtol=1e-10)
    np.testing.assert_allclose(padded.mixture.coef[:2, :, :d], own.mixture.coef, atol=1e-8)
    np.testing.assert_array_equal(padded.mixture.coef[:2, :, d:], 0.0)  # the unused lag
    np.testing.assert_allclose(padded.mixture.prec_chol[:2], own.mixture.prec_chol, rtol=1e-8)
    np.testing.assert_allclose(padded.log_trans[:2, :2], own.log_trans, atol=1e-10)
    assert np.all(np.exp(padded.log_trans[:, 2:]) == 0) and np.all(np.exp(padded.log_init[2:]) == 0)
    np.testing.assert_array_equal(padded.mixture.coef[2:], rm0.coef[2:])  # unused regimes stay put


def test_grid_members_match_their_own_fits_and_score_held_out_data(x64):
    tr, va = _switching(8, 0), _switching(4, 1)
    grid = fit_arhmm_grid(*_arrays(tr, 2), _arrays(va, 2), ks=(1, 3), lags=(0, 1, 2), n_restarts=2,
                          key=jax.random.key(1), n_iter=10, prior_concentration=None)
    assert len(grid.n_components) == 12 and grid.fit.mixture.coef.shape[:2] == (12, 3)
    d = tr.n_features
    for i in range(12):
        k, p = int(grid.n_components[i]), int(grid.lags[i])
        fit = grid.member(i, d)
        assert fit.mixture.coef.shape == (k, d, p * d) and fit.log_trans.shape == (k, k)
        # Maximum likelihood: no iteration lowers the likelihood.
        assert np.all(np.diff(np.asarray(fit.history)) > -1e-8 * abs(float(fit.history[-1])))
        # Its held-out score is its own AR-HMM's exact forward likelihood.
        want = arhmm_log_likelihood(fit.mixture, fit.log_init, fit.log_trans, *_arrays(va, p))
        assert grid.val_log_likelihood[i] == pytest.approx(float(want), rel=1e-9)
        _, _, _, ll = arhmm_em.arhmm_e_step(fit.mixture, fit.log_init, fit.log_trans, *_arrays(tr, p))
        assert grid.train_log_likelihood[i] == pytest.approx(float(ll), rel=1e-9)
    best = grid.best()
    # On a 2-regime VAR(1), every switching autoregression beats every one-regime model and
    # every switching model without lags on held-out data.
    switching_ar = (grid.n_components == 3) & (grid.lags >= 1)
    assert grid.val_log_likelihood[switching_ar].min() > grid.val_log_likelihood[~switching_ar].max()
    assert switching_ar[best]
    same = (grid.n_components == grid.n_components[best]) & (grid.lags == grid.lags[best])
    assert grid.train_log_likelihood[best] == grid.train_log_likelihood[same].max()


def test_grid_rejects_what_it_cannot_fit():
    x, phi, mask = _arrays(_switching(2, 0), 1)
    for kwargs, match in [({"ks": (0,)}, "ks"), ({"lags": (2,)}, "lags"), ({"ks": (3,), "k_max": 2}, "k_max"),
                          ({"n_restarts": 0}, "n_restarts")]:
        with pytest.raises(ValueError, match=match):
            fit_arhmm_grid(x, phi, mask, key=jax.random.key(0), **{"ks": (2,), "lags": (1,), **kwargs})
