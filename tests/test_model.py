"""Tests of the GRNN: teacher forcing against the one-step path, masking, covariates, sampling."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import gmm, model
from grnn_jax.gmm.calibration import marginal_quantile, marginal_std
from grnn_jax.model.heads import head_bias_from_gmm
from grnn_jax.model.generate import _generate_jit

D, K, H = 2, 3, 5


def _make(cell="lstm", ctype="full", n_layers=1, n_covariates=0, dtype=jnp.float32, b=2, t=4):
    """A small model, data and parameters; the parameter dicts are fresh, so tests may edit them."""
    net, params, x, u = _make_cached(cell, ctype, n_layers, n_covariates, jnp.dtype(dtype), b, t)
    return net, jax.tree_util.tree_map(lambda a: a, params), x, u


@functools.lru_cache(maxsize=None)
def _make_cached(cell, ctype, n_layers, n_covariates, dtype, b, t):
    net = model.GRNN(n_features=D, n_components=K, covariance_type=ctype, cell=cell, hidden_size=H,
                     n_layers=n_layers, n_covariates=n_covariates, dtype=dtype)
    x = jax.random.normal(jax.random.key(1), (b, t, D), dtype)
    u = jax.random.normal(jax.random.key(2), (b, t, n_covariates), dtype) if n_covariates else None
    params = jax.jit(net.init)(jax.random.key(0), x, u)
    # Make the mixture depend strongly on the state (the initial head barely does).
    params["params"]["head"]["out"]["kernel"] = params["params"]["head"]["out"]["kernel"] * 20.0
    return net, params, x, u


def _step_by_step(net, params, x, u=None):
    """Mixtures from feeding x one step at a time through the model's own one-step function."""
    b, t, _ = x.shape
    step = jax.jit(lambda p, c, x_prev, u_t: net.apply(p, c, x_prev, u_t, method=net.step))
    carry = net.apply(params, (b,), method=net.initial_carry)
    x_prev = jnp.zeros((b, D), x.dtype)
    out = []
    for i in range(t):
        carry, g = step(params, carry, x_prev, None if u is None else u[:, i])
        out.append(g)
        x_prev = x[:, i]
    return out


@pytest.mark.parametrize("cell", ["lstm", "gru", "ln_lstm"])
@pytest.mark.parametrize("ctype", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_shapes(cell, ctype, n_layers):
    net = model.GRNN(n_features=D, n_components=K, covariance_type=ctype, cell=cell, hidden_size=H,
                     n_layers=n_layers)
    x = jnp.zeros((2, 4, D))
    params = jax.eval_shape(net.init, jax.random.key(0), x)  # shapes only: nothing compiles
    g = jax.eval_shape(net.apply, params, x)
    chol = {"full": (K, D, D), "diag": (K, D), "spherical": (K,), "tied": (D, D)}[ctype]
    assert g.logits.shape == (2, 4, K) and g.means.shape == (2, 4, K, D)
    assert g.prec_chol.shape == (2, 4) + chol
    assert sorted(params["params"]) == [f"cells_{i}" for i in range(n_layers)] + ["head"]
    carry = jax.eval_shape(lambda: net.apply(params, (3,), method=net.initial_carry))
    carry, g1 = jax.eval_shape(lambda p, c: net.apply(p, c, jnp.zeros((3, D)), method=net.step), params, carry)
    assert g1.means.shape == (3, K, D) and len(carry) == n_layers


@pytest.mark.parametrize("cell,n_layers", [("lstm", 2), ("gru", 1), ("ln_lstm", 2)])
@pytest.mark.slow
def test_teacher_forcing_matches_one_step_path(cell, n_layers):
    net, params, x, _ = _make(cell, "full", n_layers)
    lp = model.step_log_probs(net, params, x)
    expected = jnp.stack([gmm.log_prob(g, x[:, i]) for i, g in enumerate(_step_by_step(net, params, x))], 1)
    np.testing.assert_allclose(lp, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.sequence_log_prob(net, params, x), lp.sum(1), rtol=1e-6)


def test_first_step_is_predicted_from_the_initial_state():
    net, params, x, _ = _make()
    apply = jax.jit(net.apply)
    g1, g2 = apply(params, x), apply(params, x.at[:, 0].add(3.0))
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_array_equal(a[:, 0], b[:, 0])  # x_1 is not seen at step 1
        assert not np.allclose(a[:, 1], b[:, 1])  # ... but is at step 2


def test_padding_changes_neither_loss_nor_gradients():
    net, params, x, _ = _make("lstm", "full", 2, b=2, t=5)
    lengths = jnp.array([2, 5])
    padded = x.at[0, 2:].set(jnp.nan).at[0, 3].set(1e30)

    def loss(p, x, lengths):
        return jnp.sum(model.sequence_log_prob(net, p, x, lengths))

    grad_fn = jax.jit(jax.value_and_grad(loss))
    value, grads = grad_fn(params, padded, lengths)
    assert np.isfinite(value)
    # Each sequence evaluated alone, unpadded, gives the same value and gradients.
    alone = [grad_fn(params, x[i : i + 1, : int(n)], None) for i, n in enumerate(lengths)]
    np.testing.assert_allclose(value, sum(v for v, _ in alone), rtol=1e-5)
    summed = jax.tree_util.tree_map(lambda *g: sum(g), *[g for _, g in alone])
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(summed)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    lp = model.step_log_probs(net, params, padded, lengths)
    assert np.all(np.asarray(lp)[0, 2:] == 0) and np.all(np.asarray(lp)[0, :2] != 0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "ln_lstm"])
@pytest.mark.slow
def test_gradients_finite_at_extreme_inputs(cell):
    net, params, x, _ = _make(cell, "full")
    grad_fn = jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(model.sequence_log_prob(net, p, x))))
    for scale in (1e6, 1e-20):
        value, grads = grad_fn(params, x * scale)
        assert np.isfinite(value), scale
        assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)), scale


def test_covariates_change_the_output_at_their_own_step():
    net, params, x, u = _make(n_covariates=2)
    g1 = net.apply(params, x, u)
    g2 = net.apply(params, x, u.at[:, 2].add(1.0))
    np.testing.assert_array_equal(g1.means[:, :2], g2.means[:, :2])  # the past is untouched
    assert not np.allclose(g1.means[:, 2], g2.means[:, 2])  # u_t conditions step t
    lp = model.step_log_probs(net, params, x, u=u)
    expected = jnp.stack([gmm.log_prob(g, x[:, i]) for i, g in enumerate(_step_by_step(net, params, x, u))], 1)
    np.testing.assert_allclose(lp, expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise():
    net, params, x, _ = _make()
    with pytest.raises(ValueError, match="shape"):
        model.step_log_probs(net, params, x[..., :1])
    with pytest.raises(ValueError, match="n_covariates"):
        model.step_log_probs(net, params, x, u=jnp.zeros((2, 4, 1)))
    with pytest.raises(ValueError, match="lengths"):
        model.step_log_probs(net, params, x, lengths=jnp.array([5, 1]))
    with pytest.raises(ValueError, match=r"non-finite value at index \(1, 2, 0\)"):
        model.step_log_probs(net, params, x.at[1, 2, 0].set(jnp.nan), lengths=jnp.array([4, 3]))
    with pytest.raises(ValueError, match="cell"):
        model.GRNN(n_features=2, n_components=2, cell="rnn").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="covariates"):
        net_u, params_u, x_u, _ = _make(n_covariates=1)
        model.step_log_probs(net_u, params_u, x_u)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(jax.random.key(0), net, params, 3, temperature=0.0)
    with pytest.raises(ValueError, match="prime"):
        model.generate(jax.random.key(0), net, params, 3, prime=jnp.zeros((2, 3)))


def test_generate_shapes_determinism_and_no_recompilation(compilations):
    net, params, x, _ = _make("gru", "diag")
    a = model.generate(jax.random.key(5), net, params, 7, n_samples=3)
    compiled = compilations(_generate_jit)
    b = model.generate(jax.random.key(5), net, params, 7, n_samples=3)
    c = model.generate(jax.random.key(6), net, params, 7, n_samples=3, temperature=0.5)
    assert a.shape == (3, 7, D) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert compiled() == 0  # new key and temperature reuse it


def test_small_temperature_picks_the_heaviest_component():
    means = jnp.array([[-3.0, 0.0], [2.0, 1.0], [0.0, 4.0]])
    target = gmm.from_covariances(jnp.log(jnp.array([0.2, 0.5, 0.3])), means, jnp.ones((K, D)), "diag")
    net, params, _, _ = _make("lstm", "diag")
    params["params"]["head"]["out"]["kernel"] = jnp.zeros_like(params["params"]["head"]["out"]["kernel"])
    params["params"]["head"]["out"]["bias"] = head_bias_from_gmm(target)
    cold = model.generate(jax.random.key(0), net, params, 5, n_samples=200, temperature=1e-6)
    np.testing.assert_allclose(cold, jnp.broadcast_to(means[1], cold.shape), atol=1e-2)
    warm = model.generate(jax.random.key(1), net, params, 5, n_samples=200)
    # At τ = 1 the samples follow the mixture: its mean, and all three modes visited.
    np.testing.assert_allclose(warm.mean((0, 1)), gmm.weights(target) @ means, atol=0.3)
    nearest = jnp.argmin(jnp.sum((warm[..., None, :] - means) ** 2, -1), -1)
    assert set(np.unique(nearest).tolist()) == {0, 1, 2}


@pytest.mark.parametrize("n_covariates", [0, 1])
@pytest.mark.slow
def test_priming_conditions_samples_as_teacher_forcing_does(n_covariates):
    """At τ → 0 a sample is the heaviest mean of the mixture teacher forcing gives for that step."""
    net, params, x, u = _make("lstm", "full", 2, n_covariates=n_covariates, b=1, t=3)
    bias = params["params"]["head"]["out"]["bias"]
    params["params"]["head"]["out"]["bias"] = bias.at[:K].set(jnp.array([0.0, 5.0, 2.0]))
    n_steps = 4
    u_all = None if u is None else jax.random.normal(jax.random.key(9), (3 + n_steps, n_covariates))
    outs = []
    for prime in (x[0], -x[0]):
        y = model.generate(jax.random.key(0), net, params, n_steps, n_samples=2, prime=prime,
                           temperature=1e-10, u=u_all)
        full = jnp.concatenate([prime, y[0]], 0)[None]
        g = net.apply(params, full, None if u_all is None else u_all[None])
        mode = jnp.take_along_axis(g.means, jnp.argmax(g.logits, -1)[..., None, None], axis=-2)[0, :, 0]
        np.testing.assert_allclose(y[0], mode[3:], atol=1e-3)
        np.testing.assert_allclose(y[0], y[1], atol=1e-3)
        outs.append(y[0])
    assert not np.allclose(outs[0], outs[1], atol=1e-2)


@pytest.mark.parametrize("cell, ctype", [("gru", "spherical"), ("lstm", "tied")])
@pytest.mark.slow
def test_forecast(cell, ctype):
    net, params, x, _ = _make(cell, ctype)
    out = model.forecast(jax.random.key(0), net, params, x[0], 5, n_paths=64, quantiles=(0.1, 0.5, 0.9))
    assert out["paths"].shape == (64, 5, D)
    assert out["quantiles"].shape == (3, 5, D) and out["mean"].shape == (5, D)
    q = np.asarray(out["quantiles"])
    assert np.all(q[0] <= q[1]) and np.all(q[1] <= q[2])
    # The first forecast step is a draw from the model's one-step mixture given
    # the prefix: its sample quantiles and mean must match that mixture's exact
    # quantiles (calibration.marginal_quantile) and mean (sum_k w_k mu_k).
    levels = (0.1, 0.5, 0.9)
    big = model.forecast(jax.random.key(1), net, params, x[0], 1, n_paths=4000, quantiles=levels)
    nxt = jax.tree.map(lambda a: a[0, -1], net.apply(params, jnp.concatenate([x[:1], x[:1, -1:]], axis=1)))
    exact_q = np.asarray(marginal_quantile(nxt, jnp.asarray(levels)[:, None]))  # (3, D)
    sd = np.asarray(marginal_std(nxt))
    np.testing.assert_allclose(np.asarray(big["quantiles"])[:, 0], exact_q, atol=0.1 * sd.max())
    exact_mean = np.asarray(gmm.weights(nxt) @ nxt.means)
    np.testing.assert_allclose(np.asarray(big["mean"])[0], exact_mean, atol=4 * sd.max() / np.sqrt(4000))
    with pytest.raises(ValueError, match="quantiles"):
        model.forecast(jax.random.key(0), net, params, x[0], 5, quantiles=(0.5, 1.5))


@pytest.mark.slow
def test_float64(x64):
    net, params, x, _ = _make("ln_lstm", "full", 2, dtype=jnp.float64)
    assert x.dtype == jnp.float64
    lp = model.step_log_probs(net, params, x, lengths=jnp.array([4, 2]))
    assert lp.dtype == jnp.float64
    expected = jnp.stack([gmm.log_prob(g, x[:, i]) for i, g in enumerate(_step_by_step(net, params, x))], 1)
    np.testing.assert_allclose(lp[0], expected[0], rtol=1e-12)
    assert model.generate(jax.random.key(0), net, params, 3, prime=x[0]).dtype == jnp.float64


def test_mask_from_lengths():
    np.testing.assert_array_equal(
        model.mask_from_lengths(jnp.array([0, 2, 3]), 3), [[0, 0, 0], [1, 1, 0], [1, 1, 1]]
    )
