"""EM against scikit-learn and brute force: statistics, iterations, scores, selection."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from grnn_jax import em, gmm
from grnn_jax.em.fit import restart_keys

CTYPES = gmm.COVARIANCE_TYPES


def _blobs(rng, n=150, d=3, k=3, spread=6.0, dtype=np.float64):
    centers = rng.normal(size=(k, d)) * spread
    labels = rng.integers(0, k, n)
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    return (centers[labels] + rng.normal(size=(n, d)) * scales[labels]).astype(dtype)


def _random_gmm(rng, x, k, ctype):
    """A plausible but poor starting mixture: means at random rows, broad covariances."""
    d = x.shape[1]
    means = x[rng.choice(len(x), k, replace=False)] + rng.normal(size=(k, d)) * 0.3
    logits = np.log(rng.uniform(0.5, 1.5, k))
    if ctype == "full":
        a = rng.normal(size=(k, d, d)) * 0.3
        cov = a @ np.swapaxes(a, 1, 2) + 2.0 * np.eye(d)
    elif ctype == "tied":
        a = rng.normal(size=(d, d)) * 0.3
        cov = a @ a.T + 2.0 * np.eye(d)
    elif ctype == "diag":
        cov = rng.uniform(1.0, 3.0, size=(k, d))
    else:
        cov = rng.uniform(1.0, 3.0, size=k)
    return gmm.from_covariances(jnp.asarray(logits), jnp.asarray(means), jnp.asarray(cov), ctype)


def _close(a, b, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# --- E-step statistics -------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="ctype")
def _reference_m_step(x, g, w, ctype):
    return gmm.m_step(x, gmm.responsibilities(g, x), covariance_type=ctype, reg_covar=1e-6, weights=w)


@pytest.mark.parametrize("ctype, d", [(c, 3) for c in CTYPES] + [("full", 7)])  # D > 2K: batched outer products
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.slow
def test_e_step_then_m_step_equals_gmm_m_step(x64, ctype, d, weighted):
    rng = np.random.default_rng(0)
    x = jnp.asarray(_blobs(rng, n=97, d=d) + 50.0)  # off the origin, N not a multiple of the block
    g = _random_gmm(rng, np.asarray(x), 3, ctype)
    w = jnp.asarray(rng.integers(0, 4, len(x)).astype(float)) if weighted else None
    stats, ll_sum = em.e_step(g, x, w, block_size=32)
    got = em.m_step_from_stats(stats, covariance_type=ctype, reg_covar=1e-6)
    want = _reference_m_step(x, g, w, ctype)
    _close(got.logits, want.logits, 1e-9, 1e-12)
    _close(got.means, want.means, 1e-9, 1e-12)
    _close(got.prec_chol, want.prec_chol, 1e-7, 1e-10)
    lp = gmm.log_prob(g, x)
    _close(ll_sum, jnp.sum(lp if w is None else lp * w), 1e-10)


def test_accelerator_block_sizes_are_larger_and_give_the_same_statistics(x64):
    # CPU sizes are calibrated for caches; a GPU or TPU takes up to 65,536 rows per block.
    assert em.default_block_size(64, 32, "full", "cpu") == 256
    assert em.default_block_size(64, 32, "full", "gpu") == 16384
    assert em.default_block_size(16, 32, "full", "tpu") == em.default_block_size(2, 4, "diag", "gpu") == 65536
    assert em.default_block_size(2, 4, "diag", "cpu") == 16384
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(70_001, 16)))  # two accelerator blocks, the last shifted back
    g = _random_gmm(rng, np.asarray(x[:500]), 4, "full")
    small, ll_small = em.e_step(g, x, block_size=em.default_block_size(16, 4, "full", "cpu"))
    large, ll_large = em.e_step(g, x, block_size=em.default_block_size(16, 4, "full", "gpu"))
    _close(ll_large, ll_small, 1e-12)
    jax.tree.map(lambda a, b: _close(a, b, 1e-10, 1e-8), large, small)


def test_e_step_stats_add_over_chunks_and_ignore_masked_rows(x64):
    rng = np.random.default_rng(1)
    x = jnp.asarray(_blobs(rng, n=60))
    g = _random_gmm(rng, np.asarray(x), 3, "full")
    whole, ll = em.e_step(g, x)
    a, ll_a = em.e_step(g, x[:30])
    b, ll_b = em.e_step(g, x[30:])
    summed = jax.tree.map(jnp.add, a, b)
    for u, v in zip(summed, whole):
        _close(u, v, 1e-10, 1e-10)
    _close(ll_a + ll_b, ll, 1e-12)
    # Rows with weight 0 may hold NaN: they are ignored, not propagated.
    x_bad = x.at[3].set(jnp.nan)
    w = jnp.ones(len(x)).at[3].set(0.0)
    masked, ll_m = em.e_step(g, x_bad, w)
    ref, ll_r = em.e_step(g, x, w)
    for u, v in zip(masked, ref):
        _close(u, v, 1e-10, 1e-10)
    _close(ll_m, ll_r, 1e-12)


# --- the EM loop against scikit-learn ----------------------------------------------------------


def _sklearn_from(g, x, max_iter, tol, reg_covar=1e-6):
    sk = GaussianMixture(
        n_components=g.n_components,
        covariance_type=g.covariance_type,
        max_iter=max_iter,
        tol=tol,
        reg_covar=reg_covar,
        weights_init=np.asarray(gmm.weights(g)),
        means_init=np.asarray(g.means),
        precisions_init=np.asarray(gmm.precisions(g)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on purpose for short runs
        sk.fit(np.asarray(x))
    return sk


@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.parametrize("tol", [1e-4, 0.0])  # converges early / runs all max_iter
def test_fit_from_matches_sklearn(x64, ctype, tol):
    max_iter = 25
    rng = np.random.default_rng(2)
    x = _blobs(rng, n=180) + 30.0
    g0 = _random_gmm(rng, x, 3, ctype)
    sk = _sklearn_from(g0, x, max_iter, tol)
    res = em.fit_from(jnp.asarray(x), g0, tol=tol, max_iter=max_iter, block_size=64)
    n = int(res.n_iter)
    assert n == sk.n_iter_ and (n < max_iter) == (tol > 0)
    assert bool(res.converged) == sk.converged_
    _close(res.history[:n], sk.lower_bounds_, 1e-6)
    assert np.isnan(np.asarray(res.history[n:])).all()
    _close(res.log_likelihood, sk.lower_bound_, 1e-6)
    _close(gmm.weights(res.gmm), sk.weights_, 1e-6)
    _close(res.gmm.means, sk.means_, 1e-6)
    _close(res.gmm.prec_chol, sk.precisions_cholesky_, 1e-6)


def test_fit_with_gmm_init_equals_fit_from(x64):
    rng = np.random.default_rng(3)
    x = _blobs(rng)
    g0 = _random_gmm(rng, x, 3, "diag")
    a = em.fit(x, 3, key=jax.random.key(0), init=g0, covariance_type="diag", max_iter=20)
    b = em.fit_from(jnp.asarray(x), g0, max_iter=20)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        _close(u, v, 1e-12)


@pytest.mark.parametrize("ctype", CTYPES)
def test_log_likelihood_never_decreases(x64, ctype):
    rng = np.random.default_rng(4)
    x = _blobs(rng, n=200, k=4, spread=2.0)
    res = em.fit(x, 4, key=jax.random.key(1), covariance_type=ctype, init="random", tol=0.0, max_iter=30)
    h = np.asarray(res.history)
    assert int(res.n_iter) == 30 and not bool(res.converged)
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:]))


@pytest.mark.parametrize("ctype", ["full", "spherical"])
@pytest.mark.slow
def test_integer_weights_equal_repeated_rows(x64, ctype):
    rng = np.random.default_rng(5)
    x = _blobs(rng, n=80)
    w = rng.integers(0, 4, len(x))
    g0 = _random_gmm(rng, x, 3, ctype)
    weighted = em.fit_from(jnp.asarray(x), g0, weights=jnp.asarray(w, float), max_iter=15, tol=0.0)
    repeated = em.fit_from(jnp.asarray(np.repeat(x, w, axis=0)), g0, max_iter=15, tol=0.0)
    for u, v in zip(jax.tree.leaves(weighted), jax.tree.leaves(repeated)):
        _close(u, v, 1e-8, 1e-10)
    # The same through the checked entry point.
    fw = em.fit(x, 3, key=jax.random.key(0), covariance_type=ctype, weights=w, init=g0, max_iter=15, tol=0.0)
    fr = em.fit(np.repeat(x, w, axis=0), 3, key=jax.random.key(0), covariance_type=ctype, init=g0, max_iter=15,
                tol=0.0)
    for u, v in zip(jax.tree.leaves(fw), jax.tree.leaves(fr)):
        _close(u, v, 1e-8, 1e-10)


def test_vmap_over_data_sets_equals_separate_fits():
    rng = np.random.default_rng(6)
    xs = np.stack([_blobs(rng, n=90, dtype=np.float32) for _ in range(3)])
    key = jax.random.key(7)
    batch = em.fit(xs, 3, key=key, covariance_type="full", init="random_from_data", max_iter=20)
    assert batch.history.shape == (3, 20) and batch.gmm.means.shape == (3, 3, 3)
    for b, kb in enumerate(jax.random.split(key, 3)):
        one = em.fit(xs[b], 3, key=kb, covariance_type="full", init="random_from_data", max_iter=20)
        assert int(one.n_iter) == int(batch.n_iter[b])
        _close(batch.gmm.means[b], one.gmm.means, 1e-4, 1e-4)
        _close(batch.log_likelihood[b], one.log_likelihood, 1e-5)


def test_best_restart_is_kept():
    rng = np.random.default_rng(8)
    x = _blobs(rng, n=120, k=5, spread=3.0, dtype=np.float32)
    key = jax.random.key(3)
    best = em.fit(x, 5, key=key, init="random_from_data", n_init=3, max_iter=30)
    singles = [
        float(em.fit(x, 5, key=k, init="random_from_data", max_iter=30).log_likelihood)
        for k in restart_keys(key, 3)
    ]
    # The first restart starts from the key itself, as a single fit does.
    assert singles[0] == float(em.fit(x, 5, key=key, init="random_from_data", max_iter=30).log_likelihood)
    assert float(best.log_likelihood) == pytest.approx(max(singles), rel=1e-5)


def test_second_call_does_not_recompile(compilations):
    rng = np.random.default_rng(9)
    x = _blobs(rng, n=64, dtype=np.float32)
    em.fit(x, 2, key=jax.random.key(0), max_iter=5, tol=1e-3)
    from grnn_jax.em.fit import _fit_jit

    compiled = compilations(_fit_jit)
    em.fit(x + 1.0, 2, key=jax.random.key(1), max_iter=5, tol=1e-4, reg_covar=1e-5)
    assert compiled() == 0
    g0 = _random_gmm(rng, x, 2, "tied")
    em.fit_from(jnp.asarray(x), g0, max_iter=5, tol=1e-3)
    compiled = compilations(em.fit_from)
    em.fit_from(jnp.asarray(x) * 2.0, g0, max_iter=5, tol=0.5)
    assert compiled() == 0


@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("ctype", ["full", "diag"])
@pytest.mark.slow
def test_float32_fit_of_offset_data_matches_float64(x64, offset, ctype):
    rng = np.random.default_rng(10)
    centers = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    labels = rng.integers(0, 3, 300)
    x = centers[labels] + rng.normal(size=(300, 3)) * rng.uniform(0.5, 1.5, size=(3, 3))[labels]
    x32 = (x + offset).astype(np.float32)
    x64_ = x32.astype(np.float64)  # the same numbers, so only the arithmetic differs
    g0 = gmm.from_covariances(
        jnp.zeros(3), jnp.asarray(centers + offset + 1.0), jnp.full((3, 3), 2.0), "diag"
    )
    if ctype == "full":
        g0 = gmm.from_covariances(g0.logits, g0.means, jnp.broadcast_to(2.0 * jnp.eye(3), (3, 3, 3)), "full")
    g0_32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g0)
    g0_64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), g0_32)
    # A fixed number of iterations (EM has converged by then), so both stop at the same one.
    r32 = em.fit_from(jnp.asarray(x32), g0_32, max_iter=40, tol=0.0)
    r64 = em.fit_from(jnp.asarray(x64_), g0_64, max_iter=40, tol=0.0)
    assert r32.gmm.means.dtype == jnp.float32
    # float32 cannot hold a mean near the offset better than half a unit in the last place.
    atol = 1e-3 + float(np.spacing(np.float32(offset)))
    _close(r32.gmm.means, r64.gmm.means, 0.0, atol)
    _close(gmm.covariances(r32.gmm), gmm.covariances(r64.gmm), 1e-4, 1e-4)
    _close(gmm.weights(r32.gmm), gmm.weights(r64.gmm), 0.0, 1e-5)
    _close(r32.history, r64.history, 1e-6)
    # Scoring in float32 far from the origin is accurate: same mixture, evaluated in float64.
    g32_in_64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), r32.gmm)
    _close(em.score(r32.gmm, x32), em.score(g32_in_64, x64_), 1e-6)
