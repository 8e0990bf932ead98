"""Calibration of predictive mixtures: against scipy's normal CDF and against samples of a known model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from grnn_jax import gmm
from grnn_jax.gmm import calibration

K, D = 3, 2

# Compiled once each: eager dispatch would compile every primitive separately.
_sample = jax.jit(gmm.sample, static_argnums=2)
_summary = jax.jit(calibration.summary, static_argnames=("levels", "n_bins"))
_pit = jax.jit(calibration.marginal_cdf)


def _random_mixture(ctype, batch=(), seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=batch + (K, D)) * 3.0
    a = rng.normal(size=batch + (K, D, D))
    full = a @ np.swapaxes(a, -1, -2) + 0.3 * np.eye(D)
    covs = {
        "full": full,
        "diag": np.diagonal(full, axis1=-2, axis2=-1).copy(),
        "spherical": np.trace(full, axis1=-2, axis2=-1) / D,
        "tied": full[..., 0, :, :],
    }
    w = rng.dirichlet(np.ones(K), size=batch)
    marginal_var = {
        "full": covs["diag"],
        "diag": covs["diag"],
        "spherical": np.repeat(covs["spherical"][..., None], D, axis=-1),
        "tied": np.repeat(np.diagonal(covs["tied"], axis1=-2, axis2=-1)[..., None, :], K, axis=-2),
    }[ctype]
    return w, means, covs[ctype], marginal_var


def _scipy_mixture_cdf(x, w, means, var):
    # x (..., D); w (..., K); means, var (..., K, D)
    cdf = stats.norm.cdf(x[..., None, :], loc=means, scale=np.sqrt(var))
    return np.sum(w[..., None] * cdf, axis=-2)


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_marginal_cdf_matches_scipy(ctype, x64):
    w, means, cov, var = _random_mixture(ctype, batch=(4,))
    g = gmm.from_covariances(jnp.log(w), means, cov, ctype)
    x = np.random.default_rng(1).normal(size=(4, D)) * 4.0
    np.testing.assert_allclose(calibration.marginal_std(g), np.sqrt(var), rtol=1e-10)
    np.testing.assert_allclose(calibration.marginal_cdf(g, x), _scipy_mixture_cdf(x, w, means, var),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_marginal_quantile_inverts_the_cdf(ctype, x64):
    w, means, cov, var = _random_mixture(ctype, batch=(3,), seed=2)
    g = gmm.from_covariances(jnp.log(w), means, cov, ctype)
    q = np.array([0.025, 0.5, 0.9])[:, None, None]  # broadcasts against (3, D)
    xq = calibration.marginal_quantile(g, q)
    assert xq.shape == (3, 3, D)
    np.testing.assert_allclose(_scipy_mixture_cdf(np.asarray(xq), w, means, var),
                               np.broadcast_to(q, xq.shape), atol=1e-9)


def test_quantile_of_one_gaussian_matches_scipy_ppf(x64):
    g = gmm.from_covariances(jnp.zeros(1), jnp.array([[2.0]]), jnp.array([[9.0]]), "diag")
    for q in (0.01, 0.3, 0.975):
        np.testing.assert_allclose(calibration.marginal_quantile(g, q)[0],
                                   stats.norm.ppf(q, loc=2.0, scale=3.0), rtol=1e-9)


def test_samples_of_the_model_are_calibrated():
    # Per-step predictions (B, T) of a known model, and what it generates: the
    # PIT values must be uniform, so coverage is nominal and the histogram flat.
    batch = (40, 50)
    w, means, cov, _ = _random_mixture("full", batch=batch, seed=3)
    g = gmm.from_covariances(jnp.log(jnp.asarray(w, jnp.float32)), jnp.asarray(means, jnp.float32),
                             jnp.asarray(cov, jnp.float32), "full")
    x = _sample(jax.random.key(0), g, 1)[0]  # (B, T, D)
    out = _summary(g, x, levels=(0.5, 0.8, 0.95), n_bins=10)
    n = batch[0] * batch[1]
    for level, cov_d in zip((0.5, 0.8, 0.95), np.asarray(out["coverage"])):
        tol = 4 * np.sqrt(level * (1 - level) / n)
        np.testing.assert_allclose(cov_d, level, atol=tol)
    counts = np.asarray(out["histogram"]) * n / 10  # back to counts per bin
    for d in range(D):
        assert stats.chisquare(counts[:, d]).pvalue > 1e-3
    assert float(out["max_abs_error"]) < 0.03


def test_overconfident_model_undercovers():
    # The same data judged by a model whose covariances are 4x too small:
    # its intervals are too narrow and its PIT histogram is U-shaped.
    w, means, cov, _ = _random_mixture("diag", batch=(2000,), seed=4)
    true = gmm.from_covariances(jnp.log(w), means, cov, "diag")
    narrow = gmm.from_covariances(jnp.log(w), means, cov / 4.0, "diag")
    x = _sample(jax.random.key(1), true, 1)[0]
    pit_true, pit_narrow = _pit(true, x), _pit(narrow, x)
    cov_true = calibration.interval_coverage(pit_true)
    cov_narrow = calibration.interval_coverage(pit_narrow)
    assert np.all(np.asarray(cov_narrow) < np.asarray(cov_true) - 0.1)
    hist = np.asarray(calibration.pit_histogram(pit_narrow, n_bins=5))
    assert np.all(hist[0] > hist[2]) and np.all(hist[-1] > hist[2])


def test_mask_leaves_padding_out():
    rng = np.random.default_rng(5)
    pit = rng.uniform(size=(3, 7, D))
    mask = np.arange(7)[None, :] < np.array([7, 4, 2])[:, None]
    garbage = np.where(mask[..., None], pit, np.nan)  # NaN where padded
    got_cov = calibration.interval_coverage(jnp.asarray(garbage), (0.5, 0.9), jnp.asarray(mask))
    got_hist = calibration.pit_histogram(jnp.asarray(garbage), 4, jnp.asarray(mask))
    kept = pit[mask]  # (13, D)
    want_cov = [np.mean((kept >= (1 - p) / 2) & (kept <= (1 + p) / 2), axis=0) for p in (0.5, 0.9)]
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-6)
    want_hist = np.stack([np.histogram(kept[:, d], bins=4, range=(0, 1))[0] for d in range(D)], 1)
    np.testing.assert_allclose(got_hist, want_hist * 4 / len(kept), rtol=1e-6)


def test_bad_levels_and_bins_are_refused():
    pit = jnp.full((5, 1), 0.5)
    with pytest.raises(ValueError, match="levels"):
        calibration.interval_coverage(pit, (0.5, 1.0))
    with pytest.raises(ValueError, match="n_bins"):
        calibration.pit_histogram(pit, 0)


def test_pit_ks_distance_matches_scipy_kstest():
    pit = np.random.default_rng(0).uniform(size=(37, 3)) ** [1.0, 1.5, 0.7]
    got = np.asarray(calibration.pit_ks_distance(jnp.asarray(pit)))
    want = [stats.kstest(pit[:, d], "uniform").statistic for d in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_ecdf_band_holds_uniform_pit_at_its_level():
    # 2,000 calibrated forecasters of 200 steps each (one per column): the ECDF of their PIT
    # values leaves the 90% band for about 10% of them (DKW is exact in the limit).
    n, reps = 200, 2000
    pit = jnp.asarray(np.random.default_rng(1).uniform(size=(n, reps)))
    outside = np.asarray(calibration.pit_ks_distance(pit)) > calibration.ecdf_band(n, 0.1)
    assert 0.06 < outside.mean() < 0.11
    # An over-confident forecaster (predictive sd half the true one) leaves it.
    narrow = stats.norm.cdf(2.0 * np.random.default_rng(2).standard_normal((n, 1)))
    assert float(calibration.pit_ks_distance(jnp.asarray(narrow))[0]) > calibration.ecdf_band(n, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        calibration.ecdf_band(10, 1.5)
