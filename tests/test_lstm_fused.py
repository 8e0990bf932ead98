"""The fused LSTM kernel (grnn_jax.nets.lstm_fused) against the scan LSTM and finite differences.

Off a GPU the kernels run in Pallas's interpreter, which executes the same kernel code
(the same pieces, loads, stores and loop); on an NVIDIA GPU they run compiled by Triton,
whose float32 dots use TF32, hence the looser tolerance there.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from grnn_jax import model
from grnn_jax.nets import lstm_fused
from grnn_jax.nets.lstm_scan import fused_applies, lstm_sequence

ON_GPU = jax.default_backend() == "gpu"
TOL = dict(rtol=2e-2, atol=2e-3) if ON_GPU else dict(rtol=1e-5, atol=1e-5)


def _args(key, t, b, f_in, n, scale=0.3):
    k = jax.random.split(key, 5)
    return (scale * jax.random.normal(k[0], (f_in + n, 4 * n)), 0.1 * jax.random.normal(k[1], (4 * n,)),
            0.5 * jax.random.normal(k[2], (b, n)), 0.5 * jax.random.normal(k[3], (b, n)),
            jax.random.normal(k[4], (t, b, f_in)))


def _loss(impl, hmask=None):
    def f(w, b, c0, h0, xs):
        (c, h), hs = lstm_sequence(w, b, c0, h0, xs, hmask, impl=impl)
        # Weights on every output, so each cotangent path is exercised.
        steps = jnp.arange(1.0, xs.shape[0] + 1)[:, None, None]
        return jnp.sum(jnp.sin(hs) * steps) + jnp.sum(c**2) + jnp.sum(jnp.cos(h))

    return f


@pytest.mark.parametrize("hidden, rows, masked", [(16, 16, False), (48, 20, True), (64, 3, False)])
def test_fused_matches_scan_values_and_gradients(hidden, rows, masked):
    args = _args(jax.random.key(hidden), 6, rows, 3, hidden)
    hmask = None
    if masked:
        hmask = 1.4 * (jax.random.uniform(jax.random.key(9), (rows, hidden)) > 0.3)
    ref = jax.value_and_grad(_loss("scan", hmask), argnums=range(5))(*args)
    got = jax.jit(jax.value_and_grad(_loss("fused", hmask), argnums=range(5)))(*args)
    np.testing.assert_allclose(got[0], ref[0], **TOL)
    for g, r in zip(got[1], ref[1]):
        np.testing.assert_allclose(g, r, **TOL)
    assert lstm_fused.state_piece(hidden) is not None


def test_fused_under_vmap_matches_scan():
    args = _args(jax.random.key(1), 5, 16, 2, 32)
    ws = jnp.stack([args[0], 2 * args[0], -args[0]])
    grad = lambda impl: jax.vmap(jax.grad(lambda w: _loss(impl)(w, *args[1:])))(ws)  # noqa: E731
    np.testing.assert_allclose(grad("fused"), grad("scan"), **TOL)


@pytest.mark.skipif(ON_GPU, reason="float64 runs interpreted only")
def test_fused_gradients_match_finite_differences_and_scan_in_float64(x64):
    args = _args(jax.random.key(2), 4, 2, 2, 16, scale=1.0)
    args = tuple(a.astype(jnp.float64) for a in args)
    check_grads(jax.jit(_loss("fused")), args, order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
    got = jax.grad(_loss("fused"), argnums=range(5))(*args)
    ref = jax.grad(_loss("scan"), argnums=range(5))(*args)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


def test_model_loss_and_gradients_equal_with_either_implementation(monkeypatch):
    net = model.GRNN(n_features=2, n_components=3, covariance_type="full", cell="lstm",
                     hidden_size=32, n_layers=2)
    x = jax.random.normal(jax.random.key(3), (5, 9, 2))
    params = net.init(jax.random.key(4), x)

    def value_and_grad(impl):
        monkeypatch.setenv("GRNN_LSTM_IMPL", impl)
        loss = lambda p: -jnp.mean(model.sequence_log_prob(net, p, x))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)  # a fresh jit: traced under `impl`

    got, ref = value_and_grad("fused"), value_and_grad("scan")
    np.testing.assert_allclose(got[0], ref[0], **TOL)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, **TOL), got[1], ref[1])


def test_auto_takes_the_kernel_only_where_it_applies():
    assert lstm_fused.state_piece(256) == 64 and lstm_fused.state_piece(32) == 32
    assert lstm_fused.state_piece(6) is None and lstm_fused.state_piece(1024) is None
    assert fused_applies(256, jnp.float32) == (ON_GPU and "NVIDIA" in jax.devices()[0].device_kind)
    assert not fused_applies(6, jnp.float32) and not fused_applies(256, jnp.bfloat16)


def test_bad_implementation_and_unsupported_sizes_are_named():
    args = _args(jax.random.key(5), 3, 2, 2, 6)
    with pytest.raises(ValueError, match="LSTM implementation must be one of"):
        lstm_sequence(*args, impl="cudnn")
    with pytest.raises(ValueError, match="hidden 16 to 512 in multiples of 16; got 6"):
        lstm_sequence(*args, impl="fused")
