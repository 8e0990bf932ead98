"""`grnn fit-gmm` on two local processes (jax.distributed on 127.0.0.1, gloo CPU collectives)."""

import json

import jax
import numpy as np
import pytest

from grnn_jax import em, gmm
from grnn_jax.cli import main
from multiproc import assert_unreachable_coordinator_fails_fast, coordinator_flags, free_port, gloo_works, run_processes

pytestmark = pytest.mark.slow

# Each process runs the command twice in one session (one start-up and compilation for both fits):
# argv are the two commands' arguments joined by "--then".
LAUNCH = """import sys
from grnn_jax.cli import main
args, coord = sys.argv[1:-8], sys.argv[-8:]
i = args.index("--then")
sys.exit(main(args[:i] + coord) or main(args[i + 1:] + coord))
"""


def launch(argv, n, timeout=150):
    """Runs ``grnn`` ``argv`` as processes 0..n-1; returns their (rc, stdout, stderr)."""
    port = free_port()
    return run_processes(LAUNCH, [[*argv, *coordinator_flags(port, n, i)] for i in range(n)], timeout)


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(150, 2)), rng.normal(size=(151, 2)) * 0.5 + 4])
    rng.shuffle(x)
    path = tmp_path_factory.mktemp("mh") / "x.npy"
    np.save(path, x)
    return x, path


def test_two_processes_equal_one(npy, tmp_path, capsys):
    x, path = npy
    # 301 rows in chunks of 64; k-means++ on a sample of 120 rows (fewer than N) drawn by the seed.
    seeded = ["fit-gmm", str(path), "-k", "2", "--covariance-type", "diag", "--chunk-size", "64",
              "--init-sample", "120", "--seed", "3", "--max-iter", "6", "--tol", "0", "--json"]
    # The same fit continued from parameters saved beforehand (--init-from), both in one and in two processes.
    start = em.fit_chunked(x, 2, key=jax.random.key(0), covariance_type="diag", chunk_size=64, max_iter=2)
    np.savez(tmp_path / "start.npz", weights=np.asarray(gmm.weights(start.gmm)), means=np.asarray(start.gmm.means),
             precisions_cholesky=np.asarray(start.gmm.prec_chol), covariance_type=np.array("diag"))
    resumed = ["fit-gmm", str(path), "-k", "2", "--chunk-size", "64", "--max-iter", "3", "--tol", "0", "--json",
               "--init-from", str(tmp_path / "start.npz"), "--out", str(tmp_path / "p.npz")]
    runs = launch([*seeded, "--then", *resumed], 2)
    if any(rc for rc, _, _ in runs):
        reason = gloo_works()
        if reason:
            pytest.skip(reason)
    for rc, _, err in runs:
        assert rc == 0, err[-2000:]
    (_, out0, _), (_, out1, _) = runs
    assert out1 == ""  # only process 0 prints (and writes --out)
    r_seeded, r_resumed = (json.loads(line) for line in out0.splitlines())
    assert r_seeded["num_processes"] == 2 and r_seeded["n_samples"] == 301
    # The same seed in one process: the initialisation does not depend on how rows are split.
    one = em.fit_chunked(x, 2, key=jax.random.key(3), covariance_type="diag", chunk_size=64, init_sample=120,
                         tol=0.0, max_iter=6)
    np.testing.assert_allclose(r_seeded["means"], one.gmm.means, rtol=1e-5)
    np.testing.assert_allclose(r_seeded["log_likelihood"], float(em.score(one.gmm, x)), rtol=1e-5)
    with np.load(tmp_path / "p.npz") as saved:
        np.testing.assert_allclose(saved["means"], r_resumed["means"])
    assert main(resumed[:-2]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["num_processes"] == 1 and r_resumed["num_processes"] == 2
    np.testing.assert_allclose(r_resumed["log_likelihood"], single["log_likelihood"], rtol=1e-5)
    np.testing.assert_allclose(r_resumed["means"], single["means"], rtol=1e-5)
    np.testing.assert_allclose(r_resumed["covariances"], single["covariances"], rtol=1e-4)


def test_bad_launches_fail_fast_with_one_line(npy, capsys):
    _, path = npy
    base = ["fit-gmm", str(path), "-k", "2", "--chunk-size", "64"]
    assert_unreachable_coordinator_fails_fast(base, capsys)
    for extra, message in (
        (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
         "--process-id 2 must be in 0..1 for --num-processes 2"),
        (["--coordinator", "127.0.0.1:1", "--num-processes", "2"], "needs all of --coordinator"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    ):
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err


def test_disagreeing_launches_stop_every_process(npy):
    """Process 0 says 2 processes, process 1 says 3: both exit with the same one-line error."""
    _, path = npy
    port = free_port()
    outs = run_processes("import sys; from grnn_jax.cli import main; sys.exit(main())",
                         [["fit-gmm", str(path), "-k", "2", "--chunk-size", "64",
                           *coordinator_flags(port, n, i)] for i, n in ((0, 2), (1, 3))], timeout=120)
    if any(rc != 2 for rc, _, _ in outs):
        reason = gloo_works()
        if reason:
            pytest.skip(reason)
    for rc, out, err in outs:
        assert rc == 2, err[-2000:]
        assert "launched with disagreeing num_processes/process_id (as process i of P: 0 of 2, 1 of 3)" in err
        assert out == ""
