"""``grnn train`` at its edges: Ctrl-C, settings that differ from the run being resumed, 2-D
data, unrelated files in the work dir, values of the wrong type, errors in flag words,
overwriting --out, and too many components."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from grnn_jax.cli import main
from grnn_jax.train import RunCheckpoints

from dirstate import tree_hash

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(ROOT / "experiments" / "configs" / "test.py")


def _grnn(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edges")
    data = tmp / "train.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(8, 10, 2)))
    wd = tmp / "run"
    assert main(["train", "--data", str(data), "--config", TEST_CONFIG, "--workdir", str(wd),
                 "--quiet"]) == 0
    return {"tmp": tmp, "data": data, "workdir": wd}


def test_changed_settings_are_named_in_flag_words(run, capsys):
    before = tree_hash(run["workdir"])
    code, _, err = _grnn(["train", "--data", run["data"], "--config", TEST_CONFIG,
                          "--workdir", run["workdir"], "--steps", 5], capsys)
    assert code == 2
    assert "--steps 2 -> 5" in err and "--restart" in err and "new --workdir" in err
    assert "resume=False" not in err and "config (or None)" not in err
    assert tree_hash(run["workdir"]) == before


def test_values_and_keys_are_reported_as_typed(run, tmp_path, capsys):
    for argv, message in (
        (["--set", "num_steps=abc"], "num_steps must be a positive integer; got 'abc'"),
        (["--set", "learning_rate=fast"], "learning_rate must be a number; got 'fast'"),
        (["--steps", 0], "--steps (num_steps) must be a positive integer; got 0"),
        (["--components", 0], "--components (model.n_components) must be a positive integer"),
        (["--hidden", 0], "--hidden (model.hidden_size) must be a positive integer"),
    ):
        code, _, err = _grnn(["train", "--data", run["data"], "--workdir", tmp_path / "w", *argv],
                             capsys)
        assert code == 2 and message in err, (argv, err)
        assert "invalid literal" not in err
    assert not (tmp_path / "w").exists()


def test_two_dimensional_data_is_refused_with_a_hint(tmp_path, capsys):
    np.savez(tmp_path / "flat.npz", x=np.zeros((64, 50)))
    code, _, err = _grnn(["train", "--data", tmp_path / "flat.npz", "--workdir", tmp_path / "w"],
                         capsys)
    assert code == 2
    assert "x has shape (64, 50)" in err and "x[None]" in err and "x[..., None]" in err
    assert not (tmp_path / "w").exists()


def test_an_unrelated_config_json_is_named(run, tmp_path, capsys):
    (tmp_path / "config.json").write_text("not json")
    for argv in (["train", "--data", run["data"], "--workdir", tmp_path],
                 ["evaluate", "--data", run["data"], "--workdir", tmp_path]):
        code, _, err = _grnn(argv, capsys)
        assert code == 2 and "config.json is not a training run's config" in err, err
    assert (tmp_path / "config.json").read_text() == "not json"
    (tmp_path / "config.json").write_text('{"a": 1}')
    code, _, err = _grnn(["evaluate", "--data", run["data"], "--workdir", tmp_path], capsys)
    assert code == 2 and "lacks train_config" in err


def test_sample_keeps_an_existing_out_without_force(run, tmp_path, capsys):
    out = tmp_path / "s.npz"
    argv = ["sample", "--workdir", run["workdir"], "--num", 1, "--steps", 3, "--out", out]
    code, stdout, _ = _grnn(argv, capsys)
    assert code == 0 and "wrote 1 sequence of 3 steps" in stdout
    first = out.read_bytes()
    code, _, err = _grnn([*argv[:-2], "--seed", 5, "--out", out], capsys)
    assert code == 2 and "--force" in err and out.read_bytes() == first
    code, _, _ = _grnn([*argv[:-2], "--seed", 5, "--out", out, "--force"], capsys)
    assert code == 0 and out.read_bytes() != first


def test_many_components_on_little_data_warn(run, tmp_path, capsys):
    code, _, err = _grnn(["train", "--data", run["data"], "--config", TEST_CONFIG,
                          "--workdir", tmp_path / "w", "--components", 12, "--quiet"], capsys)
    assert code == 0
    assert "warning: 12 components for 70 observed training steps" in err


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_exits_130(run, tmp_path):
    wd = tmp_path / "long"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["train", "--data", str(run["data"]), "--config", TEST_CONFIG, "--set",
            "num_steps=1000000", "--set", "log_every=1", "--workdir", str(wd), "--quiet"]
    # `python -m grnn_jax.cli ARGS` with SIGINT handled as a terminal delivers it, even where
    # this process inherited it ignored (a job a shell started in the background): Python
    # installs its Ctrl-C handler only when SIGINT is not ignored at start.
    child = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             f"sys.argv = ['grnn'] + {args!r}; runpy.run_module('grnn_jax.cli', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    metrics = wd / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.stat().st_size > 0):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted at step" in lines[0], err
    assert "run the same command to resume" in lines[0]
    step = int(lines[0].split("interrupted at step ")[1].split()[0])
    assert step >= 1
    with RunCheckpoints(wd, read_only=True) as ck:
        assert ck.latest_step("last") == step
    assert json.loads((wd / "config.json").read_text())["train_config"]["num_steps"] == 1000000
