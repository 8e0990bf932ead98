"""Tests of the pure GMM math against scipy, scikit-learn and brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax import gmm

K, D, N = 3, 4, 40


def _random_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) * 2.0
    means = rng.normal(size=(K, D))
    a = rng.normal(size=(K, D, D))
    full = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(D)
    covs = {
        "full": full,
        "diag": np.stack([np.diag(c) for c in full]),
        "spherical": np.array([np.trace(c) / D for c in full]),
        "tied": full[0],
    }
    w = rng.dirichlet(np.ones(K))
    return x, means, covs, w


def _dense_cov(ctype, covs, k):
    c = covs[ctype]
    return {"full": lambda: c[k], "diag": lambda: np.diag(c[k]),
            "spherical": lambda: c[k] * np.eye(D), "tied": lambda: c}[ctype]()


def _scipy_component_log_prob(x, means, covs, ctype):
    return np.stack(
        [multivariate_normal(means[k], _dense_cov(ctype, covs, k)).logpdf(x) for k in range(K)], axis=1
    )


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_densities_match_scipy(ctype, x64):
    x, means, covs, w = _random_problem()
    g = gmm.from_covariances(jnp.log(w), means, covs[ctype], ctype)
    comp = _scipy_component_log_prob(x, means, covs, ctype)
    np.testing.assert_allclose(gmm.component_log_prob(g, x), comp, rtol=1e-10)
    ref = logsumexp(np.log(w) + comp, axis=1)
    np.testing.assert_allclose(gmm.log_prob(g, x), ref, rtol=1e-10)
    resp = np.exp(np.log(w) + comp - ref[:, None])
    np.testing.assert_allclose(gmm.responsibilities(g, x), resp, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_float32_density_close_to_scipy(ctype):
    x, means, covs, w = _random_problem(1)
    g = gmm.from_covariances(jnp.log(jnp.asarray(w, jnp.float32)), jnp.asarray(means, jnp.float32),
                             jnp.asarray(covs[ctype], jnp.float32), ctype)
    out = gmm.log_prob(g, jnp.asarray(x, jnp.float32))
    assert out.dtype == jnp.float32
    ref = logsumexp(np.log(w) + _scipy_component_log_prob(x, means, covs, ctype), axis=1)
    np.testing.assert_allclose(out, ref, rtol=1e-4)


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_parametrisations_round_trip(ctype, x64):
    _, means, covs, w = _random_problem(2)
    g = gmm.from_covariances(jnp.log(w), means, covs[ctype], ctype)
    np.testing.assert_allclose(gmm.covariances(g), covs[ctype], rtol=1e-10)
    prec = gmm.precisions(g)
    g2 = gmm.from_precisions(jnp.log(w), means, prec, ctype)
    np.testing.assert_allclose(g2.prec_chol, g.prec_chol, rtol=1e-10, atol=1e-12)
    if ctype in ("full", "tied"):
        np.testing.assert_allclose(prec, np.linalg.inv(covs[ctype]), rtol=1e-9)
        # Upper triangular, as scikit-learn's precisions_cholesky_ from covariances.
        np.testing.assert_array_equal(np.tril(g.prec_chol, -1), 0.0)
    np.testing.assert_allclose(gmm.weights(g), w, rtol=1e-12)


def test_precision_cholesky_matches_sklearn(x64):
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    _, _, covs, _ = _random_problem(3)
    for ctype in gmm.COVARIANCE_TYPES:
        ours = gmm.precision_cholesky(jnp.asarray(covs[ctype]), ctype)
        np.testing.assert_allclose(ours, _compute_precision_cholesky(covs[ctype], ctype), rtol=1e-10)


@pytest.mark.slow
def test_batched_mixtures_broadcast_against_x():
    x, means, covs, w = _random_problem(4)
    gs = [gmm.from_covariances(jnp.log(w) + i, means + i, covs["full"] * (i + 1), "full") for i in range(2)]
    batched = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *gs)  # batch shape (2,)
    xb = jnp.stack([x[:5], x[5:10]], axis=1)  # (5, 2, D): leading shape broadcasts against (2,)
    out = gmm.log_prob(batched, xb)
    ref = jnp.stack([gmm.log_prob(gs[0], x[:5]), gmm.log_prob(gs[1], x[5:10])], axis=1)
    np.testing.assert_allclose(out, ref, rtol=1e-5)
    via_vmap = jax.vmap(gmm.log_prob, in_axes=(0, 1), out_axes=1)(batched, xb)
    np.testing.assert_allclose(out, via_vmap, rtol=1e-5)


@pytest.mark.slow
def test_all_components_minus_inf_gives_no_nan():
    g = gmm.GMM(jnp.array([0.0, -jnp.inf]), jnp.zeros((2, 1)), jnp.ones((2, 1)), "diag")
    far = jnp.array([[1e30]])
    assert jnp.isneginf(gmm.log_prob(g, far)).all()
    r = gmm.responsibilities(g, far)
    assert jnp.all(jnp.isfinite(r))
    np.testing.assert_allclose(r.sum(-1), 1.0)
    # A component with weight zero never takes responsibility.
    np.testing.assert_allclose(gmm.responsibilities(g, jnp.zeros((3, 1)))[:, 1], 0.0)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
@pytest.mark.slow
def test_gradients_finite_at_extreme_parameters(ctype):
    def loss(logits, means, raw, x):
        chol = {"full": lambda: jnp.exp(raw)[:, None, None] * jnp.eye(2),
                "diag": lambda: jnp.exp(raw)[:, None] * jnp.ones((1, 2)),
                "spherical": lambda: jnp.exp(raw)}[ctype]()
        return jnp.sum(gmm.log_prob(gmm.GMM(logits, means, chol, ctype), x))

    logits = jnp.array([80.0, -80.0, 0.0])
    means = jnp.array([[0.0, 0.0], [1e4, -1e4], [3.0, 3.0]])
    raw = jnp.array([8.0, -8.0, 0.0])  # precision scales e^8 and e^-8
    x = jnp.array([[0.0, 0.0], [50.0, -50.0], [1e3, 1e3]])
    grads = jax.grad(loss, argnums=(0, 1, 2))(logits, means, raw, x)
    for gr in grads:
        assert jnp.all(jnp.isfinite(gr))


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_m_step_matches_sklearn(ctype, x64):
    from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

    x, means, covs, w = _random_problem(5)
    resp = np.asarray(gmm.responsibilities(gmm.from_covariances(jnp.log(w), means, covs["full"], "full"), x))
    g = gmm.m_step(jnp.asarray(x), jnp.asarray(resp), covariance_type=ctype, reg_covar=1e-6)
    nk, mu, cov = _estimate_gaussian_parameters(x, resp, 1e-6, ctype)
    np.testing.assert_allclose(gmm.weights(g), nk / nk.sum(), rtol=1e-10)
    np.testing.assert_allclose(g.means, mu, rtol=1e-10)
    np.testing.assert_allclose(gmm.covariances(g), cov, rtol=1e-8)


def test_one_hot_m_step_gives_per_cluster_statistics(x64):
    x, *_ = _random_problem(6)
    labels = np.arange(N) % K
    g = gmm.m_step(jnp.asarray(x), jax.nn.one_hot(labels, K), covariance_type="full", reg_covar=1e-9)
    for k in range(K):
        xk = x[labels == k]
        np.testing.assert_allclose(g.means[k], xk.mean(0), rtol=1e-10)
        np.testing.assert_allclose(gmm.covariances(g)[k], np.cov(xk.T, bias=True) + 1e-9 * np.eye(D), rtol=1e-8)
        np.testing.assert_allclose(gmm.weights(g)[k], len(xk) / N, rtol=1e-10)


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_weighted_m_step_equals_repeated_rows(ctype, x64):
    x, means, covs, w = _random_problem(7)
    resp = gmm.responsibilities(gmm.from_covariances(jnp.log(w), means, covs["full"], "full"), x)
    counts = np.arange(N) % 3  # includes weight 0: those rows are ignored, even if NaN
    x_nan = np.where((counts == 0)[:, None], np.nan, x)
    weighted = gmm.m_step(jnp.asarray(x_nan), resp, covariance_type=ctype, reg_covar=1e-6,
                          weights=jnp.asarray(counts, jnp.float64))
    rep = np.repeat(np.arange(N), counts)
    repeated = gmm.m_step(jnp.asarray(x[rep]), resp[rep], covariance_type=ctype, reg_covar=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(weighted), jax.tree_util.tree_leaves(repeated)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_empty_component_stays_finite(ctype):
    x, *_ = _random_problem(8)
    resp = jnp.zeros((N, K)).at[:, 0].set(1.0)
    g = gmm.m_step(jnp.asarray(x, jnp.float32), resp, covariance_type=ctype, reg_covar=1e-6)
    for leaf in jax.tree_util.tree_leaves(g):
        assert jnp.all(jnp.isfinite(leaf))
    assert jnp.all(jnp.isfinite(gmm.log_prob(g, jnp.asarray(x, jnp.float32))))


def test_m_step_under_jit_vmap_and_grad():
    x, means, covs, w = _random_problem(9)
    x = jnp.asarray(x, jnp.float32)
    resp = jax.nn.softmax(jnp.asarray(np.random.default_rng(0).normal(size=(2, N, K)), jnp.float32))
    step = jax.jit(lambda r: gmm.m_step(x, r, covariance_type="full", reg_covar=1e-3))
    batched = jax.vmap(step)(resp)
    np.testing.assert_allclose(batched.means[1], step(resp[1]).means, rtol=1e-5)
    grad = jax.grad(lambda r: jnp.sum(gmm.log_prob(step(r), x)))(resp[0])
    assert jnp.all(jnp.isfinite(grad))


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_sample_moments(ctype, x64):
    _, means, covs, w = _random_problem(10)
    g = gmm.from_covariances(jnp.log(w), means, covs[ctype], ctype)
    s, labels = gmm.sample_with_labels(jax.random.key(0), g, (40000,))
    assert s.shape == (40000, D) and labels.shape == (40000,)
    np.testing.assert_allclose(np.bincount(labels, minlength=K) / 40000, w, atol=0.01)
    for k in range(K):
        sk = np.asarray(s[labels == k])
        cov = _dense_cov(ctype, covs, k)
        sd = np.sqrt(np.diag(cov))
        # Five standard errors of the sample mean and of the sample covariance entries.
        np.testing.assert_array_less(np.abs(sk.mean(0) - means[k]), 5 * sd / np.sqrt(len(sk)))
        se_cov = np.sqrt((np.outer(sd, sd) ** 2 + cov**2) / len(sk))
        np.testing.assert_array_less(np.abs(np.cov(sk.T) - cov), 5 * se_cov)


def test_sample_from_batched_mixture_shape():
    _, means, covs, w = _random_problem(11)
    g = gmm.from_covariances(jnp.log(w), means, covs["full"], "full")
    batched = jax.tree_util.tree_map(lambda a: jnp.stack([a, a, a]), g)
    assert gmm.sample(jax.random.key(1), batched, 5).shape == (5, 3, D)


def test_temperature_sharpens_weights_and_scales():
    g = gmm.from_covariances(jnp.log(jnp.array([0.7, 0.3])), jnp.zeros((2, 1)), jnp.ones((2, 1)), "diag")
    cold = gmm.with_temperature(g, 0.5)
    np.testing.assert_allclose(gmm.covariances(cold), 0.5, rtol=1e-6)
    # Weights go as w ** (1 / T): 0.7**2 / (0.7**2 + 0.3**2) = 0.845.
    np.testing.assert_allclose(gmm.weights(cold), [0.49 / 0.58, 0.09 / 0.58], rtol=1e-6)
    np.testing.assert_allclose(gmm.weights(gmm.with_temperature(g, 1.0)), gmm.weights(g), rtol=1e-6)


def test_n_parameters_matches_sklearn():
    from sklearn.mixture import GaussianMixture

    x, *_ = _random_problem(12)
    for ctype in gmm.COVARIANCE_TYPES:
        est = GaussianMixture(K, covariance_type=ctype, max_iter=2).fit(x)
        assert gmm.n_parameters(K, D, ctype) == est._n_parameters()


def test_unknown_covariance_type_is_rejected():
    with pytest.raises(ValueError, match="unknown covariance_type 'banana'"):
        gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1)), "banana")
    with pytest.raises(ValueError, match="unknown covariance_type"):
        gmm.m_step(jnp.zeros((3, 1)), jnp.ones((3, 1)), covariance_type="ful")


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"full mixture with means \(2, 3\) needs"):
        gmm.from_covariances(jnp.zeros(2), jnp.zeros((2, 3)), jnp.ones((2, 3)), "full")
    with pytest.raises(ValueError, match="needs logits"):
        gmm.from_precisions(jnp.zeros(3), jnp.zeros((2, 3)), jnp.ones((2, 3)), "diag")
