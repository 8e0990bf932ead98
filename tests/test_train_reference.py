"""The training loss and its gradients against a plain reference implementation of the model.

The reference is written out here without any of the model's code paths: an LSTM as a
straightforward ``lax.scan`` (autodiff for its gradients), the head's linear layer and
constraints with the precision Cholesky factor built by scatter, and ``gmm.log_prob``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from grnn_jax import gmm, model
from grnn_jax import train as T
from grnn_jax.data import Batch
from grnn_jax.model.lstm_scan import lstm_sequence

pytestmark = pytest.mark.slow

B, STEPS, D, K, H = 3, 7, 2, 3, 6
MIN_SCALE, MAX_SCALE = 1e-3, 1e3


def _reference_lstm(p, z):
    """(T, B, F) -> (T, B, H): the textbook LSTM, gates i, f, g, o, under a plain scan."""

    def step(carry, x_t):
        c, h = carry
        i, f, g, o = jnp.split(x_t @ p["wi"] + h @ p["wh"] + p["b"], 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    zeros = jnp.zeros(z.shape[1:2] + p["wh"].shape[:1], z.dtype)
    return jax.lax.scan(step, (zeros, zeros), z)[1]


def _reference_loss(params, x, lengths, n_layers):
    p = params["params"]
    mask = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
    x = jnp.where(mask[..., None], x, 0)
    prev = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
    z = jnp.swapaxes(prev, 0, 1)
    for i in range(n_layers):
        z = _reference_lstm(p[f"cells_{i}"], z)
    out = jnp.swapaxes(z, 0, 1) @ p["head"]["out"]["kernel"] + p["head"]["out"]["bias"]
    lead = out.shape[:-1]
    logits = out[..., :K]
    means = out[..., K : K + K * D].reshape(lead + (K, D))
    raw = out[..., K + K * D :].reshape(lead + (K, -1))
    diag = 1.0 / (MIN_SCALE + jax.nn.softplus(raw[..., :D])) + 1.0 / MAX_SCALE
    iu, ju = np.triu_indices(D, k=1)
    prec = jnp.zeros(lead + (K, D, D), out.dtype)
    prec = prec.at[..., np.arange(D), np.arange(D)].set(diag).at[..., iu, ju].set(raw[..., D:])
    lp = gmm.log_prob(gmm.GMM(logits, means, prec, "full"), x)
    return -jnp.sum(jnp.where(mask, lp, 0.0)) / jnp.sum(mask)


@functools.lru_cache(maxsize=None)
def _setup(n_layers, dtype):
    net = model.GRNN(n_features=D, n_components=K, covariance_type="full", cell="lstm",
                     hidden_size=H, n_layers=n_layers, dtype=dtype)
    rng = np.random.default_rng(n_layers)
    x = jnp.asarray(rng.normal(size=(B, STEPS, D)), dtype)
    lengths = jnp.array([STEPS, 4, 1], jnp.int32)
    params = net.init(jax.random.key(0), x)
    # A head that depends strongly on the state (the initial one barely does), and recurrent
    # weights large enough that the state gradients do not vanish within the sequence.
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a * (20.0 if "kernel" in str(path) else 3.0 if "wh" in str(path) else 1.0),
        params,
    )
    batch = Batch(x, lengths)
    fast = jax.jit(jax.value_and_grad(lambda p: T.batch_loss(net, p, batch)[0]))
    ref = jax.jit(jax.value_and_grad(lambda p: _reference_loss(p, x, lengths, n_layers)))
    return net, params, batch, fast, ref


def _assert_close(a, b, rtol, atol):
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(path))


def test_loss_and_gradients_equal_the_reference():
    # Two layers: the first reads the 2-wide observations, the second a hidden state.
    _, params, _, fast, ref = _setup(2, jnp.dtype(jnp.float32))
    (lf, gf), (lr, gr) = fast(params), ref(params)
    np.testing.assert_allclose(float(lf), float(lr), rtol=1e-6)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(gr))
    _assert_close(gf, gr, rtol=1e-4, atol=1e-5 * scale)
    # Not vacuous: every parameter gets a gradient, the recurrent weights included.
    assert all(float(jnp.max(jnp.abs(g))) > 1e-6 * scale for g in jax.tree.leaves(gr))


def test_loss_and_gradients_equal_the_reference_in_float64(x64):
    _, params, _, fast, ref = _setup(2, jnp.dtype(jnp.float64))
    (lf, gf), (lr, gr) = fast(params), ref(params)
    assert lf.dtype == jnp.float64
    np.testing.assert_allclose(float(lf), float(lr), rtol=1e-12)
    _assert_close(gf, gr, rtol=1e-9, atol=1e-12)


def test_train_steps_follow_the_reference_loss_trajectory():
    net, params, batch, _, ref = _setup(2, jnp.dtype(jnp.float32))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    state = T.init_state(net, tx, batch, key=jax.random.key(0), params=params)
    step = T.make_train_step(net, tx)
    p, s = params, tx.init(params)
    for _ in range(4):
        state, metrics = step(state, batch)
        loss, grads = ref(p)
        updates, s = tx.update(grads, s, p)
        p = optax.apply_updates(p, updates)
        np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
    _assert_close(state.params, p, rtol=1e-4, atol=1e-5)


def test_lstm_sequence_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(0)
    f_in, n, b, t = 2, 3, 2, 4
    args = (
        jnp.asarray(rng.normal(size=(f_in + n, 4 * n))),
        jnp.asarray(rng.normal(size=(4 * n,))),
        jnp.asarray(rng.normal(size=(b, n))),
        jnp.asarray(rng.normal(size=(b, n))),
        jnp.asarray(rng.normal(size=(t, b, f_in))),
    )

    def f(*a):
        (c, h), hs = lstm_sequence(*a)
        # Weights on every output, so each cotangent path is exercised.
        return jnp.sum(jnp.sin(c)) + jnp.sum(h**2) + jnp.sum(hs * jnp.arange(1.0, t + 1)[:, None, None])

    check_grads(jax.jit(f), args, order=1, modes=["rev"], atol=1e-7, rtol=1e-7)
