"""dynamax baselines against dynamax itself and the library's exact filter, their units against
a direct computation, K and lags chosen on validation, and the AR-HMM comparison's smoke run."""

import json

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from experiments import arhmm_comparison, baselines, plots
from grnn_jax import data, em, gmm
from grnn_jax.data import (
    Sequences,
    Standardiser,
    default_switching_ar,
    sample_switching_ar,
    synthetic,
)

pytestmark = pytest.mark.slow

PROC = default_switching_ar(2)


def _ragged(seqs: Sequences, lengths) -> Sequences:
    lengths = np.resize(np.asarray(lengths), seqs.n_sequences)
    x = np.where(np.arange(seqs.max_length)[None, :, None] < lengths[:, None, None], seqs.x, np.nan)
    return Sequences(x, lengths)


@pytest.fixture(scope="module")
def fitted():
    """Switching-AR data of uneven lengths (so training is concatenated) and the AR-HMM baseline
    over K = 2 and lags 0, 1, fitted in the process's own units: its zero lags before the
    first step are the process's ``x_{-1} = 0``, so the true model is in the class."""
    tr = _ragged(sample_switching_ar(PROC, seed=0, n_sequences=30, length=40)[0], [40, 31])
    va = _ragged(sample_switching_ar(PROC, seed=1, n_sequences=10, length=40)[0], [40, 22, 5, 1])
    te = sample_switching_ar(PROC, seed=2, n_sequences=10, length=40)[0]
    res = baselines.arhmm_baseline(tr, va, log_jacobian=0.0, ks=(2,), lags=(0, 1), n_restarts=2,
                                   n_iter=30)
    return {"raw": (tr, va, te), "res": res}


def _random_fit(k: int, d: int, lags: int, seed: int) -> baselines.HMMFit:
    rng = np.random.default_rng(seed)
    init = rng.dirichlet(np.ones(k))
    trans = rng.dirichlet(np.ones(k), size=k)
    w = 0.4 * rng.standard_normal((k, d, d * lags))
    m = rng.standard_normal((k, d, d))
    covs = 0.3 * np.eye(d) + 0.2 * m @ np.swapaxes(m, 1, 2)
    return baselines.HMMFit(lags, np.log(init), np.log(trans), w, rng.standard_normal((k, d)), covs,
                            np.zeros(1), None)


def _dynamax_params(fit: baselines.HMMFit):
    """dynamax's model and parameter tuple holding ``fit``'s values (float32)."""
    from dynamax.hidden_markov_model.models import (
        arhmm,
        gaussian_hmm,
        initial,
        linreg_hmm,
        transitions,
    )

    model = baselines.dynamax_model(fit.n_components, fit.biases.shape[1], fit.lags)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    init = initial.ParamsStandardHMMInitialState(f32(np.exp(fit.log_init)))
    trans = transitions.ParamsStandardHMMTransitions(f32(np.exp(fit.log_trans)))
    if fit.lags:
        emis = linreg_hmm.ParamsLinearRegressionHMMEmissions(f32(fit.weights), f32(fit.biases), f32(fit.covs))
        return model, arhmm.ParamsLinearAutoregressiveHMM(init, trans, emis)
    emis = gaussian_hmm.ParamsGaussianHMMEmissions(f32(fit.biases), f32(fit.covs))
    return model, gaussian_hmm.ParamsGaussianHMM(init, trans, emis)


@pytest.mark.slow
@pytest.mark.parametrize("lags", [0, 1, 2])
def test_scores_equal_dynamax_marginal_log_prob(lags):
    fit = _random_fit(3, 2, lags, seed=lags)
    va = _ragged(sample_switching_ar(PROC, seed=4, n_sequences=3, length=12)[0], [12, 5, 1])
    lp = baselines.hmm_fit_log_probs(fit, va)
    assert lp.shape == (3, 12) and np.all(lp[~va.mask] == 0)
    model, params = _dynamax_params(fit)
    for s, n in enumerate(va.lengths):
        x = jnp.asarray(va.x[s, :n], jnp.float32)
        want = model.marginal_log_prob(params, x, inputs=model.compute_inputs(x) if lags else None)
        np.testing.assert_allclose(lp[s].sum(), float(want), rtol=2e-5, atol=2e-4)
    # The predictive mixtures give the same densities through the GMM container.
    g = baselines.hmm_fit_predictive(fit, va)
    assert g.batch_shape == (3, 12)
    got = np.asarray(gmm.log_prob(g, jnp.asarray(np.nan_to_num(va.x), jnp.float32)))
    np.testing.assert_allclose(np.where(va.mask, got, 0), lp, rtol=1e-4, atol=1e-4)


def test_regime_posteriors_equal_the_librarys_forward_backward():
    fit = _random_fit(3, 2, 1, seed=7)
    va = _ragged(sample_switching_ar(PROC, seed=5, n_sequences=3, length=10)[0], [10, 6, 1])
    filtered, smoothed = baselines.hmm_fit_regimes(fit, va)
    emis = _scipy_emissions(fit, va)
    oracle = jax.vmap(em.hmm.forward_backward, in_axes=(None, None, 0, 0))(
        fit.log_init, fit.log_trans, emis, va.mask)
    np.testing.assert_allclose(smoothed, np.asarray(oracle.smoothed), atol=1e-5)
    forward = jax.vmap(em.hmm.forward, in_axes=(None, None, 0, 0))(fit.log_init, fit.log_trans, emis, va.mask)
    np.testing.assert_allclose(filtered, np.where(va.mask[..., None], np.exp(forward.log_filtered), 0),
                               atol=1e-5)


def _scipy_emissions(fit, seqs) -> np.ndarray:
    """(S, T, K) log N(x_t | W_k [x_{t-1}, ...] + b_k, Sigma_k) by scipy, zero lags before the start."""
    out = np.zeros(seqs.x.shape[:2] + (fit.n_components,))
    for s, n in enumerate(seqs.lengths):
        x = seqs.x[s, :n]
        for t in range(n):
            phi = np.concatenate([x[t - j] if t - j >= 0 else np.zeros(x.shape[1])
                                  for j in range(1, fit.lags + 1)] + [np.zeros(0)])
            for k in range(fit.n_components):
                mean = fit.weights[k] @ phi + fit.biases[k]
                out[s, t, k] = multivariate_normal(mean, fit.covs[k]).logpdf(x[t])
    return out


@pytest.mark.slow
def test_validation_picks_the_true_model_class_and_reaches_the_exact_density(fitted):
    res, (tr, _, te) = fitted["res"], fitted["raw"]
    assert set(res.val_nll) == {(2, 0), (2, 1)} and set(res.fit_seconds) == set(res.val_nll)
    assert (res.n_components, res.lags) == (2, 1)  # a switching VAR(1) is an AR-HMM with p = 1
    assert res.chosen_val_nll == min(res.val_nll.values())
    assert res.val_nll[(2, 0)] > res.val_nll[(2, 1)] + 0.5
    exact = -synthetic.step_log_probs(PROC, te).sum() / te.n_steps
    assert abs(res.nll(te, 0.0) - exact) < 0.02
    train_exact = -synthetic.step_log_probs(PROC, tr).sum() / tr.n_steps
    assert res.nll(tr, 0.0) < train_exact  # EM's fit beats the truth on its own data


@pytest.mark.slow
def test_standardised_fit_is_scored_in_original_units(fitted):
    """Fitted on standardised data (as main.py and the comparison do), the NLL with the
    standardiser's log-Jacobian equals the predictive mixtures mapped back, scoring raw data."""
    tr, _, te = fitted["raw"]
    st = Standardiser.fit(tr)
    tr_z, te_z = st.transform(tr), st.transform(te)
    fit = baselines.fit_dynamax_hmm(tr_z, 2, 1, seed=0, n_restarts=2, n_iter=30)  # compiled already
    nll = baselines.nll_per_step(baselines.hmm_fit_log_probs(fit, te_z).sum(), te.n_steps, st.log_det)
    g = plots.to_original_units(baselines.hmm_fit_predictive(fit, te_z), st)
    direct = -float(np.asarray(gmm.log_prob(g, jnp.asarray(te.x, jnp.float32))).mean())
    np.testing.assert_allclose(direct, nll, rtol=1e-5)


@pytest.mark.slow
def test_concatenated_training_refits_the_initial_distribution_by_one_m_step(fitted):
    tr_z = fitted["raw"][0]
    fit = fitted["res"].model
    dynamax_init = np.log(np.asarray(fit.params.initial.probs, np.float64))
    emis = _scipy_emissions(fit, tr_z)
    post = jax.vmap(em.hmm.forward_backward, in_axes=(None, None, 0, 0))(
        dynamax_init, fit.log_trans, emis, tr_z.mask)
    counts = np.asarray(post.expected_initial).sum(0) + baselines.DYNAMAX_CONCENTRATION - 1
    np.testing.assert_allclose(np.exp(fit.log_init), counts / counts.sum(), atol=1e-5)
    before = baselines.hmm_fit_log_probs(fit._replace(log_init=dynamax_init), tr_z).sum()
    assert baselines.hmm_fit_log_probs(fit, tr_z).sum() >= before - 1e-6
    assert fit.objectives.shape == (2,)


def test_bad_settings_fail_before_any_fit():
    with pytest.raises(ValueError, match="lags >= 0"):
        baselines.fit_dynamax_hmm(Sequences(np.zeros((2, 5, 2))), 2, -1, seed=0)
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        arhmm_comparison.parse_variant("head=hmm,depth=3")
    assert arhmm_comparison.parse_variant("head=hmm,lags=1,constant_transitions=true") == {
        "head": "hmm", "lags": 1, "constant_transitions": True}
    assert baselines.candidate_text((4, 1)) == "K=4 lags=1" and baselines.candidate_text(3) == "K=3"


def test_comparison_scores_the_registered_switching_set_and_knows_its_regimes():
    splits, oracle, truth = arhmm_comparison.load_splits("switching_ar", arhmm_comparison.Settings())
    registered = data.dataset_splits("switching_ar")
    for ours, theirs in zip(splits, registered):
        np.testing.assert_array_equal(ours.x, theirs.x)
    seqs, regimes = sample_switching_ar(PROC, seed=0, n_sequences=200, length=50)
    rows = [int(np.flatnonzero((seqs.x == x).all(axis=(1, 2)))[0]) for x in splits.test.x]
    np.testing.assert_array_equal(truth, regimes[rows])
    np.testing.assert_allclose(oracle(splits.test), synthetic.step_log_probs(PROC, splits.test))


@pytest.mark.slow
def test_comparison_tiny_run_writes_table_figure_and_scores(tmp_path, capsys):
    argv = ["--tiny", "--datasets", "duration", "--out", str(tmp_path),
            "--variants", "head=mdn,lags=1", "head=hmm,lags=1,constant_transitions=true"]
    assert arhmm_comparison.main(argv) == 0
    out = capsys.readouterr().out
    assert "CPU: " in out and "command: python -m experiments.arhmm_comparison --tiny" in out
    res = json.loads((tmp_path / "results.json").read_text())["results"]["duration"]
    labels = ("mdn lags 1", "hmm lags 1 const")
    assert set(res["test_nll"]) == {"static GMM", "Gaussian HMM", "AR-HMM", "exact", *labels}
    assert all(np.isfinite(v) for v in res["test_nll"].values())
    assert set(res["ari"]) == {"AR-HMM", "exact", *labels}
    assert all(-1 <= v <= 1 for v in res["ari"].values()) and res["ari"]["exact"] > 0.5
    table = (tmp_path / "table.md").read_text()
    assert f"{res['test_nll']['exact']:.3f}" in table and "| duration |" in table
    img = matplotlib.image.imread(tmp_path / res["figure"])
    assert min(img.shape[:2]) > 200 and img[..., :3].std() > 0.05
