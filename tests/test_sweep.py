"""``grnn sweep``: grid parsing and its errors (one vocabulary of keys, the dotted form an alias),
one row per member, the best member per point, resuming without redoing finished points,
refusing another sweep's directory, the warning when points were still improving at their last
step, and the plot's integer K axis."""

import csv
import json

import numpy as np
import pytest

from grnn_jax import data
from grnn_jax.cli import main
from grnn_jax.train.convergence import still_improving, sweep_warning
from grnn_jax.train.populations.sweep_grid import parse_grid, sweep_figure

pytestmark = pytest.mark.slow


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
    assert parse_grid(["cell=lstm,gru", "learning_rate=1e-3"]) == {
        "cell": ["lstm", "gru"], "learning_rate": [0.001]}


def test_one_vocabulary_with_the_dotted_form_as_an_alias():
    assert parse_grid(["model.hidden_size=8,16", "model.n_components=2"]) \
        == parse_grid(["hidden_size=8,16", "n_components=2"]) \
        == {"hidden_size": [8, 16], "n_components": [2]}
    for bad in ("model.learning_rate=1", "model.n_features=2", "train.seed=1"):
        with pytest.raises(ValueError, match="--grid key"):
            parse_grid([bad])


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
    assert len(rows) == 4 and [r["head"] for r in rows] == ["mdn", "mdn", "em", "em"]
    assert [r["still_improving"] for r in rows] == [r["best_step"] == r["steps"] for r in rows]
    assert json.loads(out)["warning"] == sweep_warning(rows)
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


def _plot_rows(keys=("hidden_size", "n_components"), late=()):
    h_key, k_key = keys
    return [{h_key: h, k_key: k, "point": f"{h},{k}", "member": 0, "learning_rate": 1e-3,
             "best_val_nll": 1.0 / k + h / 100, "best_step": 10 if (h, k) in late else 5,
             "steps": 10, "is_best": True}
            for h in (4, 8) for k in (1, 2, 3, 5)]


def test_plot_and_its_absence(tmp_path, monkeypatch):
    from grnn_jax.train.populations.sweep_grid import plot_sweep

    rows = _plot_rows()
    pytest.importorskip("matplotlib")
    path = plot_sweep(rows, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    assert plot_sweep(rows, tmp_path / "q.png") is None and not (tmp_path / "q.png").exists()


@pytest.mark.parametrize("keys", [("hidden_size", "n_components"),
                                  ("model.hidden_size", "model.n_components")])  # older sweeps
def test_the_k_axis_has_integer_ticks_and_late_points_are_ringed(keys):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig = sweep_figure(_plot_rows(keys, late={(8, 5)}))
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "5"]
    assert ax.get_xlabel() == "n_components (K)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["hidden_size=4", "hidden_size=8", "best at the last step (still improving)"]
    ringed = ax.collections[-1].get_offsets()
    assert np.asarray(ringed).tolist() == [[5.0, 1 / 5 + 8 / 100]]
    plt.close(fig)
    fig = sweep_figure(_plot_rows())
    assert fig.axes[0].get_legend() is not None and len(fig.axes[0].collections) == 0
    plt.close(fig)


def test_warning_words_every_point_or_some():
    rows = _plot_rows()
    assert sweep_warning(rows) is None
    for r in rows:
        r["best_step"] = r["steps"]
    assert sweep_warning(rows).startswith("warning: every point's best validation NLL came at "
                                          "its last step")
    assert "the budget may be too short (raise num_steps)" in sweep_warning(rows)
    rows[0]["best_step"] = 3
    assert sweep_warning(rows).startswith("warning: 7 of 8 points (4,2, 4,3, 4,5, 8,1, 8,2, ...)")
    assert not still_improving(None, 10) and still_improving(10, 10)


def test_a_point_still_improving_is_flagged_and_warned_about(npz, tmp_path, capsys):
    """Deterministic both ways: one point evaluates only at its last step (so its best is
    there); the other has a learning rate too small to change a float32 parameter, so its
    validation NLL never improves on the first evaluation."""
    wd = tmp_path / "sw"
    args = ("sweep", "--data", npz, "--workdir", wd, "--grid", "eval_every=1,2",
            "--grid", "hidden_size=4", "--set", "learning_rate=1e-12", "--set", "num_steps=2",
            "--set", "head=mdn", "--set", "n_components=1", "--set", "batch_size=4",
            "--val-fraction", "0.25")
    code, out, err = _grnn(capsys, *args)
    assert code == 0, err
    assert "eval_every=2,hidden_size=4: best validation NLL" in out and "[still improving]" in out
    last = out.splitlines()[-1]
    assert last == sweep_warning([
        {"point": "eval_every=1,hidden_size=4", "is_best": True, "best_step": 1, "steps": 2},
        {"point": "eval_every=2,hidden_size=4", "is_best": True, "best_step": 2, "steps": 2}])
    assert last.startswith("warning: 1 of 2 points (eval_every=2,hidden_size=4) had their best")
    saved = [json.loads(ln) for ln in (wd / "results.jsonl").read_text().splitlines()]
    assert [(r["eval_every"], r["hidden_size"], r["best_step"], r["still_improving"])
            for r in saved] == [(1, 4, 1, False), (2, 4, 2, True)]
    # A sweep that stored its grid with dotted keys (before one vocabulary) resumes as it is.
    record = json.loads((wd / "sweep.json").read_text())
    record["grid"] = {"eval_every": [1, 2], "model.hidden_size": [4]}
    (wd / "sweep.json").write_text(json.dumps(record))
    code, out, err = _grnn(capsys, *args, "--json")
    assert code == 0, err
    assert [r["seconds"] for r in json.loads(out)["rows"]] == [0.0, 0.0]
    assert json.loads(out)["warning"] == last


def test_experiments_sweep_speaks_the_same_keys(capsys):
    from experiments import sweep

    with pytest.raises(SystemExit):
        sweep.main(["--help"])
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert description.strip().endswith("judged on validation only.")
    assert "--grid hidden_size=8,16,32 --grid n_components=2,3,4" in text
    rows = [{"point": f"n_components={k}", "is_best": True, "best_val_nll": 1.0 / k, "best_step": 9,
             "steps": 9, "member": 0, "seed": 0, "learning_rate": 1e-3} for k in (1, 2)]
    table = sweep.render_table(rows, "geyser")
    assert "| n_components=2 | 0.500 | 9 | 9 |" in table
    assert table.strip().splitlines()[-1] == f"**{sweep_warning(rows)}**"


def test_a_single_runs_warning_reads_its_metrics():
    from grnn_jax.train.convergence import run_warning

    def evals(*pairs):
        return [{"kind": "train", "step": 1, "loss": 3.0}] + [
            {"kind": "eval", "step": s, "val_nll": v} for s, v in pairs]

    assert run_warning(evals((10, 2.0), (20, 1.5))).startswith(
        "warning: the best validation NLL came at the last evaluation (step 20)")
    assert run_warning(evals((10, 1.5), (20, 1.5))) is None  # a tie: the first one is the best
    assert run_warning(evals((10, 1.5), (20, float("nan")))) is None
    assert run_warning(evals()) is None and run_warning([]) is None
