"""Stepwise (online) EM: it approaches the batch-EM optimum on stationary data from a known mixture."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import em, gmm
from grnn_jax.cli import main


@pytest.fixture(scope="module")
def stationary():
    """6,000 rows drawn independently from a known 3-component diag mixture (a stationary stream)."""
    truth = gmm.from_covariances(
        jnp.log(jnp.array([0.5, 0.3, 0.2])),
        jnp.array([[0.0, 0.0], [5.0, 5.0], [-4.0, 6.0]]),
        jnp.array([[1.0, 0.5], [0.5, 2.0], [1.0, 1.0]]),
        "diag",
    )
    return np.asarray(gmm.sample(jax.random.key(0), truth, 6000)), truth


@pytest.mark.slow
def test_approaches_the_batch_em_optimum(stationary):
    x, truth = stationary
    batch = em.fit(x, 3, key=jax.random.key(1), covariance_type="diag", tol=1e-6, max_iter=200)
    opt = float(batch.log_likelihood)
    # The data-generating mixture scores within sampling noise of the optimum: the oracle check.
    assert abs(float(em.score(truth, x)) - opt) < 0.01
    gaps = []
    for passes in (1, 3):
        res = em.fit_online(x, 3, key=jax.random.key(1), batch_size=500, passes=passes, covariance_type="diag")
        gaps.append(opt - float(em.score(res.gmm, x)))
        assert int(res.n_steps) == 12 * passes and res.history.shape == (passes,)
    assert gaps[0] >= -1e-6 and gaps[1] >= -1e-6  # nothing beats the optimum
    # Measured: 5e-4 nats after one pass, 5e-5 after three.
    assert gaps[0] < 5e-3 and gaps[1] < 1e-3 and gaps[1] < gaps[0]
    np.testing.assert_allclose(np.sort(res.gmm.means[:, 0]), [-4.0, 0.0, 5.0], atol=0.1)


def test_a_stream_and_the_cli(stationary, tmp_path, capsys):
    """An iterable is read in its own order; the command runs the same fit on the file."""
    x, _ = stationary
    perm = np.random.default_rng(0).permutation(len(x))
    xs = x[perm]

    class Stream:
        def __iter__(self):
            for i in range(0, len(xs), 700):
                yield xs[i : i + 700]

    res = em.fit_online(Stream(), 3, key=jax.random.key(2), batch_size=500, passes=2, covariance_type="diag")
    assert int(res.n_steps) == 24 and 0 < float(res.step_size) < 1
    np.testing.assert_allclose(np.sort(res.gmm.means[:, 0]), [-4.0, 0.0, 5.0], atol=0.15)
    np.save(tmp_path / "x.npy", x)
    argv = ["fit-gmm", str(tmp_path / "x.npy"), "-k", "3", "--covariance-type", "diag", "--online",
            "--batch-size", "500", "--passes", "2", "--seed", "4", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    ref = em.fit_online(str(tmp_path / "x.npy"), 3, key=jax.random.key(4), batch_size=500, passes=2,
                        covariance_type="diag")
    assert (r["mode"], r["n_steps"], r["passes"]) == ("online", 24, 2)
    np.testing.assert_allclose(r["means"], ref.gmm.means, rtol=1e-6)


def test_bad_input(stationary):
    x, _ = stationary
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"step_exponent must lie in \(0.5, 1\] \(stepwise EM\); got 0.5"):
        em.fit_online(x, 3, key=key, batch_size=100, step_exponent=0.5)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        em.fit_online(x, 3, key=key, batch_size=0)
    with pytest.raises(ValueError, match="one-shot iterator"):
        em.fit_online((c for c in [x]), 3, key=key, batch_size=100)
