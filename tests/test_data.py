"""Tests of grnn_jax.data against numpy/scipy oracles and brute force."""

import numpy as np
import pytest
from scipy import stats

from grnn_jax import data
from grnn_jax.data import Sequences, Standardiser, synthetic


def _ragged(seed=0, s=6, t=7, d=3, garbage=np.nan):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(s, t, d)) * [1.0, 10.0, 0.1][:d] + [0.0, 5.0, -3.0][:d]
    lengths = rng.integers(1, t + 1, size=s)
    lengths[0] = t
    x[np.arange(t)[None, :] >= lengths[:, None]] = garbage
    return Sequences(x, lengths)


# ----------------------------------------------------------------------------- container


def test_sequences_rejects_bad_input_with_a_clear_message():
    with pytest.raises(ValueError, match="rank 3"):
        Sequences(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="empty"):
        Sequences(np.zeros((0, 3, 2)))
    with pytest.raises(ValueError, match=r"\[1, 3\].*sequence 1 has length 0"):
        Sequences(np.zeros((2, 3, 1)), np.array([3, 0]))
    with pytest.raises(ValueError, match="sequence 0 has length 4"):
        Sequences(np.zeros((2, 3, 1)), np.array([4, 1]))
    with pytest.raises(ValueError, match="shape"):
        Sequences(np.zeros((2, 3, 1)), np.array([3]))
    x = np.zeros((3, 4, 2))
    x[1, 2, 1] = np.inf
    with pytest.raises(ValueError, match="inf at sequence 1, step 2, feature 1"):
        Sequences(x)
    with pytest.raises(ValueError, match="u must have shape"):
        Sequences(np.zeros((2, 3, 1)), u=np.zeros((2, 4, 1)))


def test_sequences_ignore_nan_in_padding():
    s = _ragged()
    assert np.isnan(s.x).any()
    assert np.isfinite(s.observed()).all()
    assert s.observed().shape == (s.lengths.sum(), 3)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    s = Sequences(rng.normal(size=(3, 5, 2)), np.array([5, 2, 4]), u=rng.normal(size=(3, 5, 1)))
    s.save(tmp_path / "a.npz")
    r = Sequences.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(r.x, s.x)
    np.testing.assert_array_equal(r.lengths, s.lengths)
    np.testing.assert_array_equal(r.u, s.u)
    np.savez(tmp_path / "b.npz", x=rng.normal(size=(9, 2)))  # one series, no lengths
    r = Sequences.load(tmp_path / "b.npz")
    assert r.x.shape == (1, 9, 2) and r.lengths.tolist() == [9]
    np.savez(tmp_path / "c.npz", y=np.zeros(3))
    with pytest.raises(ValueError, match="no array named 'x'"):
        Sequences.load(tmp_path / "c.npz")


# ----------------------------------------------------------------------------- standardisation


def test_standardiser_fits_observed_steps_only_and_round_trips():
    s = _ragged(garbage=1e9)  # padding that would wreck the statistics if it were counted
    st = Standardiser.fit(s)
    obs = s.observed()
    np.testing.assert_allclose(st.center, obs.mean(0))
    np.testing.assert_allclose(st.scale, obs.std(0))
    z = st.transform(s)
    np.testing.assert_allclose(z.observed().mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.observed().std(0), 1.0)
    assert np.all(z.x[~s.mask] == 0.0)
    np.testing.assert_allclose(st.inverse(z.observed()), obs)
    np.testing.assert_allclose(Standardiser.from_dict(st.to_dict()).scale, st.scale)


def test_log_jacobian_gives_original_units():
    # A standard normal model of the standardised data, moved to original units with the
    # log-Jacobian, must equal scipy's density of the original data under N(mean, diag std^2).
    s = _ragged(seed=3)
    st = Standardiser.fit(s)
    z = st.transform(s).observed()
    nll_std = -stats.norm.logpdf(z).sum(axis=1)
    nll_orig = nll_std + st.log_det
    oracle = -stats.multivariate_normal(st.center, np.diag(st.scale**2)).logpdf(s.observed())
    np.testing.assert_allclose(nll_orig, oracle, rtol=1e-10)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical", "tied"])
def test_mixture_mapped_to_original_units_is_the_change_of_variables(ctype):
    # log p_x(x) = log p_z(st.apply(x)) - log_det, for a mixture of every covariance type
    # moved with as_full + gmm_from (the path plots and `grnn regimes` take).
    import jax.numpy as jnp
    from grnn_jax import gmm

    rng = np.random.default_rng(4)
    d, k = 3, 2
    cov = {"full": np.stack([np.eye(d) + 0.3, 2 * np.eye(d)]), "diag": rng.uniform(0.5, 2, (k, d)),
           "spherical": np.array([0.5, 2.0]), "tied": np.eye(d) + 0.2}[ctype]
    g = gmm.from_covariances(jnp.array([0.2, -0.1]), jnp.asarray(rng.normal(size=(k, d))),
                             jnp.asarray(cov, jnp.float32), ctype)
    st = Standardiser(np.array([1.0, -2.0, 30.0]), np.array([0.5, 2.0, 10.0]))
    x = st.inverse(rng.normal(size=(7, d)))
    want = np.asarray(gmm.log_prob(g, jnp.asarray(st.apply(x), jnp.float32))) - st.log_det
    got = gmm.log_prob(st.gmm_from(gmm.as_full(g)), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_standardiser_rejects_constant_feature_and_wrong_width():
    x = np.random.default_rng(0).normal(size=(2, 4, 2))
    x[..., 1] = 3.0
    with pytest.raises(ValueError, match="feature 1 is constant"):
        Standardiser.fit(Sequences(x))
    st = Standardiser.identity(3)
    with pytest.raises(ValueError, match="2 features"):
        st.transform(Sequences(x))


# ----------------------------------------------------------------------------- splits


def test_split_sequences_disjoint_covering_and_seeded():
    n = 23
    x = np.repeat(np.arange(n, dtype=float)[:, None, None], 4, axis=1)  # value = sequence id
    s = Sequences(x, np.random.default_rng(0).integers(1, 5, size=n))
    parts = data.split_sequences(s, seed=5)
    ids = [p.x[:, 0, 0].astype(int) for p in parts]
    assert sum(len(i) for i in ids) == n
    assert sorted(np.concatenate(ids).tolist()) == list(range(n))
    for p, i in zip(parts, ids):  # lengths travel with their sequence
        np.testing.assert_array_equal(p.lengths, s.lengths[i])
    again = data.split_sequences(s, seed=5)
    assert np.array_equal(again.test.x, parts.test.x)
    other = data.split_sequences(s, seed=6)
    assert not np.array_equal(other.train.x[:, 0, 0], parts.train.x[:, 0, 0])
    with pytest.raises(ValueError, match="fractions"):
        data.split_sequences(s, (0.5, 0.5, 0.5), seed=0)


def test_split_series_is_in_time_order_without_leakage():
    t = 103
    series = np.stack([np.arange(t), -np.arange(t)], axis=1).astype(float)
    sp = data.split_series(series, window=10)
    tr, va, te = (p.observed()[:, 0] for p in sp)
    np.testing.assert_array_equal(np.concatenate([tr, va, te]), np.arange(t))  # covering, ordered
    assert tr.max() < va.min() and va.max() < te.min()
    assert sp.train.max_length == 10 and sp.train.lengths.sum() == len(tr)
    assert sp.test.n_sequences == 1  # evaluation parts stay whole


# ----------------------------------------------------------------------------- batching


def test_batches_have_fixed_shapes_masked_padding_and_a_seeded_stream():
    s = _ragged(s=7, t=5, d=2)
    seen = []
    for step in range(9):
        b = data.batch_at(s, step, batch_size=3, seed=1)
        assert b.x.shape == (3, 5, 2) and b.lengths.shape == (3,) and b.x.dtype == np.float32
        pad = np.arange(5)[None, :] >= b.lengths[:, None]
        assert np.all(b.x[pad] == 0) and np.isfinite(b.x).all()
        seen.append(b)
    # 7 // 3 = 2 batches per epoch, no sequence twice in an epoch
    for e in range(3):
        rows = np.concatenate([seen[2 * e].x, seen[2 * e + 1].x]).reshape(6, -1)
        assert len({r.tobytes() for r in rows}) == 6
    again = data.batch_at(s, 4, batch_size=3, seed=1)
    np.testing.assert_array_equal(again.x, seen[4].x)
    # fewer sequences than the batch: filler rows of length 0
    small = data.batch_at(s.select(slice(0, 2)), 0, batch_size=4, seed=0)
    assert small.x.shape[0] == 4 and sorted(small.lengths.tolist())[:2] == [0, 0]


def test_iterate_batches_covers_each_sequence_once():
    s = _ragged(s=7, t=5, d=2)
    bs = list(data.iterate_batches(s, batch_size=3))
    assert [b.x.shape for b in bs] == [(3, 5, 2)] * 3
    lengths = np.concatenate([b.lengths for b in bs])
    np.testing.assert_array_equal(lengths[:7], s.lengths)
    assert lengths[7:].tolist() == [0, 0]
    got = np.concatenate([b.x for b in bs])[:7]
    np.testing.assert_allclose(got[s.mask], s.observed().astype(np.float32))


# ----------------------------------------------------------------------------- synthetic


def _random_process(seed, r, d):
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.ones(r), size=r)
    init = rng.dirichlet(np.ones(r))
    a = rng.normal(scale=0.5, size=(r, d, d))
    b = rng.normal(size=(r, d))
    m = rng.normal(size=(r, d, d))
    cov = m @ np.swapaxes(m, 1, 2) + 0.3 * np.eye(d)
    return synthetic.SwitchingAR(init, trans, a, b, cov)


@pytest.mark.parametrize("r,d", [(2, 1), (3, 2)])
def test_forward_algorithm_equals_brute_force(r, d):
    proc = _random_process(r * 10 + d, r, d)
    x = np.random.default_rng(0).normal(size=(2, 4, d))
    for t in (1, 2, 4):
        s = Sequences(x[:, :t])
        fwd = synthetic.log_prob(proc, s)
        brute = [synthetic.log_prob_brute_force(proc, x[i, :t]) for i in range(2)]
        np.testing.assert_allclose(fwd, brute, rtol=1e-10)
    # padded steps are ignored: a ragged set gives the truncated sequences' densities
    ragged = Sequences(x, np.array([4, 2]))
    np.testing.assert_allclose(
        synthetic.log_prob(proc, ragged)[1], synthetic.log_prob_brute_force(proc, x[1, :2]), rtol=1e-10
    )


def test_sampler_matches_the_density():
    # Gibbs: samples of p score higher under p than under any other process q, and the
    # per-step log-density of the true process is a proper normalised predictive: its
    # empirical mean matches that of a fresh sample (two independent estimates).
    proc = data.default_switching_ar(2)
    s1, reg = data.sample_switching_ar(proc, seed=0, n_sequences=200, length=20)
    s2, _ = data.sample_switching_ar(proc, seed=1, n_sequences=200, length=20)
    lp1 = synthetic.step_log_probs(proc, s1).mean()
    lp2 = synthetic.step_log_probs(proc, s2).mean()
    assert abs(lp1 - lp2) < 0.05
    q = proc._replace(trans=np.array([[0.5, 0.5], [0.5, 0.5]]))
    assert synthetic.step_log_probs(q, s1).mean() < lp1 - 0.1
    # the chain is sticky as specified
    stay = (reg[:, 1:] == reg[:, :-1]).mean()
    assert 0.89 < stay < 0.96


# ----------------------------------------------------------------------------- real data


def test_geyser_is_dequantised_reproducibly():
    raw = data.load_geyser(dequantise=False)
    x = data.load_geyser()
    assert x.shape == raw.shape == (299, 2)
    rounded = np.isin(raw[:, 1], [2.0, 3.0, 4.0])
    assert rounded.sum() == 78
    assert not np.isin(x[:, 1], [2.0, 3.0, 4.0]).any()
    assert np.all(np.abs(x[rounded, 1] - raw[rounded, 1]) <= 0.5)
    np.testing.assert_array_equal(x[~rounded], raw[~rounded])
    np.testing.assert_array_equal(data.load_geyser(seed=0), x)
    assert not np.array_equal(data.load_geyser(seed=1), x)


def test_storms_and_eustock_shapes():
    s = data.load_storms()
    assert s.n_sequences == 655 and s.n_features == 4 and s.n_steps == 19537
    assert s.lengths.min() == 4 and s.lengths.max() == 96
    obs = s.observed()
    assert 5 < obs[:, 0].min() and obs[:, 0].max() < 75  # latitude, degrees north
    prices = data.load_eustock(returns=False)
    r = data.load_eustock()
    assert prices.shape == (1860, 4) and r.shape == (1859, 4)
    np.testing.assert_allclose(r, np.log(prices[1:] / prices[:-1]))


def test_storms_dequantised_within_half_a_recording_step():
    raw, x = data.load_storms(dequantise=False), data.load_storms()
    np.testing.assert_array_equal(x.lengths, raw.lengths)
    a, b = raw.observed(), x.observed()
    step = np.array(data.real.STORM_RESOLUTION)
    assert np.all(np.abs(b - a) <= step / 2)
    assert np.mean(np.diff(raw.x[:, :, 2], axis=1) == 0) > 0.3  # wind repeats in the file
    assert np.all(np.diff(b, axis=0) != 0)  # no exact repeats once dequantised
    np.testing.assert_array_equal(data.load_storms(seed=0).x, x.x)
    assert not np.array_equal(data.load_storms(seed=1).observed(), b)
    np.testing.assert_array_equal(x.x[~x.mask], raw.x[~raw.mask])  # padding untouched


def test_weather_days_are_complete_hourly_sequences_from_the_csv():
    from grnn_jax.data.real import _read_csv, load_weather

    raw, x = load_weather(dequantise=False), load_weather()
    assert raw.x.shape == x.x.shape == (188, 24, 3) and np.all(raw.lengths == 24)
    header, rows = _read_csv("weather_jfk.csv")
    # The first complete day in the file is 2 January (1 January starts at 1 a.m.).
    jan2 = [r for r in rows if r[1] == "1" and r[2] == "2"]
    assert [int(r[3]) for r in jan2] == list(range(24))
    np.testing.assert_array_equal(raw.x[0], np.array([r[4:7] for r in jan2], dtype=float))
    # Dequantisation moves each value by at most half a recording step, and is seeded.
    assert np.all(np.abs(x.x - raw.x) <= 0.5 * np.array([1.0, 1.0, 0.1]))
    assert len(np.unique(raw.x[..., 0])) < 200 and len(np.unique(x.x[..., 0])) == x.x[..., 0].size
    np.testing.assert_array_equal(load_weather(seed=0).x, x.x)


def test_elecdemand_days_hold_the_csv_in_order():
    from grnn_jax.data.real import _read_csv, load_elecdemand

    raw, x = load_elecdemand(dequantise=False), load_elecdemand()
    _, rows = _read_csv("elecdemand.csv")
    flat = np.array([[float(r[0]), float(r[2])] for r in rows])
    np.testing.assert_array_equal(raw.x.reshape(-1, 2), flat)
    assert raw.x.shape == (365, 48, 2)
    np.testing.assert_array_equal(x.x[..., 0], raw.x[..., 0])  # demand is not rounded
    assert np.all(np.abs(x.x[..., 1] - raw.x[..., 1]) <= 0.05)


def test_classic_process_has_the_classic_shape_and_sequential_structure():
    proc = synthetic.classic_switching_ar()
    assert proc.A.shape == (3, 10, 10) and proc.n_regimes == 3
    assert np.all(np.abs(np.linalg.eigvals(proc.A)) < 1)  # every regime is stable
    assert np.all(np.linalg.eigvalsh(proc.cov) > 0)
    spec = data.DATASETS["classic"]
    seqs = spec.load()
    assert seqs.x.shape == (300, 50, 10)
    np.testing.assert_allclose(spec.oracle(seqs), synthetic.step_log_probs(proc, seqs))
    # The exact one-step density beats the best static fit to the pooled steps (a full
    # Gaussian fitted on the same data) by a wide margin: the history matters.
    obs = seqs.observed()
    static = stats.multivariate_normal(obs.mean(0), np.cov(obs.T)).logpdf(obs).mean()
    assert spec.oracle(seqs).sum() / seqs.n_steps > static + 1.0


def test_registry():
    assert set(data.DATASETS) >= {"geyser", "storms", "eustock", "switching_ar", "weather",
                                  "elecdemand", "classic"}
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("nope")
    g = data.load_dataset("geyser")
    sp = data.dataset_splits("geyser")
    joined = np.concatenate([p.observed() for p in sp])
    np.testing.assert_array_equal(joined, g.observed())  # time order, nothing lost
    st = data.dataset_splits("storms", seed=0)
    assert sum(p.n_sequences for p in st) == 655
