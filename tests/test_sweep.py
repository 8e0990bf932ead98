"""``grnn sweep``: grid parsing and its errors, one row per member, the best member per point,
resuming without redoing finished points, and refusing another sweep's directory."""

import csv
import json

import numpy as np
import pytest

from grnn_jax import data
from grnn_jax.cli import main
from grnn_jax.train.populations.sweep_grid import parse_grid


@pytest.mark.parametrize("items, message", [
    (["hidden=32"], "--grid key 'hidden' is not a setting"),
    (["hidden_size=32,"], "--grid 'hidden_size=32,' has an empty value"),
    (["hidden_size="], "--grid 'hidden_size=' has an empty value"),
    (["hidden_size"], "--grid expects KEY=V1,V2,...; got 'hidden_size'"),
    (["n_components=2", "model.n_components=3"], "--grid key 'model.n_components' is given twice"),
    ([], "--grid is required"),
])
def test_parse_grid_errors(items, message):
    with pytest.raises(ValueError) as err:
        parse_grid(items)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_parse_grid_values():
    assert parse_grid(["model.cell=lstm,gru", "learning_rate=1e-3"]) == {
        "model.cell": ["lstm", "gru"], "learning_rate": [0.001]}


def _grnn(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    seqs, _ = data.sample_switching_ar(data.default_switching_ar(2), seed=0, n_sequences=12,
                                       length=6)
    path = tmp_path_factory.mktemp("sweep") / "x.npz"
    np.savez(path, x=seqs.x, lengths=seqs.lengths)
    return path


# A point with the EM-updated head: its members' EM state is batched like their parameters.
ARGS = ("--grid", "head=mdn,em", "--set", "n_components=2", "--population", "2",
        "--set", "hidden_size=4",
        "--set", "num_steps=3", "--set", "eval_every=1", "--set", "batch_size=4",
        "--val-fraction", "0.25")


def test_sweep_rows_resume_and_other_sweep(npz, tmp_path, capsys):
    wd = tmp_path / "sw"
    code, out, err = _grnn(capsys, "sweep", "--data", npz, "--workdir", wd, *ARGS, "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert len(rows) == 4 and [r["model.head"] for r in rows] == ["mdn", "mdn", "em", "em"]
    with open(wd / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert [json.loads(ln)["member"] for ln in (wd / "results.jsonl").read_text().splitlines()] \
        == [0, 1, 0, 1]
    for point in ("head=mdn", "head=em"):
        members = [r for r in rows if r["point"] == point]
        best = min(members, key=lambda r: r["best_val_nll"])
        assert [r["is_best"] for r in members] == [r is best for r in members]
        # The point's directory holds its best member as a run that grnn evaluate reads.
        code, out, err = _grnn(capsys, "evaluate", "--workdir", wd / "points" / point,
                               "--data", npz, "--json")
        assert code == 0, err
    # The EM-head point's kept member is a run that grnn regimes reads (global components).
    code, _, err = _grnn(capsys, "regimes", "--workdir", wd / "points" / "head=em", "--data", npz,
                         "--out", tmp_path / "r.npz")
    assert code == 0, err
    assert np.load(tmp_path / "r.npz")["filtering"].shape == (12, 6, 2)

    # An interrupted sweep: the second point never finished. Rerunning redoes only it, here
    # with its two members on two host devices, to the same numbers.
    (wd / "points" / "head=em" / "population.json").unlink()
    first = _files(wd / "points" / "head=mdn")
    code, out, err = _grnn(capsys, "sweep", "--data", npz, "--workdir", wd, *ARGS, "--json",
                           "--host-devices", "2")
    assert code == 0, err
    again = json.loads(out)["rows"]
    assert [r["seconds"] == 0 for r in again] == [True, True, False, False]
    assert _files(wd / "points" / "head=mdn") == first
    assert [r["best_val_nll"] for r in again[:2]] == [r["best_val_nll"] for r in rows[:2]]
    np.testing.assert_allclose([r["best_val_nll"] for r in again[2:]],
                               [r["best_val_nll"] for r in rows[2:]], rtol=1e-5)

    # Another sweep's directory: one line, nothing changed.
    before = _files(wd)
    code, out, err = _grnn(capsys, "sweep", "--data", npz, "--workdir", wd, "--grid",
                           "n_components=1,3", "--population", "2", "--val-fraction", "0.25")
    assert code == 2 and out == ""
    assert err.strip().startswith(f"grnn sweep: error: {wd} holds another sweep (it differs in")
    assert len(err.strip().splitlines()) == 1
    assert _files(wd) == before


@pytest.mark.parametrize("args, message", [
    (("--grid", "hidden_size=4", "--population", "0"), "--population must be a positive integer"),
    (("--grid", "widths=4"), "--grid key 'widths' is not a setting"),
    (("--grid", "hidden_size=4,,8"), "--grid 'hidden_size=4,,8' has an empty value"),
    (("--grid", "hidden_size=4", "--population", "2", "--host-devices", "3"),
     "--host-devices 3 must divide --population 2"),
])
def test_sweep_bad_input(npz, tmp_path, capsys, args, message):
    wd = tmp_path / "sw"
    code, out, err = _grnn(capsys, "sweep", "--data", npz, "--workdir", wd, *args)
    assert code == 2 and not wd.exists()
    assert err.strip().startswith(f"grnn sweep: error: {message}")


def test_plot_and_its_absence(tmp_path, monkeypatch):
    from grnn_jax.train.populations.sweep_grid import plot_sweep

    rows = [{"model.hidden_size": h, "model.n_components": k, "point": f"{h},{k}", "member": 0,
             "learning_rate": 1e-3, "best_val_nll": 1.0 / k + h / 100, "is_best": True}
            for h in (4, 8) for k in (1, 2, 3)]
    pytest.importorskip("matplotlib")
    path = plot_sweep(rows, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    assert plot_sweep(rows, tmp_path / "q.png") is None and not (tmp_path / "q.png").exists()
