"""Tests of the mixture head against scipy and its stability constraints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax import gmm
from grnn_jax.model.heads import (
    MixtureHead,
    head_bias_from_gmm,
    n_head_outputs,
    precision_diagonal,
)

CTYPES = ("full", "diag", "spherical", "tied")


def _random_covariances(rng, k, d, ctype):
    if ctype == "full":
        a = rng.standard_normal((k, d, d))
        return a @ np.swapaxes(a, -1, -2) + 0.3 * np.eye(d)
    if ctype == "diag":
        return rng.uniform(0.2, 3.0, (k, d))
    if ctype == "tied":
        a = rng.standard_normal((d, d))
        return a @ a.T + 0.3 * np.eye(d)
    return rng.uniform(0.2, 3.0, k)


def _dense_cov(cov, d, ctype):
    if ctype == "full":
        return cov
    if ctype == "diag":
        return np.stack([np.diag(c) for c in cov])
    if ctype == "tied":
        return cov
    return np.stack([c * np.eye(d) for c in cov])


def _hand_set(head, g, h_dim):
    params = head.init(jax.random.key(0), jnp.zeros(h_dim))
    params = jax.tree_util.tree_map(jnp.zeros_like, params)
    params["params"]["out"]["bias"] = head_bias_from_gmm(g, min_scale=head.min_scale, max_scale=head.max_scale)
    return params


@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.slow
def test_shapes(ctype):
    k, d, h = 4, 3, 6
    head = MixtureHead(n_components=k, n_features=d, covariance_type=ctype)
    params = head.init(jax.random.key(0), jnp.zeros((h,)))
    assert params["params"]["out"]["kernel"].shape == (h, n_head_outputs(k, d, ctype))
    g = head.apply(params, jnp.ones((2, 5, h)))
    chol_shape = {"full": (k, d, d), "diag": (k, d), "spherical": (k,), "tied": (d, d)}[ctype]
    assert g.covariance_type == ctype
    assert g.logits.shape == (2, 5, k)
    assert g.means.shape == (2, 5, k, d)
    assert g.prec_chol.shape == (2, 5) + chol_shape
    if ctype in ("full", "tied"):  # upper triangular with a positive diagonal
        p = np.asarray(g.prec_chol)
        assert np.all(np.tril(p, -1) == 0)
        assert np.all(np.diagonal(p, axis1=-2, axis2=-1) > 0)


@pytest.mark.parametrize("ctype", CTYPES)
def test_log_prob_matches_scipy_for_hand_set_head(ctype):
    rng = np.random.default_rng(1)
    k, d = 3, 3
    w = rng.dirichlet(np.ones(k))
    means = rng.standard_normal((k, d))
    cov = _random_covariances(rng, k, d, ctype)
    g0 = gmm.from_covariances(jnp.log(jnp.asarray(w)), jnp.asarray(means), jnp.asarray(cov), ctype)
    head = MixtureHead(n_components=k, n_features=d, covariance_type=ctype)
    params = _hand_set(head, g0, 5)
    g = head.apply(params, jnp.asarray(rng.standard_normal((7, 5))))
    x = rng.standard_normal((7, d)) * 2
    dense = np.broadcast_to(_dense_cov(cov, d, ctype), (k, d, d))
    expected = logsumexp(
        [np.log(w[j]) + multivariate_normal.logpdf(x, means[j], dense[j]) for j in range(k)], axis=0
    )
    np.testing.assert_allclose(gmm.log_prob(g, jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.slow
def test_random_head_matches_its_formula(ctype):
    """A random kernel and bias: the documented constraint maps, checked with scipy."""
    rng = np.random.default_rng(2)
    k, d, hd = 2, 3, 4
    head = MixtureHead(n_components=k, n_features=d, covariance_type=ctype, min_scale=0.05, max_scale=50.0)
    params = head.init(jax.random.key(0), jnp.zeros(hd))
    n_out = n_head_outputs(k, d, ctype)
    kernel, bias = rng.standard_normal((hd, n_out)), rng.standard_normal(n_out)
    params["params"]["out"] = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    h = rng.standard_normal(hd)
    out = h @ kernel + bias
    logits, means = out[:k], out[k : k + k * d].reshape(k, d)
    # One scale block per component, or one shared by all (tied).
    raw = out[k + k * d :].reshape(1 if ctype == "tied" else k, -1)
    diag = 1 / (0.05 + np.log1p(np.exp(raw[:, : (1 if ctype == "spherical" else d)]))) + 1 / 50.0
    prec_chol = np.zeros((k, d, d))
    for j in range(k):
        b = 0 if ctype == "tied" else j
        prec_chol[j][np.diag_indices(d)] = diag[b] if ctype != "spherical" else diag[b, 0]
        if ctype in ("full", "tied"):
            prec_chol[j][np.triu_indices(d, 1)] = raw[b, d:]
    x = rng.standard_normal((6, d))
    comps = [
        multivariate_normal.logpdf(x, means[j], np.linalg.inv(prec_chol[j] @ prec_chol[j].T)) for j in range(k)
    ]
    expected = logsumexp(np.stack(comps, -1) + logits - logsumexp(logits), axis=-1)
    g = head.apply(params, jnp.asarray(h, jnp.float32))
    np.testing.assert_allclose(gmm.log_prob(g, jnp.asarray(x, jnp.float32)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.slow
def test_initial_mixture_suits_standardised_data(ctype):
    k, d = 16, 3
    head = MixtureHead(n_components=k, n_features=d, covariance_type=ctype)
    h = jax.random.uniform(jax.random.key(3), (64,), minval=-1, maxval=1)  # like an LSTM output
    g = head.apply(head.init(jax.random.key(0), h), h)
    np.testing.assert_allclose(gmm.weights(g), 1 / k, rtol=0.5)
    cov = _dense_cov(np.asarray(gmm.covariances(g)), d, ctype)
    np.testing.assert_allclose(cov, np.broadcast_to(np.eye(d), cov.shape), atol=0.3)
    spread = np.asarray(g.means).std(axis=0)
    assert np.all((spread > 0.4) & (spread < 2.0)), spread


@pytest.mark.parametrize("ctype", CTYPES)
def test_finite_log_density_and_gradients_at_extreme_hidden_states(ctype):
    min_scale, max_scale, d = 1e-3, 1e3, 2
    head = MixtureHead(n_components=3, n_features=d, covariance_type=ctype)
    params = head.init(jax.random.key(0), jnp.zeros(8))
    x = jnp.array([[0.0, 0.0], [3.0, -2.0]])

    @jax.jit
    def check(p, h):
        g = head.apply(p, h)
        value, grads = jax.value_and_grad(
            lambda p, h: jnp.sum(gmm.log_prob(head.apply(p, h), x)), argnums=(0, 1)
        )(p, h)
        return value, grads, gmm.log_prob(g, g.means[0])

    bound = d * np.log(1 / min_scale + 1 / max_scale) - d / 2 * np.log(2 * np.pi)
    for scale in (1e8, -1e8, 1e-30, 0.0):
        value, grads, at_mean = check(params, scale * jnp.linspace(-1.0, 1.0, 8))
        assert np.isfinite(value), scale
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(grads)), scale
        # The density is bounded: |precision|^(1/2) <= (1/min_scale + 1/max_scale)^D.
        assert np.all(np.asarray(at_mean) <= bound + 1e-3), scale


def test_precision_diagonal_range():
    r = jnp.array([-1e30, -50.0, 0.0, 50.0, 1e30, jnp.inf, -jnp.inf])
    d = precision_diagonal(r, 0.01, 100.0)
    assert np.all(np.isfinite(d))
    assert np.all((d >= 1 / 100.0) & (d <= 1 / 0.01 + 1 / 100.0))


def test_float64(x64):
    head = MixtureHead(n_components=2, n_features=2, covariance_type="full", param_dtype=jnp.float64)
    h = jnp.ones((3, 4), jnp.float64)
    g = head.apply(head.init(jax.random.key(0), h), h)
    assert g.means.dtype == jnp.float64 and g.prec_chol.dtype == jnp.float64
    assert gmm.log_prob(g, jnp.zeros(2)).dtype == jnp.float64


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="covariance_type"):
        MixtureHead(n_components=2, n_features=2, covariance_type="bogus").init(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match="min_scale"):
        MixtureHead(n_components=2, n_features=2, min_scale=0.0).init(jax.random.key(0), jnp.zeros(3))
