"""The E-step's two forms of the log-joint density, the guard that picks one, and the batched branch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from grnn_jax import em, gmm
from grnn_jax.em import features
from grnn_jax.em import log_joint as lj
from grnn_jax.em.blocks import data_columns, default_block_size
from grnn_jax.gmm.standardise import Standardiser

QUAD_TYPES = ["full", "diag", "spherical"]


def _mixture(rng, d, k, ctype, var=1.0, dtype=np.float64):
    means = rng.normal(size=(k, d)) * 2.0
    if ctype == "full":
        a = rng.normal(size=(k, d, d)) * 0.5
        cov = (a @ np.swapaxes(a, 1, 2) / d + np.eye(d)) * var
    elif ctype == "diag":
        cov = rng.uniform(0.5, 2.0, size=(k, d)) * var
    else:
        cov = rng.uniform(0.5, 2.0, size=k) * var
    logits = rng.normal(size=k)
    return gmm.from_covariances(*(jnp.asarray(a, dtype) for a in (logits, means, cov)), ctype)


def _columns(z):
    """(N, D) rows -> (D+1, N) augmented columns, as the E-step holds a block."""
    return jnp.concatenate([z.T, jnp.ones((1, z.shape[0]), z.dtype)], axis=0)


def _scipy_log_joint(g, z):
    cov = np.asarray(gmm.covariances(g), np.float64)
    d = z.shape[1]
    if g.covariance_type == "diag":
        cov = np.stack([np.diag(c) for c in cov])
    elif g.covariance_type == "spherical":
        cov = np.stack([c * np.eye(d) for c in cov])
    logw = np.asarray(gmm.log_weights(g), np.float64)
    return np.stack(
        [logw[i] + multivariate_normal(np.asarray(g.means[i], np.float64), cov[i]).logpdf(z) for i in range(len(logw))],
        axis=1,
    )


@pytest.mark.parametrize("ctype", QUAD_TYPES)
def test_both_forms_equal_scipy(x64, ctype):
    rng = np.random.default_rng(0)
    g = _mixture(rng, 4, 3, ctype)
    z = jnp.asarray(rng.normal(size=(50, 4)) * 2.0)
    expected = _scipy_log_joint(g, np.asarray(z))
    phi = features.stat_features(_columns(z), ctype, 3)
    np.testing.assert_allclose(lj.quadratic_log_joint(lj.quadratic_form(g))(phi).T, expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(lj.projection_log_joint(g)(_columns(z)).T, expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("d", [1, 2, 3, 7])
@pytest.mark.slow
def test_feature_sums_split_into_weighted_moments(x64, ctype, d):
    """``phi @ resp^T`` gives counts, first and second moments, against brute force."""
    rng = np.random.default_rng(1)
    k = 4
    z = rng.normal(size=(9, d))
    resp = rng.uniform(size=(9, k))
    phi = features.stat_features(_columns(jnp.asarray(z)), ctype, k)
    assert phi.shape[0] == features.n_stat_features(d, ctype, k)
    n, sx, sxx = features.split_sums(jnp.asarray(resp.T @ np.asarray(phi).T), d, ctype, k)
    np.testing.assert_allclose(n, resp.sum(0), rtol=1e-12)
    np.testing.assert_allclose(sx, resp.T @ z, rtol=1e-12)
    outer = np.einsum("rk,ri,rj->kij", resp, z, z)
    expected = {"full": outer, "diag": np.einsum("kii->ki", outer), "spherical": np.einsum("kii->k", outer), "tied": None}
    if expected[ctype] is None:
        assert sxx is None
    else:
        np.testing.assert_allclose(sxx, expected[ctype], rtol=1e-12)


@pytest.mark.parametrize("d", [16, 64])
@pytest.mark.parametrize("var", [1e-1, 1e-3])
@pytest.mark.slow
def test_error_bound_covers_the_measured_float32_error(x64, d, var):
    """The guard's bound is above the quadratic form's actual float32 error, near each component."""
    rng = np.random.default_rng(2)
    k = d // 2  # packed features (and the quadratic form) need D <= 2K
    g64 = _mixture(rng, d, k, "full", var=var)
    z64 = rng.normal(size=(2000, d))
    g32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g64)
    z32 = jnp.asarray(z64, jnp.float32)
    truth = np.asarray(lj.projection_log_joint(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), g32))(_columns(z32.astype(jnp.float64)))).T
    quad = np.asarray(lj.quadratic_log_joint(lj.quadratic_form(g32))(features.stat_features(_columns(z32), "full", k)), np.float64).T
    near = truth > truth.max(axis=1, keepdims=True) - 10.0  # where responsibilities are not negligible
    err = np.abs(quad - truth)[near].max()
    bound = float(lj.error_bound(lj.quadratic_form(g32), jnp.max(jnp.sum(z32**2, -1))))
    assert err <= bound
    assert bound < 100 * err  # and not uselessly loose


def test_quadratic_form_only_where_the_features_are_packed(x64):
    rng = np.random.default_rng(6)
    packed, unpacked = _mixture(rng, 4, 2, "full"), _mixture(rng, 5, 2, "full")  # D <= 2K, D > 2K
    assert lj.has_quadratic_form(packed) and not lj.has_quadratic_form(unpacked)
    assert lj.quadratic_form(packed).coef.shape == (2, features.n_stat_features(4, "full", 2))
    with pytest.raises(ValueError, match="no quadratic form for 'full' covariance with D=5, K=2"):
        lj.quadratic_form(unpacked)


def test_guard_rejects_a_collapsed_component_far_from_the_origin(x64):
    rng = np.random.default_rng(3)
    good = _mixture(rng, 16, 8, "full", dtype=np.float32)
    collapsed = gmm.from_covariances(
        good.logits, good.means.at[0].set(3.0), gmm.covariances(good).at[0].set(1e-6 * jnp.eye(16, dtype=jnp.float32)), "full"
    )
    def ok(g, max_sq_norm):
        return bool(lj.error_bound(lj.quadratic_form(g), max_sq_norm) <= lj.QUAD_FORM_TOL)

    assert ok(good, jnp.float32(30.0))
    assert not ok(collapsed, jnp.float32(30.0))
    # float64 has the precision to spare for the same mixture.
    assert ok(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), collapsed), 30.0)


@pytest.mark.slow
def test_float32_e_step_with_a_collapsed_component_matches_float64(x64):
    """The E-step falls back to the projection form where the quadratic one would lose digits."""
    rng = np.random.default_rng(4)
    d, k = 8, 4
    x = rng.normal(size=(500, d)) * 3.0
    x[:50] = 5.0 + rng.normal(size=(50, d)) * 1e-3  # a tight cluster off the origin
    g = gmm.from_covariances(
        jnp.zeros(k), jnp.asarray(np.concatenate([np.full((1, d), 5.0), rng.normal(size=(k - 1, d))])),
        jnp.asarray(np.concatenate([1e-6 * np.eye(d)[None], np.broadcast_to(9.0 * np.eye(d), (k - 1, d, d))])),
        "full",
    )
    g32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), g)
    x32 = jnp.asarray(x, jnp.float32)
    # The branch e_step takes: the quadratic form's bound fails for this mixture
    # (so the projection form runs) and passes once the collapsed component is widened.
    def quadratic_ok(mix):
        r = jnp.sum(gmm.weights(mix)[:, None] * mix.means, axis=0)
        std = Standardiser(r, jnp.ones(d, jnp.float32))
        _, sq_norm = data_columns(x32, None, std, default_block_size(d, k, "full"))
        return bool(lj.error_bound(lj.quadratic_form(std.gmm_to(mix)), sq_norm) <= lj.QUAD_FORM_TOL)

    assert not quadratic_ok(g32)
    wide = gmm.from_covariances(g32.logits, g32.means, jnp.broadcast_to(9.0 * jnp.eye(d, dtype=jnp.float32), (k, d, d)),
                                "full")
    assert quadratic_ok(wide)
    s32, ll32 = em.e_step(g32, x32)
    s64, ll64 = em.e_step(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), g32), x32.astype(jnp.float64))
    assert abs(float(ll32) - float(ll64)) / len(x) < 1e-3
    np.testing.assert_allclose(s32.n, s64.n, rtol=1e-4, atol=1e-3)


def test_branch_is_all_or_nothing_under_vmap():
    def twice(ops):
        return ops[0] * 2.0

    def thrice(ops):
        return ops[0] * 3.0

    def f(pred, x):
        return lj.branch(pred, twice, thrice, (x,))

    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(jax.vmap(f)(jnp.array([True, True]), x), 2.0 * x)
    np.testing.assert_array_equal(jax.vmap(f)(jnp.array([True, False]), x), 3.0 * x)
    np.testing.assert_array_equal(jax.vmap(f, in_axes=(None, 0))(True, x), 2.0 * x)
    nested = jax.vmap(jax.vmap(f))(jnp.array([[True, True], [True, False]]), jnp.ones((2, 2, 3)))
    np.testing.assert_array_equal(nested, 3.0 * jnp.ones((2, 2, 3)))
    # A jaxpr with one cond, not a select over both branches.
    jaxpr = jax.make_jaxpr(jax.vmap(f))(jnp.array([True, False]), x)
    assert "cond" in str(jaxpr)


@pytest.mark.parametrize("ctype", QUAD_TYPES)
def test_vmapped_e_step_equals_separate_calls(x64, ctype):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(300, 3)))
    gs = [_mixture(rng, 3, 4, ctype) for _ in range(3)]
    batch = jax.tree.map(lambda *a: jnp.stack(a), *gs)
    stats, ll = jax.vmap(lambda g: em.e_step(g, x))(batch)
    for i, g in enumerate(gs):
        s_i, ll_i = em.e_step(g, x)
        np.testing.assert_allclose(ll[i], ll_i, rtol=1e-10)
        np.testing.assert_allclose(stats.sxx[i], s_i.sxx, rtol=1e-10)
