"""The exact regime filter (grnn_jax.em.hmm) against brute force, hmmlearn and dynamax."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax.em import hmm

RTOL = 1e-6


@jax.jit
def _routes(log_init, log_trans, log_emit, mask):
    """forward, smoothed_posteriors and forward_backward in one program (one compile per shape)."""
    args = (log_init, log_trans, log_emit, mask)
    return hmm.forward(*args), hmm.smoothed_posteriors(*args), hmm.forward_backward(*args)


def _run(log_init, log_trans, log_emit, mask=None):
    mask = np.ones(np.shape(log_emit)[0], bool) if mask is None else np.asarray(mask, bool)
    return _routes(log_init, log_trans, log_emit, mask)


def _problem(seed, t_len, k, per_step=False):
    """Random log_init (K,), log_trans (K, K) or (T, K, K), log_emit (T, K) as float64 numpy."""
    rng = np.random.default_rng(seed)
    log_init = rng.normal(size=k)
    log_trans = rng.normal(size=(t_len, k, k) if per_step else (k, k)) * 1.5
    log_emit = rng.normal(size=(t_len, k)) * 2.0
    return log_init - logsumexp(log_init), log_trans - logsumexp(log_trans, axis=-1, keepdims=True), log_emit


def _brute(log_init, log_trans, log_emit):
    """Log-likelihood, smoothed (T, K) and two-slice (T, K, K) posteriors over all K^T paths."""
    t_len, k = log_emit.shape
    per_step = np.broadcast_to(log_trans, (t_len, k, k))
    paths = np.array(list(itertools.product(range(k), repeat=t_len)))
    lp = log_init[paths[:, 0]] + log_emit[0, paths[:, 0]]
    for t in range(1, t_len):
        lp = lp + per_step[t][paths[:, t - 1], paths[:, t]] + log_emit[t, paths[:, t]]
    ll = logsumexp(lp)
    w = np.exp(lp - ll)
    smoothed = np.stack([np.bincount(paths[:, t], w, minlength=k) for t in range(t_len)])
    xi = np.zeros((t_len, k, k))
    for t in range(1, t_len):
        np.add.at(xi[t], (paths[:, t - 1], paths[:, t]), w)
    return ll, smoothed, xi


def _close(a, b, rtol=RTOL, atol=1e-9):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize(("k", "per_step"), [(2, False), (3, False), (3, True)])
def test_brute_force(x64, k, per_step):
    t_len = 4
    log_init, log_trans, log_emit = _problem(k + 10 * per_step, t_len, k, per_step)
    ll, smoothed, xi = _brute(log_init, log_trans, log_emit)
    f, by_grad, explicit = _run(log_init, log_trans, log_emit)
    assert f.log_likelihood.dtype == jnp.float64
    _close(f.log_likelihood, ll)
    _close(f.step_log_likelihood.sum(), ll)
    for t in range(t_len):
        prefix = log_trans[: t + 1] if per_step else log_trans
        # Filtered: the last step of the prefix; predicted: the same with an uninformative x_t.
        _close(jnp.exp(f.log_filtered[t]), _brute(log_init, prefix, log_emit[: t + 1])[1][t])
        flat = log_emit[: t + 1].copy()
        flat[t] = 0.0
        _close(jnp.exp(f.log_predicted[t]), _brute(log_init, prefix, flat)[1][t])
    counts = xi if per_step else xi.sum(0)
    for s in (by_grad, explicit):
        _close(s.log_likelihood, ll)
        _close(s.smoothed, smoothed)
        _close(s.expected_initial, smoothed[0])
        _close(s.expected_transitions, counts)


def test_viterbi_brute_force(x64):
    log_init, log_trans, log_emit = _problem(5, 4, 3, per_step=True)
    paths = np.array(list(itertools.product(range(3), repeat=4)))
    lp = log_init[paths[:, 0]] + log_emit[0, paths[:, 0]]
    for t in range(1, 4):
        lp = lp + log_trans[t][paths[:, t - 1], paths[:, t]] + log_emit[t, paths[:, t]]
    want = paths[np.argmax(lp)].tolist()
    path, best = hmm.viterbi(log_init, log_trans, log_emit, np.ones(4, bool))
    assert path.tolist() == want
    _close(best, lp.max())
    # Padding leaves the path alone; padded steps repeat the regime of the nearest valid step.
    pad = np.concatenate([np.full((2, 3), 7.0), log_emit, np.full((2, 3), -3.0)])
    trans = np.concatenate([np.zeros((2, 3, 3)), log_trans, np.zeros((2, 3, 3))])
    path, best = hmm.viterbi(log_init, trans, pad, np.r_[0, 0, np.ones(4), 0, 0].astype(bool))
    assert path.tolist() == [want[0]] * 2 + want + [want[-1]] * 2
    _close(best, lp.max())


T_LEN, K = 12, 3  # most tests share these shapes, so the routes compile once for them


def test_hmmlearn(x64):
    from hmmlearn.hmm import GaussianHMM

    rng = np.random.default_rng(1)
    d = 2
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K) * 2, size=K)
    means = rng.normal(size=(K, d)) * 2
    a = rng.normal(size=(K, d, d))
    covs = a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(d)
    model = GaussianHMM(K, covariance_type="full", init_params="", params="")
    model.startprob_, model.transmat_, model.means_, model.covars_ = start, trans, means, covs
    x, _ = model.sample(T_LEN, random_state=2)
    log_emit = np.stack([multivariate_normal.logpdf(x, means[j], covs[j]) for j in range(K)], axis=1)
    f, by_grad, explicit = _run(np.log(start), np.log(trans), log_emit)
    _close(f.log_likelihood, model.score(x))
    _close(by_grad.smoothed, model.predict_proba(x))
    _close(explicit.smoothed, model.predict_proba(x))


@pytest.mark.parametrize("num_lags", [1, 2])
@pytest.mark.slow
def test_dynamax_arhmm(x64, num_lags):
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    d = 2
    rng = np.random.default_rng(num_lags)
    a = rng.normal(size=(K, d, d))
    model = LinearAutoregressiveHMM(K, d, num_lags=num_lags)
    # Initial and transition probabilities drawn here: dynamax's own Dirichlet draws take seconds to compile.
    params, _ = model.initialize(
        jax.random.key(num_lags),
        initial_probs=jnp.asarray(rng.dirichlet(np.ones(K))),
        transition_matrix=jnp.asarray(rng.dirichlet(np.ones(K), size=K)),
        emission_covariances=jnp.asarray(a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)),
    )
    x = np.cumsum(rng.normal(size=(T_LEN, d)), axis=0)  # a random walk: the AR weights (about 0.95 I) fit it
    inputs = np.asarray(model.compute_inputs(jnp.asarray(x)))
    assert np.all(inputs[0] == 0)  # dynamax's convention: zero lags before the first step
    em = params.emissions
    w, b, covs = (np.asarray(v) for v in (em.weights, em.biases, em.covs))
    log_emit = np.stack([multivariate_normal.logpdf(x - inputs @ w[j].T - b[j], np.zeros(d), covs[j])
                         for j in range(K)], axis=1)
    log_init = np.log(np.asarray(params.initial.probs))
    log_trans = np.log(np.asarray(params.transitions.transition_matrix))
    f, by_grad, _ = _run(log_init, log_trans, log_emit)
    _close(f.log_likelihood, model.marginal_log_prob(params, jnp.asarray(x), inputs=jnp.asarray(inputs)), rtol=1e-5)
    if num_lags == 2:  # one smoother compile is enough to check the posteriors too
        post = model.smoother(params, jnp.asarray(x), inputs=jnp.asarray(inputs))
        _close(jnp.exp(f.log_filtered), post.filtered_probs, rtol=1e-5, atol=1e-8)
        _close(by_grad.smoothed, post.smoothed_probs, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("per_step", [False, True])
def test_fisher_identity_matches_forward_backward(x64, per_step):
    log_init, log_trans, log_emit = _problem(3, T_LEN, K, per_step)
    mask = np.ones(T_LEN, bool)
    mask[[4, 5, 11]] = False  # a gap in the middle and one padded step at the end
    _, by_grad, explicit = _run(log_init, log_trans, log_emit, mask)
    for a, b in zip(by_grad, explicit):
        _close(a, b, rtol=1e-9, atol=1e-12)
    _close(explicit.smoothed.sum(1), mask)
    assert explicit.expected_transitions.shape == np.shape(log_trans)
    _close(explicit.expected_transitions.sum(), mask.sum() - 1)


def test_masked_padding(x64):
    base_len = T_LEN - 2
    log_init, log_trans, log_emit = _problem(4, base_len, K)
    base_f, _, base_s = _run(log_init, log_trans, log_emit)
    junk = np.array([[50.0, -np.inf, 3.0], [-np.inf, -np.inf, -np.inf]])
    for lead, tail in [(0, 2), (2, 0), (1, 1)]:
        padded = np.concatenate([junk[:lead], log_emit, junk[:tail]])
        mask = np.r_[np.zeros(lead), np.ones(base_len), np.zeros(tail)].astype(bool)
        f, by_grad, explicit = _run(log_init, log_trans, padded, mask)
        _close(f.log_likelihood, base_f.log_likelihood, rtol=1e-12)
        _close(f.log_filtered[mask], base_f.log_filtered, rtol=1e-12)
        _close(f.log_predicted[mask], base_f.log_predicted, rtol=1e-12)
        assert np.all(np.asarray(f.step_log_likelihood)[~mask] == 0)
        for s in (by_grad, explicit):
            assert np.all(np.isfinite(np.asarray(s.smoothed)))
            _close(s.smoothed[mask], base_s.smoothed, rtol=1e-10)
            assert np.all(np.asarray(s.smoothed)[~mask] == 0)
            _close(s.expected_transitions, base_s.expected_transitions, rtol=1e-10)
            _close(s.expected_initial, base_s.expected_initial, rtol=1e-10)


def test_constant_per_step_transitions_equal_one_matrix(x64):
    log_init, log_trans, log_emit = _problem(6, T_LEN, K)
    tiled = np.broadcast_to(log_trans, (T_LEN, K, K))
    one, many = _run(log_init, log_trans, log_emit), _run(log_init, tiled, log_emit)
    for a, b in zip(one[0], many[0]):
        _close(a, b, rtol=1e-12)
    _close(one[1].smoothed, many[1].smoothed, rtol=1e-12)
    _close(one[1].expected_transitions, many[1].expected_transitions.sum(0), rtol=1e-10)
    assert np.all(np.asarray(many[1].expected_transitions)[0] == 0)  # log_trans[0] is unused


def test_m_step_markov_against_counts_by_hand(x64):
    rng = np.random.default_rng(8)
    seqs = [rng.integers(0, K - 1, size=n) for n in (7, 12, 5)]  # the last regime never occurs
    init, counts = np.zeros(K), np.zeros((K, K))
    for z in seqs:
        init[z[0]] += 1
        for a, b in itertools.pairwise(z):
            counts[a, b] += 1
    # The same counts through the gradient route: one-hot emissions pin the path, sum over sequences.
    got_init, got_counts = np.zeros(K), np.zeros((K, K))
    uniform = np.full(K, -np.log(K))
    for z in seqs:
        emit = np.zeros((T_LEN, K))
        emit[: len(z)] = np.where(np.eye(K)[z] > 0, 0.0, -np.inf)
        _, s, _ = _run(uniform, np.broadcast_to(uniform, (K, K)), emit, np.arange(T_LEN) < len(z))
        got_init, got_counts = got_init + s.expected_initial, got_counts + s.expected_transitions
    _close(got_init, init)
    _close(got_counts, counts)
    li, lt = hmm.m_step_markov(init, counts)
    _close(np.exp(li), init / init.sum())
    rows = counts.sum(1, keepdims=True)
    _close(np.exp(lt), np.where(rows > 0, counts / np.where(rows > 0, rows, 1), 1 / K))
    li, lt = hmm.m_step_markov(init, counts, prior_concentration=1.1)  # dynamax's default prior
    _close(np.exp(li), (init + 0.1) / (init + 0.1).sum())
    _close(np.exp(lt), (counts + 0.1) / (counts + 0.1).sum(1, keepdims=True))
    with pytest.raises(ValueError, match="prior_concentration"):
        hmm.m_step_markov(init, counts, prior_concentration=0.5)
    with pytest.raises(ValueError, match="expected_counts"):
        hmm.m_step_markov(init, counts[:2])


def test_markov_em_step_never_lowers_likelihood(x64):
    log_init, log_trans, log_emit = _problem(9, T_LEN, K)
    lls = []
    for _ in range(5):
        _, s, _ = _run(log_init, log_trans, log_emit)
        lls.append(float(s.log_likelihood))
        log_init, log_trans = hmm.m_step_markov(s.expected_initial, s.expected_transitions)
    assert np.all(np.diff(lls) >= -1e-10) and lls[-1] > lls[0], lls


def test_jit_vmap_batch_float32():
    log_init, log_trans, _ = (jnp.asarray(a, jnp.float32) for a in _problem(10, T_LEN, K))
    log_emit = jnp.asarray(np.random.default_rng(11).normal(size=(4, T_LEN, K)), jnp.float32)
    mask = np.arange(T_LEN)[None, :] < np.array([12, 7, 3, 1])[:, None]
    batched = jax.jit(jax.vmap(_routes, in_axes=(None, None, 0, 0)))(log_init, log_trans, log_emit, mask)
    assert batched[0].log_likelihood.dtype == jnp.float32 and batched[0].log_filtered.shape == (4, T_LEN, K)
    for i in range(4):
        one = _run(log_init, log_trans, log_emit[i], mask[i])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched)):
            _close(b[i], a, rtol=1e-5, atol=1e-6)
    _close(batched[1].smoothed, batched[2].smoothed, rtol=1e-4, atol=1e-6)


def test_gradients_finite_at_extreme_transitions():
    """float32, transitions of probability e^-80 and exactly 0, and a regime that is never reachable."""
    log_trans = jnp.array([[0.0, -80.0, -jnp.inf], [-80.0, 0.0, -jnp.inf], [-jnp.inf, -jnp.inf, 0.0]])
    log_init = jnp.log(jnp.array([0.5, 0.5, 0.0]))
    log_emit = jnp.asarray(np.random.default_rng(12).normal(size=(T_LEN, K)) * 30, jnp.float32)
    f, by_grad, explicit = _run(log_init, log_trans, log_emit, np.arange(T_LEN) < 9)
    # by_grad holds the gradients of the log-likelihood w.r.t. every input.
    for leaf in jax.tree.leaves((f.log_likelihood, by_grad, explicit)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    assert np.all(np.asarray(explicit.smoothed)[:, 2] == 0)
    _close(by_grad.smoothed, explicit.smoothed, rtol=1e-4, atol=1e-6)


def test_bad_shapes_raise():
    li, lt, le = np.zeros(3), np.zeros((3, 3)), np.zeros((5, 3))
    cases = [
        ({"log_init": np.zeros(2)}, "log_init"),
        ({"log_trans": np.zeros((3, 2))}, "log_trans"),
        ({"log_trans": np.zeros((4, 3, 3))}, "log_trans"),
        ({"log_emit": np.zeros(5)}, "log_emit"),
        ({"mask": np.ones(4)}, "mask"),
    ]
    for fn in (hmm.forward, hmm.smoothed_posteriors, hmm.forward_backward, hmm.viterbi):
        for change, name in cases:
            kwargs = {"log_init": li, "log_trans": lt, "log_emit": le, "mask": None} | change
            with pytest.raises(ValueError, match=name):
                fn(**kwargs)


def test_impossible_observation_gives_minus_inf_not_nan(x64):
    log_init, log_trans, log_emit = _problem(13, T_LEN, K)
    log_emit[5] = -np.inf  # no regime can explain step 5
    f, _, _ = _run(log_init, log_trans, log_emit)
    assert np.isneginf(f.log_likelihood) and np.isneginf(f.step_log_likelihood[5])
    assert not np.any(np.isnan(np.asarray(f.log_filtered))) and not np.any(np.isnan(np.asarray(f.log_predicted)))
    _close(f.log_filtered[5], f.log_predicted[5])  # the filter keeps its prediction there
