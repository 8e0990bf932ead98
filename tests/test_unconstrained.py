"""The unconstrained parametrisation of a GMM: an exact round trip both ways, every real point a
legal mixture (scipy's density as the oracle), and why it matters: plain gradient descent on it
stays finite and fits, where the same descent on the raw precision-Cholesky factor leaves the
domain and returns NaN."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax import em, gmm
from grnn_jax.gmm.unconstrained import from_unconstrained, to_unconstrained

TYPES = ("full", "diag", "spherical", "tied")


def _random_gmm(key, ctype, k=3, d=3, batch=()):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    logits = jax.random.normal(k1, batch + (k,))
    means = jax.random.normal(k2, batch + (k, d))
    if ctype in ("full", "tied"):
        shape = batch + ((k,) if ctype == "full" else ()) + (d, d)
        a = jax.random.normal(k3, shape)
        cov = a @ jnp.swapaxes(a, -1, -2) + 0.5 * jnp.eye(d)
    else:
        shape = batch + (k, d) if ctype == "diag" else batch + (k,)
        cov = jnp.exp(jax.random.normal(k4, shape))
    return gmm.from_covariances(logits, means, cov, ctype)


def _random_unconstrained(key, ctype, k=3, d=3):
    shapes = {"logits": (k,), "means": (k, d),
              "log_diag": {"full": (k, d), "diag": (k, d), "spherical": (k,), "tied": (d,)}[ctype]}
    if ctype in ("full", "tied"):
        shapes["off_diag"] = ((k,) if ctype == "full" else ()) + (d * (d - 1) // 2,)
    keys = jax.random.split(key, len(shapes))
    return {n: jax.random.normal(kk, s) for kk, (n, s) in zip(keys, shapes.items())}


def _close(a, b, rtol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("batch", [(), (2, 4)])
@pytest.mark.slow
def test_round_trip_both_ways(ctype, batch):
    g = _random_gmm(jax.random.key(0), ctype, batch=batch)
    u = to_unconstrained(g)
    back = from_unconstrained(u, ctype)
    assert back.covariance_type == ctype and back.prec_chol.shape == g.prec_chol.shape
    _close(back, g)
    u2 = _random_unconstrained(jax.random.key(1), ctype)
    _close(to_unconstrained(from_unconstrained(u2, ctype)), u2)


@pytest.mark.parametrize("ctype", TYPES)
def test_round_trip_keeps_float64(ctype, x64):
    g = jax.tree.map(lambda a: a.astype(jnp.float64), _random_gmm(jax.random.key(2), ctype))
    back = from_unconstrained(to_unconstrained(g), ctype)
    assert back.prec_chol.dtype == jnp.float64
    _close(back, g, rtol=1e-12)


@pytest.mark.parametrize("ctype", TYPES)
def test_every_real_point_is_a_legal_mixture(ctype, x64):
    u = jax.tree.map(lambda a: 2.0 * a, _random_unconstrained(jax.random.key(3), ctype))
    g = from_unconstrained(u, ctype)
    x = np.asarray(jax.random.normal(jax.random.key(4), (7, 3)))
    p = np.asarray(gmm.as_full(g).prec_chol, np.float64)
    cov = np.linalg.inv(p @ np.swapaxes(p, -1, -2))  # in float64: the oracle's own inverse
    logw = np.asarray(gmm.log_weights(g), np.float64)
    want = logsumexp([logw[j] + multivariate_normal(np.asarray(g.means[j]), cov[j]).logpdf(x)
                      for j in range(3)], axis=0)
    assert g.prec_chol.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(gmm.log_prob(g, x)), want, rtol=1e-9)
    if ctype in ("full", "tied"):  # upper triangular, as the GMM's contract asks
        assert np.all(np.tril(np.asarray(g.prec_chol), -1) == 0)


def test_under_jit_and_vmap():
    us = jax.vmap(lambda k: _random_unconstrained(k, "full"))(jax.random.split(jax.random.key(5), 4))
    batched = jax.jit(jax.vmap(lambda u: from_unconstrained(u, "full")))(us)
    assert batched.prec_chol.shape == (4, 3, 3, 3)
    _close(jax.jit(to_unconstrained)(batched), us)


def _blobs(n=300):
    """Three well separated clusters on a scale (standard deviations 3 to 8) far from the
    unit covariances every descent below starts from."""
    keys = jax.random.split(jax.random.key(6), 3)
    centres, scales = jnp.array([[-30.0, 0.0], [0.0, 25.0], [30.0, 0.0]]), jnp.array([3.0, 5.0, 8.0])
    return jnp.concatenate([c + s * jax.random.normal(kk, (n // 3, 2))
                            for kk, c, s in zip(keys, centres, scales)])


def _start(x, ctype):
    """Unit covariances at three data points (one per cluster)."""
    means = x[jnp.array([0, 100, 200])]
    cov = {"full": jnp.broadcast_to(jnp.eye(2), (3, 2, 2)), "diag": jnp.ones((3, 2)),
           "spherical": jnp.ones(3), "tied": jnp.eye(2)}[ctype]
    return gmm.from_covariances(jnp.zeros(3), means, cov, ctype)


LR = 0.1  # one step size for both forms below


def _descend(loss, params, lr, n_steps):
    """Plain gradient descent; the loss after every step."""
    @jax.jit
    def run(p):
        def step(p, _):
            p = jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p))
            return p, loss(p)
        return jax.lax.scan(step, p, None, length=n_steps)
    return run(params)


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.slow
def test_descent_on_the_unconstrained_form_stays_finite_and_fits(ctype):
    x = _blobs()
    start = _start(x, ctype)

    def nll(u):
        return -gmm.log_prob(from_unconstrained(u, ctype), x).mean()

    u, curve = _descend(nll, to_unconstrained(start), lr=LR, n_steps=300)
    curve = np.asarray(curve)
    assert np.all(np.isfinite(curve))
    # About 39 nats per point at the start; EM from the same start reaches about 7.1 (7.3
    # tied). Plain descent moves the means slowly (their curvature is 1 / variance), so it
    # comes within half a nat, not to the same point.
    assert float(nll(to_unconstrained(start))) > 30 and curve[-1] < curve[0]
    em_nll = -float(gmm.log_prob(em.fit_from(x, start).gmm, x).mean())
    assert em_nll - 0.01 < curve[-1] < em_nll + 0.5
    assert np.all(np.isfinite(np.asarray(gmm.log_prob(from_unconstrained(u, ctype), x))))


@pytest.mark.parametrize("ctype", TYPES)
def test_the_same_descent_on_the_raw_factor_leaves_the_domain(ctype):
    """The gradient in prec_chol's diagonal p is -1/p + p s^2 per dimension: with data at a
    scale s far above the start's, one step of the same size throws p below zero, and the
    log-density takes log(p)."""
    x = _blobs()
    start = _start(x, ctype)

    def raw_nll(g):
        return -gmm.log_prob(g, x).mean()

    g, curve = _descend(raw_nll, start, lr=LR, n_steps=3)
    p = np.asarray(g.prec_chol)
    diag = np.diagonal(p, axis1=-2, axis2=-1) if ctype in ("full", "tied") else p
    assert not np.all(diag > 0)  # negative, or NaN already
    assert np.isnan(np.asarray(curve)).any()
    with pytest.raises(ValueError, match="diagonal entry <= 0 or NaN"):
        to_unconstrained(g)


@pytest.mark.parametrize("ctype", TYPES)
def test_gradients_are_finite_at_extreme_legal_values(ctype):
    u = _random_unconstrained(jax.random.key(7), ctype)
    x = jax.random.normal(jax.random.key(8), (5, 3))
    for scale in (-8.0, 8.0):  # standard deviations near e^8 and e^-8
        v = {**u, "log_diag": u["log_diag"] * 0 + scale}
        grads = jax.jit(jax.grad(lambda v: gmm.log_prob(from_unconstrained(v, ctype), x).sum()))(v)
        assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(grads))


@pytest.mark.parametrize("make, message", [
    (lambda: from_unconstrained({"logits": jnp.zeros(2)}, "diag"),
     "an unconstrained diag GMM has the entries ['logits', 'means', 'log_diag']"),
    (lambda: from_unconstrained({"logits": jnp.zeros(2), "means": jnp.zeros((2, 3)),
                                 "log_diag": jnp.zeros((2, 3))}, "full"),
     "an unconstrained full GMM has the entries"),
    (lambda: from_unconstrained({"logits": jnp.zeros(2), "means": jnp.zeros((2, 3)),
                                 "log_diag": jnp.zeros((2, 2))}, "diag"),
     "an unconstrained diag GMM with means (2, 3) needs logits (..., 2) and log_diag (..., 2, 3)"),
    (lambda: from_unconstrained({"logits": jnp.zeros(2), "means": jnp.zeros((2, 3)),
                                 "log_diag": jnp.zeros(3), "off_diag": jnp.zeros(2)}, "tied"),
     "off_diag must end in 3 entries (D = 3)"),
    (lambda: from_unconstrained({}, "banana"), "unknown covariance_type 'banana'"),
    (lambda: to_unconstrained(dataclasses.replace(_random_gmm(jax.random.key(9), "diag"),
                                                  prec_chol=-jnp.ones((3, 3)))),
     "prec_chol has a diagonal entry <= 0 or NaN"),
])
def test_bad_input_gets_one_clear_line(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
