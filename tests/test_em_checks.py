"""EM on hard but legal data, bad input, initialisations, scores and model selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from grnn_jax import em, gmm


def _three_blobs(rng, n=240, d=2, sep=10.0, dtype=np.float32):
    centers = np.zeros((3, d))
    centers[1, 0] = sep
    centers[2, 1 % d] = sep if d > 1 else -sep
    labels = rng.integers(0, 3, n)
    return (centers[labels] + rng.normal(size=(n, d))).astype(dtype), centers


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


# --- legal but hard data -----------------------------------------------------------------------


def _hard_sets():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 3)).astype(np.float32)
    const_col = base.copy()
    const_col[:, 1] = 7.0
    return {
        "identical rows": np.full((60, 3), 3.5, np.float32),
        "constant feature": const_col,
        "offset 1e6": base + np.float32(1e6),
        "scale 1e-6": base * np.float32(1e-6),
        "mixed scales": base * np.array([1e-6, 1.0, 1e6], np.float32),
    }


@pytest.mark.parametrize("name", list(_hard_sets()))
@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
@pytest.mark.slow
def test_hard_data_gives_finite_results(name, ctype):
    x = _hard_sets()[name]
    res = em.fit(x, 3, key=jax.random.key(0), covariance_type=ctype, init="kmeans", max_iter=10)
    assert _finite(res.gmm), name
    assert np.isfinite(float(res.log_likelihood))
    h = np.asarray(res.history)[: int(res.n_iter)]
    assert np.isfinite(h).all()
    assert np.isfinite(float(em.bic(res.gmm, x))) and np.isfinite(float(em.aic(res.gmm, x)))


@pytest.mark.parametrize("name, ctype", [("offset 1e6", "full"), ("mixed scales", "diag")])
def test_far_and_mixed_scale_data_match_float64(x64, name, ctype):
    """float32 EM on these data equals float64 EM from the same start, not just finite."""
    x32 = _hard_sets()[name]
    x64_ = x32.astype(np.float64)
    g0 = em.initialize(jnp.asarray(x64_), 3, key=jax.random.key(0), covariance_type=ctype, init="kmeans")
    g0_32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g0)
    r32 = em.fit(x32, 3, key=jax.random.key(0), covariance_type=ctype, init=g0_32, max_iter=10, tol=0.0)
    r64 = em.fit(x64_, 3, key=jax.random.key(0), covariance_type=ctype, init=g0, max_iter=10, tol=0.0)
    assert r32.gmm.means.dtype == jnp.float32
    # Ten iterations from one start; float32 rounding grows to ~1e-3 of a
    # standard deviation (catastrophic cancellation would give errors of order 1).
    scale = x64_.std(0)
    np.testing.assert_allclose(np.asarray(r32.gmm.means) / scale, np.asarray(r64.gmm.means) / scale, atol=5e-3)
    np.testing.assert_allclose(float(r32.log_likelihood), float(r64.log_likelihood), atol=5e-3)
    sd32 = np.sqrt(np.diagonal(np.asarray(gmm.covariances(r32.gmm)), axis1=-2, axis2=-1) if ctype == "full"
                   else np.asarray(gmm.covariances(r32.gmm)))
    sd64 = np.sqrt(np.diagonal(np.asarray(gmm.covariances(r64.gmm)), axis1=-2, axis2=-1) if ctype == "full"
                   else np.asarray(gmm.covariances(r64.gmm)))
    np.testing.assert_allclose(sd32, sd64, rtol=5e-3)


@pytest.mark.slow
def test_collapsed_component_falls_back_to_a_finite_covariance():
    # Component 1 sits on one repeated far point: its one-pass covariance rounds to garbage.
    x = np.concatenate([np.random.default_rng(1).normal(size=(50, 4)), np.full((10, 4), 40.0)])
    stats = em.SufficientStats(
        jnp.array([50.0, 10.0]),
        jnp.stack([jnp.asarray(x[:50].sum(0)), jnp.full(4, 400.0)]).astype(jnp.float32),
        jnp.stack([jnp.asarray(x[:50].T @ x[:50]), jnp.full((4, 4), 16000.0) * (1 + 1e-7)]).astype(
            jnp.float32
        ),
    )
    g = em.m_step_from_stats(stats, covariance_type="full", reg_covar=1e-6)
    assert _finite(g)
    np.testing.assert_allclose(g.means[1], 40.0, rtol=1e-5)


# --- bad input ---------------------------------------------------------------------------------

_X = np.random.default_rng(2).normal(size=(20, 2))
_BAD = [
    (dict(x=np.where(np.arange(40).reshape(20, 2) == 7, np.nan, _X)), r"NaN at index \(3, 1\)"),
    (dict(x=np.where(np.arange(40).reshape(20, 2) == 4, np.inf, _X)), r"inf at index \(2, 0\)"),
    (dict(x=_X[:, 0]), "shape"),
    (dict(x=_X[None, None]), "shape"),
    (dict(x=_X[:2]), "fewer than n_components"),
    (dict(covariance_type="banana"), "covariance_type"),
    (dict(reg_covar=float("nan")), "reg_covar"),
    (dict(reg_covar=-1e-3), "reg_covar"),
    (dict(tol=-1.0), "tol"),
    (dict(tol=float("nan")), "tol"),
    (dict(max_iter=0), "max_iter"),
    (dict(max_iter=2.5), "max_iter"),
    (dict(n_init=0), "n_init"),
    (dict(n_components=0), "n_components"),
    (dict(init="kmeans+++"), "init"),
    (dict(weights=np.ones(19)), "weights must have shape"),
    (dict(weights=-np.ones(20)), "non-negative"),
    (dict(weights=np.where(np.arange(20) == 5, np.nan, 1.0)), "weights contains"),
    (dict(weights=np.zeros(20)), "all zero"),
    (dict(weights=np.eye(20)[0]), "positive weight"),
    (dict(key=None), "key"),
    (dict(key=jnp.zeros(3, jnp.uint32)), "key"),
    (dict(init=gmm.from_covariances(jnp.zeros(3), jnp.zeros((3, 2)), jnp.ones((3, 2)), "diag")), "covariance_type"),
    (dict(init=gmm.from_covariances(jnp.zeros(2), jnp.zeros((2, 2)), jnp.ones((2, 2, 2)) * jnp.eye(2), "full")), "components"),
    (dict(init=gmm.GMM(jnp.zeros(3), jnp.full((3, 2), jnp.nan), jnp.ones((3, 2, 2)) * jnp.eye(2))), "init.means"),
]


@pytest.mark.parametrize("kwargs, match", _BAD, ids=[m for _, m in _BAD])
def test_bad_input_raises_before_compute(kwargs, match):
    args = dict(x=_X, n_components=3, key=jax.random.key(0))
    args.update(kwargs)
    x = args.pop("x")
    k = args.pop("n_components")
    with pytest.raises(ValueError, match=match):
        em.fit(x, k, **args)


def test_bad_input_to_scores_and_selection():
    g = gmm.from_covariances(jnp.zeros(2), jnp.zeros((2, 2)), jnp.ones((2, 2)), "diag")
    with pytest.raises(ValueError, match="features"):
        em.bic(g, np.ones((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        em.aic(g, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="criterion"):
        em.select_n_components(_X, [1, 2], key=jax.random.key(0), criterion="dic")
    with pytest.raises(ValueError, match="candidate"):
        em.select_n_components(_X, [1, 0], key=jax.random.key(0))


# --- initialisations ---------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["k-means++", "kmeans", "random_from_data"])
def test_inits_find_separated_clusters(init):
    x, centers = _three_blobs(np.random.default_rng(3))
    res = em.fit(x, 3, key=jax.random.key(1), init=init, covariance_type="diag")
    got = np.sort(np.asarray(res.gmm.means), axis=0)
    np.testing.assert_allclose(got, np.sort(centers, axis=0), atol=0.35)
    assert bool(res.converged)


def test_random_init_is_the_m_step_of_random_responsibilities():
    x, _ = _three_blobs(np.random.default_rng(3), n=400)
    key = jax.random.key(2)
    g = em.initialize(x, 3, key=key, init="random", covariance_type="diag", reg_covar=1e-6)
    # The responsibilities init draws: uniform, normalised, keyed by the first row of
    # the block (one block here: 400 rows < the block size).
    assert em.default_block_size(2, 3, "diag") >= len(x)
    u = jax.random.uniform(jax.random.fold_in(key, 0), (3, len(x)), jnp.float32)
    resp = (u / u.sum(0)).T
    ref = gmm.m_step(jnp.asarray(x), resp, covariance_type="diag", reg_covar=1e-6)
    np.testing.assert_allclose(np.asarray(g.means), np.asarray(ref.means), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gmm.weights(g)), np.asarray(gmm.weights(ref)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gmm.covariances(g)), np.asarray(gmm.covariances(ref)), rtol=1e-4)


def test_seed_inits_start_at_distinct_data_points():
    x, _ = _three_blobs(np.random.default_rng(4), n=50)
    for init in ("k-means++", "random_from_data"):
        g = em.initialize(x, 3, key=jax.random.key(5), init=init, covariance_type="spherical")
        m = np.asarray(g.means)
        dist = np.min(np.linalg.norm(x[:, None, :] - m[None], axis=-1), axis=0)
        np.testing.assert_allclose(dist, 0.0, atol=1e-5)
        assert len({tuple(r) for r in m.round(5)}) == 3
        np.testing.assert_allclose(np.asarray(gmm.covariances(g)), 1e-6, rtol=1e-3)


def test_kmeans_init_equals_m_step_on_sklearn_kmeans_labels(x64):
    from sklearn.cluster import KMeans

    x, _ = _three_blobs(np.random.default_rng(6), dtype=np.float64)
    g = em.initialize(jnp.asarray(x), 3, key=jax.random.key(0), init="kmeans")
    labels = KMeans(3, n_init=1, random_state=0).fit(x).labels_
    want = gmm.m_step(jnp.asarray(x), jax.nn.one_hot(labels, 3, dtype=jnp.float64), reg_covar=1e-6)
    order_g, order_w = np.argsort(np.asarray(g.means)[:, 0]), np.argsort(np.asarray(want.means)[:, 0])
    np.testing.assert_allclose(np.asarray(g.means)[order_g], np.asarray(want.means)[order_w], rtol=1e-8)
    np.testing.assert_allclose(
        np.asarray(g.prec_chol)[order_g], np.asarray(want.prec_chol)[order_w], rtol=1e-6
    )


# --- scores ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", gmm.COVARIANCE_TYPES)
def test_bic_aic_score_equal_sklearn(x64, ctype):
    x, _ = _three_blobs(np.random.default_rng(7), d=3, dtype=np.float64)
    sk = GaussianMixture(3, covariance_type=ctype, random_state=0).fit(x)
    g = gmm.GMM(
        jnp.log(jnp.asarray(sk.weights_)), jnp.asarray(sk.means_), jnp.asarray(sk.precisions_cholesky_), ctype
    )
    np.testing.assert_allclose(float(em.bic(g, x)), sk.bic(x), rtol=1e-10)
    np.testing.assert_allclose(float(em.aic(g, x)), sk.aic(x), rtol=1e-10)
    np.testing.assert_allclose(float(em.score(g, x)), sk.score(x), rtol=1e-10)


def test_weighted_bic_equals_bic_of_repeated_rows(x64):
    rng = np.random.default_rng(8)
    x, _ = _three_blobs(rng, n=40, dtype=np.float64)
    w = rng.integers(0, 3, len(x))
    g = em.fit(x, 3, key=jax.random.key(0), max_iter=5).gmm
    np.testing.assert_allclose(float(em.bic(g, x, w)), float(em.bic(g, np.repeat(x, w, 0))), rtol=1e-10)
    np.testing.assert_allclose(float(em.aic(g, x, w)), float(em.aic(g, np.repeat(x, w, 0))), rtol=1e-10)


@pytest.mark.slow
def test_select_n_components_recovers_true_k():
    x, _ = _three_blobs(np.random.default_rng(9), n=300, sep=12.0)
    best, table = em.select_n_components(x, [2, 3, 4], key=jax.random.key(0))
    assert best == 3
    assert table.candidates == (2, 3, 4) and table.scores.shape == (3,)
    assert int(np.argmin(table.scores)) == 1 and table.fits[1].gmm.n_components == 3
    for fit, score in zip(table.fits, table.scores):
        np.testing.assert_allclose(score, float(em.bic(fit.gmm, x)), rtol=1e-6)
    # AIC ranks the same fits by its own score (fits are reproducible from the key).
    best_aic, table_aic = em.select_n_components(x, [2, 3, 4], key=jax.random.key(0), criterion="aic")
    for fit, score in zip(table_aic.fits, table_aic.scores):
        np.testing.assert_allclose(score, float(em.aic(fit.gmm, x)), rtol=1e-6)
    assert best_aic == (2, 3, 4)[int(np.argmin(table_aic.scores))]


@pytest.mark.parametrize("transform", [jax.jit, jax.vmap])
def test_fit_under_a_transformation_points_to_fit_from(transform):
    x = jnp.asarray(_X) if transform is jax.jit else jnp.asarray(_X)[None]
    with pytest.raises(TypeError, match=r"x is traced\): call em.fit_from"):
        transform(lambda a: em.fit(a, 2, key=jax.random.key(0)))(x)


def test_reg_covar_zero_names_the_collapsed_component():
    # Component 1 starts on a lone far point and keeps it alone: its covariance is 0.
    x = np.concatenate([_X, [[30.0, 30.0]]])
    g0 = gmm.from_covariances(jnp.zeros(2), jnp.array([[0.0, 0.0], [30.0, 30.0]]),
                              jnp.stack([jnp.eye(2)] * 2), "full")
    with pytest.raises(ValueError, match=r"component\(s\) \[1\] have ill-defined empirical covariance"):
        em.fit(x, 2, key=jax.random.key(0), init=g0, reg_covar=0.0)
    # Three far points that span the plane give a defined covariance.
    spread = np.concatenate([_X[:-2], [[30.0, 30.0], [31.0, 29.0], [29.0, 31.5]]])
    fine = em.fit(spread, 2, key=jax.random.key(0), init=g0, reg_covar=0.0)
    assert np.isfinite(float(fine.log_likelihood))
    # Batched data sets: the message names the data set too.
    both = np.stack([spread, x])
    with pytest.raises(ValueError, match=r"component 1 of data set \(1,\)"):
        em.fit(both, 2, key=jax.random.key(0), init=g0, reg_covar=0.0)


def test_fit_from_lower_bound_is_where_the_first_change_is_measured():
    x = jnp.asarray(_X)
    # A fitted-looking start, so the bound (about -3) keeps float32's digits.
    g0 = em.initialize(x, 2, key=jax.random.key(0), covariance_type="diag", init="kmeans")
    cold = em.fit_from(x, g0, max_iter=1, tol=1e-3)
    assert int(cold.n_iter) == 1 and not bool(cold.converged)
    # From the bound this very mixture scores, one iteration changes it by < tol.
    again = em.fit_from(x, g0, max_iter=1, tol=1e-3, lower_bound=cold.log_likelihood)
    assert bool(again.converged)
    far = em.fit_from(x, g0, max_iter=1, tol=1e-3, lower_bound=cold.log_likelihood - 1.0)
    assert not bool(far.converged)
