"""Mixtures of linear regressions against numpy least squares and scipy; their EM and lagged regressors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax import em, gmm
from grnn_jax.data.lags import lagged, regressors
from grnn_jax.em import regression_em as rem
from grnn_jax.gmm import regression as rg

CTYPES = gmm.COVARIANCE_TYPES
K, D, F, N = 3, 2, 3, 60


def _problem(seed=0, n=N, f=F):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(n, f)) + 1.5
    x = rng.normal(size=(n, D)) @ rng.normal(size=(D, D)) + phi @ rng.normal(size=(f, D)) + 3.0
    resp = rng.dirichlet(np.ones(K), size=n)
    weights = rng.uniform(0.5, 2.0, n) * (rng.uniform(size=n) > 0.2)
    return x, phi, resp, weights


def _random_mixture(rng, ctype, f=F):
    a = rng.normal(size=(K, D, D))
    full = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(D)
    cov = {"full": full, "diag": np.stack([np.diag(c) for c in full]),
           "spherical": np.array([np.trace(c) / D for c in full]), "tied": full[0]}[ctype]
    return rg.regression_from_covariances(np.log(rng.dirichlet(np.ones(K))), rng.normal(size=(K, D, f)),
                                          rng.normal(size=(K, D)), cov, ctype)


def _dense_covs(rm):
    full = gmm.covariances(gmm.as_full(gmm.GMM(rm.logits, rm.intercept, rm.prec_chol, rm.covariance_type)))
    return np.asarray(full)


def _oracle(x, phi, r, ctype, reg_covar, ridge):
    """Per-component weighted least squares on sqrt-weighted rows, then residual covariances."""
    a = np.concatenate([phi, np.ones((len(x), 1))], axis=1)
    coef, resid = [], []
    for k in range(K):
        s = np.sqrt(r[:, k])[:, None]
        rows, target = s * a, s * x
        if ridge:  # the penalty ridge * |W|^2 as extra rows, none for the intercept
            pen = np.sqrt(ridge) * np.eye(a.shape[1])[:-1]
            rows, target = np.vstack([rows, pen]), np.vstack([target, np.zeros((len(pen), D))])
        b = np.linalg.lstsq(rows, target, rcond=None)[0].T  # (D, F+1)
        coef.append(b)
        resid.append(x - a @ b.T)
    coef, resid = np.stack(coef), np.stack(resid)  # (K, D, F+1), (K, N, D)
    nk = r.sum(0)
    outer = np.einsum("nk,knd,kne->kde", r, resid, resid)
    cov = {"full": outer / nk[:, None, None] + reg_covar * np.eye(D),
           "tied": outer.sum(0) / nk.sum() + reg_covar * np.eye(D),
           "diag": np.einsum("kdd->kd", outer) / nk[:, None] + reg_covar,
           "spherical": np.einsum("kdd->k", outer) / nk / D + reg_covar}[ctype]
    return coef[..., :-1], coef[..., -1], cov


@pytest.mark.parametrize("ridge", [0.0, 0.7])
@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.slow
def test_m_step_is_weighted_least_squares(ctype, ridge, x64):
    x, phi, resp, w = _problem()
    x_nan = np.where((w > 0)[:, None], x, np.nan)  # masked rows may hold anything
    coef, intercept, cov = _oracle(x, phi, resp * w[:, None], ctype, 1e-3, ridge)
    args = (jnp.asarray(x_nan), jnp.asarray(phi), jnp.asarray(resp), jnp.asarray(w))

    @jax.jit
    def both(x, phi, resp, w):
        direct = rg.regression_m_step(x, phi, resp, covariance_type=ctype, reg_covar=1e-3, ridge=ridge, weights=w)
        stats = rem.regression_stats(x, phi, resp, covariance_type=ctype, weights=w)
        return direct, rem.regression_m_step_from_stats(stats, covariance_type=ctype, reg_covar=1e-3, ridge=ridge)

    direct, from_stats = both(*args)
    for rm in (direct, from_stats):
        np.testing.assert_allclose(rm.coef, coef, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(rm.intercept, intercept, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(gmm.covariances(gmm.GMM(rm.logits, rm.intercept, rm.prec_chol, ctype)), cov,
                                   rtol=1e-8)
        np.testing.assert_allclose(np.exp(rm.logits), (resp * w[:, None]).sum(0) / w.sum(), rtol=1e-10)


@pytest.mark.parametrize("ctype", CTYPES)
def test_densities_match_scipy(ctype, x64):
    rng = np.random.default_rng(1)
    rm = _random_mixture(rng, ctype)
    x, phi = rng.normal(size=(N, D)) * 2, rng.normal(size=(N, F))
    means = np.einsum("kdf,nf->nkd", rm.coef, phi) + np.asarray(rm.intercept)
    covs = _dense_covs(rm)
    comp = np.array([[multivariate_normal(means[n, k], covs[k]).logpdf(x[n]) for k in range(K)] for n in range(N)])
    np.testing.assert_allclose(rg.regression_component_log_prob(rm, x, phi), comp, rtol=1e-10)
    np.testing.assert_allclose(rg.regression_means(rm, phi), means, rtol=1e-12)
    ref = logsumexp(np.asarray(jax.nn.log_softmax(rm.logits)) + comp, axis=1)
    np.testing.assert_allclose(rg.regression_log_prob(rm, x, phi), ref, rtol=1e-10)
    # Per-row weights from outside (a network or a filter) replace the mixture's own.
    logits = rng.normal(size=(N, K))
    log_w = logits - logsumexp(logits, axis=1, keepdims=True)
    ref_w = logsumexp(log_w + comp, axis=1)
    np.testing.assert_allclose(rg.regression_log_prob(rm, x, phi, logits), ref_w, rtol=1e-10)
    resp = rg.regression_responsibilities(rm, x, phi, logits)
    np.testing.assert_allclose(resp, np.exp(log_w + comp - ref_w[:, None]), rtol=1e-9, atol=1e-14)


def _em_step(ctype, reg_covar, ridge):
    @jax.jit
    def step(rm, x, phi, w):
        stats, ll_sum = rem.regression_e_step(rm, x, phi, w)
        return rem.regression_m_step_from_stats(stats, covariance_type=ctype, reg_covar=reg_covar, ridge=ridge), ll_sum

    return step


@pytest.mark.parametrize("ctype", CTYPES)
def test_em_never_decreases_the_log_likelihood(ctype, x64):
    x, phi, _, w = _problem(2, n=120)
    rm = _random_mixture(np.random.default_rng(3), ctype)
    # Intercepts near the data, so that no component starts empty.
    rm = rg.RegressionMixture(rm.logits, rm.coef, rm.intercept + x.mean(0), rm.prec_chol, ctype)
    step = _em_step(ctype, 0.0, 0.0)  # no floors: each M-step maximises the expected log-likelihood
    lls = []
    for _ in range(25):
        rm, ll = step(rm, jnp.asarray(x), jnp.asarray(phi), jnp.asarray(w))
        lls.append(float(ll))
    assert np.all(np.diff(lls) >= -1e-9 * np.abs(lls[1:])), np.diff(lls)
    assert lls[-1] > lls[0] + 1.0


@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.slow
def test_no_regressors_is_todays_gmm_exactly(ctype):
    x, _, resp, w = _problem(4)
    x, resp, w, phi0 = (jnp.asarray(a, jnp.float32) for a in (x, resp, w, np.zeros((N, 0))))
    direct = rg.regression_m_step(x, phi0, resp, covariance_type=ctype, weights=w)
    g = gmm.m_step(x, resp, covariance_type=ctype, weights=w)
    for a, b in zip(jax.tree.leaves(rg.regression_to_gmm(direct)), jax.tree.leaves(g), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rg.regression_log_prob(direct, x, phi0), gmm.log_prob(g, x))
    np.testing.assert_array_equal(rg.regression_log_responsibilities(direct, x, phi0),
                                  gmm.log_responsibilities(g, x))
    stats = rem.regression_stats(x, phi0, resp, covariance_type=ctype, weights=w)
    ref = em.m_step_from_stats(em.stats_from_responsibilities(x, resp, covariance_type=ctype, weights=w),
                               covariance_type=ctype, reg_covar=1e-6)
    got = rem.regression_m_step_from_stats(stats, covariance_type=ctype, reg_covar=1e-6)
    for a, b in zip(jax.tree.leaves(rg.regression_to_gmm(got)), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)
    back = rg.regression_to_gmm(rg.regression_from_gmm(g))
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(g), strict=True):
        np.testing.assert_array_equal(a, b)
    # Lag order 0 gives no regressors.
    assert lagged(np.zeros((2, 5, D)), 0).shape == (2, 5, 0)


def test_stats_add_over_chunks_and_devices(x64):
    rng = np.random.default_rng(5)
    rm = _random_mixture(rng, "full")
    x, phi, _, w = (jnp.asarray(a) for a in _problem(5, n=90))
    e_step = jax.jit(rem.regression_e_step)
    whole, ll = e_step(rm, x, phi, w)
    parts = [e_step(rm, x[i:i + 30], phi[i:i + 30], w[i:i + 30]) for i in (0, 30, 60)]
    summed = functools.reduce(lambda a, b: jax.tree.map(jnp.add, a, b), parts)
    for a, b in zip(jax.tree.leaves((whole, ll)), jax.tree.leaves(summed)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # The same sum as a collective over a named axis (what psum over devices computes).
    psummed = jax.jit(jax.vmap(lambda xs, ps, ws: jax.lax.psum(rem.regression_e_step(rm, xs, ps, ws), "i"),
                               axis_name="i"))(x.reshape(3, 30, D), phi.reshape(3, 30, F), w.reshape(3, 30))
    for a, b in zip(jax.tree.leaves((whole, ll)), jax.tree.leaves(psummed)):
        np.testing.assert_allclose(a, b[0], rtol=1e-12, atol=1e-12)


def _two_regimes(seed, n):
    rng = np.random.default_rng(seed)
    coef = np.array([[[0.8, -0.5], [0.3, 0.6]], [[-0.7, 0.2], [0.0, -0.9]]])  # (2, D, F)
    intercept = np.array([[1.0, -1.0], [-1.0, 2.0]])
    z = rng.uniform(size=n) < 0.4
    phi = rng.normal(size=(n, 2))
    x = np.einsum("ndf,nf->nd", coef[z.astype(int)], phi) + intercept[z.astype(int)]
    x = x + rng.normal(size=(n, 2)) * np.where(z, 0.3, 0.2)[:, None]
    return x.astype(np.float32), phi.astype(np.float32), coef, intercept


def _order(rm):
    """The fitted components in the order of the true ones (first intercepts +1, then -1)."""
    return np.argsort(-np.asarray(rm.intercept[:, 0]))


@pytest.mark.slow
def test_fit_recovers_a_two_regime_mixture():
    x, phi, coef, intercept = _two_regimes(6, 1500)
    res = rem.fit_regression(x, phi, 2, key=jax.random.key(0), n_init=2)
    assert bool(res.converged)
    order = _order(res.mixture)
    np.testing.assert_allclose(res.mixture.coef[order], coef, atol=0.06)
    np.testing.assert_allclose(res.mixture.intercept[order], intercept, atol=0.06)
    np.testing.assert_allclose(jax.nn.softmax(res.mixture.logits[order]), [0.6, 0.4], atol=0.04)
    h = np.asarray(res.history)[1:int(res.n_iter)]
    assert np.all(np.diff(h) >= -1e-5)


@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.slow
def test_fit_is_plain_em_in_data_units(ctype, x64):
    """The fit standardises x and phi; with reg_covar and ridge mapped, it is the same EM."""
    x, phi, _, w = _problem(7, n=80)
    x = x * np.array([30.0, 0.2]) + 50.0  # far from unit scale and the origin
    phi = phi * np.array([10.0, 0.1, 1.0])
    rm0 = rg.regression_m_step(jnp.asarray(x), jnp.asarray(phi), jnp.asarray(_problem(8, n=80)[2]),
                               covariance_type=ctype, reg_covar=1e-2, ridge=0.5, weights=jnp.asarray(w))
    res = rem.fit_regression(x, phi, K, key=jax.random.key(0), covariance_type=ctype, init=rm0, max_iter=4,
                             tol=0.0, reg_covar=1e-2, ridge=0.5, weights=w)
    step = _em_step(ctype, 1e-2, 0.5)
    rm, lls = rm0, []
    for _ in range(4):
        rm, ll = step(rm, jnp.asarray(x), jnp.asarray(phi), jnp.asarray(w))
        lls.append(float(ll) / w.sum())
    for a, b in zip(jax.tree.leaves(res.mixture), jax.tree.leaves(rm)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(res.history, lls, rtol=1e-10)
    assert int(res.n_iter) == 4


@pytest.mark.slow
def test_stepwise_em_blends_regression_stats():
    x, phi, coef, intercept = _two_regimes(9, 2400)
    old = rem.regression_stats(x[:4], phi[:4], jnp.full((4, 2), 0.5), covariance_type="diag")
    batch = rem.regression_stats(x[4:12], phi[4:12], jnp.full((8, 2), 0.5), covariance_type="diag")
    blended = em.blend(old, batch, 8.0, 0.25)
    assert isinstance(blended, rem.RegressionStats)
    for o, b, got in zip(old, batch, blended):
        np.testing.assert_allclose(got, 0.75 * o + 0.25 * b / 8.0, rtol=1e-6)

    @jax.jit
    def update(carry, batch):
        rm, stats, n = carry
        xb, pb = batch
        new, _ = rem.regression_e_step(rm, xb, pb)
        stats = em.blend(stats, new, xb.shape[0], em.step_size(n, exponent=0.6, offset=1.0))
        # Per-observation statistics: the ridge is per observation too.
        rm = rem.regression_m_step_from_stats(stats, covariance_type="diag", reg_covar=1e-6, ridge=1e-6)
        return (rm, stats, n + 1), None

    init = rem.fit_regression(x[:200], phi[:200], 2, key=jax.random.key(1), covariance_type="diag", max_iter=2)
    start = jax.tree.map(jnp.zeros_like, old)
    carry = (init.mixture, start, 0)
    batches = (x[200:].reshape(-1, 100, 2), phi[200:].reshape(-1, 100, 2))
    for _ in range(3):  # passes over the stream
        carry, _ = jax.lax.scan(update, carry, batches)
    rm = carry[0]
    order = _order(rm)
    np.testing.assert_allclose(rm.coef[order], coef, atol=0.1)
    np.testing.assert_allclose(rm.intercept[order], intercept, atol=0.1)


def test_lagged_matches_a_hand_loop():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3, 6, 2))
    lengths = np.array([6, 4, 3])
    x[1, 4:] = np.nan  # padding may hold anything
    for p in range(3):
        phi = lagged(x, p, lengths=lengths)
        ref = np.zeros((3, 6, 2 * p))
        for s in range(3):
            for t in range(lengths[s]):
                for j in range(1, p + 1):
                    if t - j >= 0:
                        ref[s, t, (j - 1) * 2:j * 2] = x[s, t - j]
        valid = np.arange(6)[None, :] < lengths[:, None]
        np.testing.assert_array_equal(phi[valid], ref[valid])
        assert np.isfinite(phi).all() and isinstance(phi, np.ndarray)
        jitted = jax.jit(lagged, static_argnums=1)(jnp.asarray(x[:1]), p)
        np.testing.assert_allclose(jitted, phi[:1], rtol=1e-6)
    u = rng.normal(size=(3, 6, 1))
    both = regressors(x, 2, covariates=u, lengths=lengths)
    np.testing.assert_array_equal(both[0, :, 4:], u[0])
    dynamax = pytest.importorskip("dynamax.hidden_markov_model")
    hmm = dynamax.LinearAutoregressiveHMM(2, 2, num_lags=2)
    np.testing.assert_allclose(hmm.compute_inputs(jnp.asarray(x[0])), lagged(x, 2)[0], rtol=1e-6)


def test_bad_input_gets_one_line_errors():
    x, phi, resp, _ = _problem(11)
    for p, match in ((-1, "integer >= 0"), (1.5, "integer >= 0"), (5, "smaller than the shortest")):
        with pytest.raises(ValueError, match=match):
            lagged(np.zeros((2, 5, 1)), p)
    with pytest.raises(ValueError, match="shortest sequence \\(2 steps\\)"):
        lagged(np.zeros((2, 5, 1)), 2, lengths=np.array([5, 2]))
    with pytest.raises(ValueError, match="shape \\(S, T, D\\)"):
        lagged(np.zeros((5, 1)), 1)
    with pytest.raises(ValueError, match="lengths"):
        lagged(np.zeros((2, 5, 1)), 1, lengths=np.array([5, 9]))
    with pytest.raises(ValueError, match="phi must have shape"):
        rem.fit_regression(x, phi[:-1], 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="ridge"):
        rem.fit_regression(x, phi, 2, key=jax.random.key(0), ridge=-1.0)
    with pytest.raises(ValueError, match="unknown init"):
        rem.fit_regression(x, phi, 2, key=jax.random.key(0), init="nope")
    with pytest.raises(ValueError, match="covariance_type"):
        rem.fit_regression(x, phi, 2, key=jax.random.key(0), covariance_type="banana")
    with pytest.raises(ValueError, match="non-finite"):
        rem.fit_regression(np.where(np.eye(N, D) > 0, np.nan, x), phi, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="coef"):
        rg.regression_from_covariances(np.zeros(2), np.zeros((2, 3, 1)), np.zeros((2, 2)), np.ones(2), "spherical")
    with pytest.raises(ValueError, match="F = 0"):
        rg.regression_to_gmm(rg.regression_from_gmm(gmm.m_step(jnp.asarray(x), jnp.asarray(resp)), 2))
    rm = rg.regression_from_gmm(gmm.m_step(jnp.asarray(x), jnp.asarray(resp)), F)
    with pytest.raises(ValueError, match="phi must have shape"):
        rg.regression_log_prob(rm, x, phi[:, :2])
    with pytest.raises(ValueError, match="expects x"):
        rg.regression_m_step(jnp.asarray(x), jnp.asarray(phi[:-1]), jnp.asarray(resp))


def test_jit_vmap_grad_and_sampling():
    rng = np.random.default_rng(12)
    rm = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _random_mixture(rng, "full"))
    x = rng.normal(size=(4, 5, D)).astype(np.float32)  # (B, T, D) with (B, T, F) regressors
    phi = rng.normal(size=(4, 5, F)).astype(np.float32)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), rm)  # two mixtures

    @jax.jit
    def run(rm, stacked, x, phi):
        vmapped = jax.vmap(rg.regression_log_prob, in_axes=(0, None, None))(stacked, x, phi)
        grads = jax.grad(lambda m: -jnp.mean(rg.regression_log_prob(m, x, phi)))(rm)
        resp = jax.nn.softmax(jnp.sum(x, -1, keepdims=True) * jnp.arange(K)).reshape(-1, K)
        m_step = functools.partial(rg.regression_m_step, covariance_type="diag")
        g_x = jax.grad(lambda a: jnp.sum(m_step(a, phi.reshape(-1, F), resp).coef))(x.reshape(-1, D))
        return rg.regression_log_prob(rm, x, phi), vmapped, grads, g_x

    out, vmapped, grads, g_x = run(rm, stacked, x, phi)
    assert out.shape == (4, 5)
    comp = np.array([[[multivariate_normal(np.asarray(m), c).logpdf(x[b, t]) for m, c in zip(
        rg.regression_means(rm, phi[b, t]), _dense_covs(rm))] for t in range(5)] for b in range(4)])
    np.testing.assert_allclose(out, logsumexp(np.asarray(jax.nn.log_softmax(rm.logits)) + comp, -1), rtol=1e-4)
    np.testing.assert_allclose(vmapped[0], out, rtol=1e-6)
    assert not np.allclose(vmapped[1], out)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves((grads, g_x)))
    # Draws given one phi have the mixture's conditional mean.
    one = jnp.asarray(rng.normal(size=F), jnp.float32)
    sample = jax.jit(rg.sample_regression, static_argnums=3)
    draws, labels = sample(jax.random.key(0), rm, one, (20000,))
    assert draws.shape == (20000, D) and labels.shape == (20000,)
    mean = jnp.sum(jax.nn.softmax(rm.logits)[:, None] * rg.regression_means(rm, one), axis=0)
    spread = float(jnp.max(jnp.std(draws, axis=0)))
    np.testing.assert_allclose(draws.mean(0), mean, atol=5 * spread / np.sqrt(20000))
