"""The default mixture head chosen from the training data: ``data.linear_predictability``
against processes whose one-step gain has a closed form, and ``default_config``'s rule."""

import numpy as np
import pytest
from scipy.linalg import solve_discrete_lyapunov

from grnn_jax.data import Sequences, linear_predictability
from grnn_jax.train import default_config
from grnn_jax.train.config import EM_HEAD_MAX_PREDICTABILITY
from grnn_jax.train.resolve import resolve_train_config


def _var1(a, cov, *, n_sequences, length, seed):
    """A stationary Gaussian VAR(1) ``x_t = A x_{t-1} + e_t`` and its exact one-step gain
    ``0.5 * (log det Sigma_x - log det cov)``, Sigma_x the stationary covariance."""
    a, cov = np.atleast_2d(a), np.atleast_2d(cov)
    d = a.shape[0]
    stat = solve_discrete_lyapunov(a, cov)
    rng = np.random.default_rng(seed)
    x = np.empty((n_sequences, length, d))
    x[:, 0] = rng.multivariate_normal(np.zeros(d), stat, size=n_sequences)
    noise = rng.multivariate_normal(np.zeros(d), cov, size=(n_sequences, length))
    for t in range(1, length):
        x[:, t] = x[:, t - 1] @ a.T + noise[:, t]
    gain = 0.5 * (np.linalg.slogdet(stat)[1] - np.linalg.slogdet(cov)[1])
    return x, gain


@pytest.mark.parametrize("phi", [0.3, -0.6, 0.9])
def test_ar1_gain_is_minus_half_log_one_minus_phi_squared(phi):
    x, gain = _var1([[phi]], [[0.5]], n_sequences=100, length=200, seed=0)
    assert gain == pytest.approx(-0.5 * np.log(1 - phi**2))
    # 19,900 pairs: the estimate's standard deviation is about 0.01 nats here.
    assert linear_predictability(Sequences(3.0 * x + 7.0)) == pytest.approx(gain, abs=0.03)


def test_var1_gain_with_correlated_features():
    a = np.array([[0.5, 0.3], [-0.2, 0.4]])
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    x, gain = _var1(a, cov, n_sequences=100, length=200, seed=1)
    assert linear_predictability(Sequences(x)) == pytest.approx(gain, abs=0.03)


def test_independent_steps_score_zero_at_any_size():
    # Without the D**2 / (2 n) correction the mean would be 25 / 600 ≈ 0.042 nats.
    rng = np.random.default_rng(2)
    vals = [linear_predictability(Sequences(rng.normal(size=(3, 101, 5)))) for _ in range(40)]
    assert abs(np.mean(vals)) < 0.01


def test_padding_constant_features_and_units_are_ignored():
    x, _ = _var1([[0.7]], [[1.0]], n_sequences=30, length=40, seed=3)
    lengths = np.random.default_rng(4).integers(2, 41, size=30)
    padded = x.copy()
    for s, n in enumerate(lengths):
        padded[s, n:] = np.nan
    ref = linear_predictability(Sequences(x.copy(), lengths=lengths))
    assert np.isfinite(ref)
    assert linear_predictability(Sequences(padded, lengths=lengths)) == pytest.approx(ref)
    with_const = np.concatenate([padded * 1e3 - 5.0, np.full_like(padded, 2.0)], axis=-1)
    assert linear_predictability(Sequences(with_const, lengths=lengths)) == pytest.approx(ref, abs=1e-9)


def test_too_few_pairs_is_nan():
    assert np.isnan(linear_predictability(Sequences(np.ones((3, 4, 1)))))  # constant
    one_step = Sequences(np.random.default_rng(0).normal(size=(5, 1, 2)))
    assert np.isnan(linear_predictability(one_step))
    assert np.isnan(linear_predictability(Sequences(np.arange(6.0).reshape(1, 3, 2))))


def test_default_head_follows_predictability_and_an_explicit_head_wins():
    rng = np.random.default_rng(5)
    iid = Sequences(rng.normal(size=(10, 60, 2)))
    ar, _ = _var1([[0.5]], [[1.0]], n_sequences=10, length=60, seed=6)
    ar = Sequences(ar)
    assert linear_predictability(iid) < EM_HEAD_MAX_PREDICTABILITY < linear_predictability(ar)
    assert default_config(iid).model.head == "em"
    assert default_config(ar).model.head == "mdn"
    assert resolve_train_config({}, iid).model.head == "em"
    assert resolve_train_config({"model": {"head": "mdn"}}, iid).model.head == "mdn"
    assert resolve_train_config({"head": "em"}, ar).model.head == "em"


def test_a_given_covariance_type_keeps_the_head_chosen_from_the_data():
    iid = Sequences(np.random.default_rng(7).normal(size=(10, 60, 2)))
    for ctype in ("tied", "diag"):
        assert resolve_train_config({"covariance_type": ctype}, iid).model.head == "em"
    assert resolve_train_config({"model": {"covariance_type": "tied", "head": "mdn"}},
                                iid).model.head == "mdn"
    with pytest.raises(ValueError, match="unknown covariance_type 'bogus'"):
        resolve_train_config({"covariance_type": "bogus", "head": "em"}, iid)
