"""The duration process: its exact density against brute force over regime paths and a Monte
Carlo estimate, and its sampler's durations, hand-overs and stationary start."""

import itertools

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax.data import Sequences
from grnn_jax.data import duration_process as dp


def _tiny(d: int = 1) -> dp.DurationProcess:
    """Three regimes, durations on 1..3 steps (none geometric), an uneven hand-over matrix."""
    durations = np.array([[0.0, 0.3, 0.7], [0.5, 0.5, 0.0], [0.2, 0.0, 0.8]])
    jump = np.array([[0.0, 0.6, 0.4], [0.9, 0.0, 0.1], [0.5, 0.5, 0.0]])
    a = np.stack([0.5 * np.eye(d), -0.3 * np.eye(d), np.zeros((d, d))])
    b = np.stack([np.full(d, 1.0), np.full(d, -1.0), np.zeros(d)])
    cov = np.stack([0.5 * np.eye(d), 0.8 * np.eye(d), 2.0 * np.eye(d)])
    return dp.DurationProcess(durations, jump, a, b, cov)


def _stationary_start(proc) -> np.ndarray:
    """(R, M) p(regime, steps left) at a sequence's start, derived by hand: the jump chain's
    stationary distribution by power iteration, times P(D_r >= c), normalised."""
    nu = np.full(proc.n_regimes, 1.0 / proc.n_regimes)
    for _ in range(2000):
        nu = nu @ proc.jump
    survival = np.array([[proc.durations[r, c:].sum() for c in range(proc.max_duration)]
                         for r in range(proc.n_regimes)])
    start = nu[:, None] * survival
    return start / start.sum()


def _path_log_prob(proc, start, path) -> float:
    """log P(regime path) under the semi-Markov model, from its runs: the first run's start
    state (``start``: (R, M) p(regime, steps left)), complete middle runs, and a last run
    that may go on past the window."""
    runs = [(r, len(list(g))) for r, g in itertools.groupby(path)]
    m = proc.max_duration
    pmf = lambda r, n: proc.durations[r, n - 1] if n <= m else 0.0
    survival = lambda r, n: proc.durations[r, n - 1:].sum() if n <= m else 0.0
    (r0, n0), p = runs[0], 1.0
    p *= start[r0, n0 - 1:].sum() if len(runs) == 1 else (start[r0, n0 - 1] if n0 <= m else 0.0)
    for i in range(1, len(runs)):
        (prev, _), (r, n) = runs[i - 1], runs[i]
        p *= proc.jump[prev, r] * (pmf(r, n) if i < len(runs) - 1 else survival(r, n))
    with np.errstate(divide="ignore"):
        return np.log(p)


def _emission_log_probs(proc, x) -> np.ndarray:
    """(T, R) log N(x_t | A_r x_{t-1} + b_r, cov_r), x_{-1} = 0, by scipy."""
    prev = np.vstack([np.zeros((1, x.shape[1])), x[:-1]])
    return np.stack([[multivariate_normal(proc.A[r] @ p + proc.b[r], proc.cov[r]).logpdf(xt)
                      for r in range(proc.n_regimes)] for xt, p in zip(x, prev)])


@pytest.mark.slow
def test_exact_density_equals_brute_force_over_regime_paths():
    proc = _tiny(d=2)
    seqs, _, _ = dp.sample_duration_process(proc, seed=3, n_sequences=2, length=6)
    with jax.enable_x64(True):
        got = dp.log_prob(proc, seqs)
        steps = dp.step_log_probs(proc, seqs)
    start = _stationary_start(proc)
    for s in range(2):
        emis = _emission_log_probs(proc, seqs.x[s])
        terms = [_path_log_prob(proc, start, path) + emis[np.arange(6), path].sum()
                 for path in itertools.product(range(3), repeat=6)]
        np.testing.assert_allclose(got[s], logsumexp(terms), rtol=1e-10)
    # Step densities: each prefix's brute-force log-density minus the previous one.
    prefix = Sequences(np.repeat(seqs.x[:1], 6, axis=0), lengths=np.arange(1, 7))
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.diff(np.r_[0.0, dp.log_prob(proc, prefix)]), steps[0], rtol=1e-10)


@pytest.mark.slow
def test_exact_density_matches_a_monte_carlo_average_over_sampled_regime_paths():
    """p(x_1:T) = E_z[p(x_1:T | z)] over regime paths z drawn by the sampler."""
    proc = _tiny(d=1)
    seqs, _, _ = dp.sample_duration_process(proc, seed=0, n_sequences=1, length=5)
    _, paths, _ = dp.sample_duration_process(proc, seed=1, n_sequences=20_000, length=5)
    emis = _emission_log_probs(proc, seqs.x[0])  # (T, R)
    lik = np.exp(emis[np.arange(5), paths].sum(axis=1))  # (N,) p(x | z_n)
    mc, se = np.log(lik.mean()), lik.std() / lik.mean() / np.sqrt(lik.size)
    exact = float(dp.log_prob(proc, seqs)[0])
    assert abs(mc - exact) < 4 * se + 1e-4, (mc, exact, se)


def test_sampled_durations_hand_overs_and_start_follow_the_parameters():
    proc = dp.default_duration_process()
    seqs, regimes, left = dp.sample_duration_process(proc, seed=0, n_sequences=400, length=60)
    assert seqs.x.shape == (400, 60, 2)
    runs, hand = [], np.zeros((3, 3))
    for z, c in zip(regimes, left):
        bounds = np.flatnonzero(np.diff(z) != 0) + 1
        # Steps left count down by one within a run and reach 1 at each run's last step.
        assert np.all(np.diff(c)[np.diff(z) == 0] == -1) and np.all(c[bounds - 1] == 1)
        runs += np.diff(bounds).tolist()  # complete runs: neither the first nor the last
        np.add.at(hand, (z[bounds - 1], z[bounds]), 1)
    hist = np.bincount(runs, minlength=12)[1:] / len(runs)
    want = proc.durations[0]
    se = np.sqrt(want * (1 - want) / len(runs))
    assert np.all(np.abs(hist - want) <= 4 * se + 1e-12), (hist.round(3), len(runs))
    np.testing.assert_allclose(hand / hand.sum(1, keepdims=True), proc.jump, atol=0.04)
    # Stationary: the first and the last steps are distributed alike, as derived by hand.
    start = _stationary_start(proc).sum(1)
    for t in (0, -1):
        np.testing.assert_allclose(np.bincount(regimes[:, t], minlength=3) / 400, start, atol=0.08)
    tiny = _tiny()
    _, reg, left = dp.sample_duration_process(tiny, seed=0, n_sequences=20_000, length=1)
    joint = np.zeros((3, 3))
    np.add.at(joint, (reg[:, 0], left[:, 0] - 1), 1)
    np.testing.assert_allclose(joint / joint.sum(), _stationary_start(tiny), atol=0.01)


def test_regime_posteriors_and_the_exact_density_tell_the_regimes_apart():
    proc = dp.default_duration_process()
    seqs, regimes, _ = dp.sample_duration_process(proc, seed=5, n_sequences=20, length=50)
    post = dp.regime_posteriors(proc, seqs)
    np.testing.assert_allclose(post.sum(-1), 1.0, rtol=1e-5)
    assert (post.argmax(-1) == regimes).mean() > 0.95
    # Knowing the durations is worth something: a plain switching AR with the same regimes
    # and a geometric stay of the same mean duration scores the data lower.
    from grnn_jax.data import SwitchingAR, synthetic

    stay = 1 - 1 / 9.5
    trans = stay * np.eye(3) + (1 - stay) * proc.jump
    markov = SwitchingAR(np.full(3, 1 / 3), trans, proc.A, proc.b, proc.cov)
    gain = (dp.log_prob(proc, seqs).sum() - synthetic.log_prob(markov, seqs).sum()) / seqs.n_steps
    assert gain > 0.05


def test_bad_parameters_fail_with_one_line():
    proc = _tiny()
    with pytest.raises(ValueError, match="zero diagonal"):
        dp.expanded_chain(proc._replace(jump=np.full((3, 3), 1 / 3)))
    with pytest.raises(ValueError, match="durations must be probability"):
        dp.expanded_chain(proc._replace(durations=proc.durations * 2))
    with pytest.raises(ValueError, match="must have shape"):
        dp.expanded_chain(proc._replace(b=np.zeros((3, 2))))
    with pytest.raises(ValueError, match="low <= high"):
        dp.uniform_durations(3, 2, 1)
    with pytest.raises(ValueError, match="features"):
        dp.step_log_probs(proc, Sequences(np.zeros((1, 3, 2))))
