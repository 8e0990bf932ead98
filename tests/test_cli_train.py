"""The ``grnn train / evaluate / sample`` commands through the real entry point."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import model
from grnn_jax.cli import main
from grnn_jax.data import Sequences, default_switching_ar, sample_switching_ar
from grnn_jax.train import (
    apply_overrides,
    load_config_file,
    load_trained,
    read_metrics,
    read_run_config,
    resolve_train_config,
    split_validation,
)

from dirstate import tree_hash

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(ROOT / "experiments" / "configs" / "test.py")


def _save(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def _grnn(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run on synthetic data, trained through ``grnn train`` (2 steps)."""
    tmp = tmp_path_factory.mktemp("cli")
    seqs, _ = sample_switching_ar(default_switching_ar(2), seed=0, n_sequences=8, length=12)
    lengths = np.array([12, 9, 12, 5, 12, 12, 7, 12])
    x = np.where(np.arange(12)[None, :, None] < lengths[:, None, None], seqs.x, np.nan)
    data = _save(tmp / "train.npz", x=x, lengths=lengths)
    test = _save(tmp / "test.npz", x=seqs.x[:3] * 1.5 + 0.3, lengths=np.array([12, 4, 1]))
    workdir = tmp / "run"
    code = main(["train", "--data", data, "--config", TEST_CONFIG, "--workdir", str(workdir),
                 "--val-fraction", "0.25", "--quiet"])
    assert code == 0
    return {"tmp": tmp, "workdir": workdir, "data": data, "test": test}


def test_train_writes_a_run_with_the_tiny_config(run):
    wd = run["workdir"]
    saved = json.loads((wd / "config.json").read_text())
    cfg = saved["train_config"]
    assert cfg["num_steps"] == 2 and cfg["model"]["hidden_size"] == 4 and cfg["model"]["cell"] == "gru"
    assert saved["n_train_sequences"] == 6  # 2 of 8 held out for validation
    evals = [m for m in read_metrics(wd) if m["kind"] == "eval"]
    assert [m["step"] for m in evals] == [1, 2]
    assert (wd / "checkpoints" / "best").is_dir() and (wd / "checkpoints" / "last").is_dir()


def test_train_on_the_dataset_a_config_names(tmp_path, capsys):
    wd = tmp_path / "geyser"
    code, out, _ = _grnn(["train", "--config", TEST_CONFIG, "--workdir", wd, "--set", "num_steps=1",
                          "--json"], capsys)
    assert code == 0
    rep = json.loads(out)
    # geyser's first 70% (209 steps) cut into the config's 20-step windows
    assert (rep["n_train_sequences"], rep["n_train_steps"], rep["steps"]) == (11, 209, 1)
    assert json.loads((wd / "config.json").read_text())["train_config"]["num_steps"] == 1


def test_evaluate_matches_the_model_log_density(run, capsys):
    code, out, _ = _grnn(["evaluate", "--workdir", run["workdir"], "--data", run["test"], "--json"],
                         capsys)
    assert code == 0
    rep = json.loads(out)
    # Oracle: the per-step log-densities of the standardised data, moved to original units
    # with the log-Jacobian of the standardisation, summed over the 17 observed steps.
    net, params, st, _ = load_trained(run["workdir"])
    seqs = Sequences.load(run["test"])
    z = st.transform(seqs)
    lp = model.step_log_probs(net, params, jnp.asarray(z.x, jnp.float32), jnp.asarray(z.lengths))
    total = float(np.asarray(lp, np.float64).sum()) - 17 * np.sum(np.log(st.scale))
    assert rep["n_steps"] == 17
    np.testing.assert_allclose(rep["log_likelihood"], total, rtol=1e-5)
    np.testing.assert_allclose(rep["nll_per_step"], -total / 17, rtol=1e-5)
    code, out, _ = _grnn(["evaluate", "--workdir", run["workdir"], "--data", run["test"]], capsys)
    assert code == 0 and "nll_per_step" in out and "n_steps 17" in out


def test_best_validation_parameters_are_kept(run, capsys):
    # The best checkpoint scores the validation split exactly as the best evaluation
    # recorded in metrics.jsonl.
    _, val = split_validation(Sequences.load(run["data"]), 0.25, seed=0)
    val_file = _save(run["tmp"] / "val.npz", x=val.x, lengths=val.lengths)
    code, out, _ = _grnn(["evaluate", "--workdir", run["workdir"], "--data", val_file, "--json"],
                         capsys)
    assert code == 0
    evals = [m for m in read_metrics(run["workdir"]) if m["kind"] == "eval"]
    np.testing.assert_allclose(json.loads(out)["nll_per_step"], min(m["val_nll"] for m in evals),
                               rtol=1e-5)


def test_sample_round_trip(run, capsys):
    out_file = run["tmp"] / "samples.npz"
    args = ["sample", "--workdir", run["workdir"], "--num", 3, "--steps", 5, "--seed", 1,
            "--out", out_file]
    code, out, _ = _grnn(args, capsys)
    assert code == 0 and "wrote 3 sequences" in out
    with np.load(out_file) as f:
        x, lengths = f["x"], f["lengths"]
    assert x.shape == (3, 5, 2) and lengths.tolist() == [5, 5, 5] and np.all(np.isfinite(x))
    # Original units: the samples equal the model's standardised samples mapped back.
    net, params, st, _ = load_trained(run["workdir"])
    import jax

    z = model.generate(jax.random.key(1), net, params, 5, n_samples=3)
    np.testing.assert_allclose(x, np.asarray(z) * st.scale + st.center, rtol=1e-5, atol=1e-5)
    prime = _save(run["tmp"] / "prime.npz", x=np.zeros((4, 2)))
    code, _, _ = _grnn(args + ["--prime", prime, "--temperature", 0.5, "--force"], capsys)
    assert code == 0
    primed = Sequences.load(out_file).x
    assert primed.shape == (3, 5, 2)
    # The flags reach the model: the zero history, standardised, fed first, at temperature 0.5.
    z = model.generate(jax.random.key(1), net, params, 5, n_samples=3, prime=st.apply(np.zeros((4, 2))),
                       temperature=0.5)
    np.testing.assert_allclose(primed, np.asarray(z) * st.scale + st.center, rtol=1e-5, atol=1e-5)
    assert not np.allclose(primed, x, atol=1e-3)


def _malformed(tmp: Path) -> dict:
    ok = np.random.default_rng(0).normal(size=(3, 6, 2))
    nan = ok.copy()
    nan[1, 2, 0] = np.nan
    return {
        "missing x": (_save(tmp / "nox.npz", y=ok), "no array named 'x'"),
        "rank 1": (_save(tmp / "rank1.npz", x=np.zeros(6)), "rank 3"),
        "rank 4": (_save(tmp / "rank4.npz", x=np.zeros((2, 3, 6, 2))), "rank 3"),
        "NaN": (_save(tmp / "nan.npz", x=nan), "NaN at sequence 1, step 2"),
        "lengths > T": (_save(tmp / "long.npz", x=ok, lengths=np.array([6, 7, 2])), "lengths"),
        "lengths < 1": (_save(tmp / "zero.npz", x=ok, lengths=np.array([6, 0, 2])), "lengths"),
        "other D": (_save(tmp / "d3.npz", x=np.zeros((3, 6, 3))), "features"),
        "missing file": (str(tmp / "absent.npz"), "not found"),
        "not an npz": (str(_text(tmp / "junk.npz")), "not a readable .npz"),
    }


def _text(path: Path) -> Path:
    path.write_text("not numbers")
    return path


@pytest.mark.parametrize("command", ["train", "evaluate", "sample"])
def test_malformed_input_fails_cleanly_and_changes_nothing(run, command, capsys):
    wd = run["workdir"]
    before = tree_hash(wd)
    for case, (path, message) in _malformed(run["tmp"]).items():
        if command == "train":
            argv = ["train", "--data", path, "--workdir", wd, "--steps", 1]
        elif command == "evaluate":
            argv = ["evaluate", "--workdir", wd, "--data", path]
        else:
            if case == "other D":
                message = "3 features; the model has 2"
            argv = ["sample", "--workdir", wd, "--num", 2, "--steps", 2, "--prime", path,
                    "--out", run["tmp"] / "s.npz"]
        code, out, err = _grnn(argv, capsys)
        assert code == 2, (command, case, out, err)
        assert message in err, (command, case, err)
        assert f"grnn {command}: error:" in err
        assert tree_hash(wd) == before, (command, case)


def test_missing_workdir_and_bad_flags(run, tmp_path, capsys):
    absent = tmp_path / "nowhere"
    for argv in (["evaluate", "--workdir", absent, "--data", run["test"]],
                 ["sample", "--workdir", absent, "--num", 1, "--steps", 1, "--out", tmp_path / "o.npz"]):
        code, _, err = _grnn(argv, capsys)
        assert code == 2 and "holds no training run" in err
    assert not absent.exists()
    wd = run["workdir"]
    before = tree_hash(wd)
    for argv, message in (
        (["sample", "--workdir", wd, "--num", 0, "--steps", 2, "--out", tmp_path / "o.npz"], "--num"),
        (["sample", "--workdir", wd, "--num", 1, "--steps", 2, "--temperature", 0,
          "--out", tmp_path / "o.npz"], "--temperature"),
        (["sample", "--workdir", wd, "--num", 1, "--steps", 2, "--out", tmp_path / "o.txt"], ".npz"),
        (["train", "--data", run["data"], "--workdir", wd, "--set", "nonsense=1"], "unknown config key"),
        (["train", "--data", run["data"], "--workdir", wd, "--lr", -1], "learning_rate"),
        (["train", "--data", run["data"], "--workdir", wd, "--set", "model.covariance_type=bogus"],
         "unknown covariance_type 'bogus' for a mixture head"),
        (["train", "--workdir", wd], "--data"),
    ):
        code, _, err = _grnn(argv, capsys)
        assert code == 2 and message in err, (argv, err)
    assert tree_hash(wd) == before


def test_config_overrides_lay_over_the_defaults():
    seqs = Sequences(np.random.default_rng(0).normal(size=(4, 10, 2)))
    cfg = apply_overrides(load_config_file(TEST_CONFIG),
                          ["hidden_size=7", "model.cell=lstm", "learning_rate=1e-2", "experiment.x=1"])
    c = resolve_train_config(cfg, seqs)
    assert (c.model.hidden_size, c.model.cell, c.learning_rate, c.num_steps) == (7, "lstm", 0.01, 2)
    assert resolve_train_config({}, seqs).model.hidden_size == 32  # default_config's choice
    with pytest.raises(ValueError, match="unknown model settings"):
        resolve_train_config({"model": {"width": 3}}, seqs)


@pytest.mark.slow
def test_train_and_evaluate_a_tied_head(run, tmp_path, capsys):
    wd = tmp_path / "tied"
    code, _, err = _grnn(["train", "--data", run["data"], "--workdir", wd, "--steps", 3,
                          "--hidden", 4, "--covariance-type", "tied", "--quiet"], capsys)
    assert code == 0, err
    assert read_run_config(wd)["train_config"]["model"]["covariance_type"] == "tied"
    code, out, err = _grnn(["evaluate", "--workdir", wd, "--data", run["test"], "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["n_steps"] == 17 and np.isfinite(rep["log_likelihood"])


def test_every_data_flag_points_to_the_format_page():
    """One description of the input files, and every ``--data`` help text points to it."""
    from grnn_jax.cli import build_parser

    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    for name in ("train", "evaluate", "regimes", "fit-gmm"):
        helps = {a.dest: a.help for a in sub.choices[name]._actions}
        assert "docs/guide/data_format.md" in helps["data"], name
    page = (ROOT / "docs" / "guide" / "data_format.md").read_text()
    for flag in ("--sequence-column", "--time-column", "--columns", "--covariate-columns",
                 "lengths", "padding", "Sequences.from_list", ".save("):
        assert flag in page, flag
