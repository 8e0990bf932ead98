"""``grnn fit-gmm`` end to end: files in, JSON/summary and .npz out."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from grnn_jax.cli import main
from grnn_jax.em.estimator import GaussianMixture

K, D = 3, 2


def blobs(n=90, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    return centers[np.arange(n) % K] + rng.normal(size=(n, D))


def mixture_log_lik(x, weights, means, covs):
    """Mean log-density by scipy, the oracle for the command's numbers."""
    comp = [stats.multivariate_normal(m, c).logpdf(x) for m, c in zip(means, covs)]
    return float(np.mean(logsumexp(np.log(weights)[:, None] + np.array(comp), axis=0)))


def run_json(capsys, *argv):
    assert main(["fit-gmm", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def data(tmp_path):
    x = blobs()
    np.save(tmp_path / "x.npy", x)
    return x, tmp_path


def test_json_report_agrees_with_scipy_and_the_estimator(data, capsys):
    x, tmp = data
    r = run_json(capsys, tmp / "x.npy", "--components", K, "--seed", 3)
    assert (r["n_components"], r["n_features"], r["covariance_type"]) == (K, D, "full")
    assert r["converged"] and 1 <= r["n_iter"] <= 100
    w, mu, cov = np.array(r["weights"]), np.array(r["means"]), np.array(r["covariances"])
    ll = mixture_log_lik(x, w, mu, cov)
    np.testing.assert_allclose(r["log_likelihood"], ll, rtol=1e-5)
    p = K * D * (D + 1) // 2 + K * D + K - 1
    np.testing.assert_allclose(r["bic"], -2 * len(x) * ll + p * np.log(len(x)), rtol=1e-5)
    np.testing.assert_allclose(r["aic"], -2 * len(x) * ll + 2 * p, rtol=1e-5)
    est = GaussianMixture(K, random_state=3).fit(x)
    np.testing.assert_allclose(mu, est.means_, rtol=1e-6)
    assert sorted(np.round(mu[:, 0]).tolist()) == [0.0, 1.0, 5.0]
    # The same fit, summarised for people.
    assert main(["fit-gmm", str(tmp / "x.npy"), "--components", str(K), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "3-component full GMM on 90 x 2 data" in out and "converged after" in out
    assert f"BIC {r['bic']:.6g}" in out and out.count("component ") == K + 1


def test_csv_with_and_without_header_equals_npy(data, capsys):
    x, tmp = data
    np.savetxt(tmp / "plain.csv", x, delimiter=",")
    np.savetxt(tmp / "named.csv", x, delimiter=",", header="waiting,duration", comments="")
    args = ("--components", K, "--covariance-type", "diag")
    ref = run_json(capsys, tmp / "x.npy", *args)
    for name, columns in (("plain.csv", ["column 1", "column 2"]),
                          ("named.csv", ["waiting", "duration"])):
        r = run_json(capsys, tmp / name, *args)
        assert r["n_features"] == D and r["covariance_type"] == "diag"
        assert r["columns"] == columns and r["left_out"] == {}  # the output names what was read
        np.testing.assert_allclose(r["means"], ref["means"], rtol=1e-6)
    assert ref["columns"] is None


def test_out_then_init_from_resumes_from_the_saved_fit(data, capsys):
    x, tmp = data
    out = tmp / "params.npz"
    first = run_json(capsys, tmp / "x.npy", "-k", K, "--covariance-type", "diag", "--out", out)
    assert sorted(p.name for p in tmp.iterdir()) == ["params.npz", "x.npy"]  # no temp file left
    with np.load(out) as f:
        assert str(f["covariance_type"]) == "diag"
        assert f["means"].shape == (K, D) and f["precisions_cholesky"].shape == (K, D)
        np.testing.assert_allclose(f["means"], first["means"])
        np.testing.assert_allclose(f["covariances"] * f["precisions_cholesky"] ** 2, 1.0, rtol=1e-5)
    # Started at a converged fit, EM stops within two iterations, nearby and no worse.
    again = run_json(capsys, tmp / "x.npy", "-k", K, "--init-from", out)
    assert again["covariance_type"] == "diag" and again["converged"] and again["n_iter"] <= 2
    np.testing.assert_allclose(again["means"], first["means"], atol=0.02)
    assert again["log_likelihood"] >= first["log_likelihood"] - 1e-6


@pytest.mark.parametrize(
    "argv, match",
    [
        (["-k", "3", "--covariance-type", "full"], "holds a 'diag' mixture but --covariance-type is 'full'"),
        (["-k", "2"], r"means of shape \(3, 2\), but --components 2"),
    ],
)
def test_init_from_mismatch_is_explained(data, capsys, argv, match):
    x, tmp = data
    out = tmp / "p.npz"
    run_json(capsys, tmp / "x.npy", "-k", K, "--covariance-type", "diag", "--out", out)
    assert main(["fit-gmm", str(tmp / "x.npy"), *argv, "--init-from", str(out)]) == 2
    assert re.search(match, capsys.readouterr().err)


def _nan_csv(tmp):
    (tmp / "bad.csv").write_text("a,b\n1,2\n3,nan\n4,5\n")
    return tmp / "bad.csv"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda t: t / "missing.npy", "data file not found"),
        (lambda t: (t / "x.txt").write_text("1 2\n") and t / "x.txt", "unsupported data file extension '.txt'"),
        (_nan_csv, r"column 'b' line 3 has a missing value \('nan'\)"),
        (lambda t: (t / "w.csv").write_text("a,b\n1,2\n3,oops\n") and t / "w.csv",
         r"column 'b' is not numeric: line 3 holds 'oops'"),
        (lambda t: (t / "r.csv").write_text("1,2\n3\n") and t / "r.csv", "line 2 has 1 fields; expected 2"),
        (lambda t: np.save(t / "v.npy", np.ones(5)) or t / "v.npy", r"must have rank 2; got shape \(5,\)"),
        (lambda t: np.save(t / "s.npy", np.ones((2, 2))) or t / "s.npy", "--components 3 is more than the 2 rows"),
        (lambda t: (t / "c.csv").write_text("a,b\n1,2\n3,4\n") and t / "c.csv", "has no column 'z'"),
        (lambda t: np.save(t / "c.npy", np.ones((4, 2))) or t / "c.npy", "--columns reads a .csv file"),
    ],
    ids=["missing", "extension", "nan", "not_numeric", "ragged", "rank", "k_above_n", "unknown_column",
         "columns_on_npy"],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, make, match):
    path = make(tmp_path)
    out = tmp_path / "out.npz"
    columns = ["--columns", "a,z"] if path.stem == "c" else []
    assert main(["fit-gmm", str(path), "--components", "3", "--out", str(out), *columns]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grnn fit-gmm: error:") and re.search(match, err), err
    assert not out.exists()


def test_bad_flags_exit_2(data, capsys):
    _, tmp = data
    for argv, match in ((["-k", "0"], "--components must be >= 1"),
                        (["-k", "2", "--reg-covar", "0"], "--reg-covar must be > 0"),
                        (["-k", "2", "--out", str(tmp / "p.txt")], "must end in .npz"),
                        (["-k", "2", "--out", str(tmp / "no" / "p.npz")], "does not exist")):
        assert main(["fit-gmm", str(tmp / "x.npy"), *argv]) == 2
        assert match in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse rejects an unknown covariance type itself
        main(["fit-gmm", str(tmp / "x.npy"), "-k", "2", "--covariance-type", "banana"])


@pytest.mark.slow
def test_installed_console_script_ends_quietly_on_a_closed_pipe(data):
    """``grnn fit-gmm --json | head -c0`` through the installed entry point: it runs the fit
    and, when it writes, gets SIGPIPE's status without a BrokenPipeError traceback. (What the
    JSON says is checked in-process, test_json_report_agrees_with_scipy_and_the_estimator.)"""
    _, tmp = data
    grnn = Path(sys.executable).with_name("grnn")
    assert grnn.exists(), "install the package: pip install -e . --no-deps"
    proc = subprocess.Popen([str(grnn), "fit-gmm", str(tmp / "x.npy"), "-k", str(K), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
