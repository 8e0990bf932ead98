"""Every command on the data types users' files hold: float16, float32, float64 and integers.

A float32 ``x`` once ended every ``grnn train`` run with a JSON error after compiling (a NumPy
float32 in a metrics record). Each command here reads a file of the given dtype, and every JSON
it writes or prints must parse to plain numbers.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from grnn_jax.cli import main
from grnn_jax.data import default_switching_ar, sample_switching_ar

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(ROOT / "experiments" / "configs" / "test.py")
DTYPES = ["float16", "float32", "float64", "int32"]
TINY = ["--config", TEST_CONFIG, "--set", "num_steps=2", "--set", "batch_size=4",
        "--val-fraction", "0.25", "--quiet"]


def _as(dtype: str, x: np.ndarray) -> np.ndarray:
    # Integer data as users have it: counts or readings in fixed units (here hundredths).
    return np.round(x * 100).astype(dtype) if dtype.startswith("int") else x.astype(dtype)


def _grnn(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _all_json_parses(workdir: Path) -> None:
    for path in workdir.rglob("*.json*"):
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for line in filter(str.strip, lines):
            json.loads(line)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dtypes")
    seqs, _ = sample_switching_ar(default_switching_ar(2), seed=0, n_sequences=8, length=10)
    out = {}
    for dtype in DTYPES:
        x = _as(dtype, np.asarray(seqs.x))
        np.savez(tmp / f"{dtype}.npz", x=x, lengths=seqs.lengths)
        np.save(tmp / f"{dtype}.npy", x.reshape(-1, x.shape[-1]))
        out[dtype] = tmp
    return tmp


@pytest.mark.parametrize("dtype", DTYPES)
def test_train_evaluate_sample_regimes_on_each_dtype(files, tmp_path, capsys, dtype):
    data, wd = files / f"{dtype}.npz", tmp_path / "run"
    report = json.loads(_grnn(capsys, "train", "--data", data, "--workdir", wd, "--head", "em",
                              *TINY, "--json"))
    assert np.isfinite(report["best_val_nll"])
    _all_json_parses(wd)
    ev = json.loads(_grnn(capsys, "evaluate", "--workdir", wd, "--data", data, "--json"))
    assert np.isfinite(ev["nll_per_step"])
    _grnn(capsys, "sample", "--workdir", wd, "--num", 8, "--steps", 5, "--prime", data,
          "--out", tmp_path / "s.npz")
    assert np.isfinite(np.load(tmp_path / "s.npz")["x"]).all()
    _grnn(capsys, "regimes", "--workdir", wd, "--data", data, "--out", tmp_path / "r.npz")
    r = np.load(tmp_path / "r.npz")
    np.testing.assert_allclose(r["filtering"].sum(-1)[r["lengths"] > 0][:, 0], 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sweep_and_fit_gmm_on_each_dtype(files, tmp_path, capsys, dtype):
    out = _grnn(capsys, "sweep", "--data", files / f"{dtype}.npz", "--workdir", tmp_path / "sw",
                "--grid", "n_components=1,2", "--population", "1", "--set", "hidden_size=4",
                "--set", "num_steps=2", "--set", "eval_every=1", "--set", "batch_size=4",
                "--val-fraction", "0.25", "--quiet", "--json")
    assert len(json.loads(out)["rows"]) == 2
    _all_json_parses(tmp_path / "sw")
    rep = json.loads(_grnn(capsys, "fit-gmm", files / f"{dtype}.npy", "--components", 2,
                           "--seed", 0, "--json"))
    assert np.isfinite(rep["log_likelihood_per_row"] if "log_likelihood_per_row" in rep
                       else rep["bic"])
