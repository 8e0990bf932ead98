"""Training-time input noise and variational dropout: off in evaluation, drawn from the
step's key in training, masks constant over time (against a step-by-step reference),
and the settings' checks and flags."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import data, gmm, model
from grnn_jax.cli import main
from grnn_jax.model import regularise as R
from grnn_jax.model.cells import LSTMCell, _Cell
from grnn_jax.train import (
    ModelConfig,
    Regulariser,
    TrainConfig,
    init_state,
    make_optimizer,
    make_train_step,
    noise_key,
    resolve_train_config,
)

NET = ModelConfig(n_features=2, n_components=2, hidden_size=5, n_layers=2).build()
REG = Regulariser(input_noise=0.3, input_dropout=0.4, output_dropout=0.5, recurrent_dropout=0.3)


@pytest.fixture(scope="module")
def setup():
    seqs = data.Sequences(np.random.default_rng(0).normal(size=(6, 7, 2)))
    batch = data.batch_at(seqs, 0, batch_size=6, seed=0)
    params = jax.jit(NET.init)(jax.random.key(0), batch.x)
    return params, batch


_log_probs = jax.jit(lambda p, x, noise: model.step_log_probs(NET, p, x, noise=noise))


def test_no_noise_or_zero_rates_give_the_deterministic_model(setup):
    params, batch = setup
    clean = _log_probs(params, batch.x, None)
    off = _log_probs(params, batch.x, R.Noise(jax.random.key(1), Regulariser()))
    np.testing.assert_array_equal(np.asarray(off), np.asarray(clean))
    on = _log_probs(params, batch.x, R.Noise(jax.random.key(1), REG))
    assert not np.allclose(np.asarray(on), np.asarray(clean))


def _reference(module, x, noise):
    """Step by step through the cells' one-step ``recur``: x_{t-1} plus its noise, times the
    input mask; every layer's recurrent matmul reads its state times the recurrent mask and
    its output is multiplied by the output mask, the same masks at every t; the mixture
    scores the clean x_t."""
    b, t, d = x.shape
    x_prev = model.shift_right(x)
    x_noisy, _ = R.noisy_inputs(noise, x_prev, None)
    m_in = R.input_mask(noise, b, d, x.dtype)
    m_out = R.output_masks(noise, module.n_layers, b, module.hidden_size, x.dtype)
    m_rec = R.recurrent_masks(noise, module.n_layers, b, module.hidden_size, x.dtype)
    carry = module.initial_carry((b,))
    out = []
    for s in range(t):
        z = x_noisy[:, s] * m_in
        new = []
        for cell, c, m, hm in zip(module.cells, carry, m_out, m_rec):
            w, cls = cell.weights(), type(cell)
            c, z = cls.recur(w, c, cls.project(w, z), hm)
            z = z * m
            new.append(c)
        carry = tuple(new)
        out.append(gmm.log_prob(module.head(z), x[:, s]))
    return jnp.stack(out, axis=1)


def test_variational_masks_are_constant_over_time_against_a_step_by_step_reference(setup):
    params, batch = setup
    noise = R.Noise(jax.random.key(3), REG)
    ref = jax.jit(lambda p, x: NET.apply(p, x, noise, method=_reference))(params, batch.x)
    got = _log_probs(params, batch.x, noise)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=2e-5, atol=2e-5)
    # the masks are per sequence and unit: dropout rates show in the zero fractions
    m = R.output_masks(noise, 1, 4000, 5, jnp.float32)[0]
    assert abs(float(jnp.mean(m == 0)) - 0.5) < 0.02 and abs(float(m.mean()) - 1) < 0.05


def test_lstm_recurrent_mask_values_and_gradients_match_autodiff_of_the_plain_scan():
    rng = np.random.default_rng(0)
    f_in, n, b, t = 2, 3, 4, 5
    w = {"wi": rng.normal(size=(f_in, 4 * n)), "wh": rng.normal(size=(n, 4 * n)),
         "b": rng.normal(size=(4 * n,))}
    w = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), w)
    carry = tuple(jnp.asarray(rng.normal(size=(b, n)), jnp.float32) for _ in range(2))
    xs = jnp.asarray(rng.normal(size=(t, b, f_in)), jnp.float32)
    hm = R.variational_mask(jax.random.key(0), 0.5, (b, n), jnp.float32)
    plain_scan = _Cell.scan.__func__  # autodiff through LSTMCell.recur, step by step

    def loss(scan):
        def f(w, carry, xs):
            (c, h), hs = scan(LSTMCell, w, carry, xs, hm)
            return jnp.sum(jnp.sin(c)) + jnp.sum(h**2) + jnp.sum(hs * jnp.arange(1.0, t + 1)[:, None, None])
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    (vf, gf), (vr, gr) = loss(LSTMCell.scan.__func__)(w, carry, xs), loss(plain_scan)(w, carry, xs)
    np.testing.assert_allclose(float(vf), float(vr), rtol=1e-5)
    for a, r in zip(jax.tree.leaves(gf), jax.tree.leaves(gr)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-4, atol=1e-5)
    # the mask matters: without it the value differs
    assert float(vf) != pytest.approx(float(loss(lambda c, w, k, x, m: plain_scan(c, w, k, x))(w, carry, xs)[0]))


def test_the_train_step_draws_noise_from_its_key_and_step():
    seqs = data.Sequences(np.random.default_rng(1).normal(size=(4, 6, 2)))
    batch = data.batch_at(seqs, 0, batch_size=4, seed=0)
    net = ModelConfig(n_features=2, n_components=2, hidden_size=4).build()
    tx = make_optimizer(learning_rate=1e-2, num_steps=5, warmup_steps=0, weight_decay=0.0,
                        clip_norm=1.0)
    state = init_state(net, tx, batch, key=jax.random.key(0))
    step = make_train_step(net, tx, regulariser=REG)
    k0, k1 = noise_key(0), noise_key(1)
    loss = lambda s, k: float(step(s, batch, k)[1]["loss"])  # noqa: E731
    assert loss(state, k0) == loss(state, k0)
    assert loss(state, k0) != loss(state, k1)
    # the next global step draws other noise from the same run key
    assert loss(state, k0) != loss(state.replace(step=state.step + 1), k0)
    with pytest.raises(ValueError, match="pass key="):
        step(state, batch)


def test_default_recurrent_dropout_follows_data_size_and_smoothness():
    from grnn_jax.train import default_config

    rng = np.random.default_rng(0)
    for shape, rate in (((100, 60, 2), 0.45), ((1000, 60, 2), 0.3), ((9000, 60, 1), 0.15)):
        noisy = data.Sequences(rng.normal(size=shape).astype(np.float32))
        assert default_config(noisy).recurrent_dropout == rate
        smooth = data.Sequences(np.cumsum(noisy.x, axis=1))
        assert data.step_change_ratio(smooth) < 0.5 <= data.step_change_ratio(noisy)
        assert default_config(smooth).recurrent_dropout == 0.0


def test_config_round_trip_defaults_and_bad_values():
    seqs = data.Sequences(np.zeros((4, 10, 2)))
    c = resolve_train_config({"input_noise": 0.1, "input_dropout": 0.2, "output_dropout": 0.3,
                              "recurrent_dropout": 0.4}, seqs)
    assert c.regulariser == Regulariser(0.1, 0.2, 0.3, 0.4)
    assert TrainConfig.from_dict(c.to_dict()) == c
    # a config saved before these settings existed loads with none
    d = c.to_dict()
    for k in Regulariser._fields:
        d.pop(k)
    assert not TrainConfig.from_dict(d).regulariser.active
    for key, value, message in (("input_dropout", 1.0, "input_dropout must lie in \\[0, 1\\); got 1.0"),
                                ("output_dropout", -0.1, "output_dropout must lie in"),
                                ("input_noise", -1.0, "input_noise must be >= 0; got -1.0"),
                                ("input_noise", float("nan"), "input_noise must be a finite number")):
        with pytest.raises(ValueError, match=message):
            resolve_train_config({key: value}, seqs)


@pytest.mark.parametrize("flag,value,message", [
    ("--input-dropout", "1", "--input-dropout (input_dropout) must lie in [0, 1); got 1.0"),
    ("--output-dropout", "1.5", "--output-dropout (output_dropout) must lie in [0, 1); got 1.5"),
    ("--input-noise", "-0.5", "--input-noise (input_noise) must be >= 0; got -0.5"),
    ("--recurrent-dropout", "-1", "--recurrent-dropout (recurrent_dropout) must lie in [0, 1)"),
])
def test_bad_flags_fail_in_one_line_before_anything_is_written(flag, value, message, tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(6, 5, 2)))
    wd = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "d.npz"), "--workdir", str(wd), flag, value,
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not wd.exists()
