"""EM with rows sharded over 8 fake CPU devices (conftest sets the device count) against one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import em, gmm
from grnn_jax.em.sharded import shard_rows

K = 3


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]])
    # 203 rows: not a multiple of 8, so the last device holds padding of weight 0.
    return centers[rng.integers(0, K, 203)] + rng.normal(size=(203, 2)) + 100.0


def test_rows_are_split_over_eight_devices(x):
    mesh = em.data_mesh()
    xs, ws = shard_rows(x, None, mesh)
    assert len(jax.devices()) == 8 and len(xs.sharding.device_set) == 8
    assert xs.shape == (208, 2) and {s.data.shape for s in xs.addressable_shards} == {(26, 2)}
    assert float(ws.sum()) == 203.0 and np.all(np.asarray(ws[203:]) == 0)


def test_equals_single_device_em_from_the_same_start(x):
    g0 = em.initialize(jnp.asarray(x, jnp.float32), K, key=jax.random.key(1))
    ref = em.fit_from(jnp.asarray(x, jnp.float32), g0, tol=0.0, max_iter=8)
    res = em.fit_sharded(x, K, key=jax.random.key(0), init=g0, tol=0.0, max_iter=8)
    assert int(res.n_iter) == 8
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(res.history, ref.history, rtol=1e-5)
    np.testing.assert_allclose(res.gmm.means, ref.gmm.means, rtol=1e-5)
    np.testing.assert_allclose(gmm.covariances(res.gmm), gmm.covariances(ref.gmm), rtol=1e-3, atol=1e-5)


def test_kmeanspp_over_the_mesh_is_fits_own(x):
    """k-means++ on the rows gathered from all devices: the same start and fit as em.fit."""
    kw = dict(key=jax.random.key(7), covariance_type="diag", tol=0.0, max_iter=6)
    ref = em.fit(x, K, **kw)
    res = em.fit_sharded(x, K, **kw)
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(res.gmm.means, ref.gmm.means, rtol=1e-5)
    with pytest.raises(ValueError, match="axis 'rows' is not an axis of the mesh"):
        em.fit_sharded(x, K, axis="rows", mesh=em.data_mesh(), key=jax.random.key(0))
