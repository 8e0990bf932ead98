"""The optimiser: SGD with momentum against a hand-written update, AdamW unchanged, settings
checked, and the command line (an SGD population member equals its single run:
``test_population.py``)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grnn_jax import data
from grnn_jax.cli import main
from grnn_jax.train import (
    ModelConfig,
    TrainConfig,
    make_optimizer,
    make_schedule,
    read_run_config,
)

SETTINGS = dict(learning_rate=0.1, num_steps=6, warmup_steps=2, weight_decay=0.05,
                clip_norm=1.0, end_lr_fraction=0.1)


def _run(tx, params, grads):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _grads(n=5, seed=0):
    rng = np.random.default_rng(seed)
    # The second gradient is large: clipping must act on it before it enters the momentum.
    return [{"w": jnp.asarray(rng.normal(size=3) * (10.0 if t == 1 else 0.3), jnp.float32)}
            for t in range(n)]


def test_sgd_momentum_matches_hand_written_update():
    grads = _grads()
    p0 = {"w": jnp.array([1.0, -2.0, 0.5])}
    got = _run(make_optimizer(**SETTINGS, optimizer="sgd", momentum=0.8), p0, grads)
    lr = make_schedule(learning_rate=0.1, num_steps=6, warmup_steps=2, end_lr_fraction=0.1)
    w, m = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for t, g in enumerate(grads):
        g = np.asarray(g["w"], np.float64)
        g = g * min(1.0, 1.0 / np.linalg.norm(g))
        m = 0.8 * m + g
        w = w - float(lr(t)) * (m + 0.05 * w)
    np.testing.assert_allclose(np.asarray(got["w"]), w, rtol=1e-5, atol=1e-6)


def test_sgd_without_momentum_is_optax_sgd_and_adamw_is_unchanged():
    grads, p0 = _grads(seed=1), {"w": jnp.array([0.3, 0.2, -0.1])}
    lr = make_schedule(learning_rate=0.1, num_steps=6, warmup_steps=2, end_lr_fraction=0.1)
    plain = {**SETTINGS, "weight_decay": 0.0}
    want = _run(optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr)), p0, grads)
    got = _run(make_optimizer(**plain, optimizer="sgd", momentum=0.0), p0, grads)
    np.testing.assert_allclose(np.asarray(got["w"]), np.asarray(want["w"]), rtol=1e-6)
    want = _run(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=0.05)),
                p0, grads)
    got = _run(make_optimizer(**SETTINGS), p0, grads)  # the default
    np.testing.assert_array_equal(np.asarray(got["w"]), np.asarray(want["w"]))


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "adam"}, "unknown optimizer 'adam'; known: adamw, sgd"),
    ({"optimizer": "sgd", "momentum": 1.0}, r"momentum must lie in \[0, 1\); got 1.0"),
    ({"momentum": -0.1}, r"momentum must lie in \[0, 1\)"),
    ({"momentum": "0.9"}, r"momentum must lie in \[0, 1\); got '0.9'"),
])
def test_bad_optimizer_settings_are_named(changes, message):
    cfg = TrainConfig(ModelConfig(n_features=2, n_components=2, hidden_size=4), **changes)
    with pytest.raises(ValueError, match=message):
        cfg.validate()


@pytest.mark.slow
def test_cli_optimizer_flag(tmp_path, capsys):
    tr, _ = data.sample_switching_ar(data.default_switching_ar(2), seed=0, n_sequences=10,
                                     length=7)
    np.savez(tmp_path / "d.npz", x=tr.x, lengths=tr.lengths)
    wd = tmp_path / "run"
    rc = main(["train", "--data", str(tmp_path / "d.npz"), "--workdir", str(wd), "--steps", "4",
               "--hidden", "4", "--optimizer", "sgd", "--set", "momentum=0.5", "--quiet",
               "--json"])
    assert rc == 0
    cfg = read_run_config(wd)["train_config"]
    assert (cfg["optimizer"], cfg["momentum"]) == ("sgd", 0.5)
    rc = main(["train", "--data", str(tmp_path / "d.npz"), "--workdir", str(tmp_path / "bad"),
               "--steps", "4", "--optimizer", "sgd", "--set", "momentum=1.5", "--quiet"])
    assert rc != 0
    assert "momentum must lie in [0, 1); got 1.5" in capsys.readouterr().err
