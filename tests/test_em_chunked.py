"""Exact EM over chunks (em.fit_chunked) against in-memory EM, and `grnn fit-gmm --chunk-size`."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import em, gmm
from grnn_jax.cli import main
from grnn_jax.em import chunked
from grnn_jax.em.rows import RowSource

K = 3


def blobs(n=437, seed=0, offset=50.0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 5.0]])
    return centers[rng.integers(0, K, n)] + rng.normal(size=(n, 2)) * [1.0, 0.5] + offset


@pytest.fixture(scope="module")
def data():
    return blobs()


class Stream:
    """A re-iterable stream of chunks of uneven sizes (7, 50, 7, 50, ...)."""

    def __init__(self, x):
        self.x = x

    def __iter__(self):
        i, j = 0, 0
        while i < len(self.x):
            n = (7, 50)[j % 2]
            yield self.x[i : i + n]
            i, j = i + n, j + 1


def test_equals_in_memory_em_from_the_same_start(data):
    """Same start, same iterations: the log-likelihood to 1e-5 (relative) and the same parameters."""
    x = data
    g0 = em.initialize(jnp.asarray(x, jnp.float32), K, key=jax.random.key(1))
    ref = em.fit_from(jnp.asarray(x, jnp.float32), g0, tol=0.0, max_iter=8)
    # 437 rows in chunks of 128: the last chunk is padded with 75 weight-0 rows.
    res = em.fit_chunked(x, K, key=jax.random.key(0), init=g0, chunk_size=128, tol=0.0, max_iter=8)
    assert int(res.n_iter) == int(ref.n_iter) == 8
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-5)
    np.testing.assert_allclose(res.history, ref.history, rtol=1e-5)
    np.testing.assert_allclose(res.gmm.means, ref.gmm.means, rtol=1e-5)
    np.testing.assert_allclose(gmm.covariances(res.gmm), gmm.covariances(ref.gmm), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(gmm.weights(res.gmm), gmm.weights(ref.gmm), atol=1e-5)


def test_kmeanspp_on_all_rows_is_fits_own_and_sources_agree(data, tmp_path):
    """With the sample holding every row the initialisation is em.fit's; file, array and stream agree."""
    x = data
    kw = dict(key=jax.random.key(7), tol=1e-4, max_iter=20)
    ref = em.fit(x, K, covariance_type="full", **kw)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    for source in (x, str(tmp_path / "x.npy"), Stream(x)):
        res = em.fit_chunked(source, K, chunk_size=128, **kw)
        np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-5)
        np.testing.assert_allclose(res.gmm.means, ref.gmm.means, rtol=1e-4)


def test_initialisation_sample_does_not_depend_on_the_split(data):
    """The sample is drawn by global row index: two slices' collections add up to the whole one."""
    x = data
    src = RowSource(x)
    std = em.Standardiser(jnp.zeros(2), jnp.ones(2))
    idx = chunked.sample_indices(jax.random.key(3), len(x), 40)
    assert len(set(idx.tolist())) == 40 and idx.max() < len(x)
    sq, xs, ws = chunked.norm_and_sample_pass(src, 128, 128, std, 0, idx)
    parts = [chunked.norm_and_sample_pass(RowSource(x, rows=r), 128, 128, std, 0, idx) for r in ((0, 150), (150, 437))]
    np.testing.assert_array_equal(xs, x[idx])
    np.testing.assert_array_equal(parts[0][1] + parts[1][1], xs)
    np.testing.assert_array_equal(parts[0][2] + parts[1][2], ws)
    assert float(sq) == max(float(p[0]) for p in parts) == pytest.approx(np.max(np.sum(x**2, 1)), rel=1e-6)


def test_weights_act_as_repeated_rows(data):
    # About 200 rows either way: chunks of 128 rows, the shapes the tests above compiled.
    x = data[:200]
    w = np.arange(200) % 3
    g0 = em.initialize(jnp.asarray(x, jnp.float32), K, key=jax.random.key(1))
    res = em.fit_chunked(x, K, key=jax.random.key(0), init=g0, weights=w, chunk_size=128, tol=0.0, max_iter=3)
    ref = em.fit_chunked(np.repeat(x, w, axis=0), K, key=jax.random.key(0), init=g0, chunk_size=128, tol=0.0, max_iter=3)
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-5)


def test_bad_input_gets_one_clear_line(data, tmp_path):
    x = data
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        em.fit_chunked(x, K, key=key, chunk_size=0)
    np.save(tmp_path / "c.npy", x.astype(np.complex64))
    with pytest.raises(ValueError, match="must hold real numbers.*complex64"):
        em.fit_chunked(str(tmp_path / "c.npy"), K, key=key, chunk_size=64)
    np.save(tmp_path / "r3.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"rank 2; got shape \(2, 3, 4\)"):
        em.fit_chunked(str(tmp_path / "r3.npy"), K, key=key, chunk_size=64)
    with pytest.raises(ValueError, match="one-shot iterator"):
        em.fit_chunked(iter([x]), K, key=key, chunk_size=64)
    bad = x.copy()
    bad[300, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite value in row 300"):
        em.fit_chunked(bad, K, key=key, chunk_size=128)
    # A file that grows between passes, and a stream that yields fewer rows the second time.
    path = tmp_path / "x.npy"
    np.save(path, x)
    src = RowSource(str(path))
    with open(path, "ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(ValueError, match="changed size between passes"):
        next(src.chunks(64))

    class Shrinking:
        calls = 0

        def __iter__(self):
            self.calls += 1
            yield x[: 100 if self.calls < 3 else 90]

    with pytest.raises(ValueError, match="yielded 90 rows on this pass but 100 on the first"):
        em.fit_chunked(Shrinking(), K, key=key, chunk_size=64)


def test_cli_chunk_size_reports_the_chunked_fit(data, tmp_path, capsys):
    x = data
    np.save(tmp_path / "x.npy", x)
    argv = ["fit-gmm", str(tmp_path / "x.npy"), "-k", str(K), "--chunk-size", "128", "--seed", "7",
            "--tol", "1e-4", "--max-iter", "20", "--json", "--out", str(tmp_path / "p.npz")]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    res = em.fit_chunked(x, K, key=jax.random.key(7), chunk_size=128, tol=1e-4, max_iter=20)
    assert (r["mode"], r["chunk_size"], r["n_samples"], r["n_iter"]) == ("chunked", 128, len(x), int(res.n_iter))
    np.testing.assert_allclose(r["means"], res.gmm.means, rtol=1e-6)
    np.testing.assert_allclose(r["log_likelihood"], float(em.score(res.gmm, x)), rtol=1e-5)
    with np.load(tmp_path / "p.npz") as saved:
        np.testing.assert_allclose(saved["means"], r["means"])
    for extra, message in ((["--chunk-size", "0"], "--chunk-size must be >= 1"),
                           (["--online"], "--online needs --batch-size"),
                           (["--chunk-size", "8", "--n-init", "2"], "--n-init applies to in-memory fits")):
        assert main(["fit-gmm", str(tmp_path / "x.npy"), "-k", "2", *extra]) == 2
        assert message in capsys.readouterr().err
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    assert main(["fit-gmm", str(tmp_path / "x.csv"), "-k", "2", "--chunk-size", "8"]) == 2
    assert "read an .npy file" in capsys.readouterr().err


@pytest.mark.slow
def test_float64_under_x64(x64):
    """Under x64 the chunks are float64 and the sums agree with in-memory EM to float64 rounding."""
    x = blobs(200, seed=1, offset=1e4)
    g0 = em.initialize(jnp.asarray(x), 2, key=jax.random.key(0), covariance_type="tied")
    ref = em.fit_from(jnp.asarray(x), g0, tol=0.0, max_iter=4)
    res = em.fit_chunked(x, 2, key=jax.random.key(0), init=g0, chunk_size=64, covariance_type="tied",
                         tol=0.0, max_iter=4)
    assert res.gmm.means.dtype == jnp.float64
    np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(res.gmm.means, ref.gmm.means, rtol=1e-12)
