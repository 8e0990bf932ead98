"""A user's own CSV, from the file to a trained and evaluated model: ``grnn train / evaluate /
regimes --data f.csv`` with the table flags, ``grnn fit-gmm --columns``, and
:func:`grnn_jax.data.tables.read_csv_sequences` against sequences built by hand."""

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from grnn_jax.cli import main
from grnn_jax.data import Sequences
from grnn_jax.data.tables import read_csv_rows, read_csv_sequences
from grnn_jax.train import read_run_config, split_validation
from grnn_jax.train.rundir import fingerprint

from dirstate import tree_hash

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(ROOT / "experiments" / "configs" / "test.py")
HEADER = ["seq_id", "t", "a", "b", "site"]


def _grnn(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _walks(ids, lengths, seed):
    """Hand-built sequences: id -> (times, x (T, 2)); the times are irregular, so that they
    sort differently as numbers and as text (2 < 10 < 33, but '10' < '2' < '33')."""
    rng = np.random.default_rng(seed)
    walks = {}
    for sid, n in zip(ids, lengths):
        times = np.cumsum(rng.integers(1, 30, size=n))
        walks[sid] = (times, np.cumsum(rng.normal(size=(n, 2)), axis=0))
    return walks


def _write_csv(path: Path, walks: dict, *, covariate: bool = False, seed: int = 0) -> Path:
    """The user's file: one row per step, rows shuffled, a text column beside the numbers."""
    rows = []
    for sid, (times, x) in walks.items():
        for t, (a, b) in zip(times, x):
            row = [sid, int(t), float(a), float(b), f"station {sid}"]
            rows.append(row + [float(np.sin(t))] if covariate else row)
    random.Random(seed).shuffle(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER + ["c"] if covariate else HEADER)
        w.writerows(rows)
    return path


def _by_hand(walks: dict, ids=None) -> Sequences:
    ids = sorted(walks) if ids is None else ids
    return Sequences.from_list([walks[s][1] for s in ids])


TABLE = ("--sequence-column", "seq_id", "--time-column", "t")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained by ``grnn train --data f.csv`` (2 steps of the tiny config)."""
    tmp = tmp_path_factory.mktemp("csv")
    train_walks = _walks(["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"],
                         [9, 12, 7, 10, 8, 12, 11, 6], seed=0)
    test_walks = _walks(["v1", "v2"], [10, 5], seed=1)
    data = _write_csv(tmp / "mine.csv", train_walks)
    test = _write_csv(tmp / "held_out.csv", test_walks, seed=1)
    wd = tmp / "run"
    code = main(["train", "--data", str(data), *TABLE, "--config", TEST_CONFIG,
                 "--workdir", str(wd), "--val-fraction", "0.25", "--json"])
    assert code == 0
    return {"tmp": tmp, "data": data, "test": test, "workdir": wd, "train_walks": train_walks,
            "test_walks": test_walks}


def test_read_csv_sequences_equals_sequences_built_by_hand(run):
    seqs, info = read_csv_sequences(run["data"], sequence_column="seq_id", time_column="t")
    ref = _by_hand(run["train_walks"])
    np.testing.assert_array_equal(seqs.lengths, ref.lengths)
    np.testing.assert_array_equal(seqs.x[seqs.mask], ref.x[ref.mask])  # exact: repr round trip
    assert seqs.x.shape == ref.x.shape and seqs.u is None
    assert info.columns == ("a", "b") and info.sequence_ids == tuple(sorted(run["train_walks"]))
    assert dict(info.left_out) == {"seq_id": "sequence column", "t": "time column",
                                   "site": "not numeric"}
    assert info.n_rows == int(ref.lengths.sum()) and info.identifier_like == ()
    # --columns picks and orders the features.
    swapped, info = read_csv_sequences(run["data"], sequence_column="seq_id", time_column="t",
                                       columns=["b", "a"])
    np.testing.assert_array_equal(swapped.x, seqs.x[..., ::-1])
    assert info.left_out["site"] == "not chosen"


def test_one_sequence_and_file_order(tmp_path):
    walks = _walks(["p", "q"], [4, 3], seed=2)
    f = _write_csv(tmp_path / "two.csv", walks, seed=3)
    with open(f) as fh:
        rows = list(csv.DictReader(fh))
    # Without --sequence-column the whole table is one sequence, sorted by t when given...
    seqs, info = read_csv_sequences(f, time_column="t")
    order = sorted(range(len(rows)), key=lambda i: int(rows[i]["t"]))
    want = np.array([[float(rows[i]["a"]), float(rows[i]["b"])] for i in order])
    assert seqs.x.shape == (1, 7, 2) and info.sequence_ids == ()
    np.testing.assert_array_equal(seqs.x[0], want)
    # ...and in the file's order when not.
    seqs, _ = read_csv_sequences(f, sequence_column="seq_id", columns=["a"])
    for s, sid in enumerate(("p", "q")):
        file_order = [float(r["a"]) for r in rows if r["seq_id"] == sid]
        np.testing.assert_array_equal(seqs.x[s, : seqs.lengths[s], 0], file_order)
    # Numbers as ids sort as numbers; ISO dates as times sort as text.
    (tmp_path / "n.csv").write_text("id,day,v\n10,2024-01-02,1\n9,2024-01-01,2\n10,2023-12-31,3\n")
    seqs, info = read_csv_sequences(tmp_path / "n.csv", sequence_column="id", time_column="day")
    assert info.sequence_ids == ("9", "10") and seqs.x[..., 0].tolist() == [[2.0, 0.0], [3.0, 1.0]]


def test_train_and_evaluate_on_csv_files(run, capsys):
    saved = read_run_config(run["workdir"])
    # The model was trained on exactly the hand-built sequences' training split.
    train_part, _ = split_validation(_by_hand(run["train_walks"]), 0.25, seed=0)
    assert saved["train_data_sha256"] == fingerprint(train_part)
    assert saved["n_features"] == 2 and saved["n_train_sequences"] == 6
    # Held-out CSV, and the same sequences as an .npz written by Sequences.save: one NLL.
    held = _by_hand(run["test_walks"])
    npz = run["tmp"] / "held_out.npz"
    held.save(npz)
    code, out, err = _grnn(["evaluate", "--workdir", run["workdir"], "--data", run["test"], *TABLE,
                            "--json"], capsys)
    assert code == 0, err
    from_csv = json.loads(out)
    code, out, err = _grnn(["evaluate", "--workdir", run["workdir"], "--data", npz, "--json"], capsys)
    assert code == 0, err
    from_npz = json.loads(out)
    assert from_csv["n_steps"] == 15 and from_csv["n_sequences"] == 2
    np.testing.assert_allclose(from_csv["nll_per_step"], from_npz["nll_per_step"], rtol=1e-6)
    assert from_csv["data_columns"]["columns"] == ["a", "b"] and from_npz["data_columns"] is None
    # People are told which column became what.
    code, out, _ = _grnn(["evaluate", "--workdir", run["workdir"], "--data", run["test"], *TABLE],
                         capsys)
    assert code == 0
    assert "features a, b; sequences by seq_id; sorted by t" in out and "site (not numeric)" in out


def test_fit_gmm_columns_equal_the_npy_of_those_columns(run, capsys):
    with open(run["data"]) as fh:
        rows = list(csv.DictReader(fh))
    x = np.array([[float(r["a"]), float(r["b"])] for r in rows])
    np.save(run["tmp"] / "ab.npy", x)
    args = ["--components", 2, "--covariance-type", "diag"]
    code, out, err = _grnn(["fit-gmm", run["data"], "--columns", "a,b", *args, "--json"], capsys)
    assert code == 0 and err == "", err
    csv_fit = json.loads(out)
    code, out, _ = _grnn(["fit-gmm", run["tmp"] / "ab.npy", *args, "--json"], capsys)
    npy_fit = json.loads(out)
    assert csv_fit["columns"] == ["a", "b"] and npy_fit["columns"] is None
    assert csv_fit["left_out"] == {"seq_id": "not chosen", "t": "not chosen", "site": "not chosen"}
    for key in ("means", "covariances", "weights", "log_likelihood"):
        np.testing.assert_allclose(csv_fit[key], npy_fit[key], rtol=1e-6)
    # No --columns: every numeric column, the clock-like 't' included, and the output says so
    # (a table of the same shape, so that the fit reuses the compiled program).
    with open(run["tmp"] / "ta.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["seq_id", "t", "a", "site"])
        w.writerows([r["seq_id"], r["t"], r["a"], r["site"]] for r in rows)
    code, out, err = _grnn(["fit-gmm", run["tmp"] / "ta.csv", *args], capsys)
    assert code == 0
    assert "columns t, a; left out: seq_id (not numeric), site (not numeric)" in out
    assert "warning" in err and "'t'" in err and "--columns" in err
    x, info = read_csv_rows(run["tmp"] / "ta.csv")
    assert info.columns == ("t", "a") and info.identifier_like == ("t",) and x.shape == (len(rows), 2)


def _bad_files(tmp: Path) -> dict:
    def write(name, text):
        (tmp / name).write_text(text)
        return tmp / name

    good = "seq_id,t,a,b,site\nu1,1,0.5,1.0,x\nu1,2,0.7,1.1,x\nu2,1,0.1,0.2,y\n"
    return {
        "unknown column": (write("ok.csv", good), ["--columns", "a,zz"], "has no column 'zz'"),
        "non-numeric feature": (tmp / "ok.csv", ["--columns", "a,site"],
                                "column 'site' is not numeric: line 2 holds 'x'"),
        "missing sequence column": (tmp / "ok.csv", ["--sequence-column", "run"],
                                    "has no column 'run'; its columns are seq_id, t, a, b, site"),
        "empty file": (write("empty.csv", ""), [], "holds no rows"),
        "header only": (write("header.csv", "seq_id,t,a,b\n"), [], "holds a header row but no data"),
        "duplicate time": (write("dup.csv", good + "u1,2,0.9,1.3,x\n"), [],
                           "sequence 'u1' has two rows at column 't' = '2' (lines 3 and 5)"),
        "missing value": (write("gap.csv", good.replace("0.7,1.1", "0.7,")), [],
                          "column 'b' line 3 has a missing value ('')"),
        "ragged row": (write("ragged.csv", good + "u2,2,0.3\n"), [], "line 5 has 3 fields; expected 5"),
        "two roles": (tmp / "ok.csv", ["--columns", "a,t"], "column 't' is given as the feature and "
                                                            "the time column"),
        "flags on npz": (tmp / "x.npz", [], "read a .csv --data file"),
    }


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_bad_csv_input_exits_2_with_one_line_and_touches_nothing(run, command, capsys):
    wd = run["workdir"]
    tmp = run["tmp"] / f"bad_{command}"
    tmp.mkdir()
    np.savez(tmp / "x.npz", x=np.zeros((2, 3, 2)))
    before = tree_hash(wd)
    for case, (path, flags, message) in _bad_files(tmp).items():
        files = tree_hash(tmp)
        argv = [command, "--data", path, "--workdir", wd, *TABLE, *flags]  # later flags win
        code, out, err = _grnn(argv, capsys)
        assert code == 2, (command, case, out, err)
        assert err.startswith(f"grnn {command}: error:") and err.count("\n") == 1, (case, err)
        assert message in err, (command, case, err)
        assert tree_hash(wd) == before and tree_hash(tmp) == files, (command, case)


def test_evaluate_checks_columns_against_the_model(run, capsys):
    before = tree_hash(run["workdir"])
    code, _, err = _grnn(["evaluate", "--workdir", run["workdir"], "--data", run["test"], *TABLE,
                          "--columns", "a"], capsys)
    assert code == 2 and "has 1 features; the model" in err, err
    # regimes reads the CSV, then refuses a model without an EM head.
    code, _, err = _grnn(["regimes", "--workdir", run["workdir"], "--data", run["test"], *TABLE,
                          "--out", run["tmp"] / "r.npz"], capsys)
    assert code == 2 and "needs one trained with --head em" in err
    assert tree_hash(run["workdir"]) == before and not (run["tmp"] / "r.npz").exists()


@pytest.mark.slow
def test_covariate_columns_train_and_evaluate(run, tmp_path, capsys):
    walks = _walks(["w1", "w2", "w3", "w4"], [8, 6, 7, 5], seed=4)
    data = _write_csv(tmp_path / "cov.csv", walks, covariate=True)
    seqs, info = read_csv_sequences(data, sequence_column="seq_id", time_column="t",
                                    covariate_columns=["c"])
    assert info.columns == ("a", "b") and info.covariate_columns == ("c",)
    for s, sid in enumerate(sorted(walks)):
        times = walks[sid][0]
        np.testing.assert_array_equal(seqs.u[s, : len(times), 0], np.sin(times.astype(float)))
    wd = tmp_path / "run"
    code, out, err = _grnn(["train", "--data", data, *TABLE, "--covariate-columns", "c",
                            "--config", TEST_CONFIG, "--workdir", wd, "--val-fraction", "0.25",
                            "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["config"]["model"]["n_covariates"] == 1
    code, out, err = _grnn(["evaluate", "--workdir", wd, "--data", data, *TABLE,
                            "--covariate-columns", "c", "--json"], capsys)
    assert code == 0 and json.loads(out)["n_steps"] == 26, err
    # Without the covariate column, c is read as a feature: three features, refused; a model
    # trained without covariates refuses them.
    code, _, err = _grnn(["evaluate", "--workdir", wd, "--data", data, *TABLE], capsys)
    assert code == 2 and "has 3 features; the model" in err
    code, _, err = _grnn(["evaluate", "--workdir", run["workdir"], "--data", data, *TABLE,
                          "--covariate-columns", "c"], capsys)
    assert code == 2 and "has 1 covariates; the model" in err and "trained with 0" in err
    # One sequence: its held-out end keeps its covariates.
    code, _, err = _grnn(["train", "--data", data, "--columns", "a,b", "--covariate-columns", "c",
                          "--workdir", tmp_path / "one", "--config", TEST_CONFIG, "--quiet"], capsys)
    assert code == 0, err
