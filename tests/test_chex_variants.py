"""Pure functions give the same answers with and without ``jit`` (``chex.variants``), and under ``vmap``."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax import em, gmm

K, D, N = 3, 2, 40


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32) + np.repeat([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], [14, 13, 13], 0)
    g = gmm.from_covariances(jnp.log(jnp.array([0.5, 0.3, 0.2])), jnp.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]),
                             jnp.array([[[1.0, 0.3], [0.3, 1.0]], [[2.0, 0.0], [0.0, 0.5]], [[0.7, -0.2], [-0.2, 1.0]]]),
                             "full")
    return jnp.asarray(x), g


class GmmVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_log_prob_equals_scipy(self):
        x, g = _data()
        got = self.variant(gmm.log_prob)(g, x)
        comp = [multivariate_normal(m, c).logpdf(np.asarray(x)) for m, c in
                zip(np.asarray(g.means), np.asarray(gmm.covariances(g)))]
        ref = logsumexp(np.log([0.5, 0.3, 0.2])[:, None] + np.array(comp), axis=0)
        np.testing.assert_allclose(got, ref, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_m_step_of_one_hot_responsibilities_is_per_cluster_statistics(self):
        x, _ = _data()
        labels = np.repeat(np.arange(K), [14, 13, 13])
        resp = jax.nn.one_hot(labels, K)
        fitted = self.variant(lambda x, r: gmm.m_step(x, r, covariance_type="full", reg_covar=0.0))(x, resp)
        xs = np.asarray(x, np.float64)
        for k in range(K):
            np.testing.assert_allclose(fitted.means[k], xs[labels == k].mean(0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(gmm.covariances(fitted)[k], np.cov(xs[labels == k].T, bias=True),
                                       rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gmm.weights(fitted), [14 / N, 13 / N, 13 / N], rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_e_step_statistics_give_the_m_step_of_responsibilities(self):
        x, g = _data()

        def from_stats(g, x):
            stats, ll = em.e_step(g, x)
            return em.m_step_from_stats(stats, covariance_type="full", reg_covar=1e-6), ll

        new, ll = self.variant(from_stats)(g, x)
        ref = gmm.m_step(x, gmm.responsibilities(g, x), covariance_type="full", reg_covar=1e-6)
        chex.assert_trees_all_close(new, ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ll, jnp.sum(gmm.log_prob(g, x)), rtol=1e-5)
        chex.assert_tree_all_finite(new)


@pytest.mark.slow
def test_vmap_over_data_sets_equals_one_at_a_time():
    x, g = _data()
    xs = jnp.stack([x, x[::-1] * 1.5, x + 1.0])
    batched = jax.vmap(lambda xi: em.fit_from(xi, g, max_iter=5, tol=0.0))(xs)
    for b in range(3):
        one = em.fit_from(xs[b], g, max_iter=5, tol=0.0)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[b], batched), one, rtol=1e-4, atol=1e-5)


def test_shape_assertions_hold_under_jit():
    x, g = _data()
    with pytest.raises(AssertionError):
        jax.jit(lambda a: em.fit_from(a, g))(x[:, :1])       # D=1 data, D=2 mixture
    with pytest.raises(AssertionError):
        jax.jit(lambda a: em.e_step(g, a))(x[:, :1])
    with pytest.raises(AssertionError):
        em.fit_from(x, g, weights=jnp.ones(N - 1))
