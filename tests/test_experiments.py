"""The main experiment end to end with the tiny config, its statistics against hand computations,
and its baselines against their oracles."""

import json
from pathlib import Path

import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from experiments import baselines, main, plots
from grnn_jax import gmm
from grnn_jax.gmm import calibration
from grnn_jax.data import (
    Sequences,
    Standardiser,
    default_switching_ar,
    load_geyser,
    sample_switching_ar,
)
from grnn_jax.data.real import rolling_origin_splits
from grnn_jax.train import evaluate, load_config_file, load_trained

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_end_to_end_scores_what_evaluate_scores(tmp_path):
    """Two rolling-origin folds with the tiny config: the pooled GRNN row must be the
    step-weighted mean of what ``training.evaluate`` gives each fold's kept run."""
    cfg = load_config_file(ROOT / "experiments" / "configs" / "test.py")
    cfg["experiment"].update(folds=2, fold_block=30)
    res = main.run(cfg, tmp_path, progress=False)
    report = (tmp_path / "report.md").read_text()
    ensemble = "GRNN ensemble of 2 seeds"
    rows = res["models"]
    assert set(rows) == {main.GRNN, ensemble, main.SINGLE, main.STATIC, main.HMM, main.ARHMM}
    assert res["n_folds"] == 2 and res["n_test_steps"] == 60
    folds = rolling_origin_splits("geyser", 2, block=30, window=cfg["window"])
    total = 0.0
    for i, fold in enumerate(folds):
        by_seed = rows[main.GRNN]["val_nll_by_seed"][i]
        seed = min(by_seed, key=by_seed.get)
        net, params, st, _ = load_trained(tmp_path / f"fold{i}" / f"grnn_seed{seed}")
        total += evaluate(net, params, fold.test, standardiser=st).nll * fold.test.n_steps
    np.testing.assert_allclose(rows[main.GRNN]["test_nll"], total / 60, rtol=1e-4)
    seed_nlls = list(rows[main.GRNN]["test_nll_by_seed"].values())
    np.testing.assert_allclose(rows[main.GRNN]["test_nll_seed_std"], np.std(seed_nlls, ddof=1))
    assert rows[ensemble]["n_components"] == [4, 4]
    for name, row in rows.items():
        assert f"| {name} | {main._k_text(row['n_components'])} |" in report
        assert f"**{row['test_nll']:.3f}**" in report
        if name != main.GRNN:
            # The paired difference is the difference of the two NLLs (the same test steps).
            np.testing.assert_allclose(row["test_nll_minus_grnn"],
                                       row["test_nll"] - rows[main.GRNN]["test_nll"], atol=1e-4)
    assert main.verdict(rows, 60) in report
    assert set(res["figures"]) == {"learning_curves", "next_step_density", "samples", "pit"}
    for fname in res["figures"].values():
        img = matplotlib.image.imread(tmp_path / fname)
        assert min(img.shape[:2]) > 200 and img[..., :3].std() > 0.05, fname  # drawn, not blank
        assert f"]({fname})" in report
    assert json.loads((tmp_path / "results.json").read_text())["dataset"] == "geyser"


def _fold(lp, pit=None, *, val=1.0, k=2, seeds=None, n_val=10):
    """A fold record as ``main._run_fold`` returns it, for the models GRNN, static GMM, HMM."""
    lp = {name: np.asarray(v, float) for name, v in lp.items()}
    pit = pit or {}
    models = {name: {"lp": v, "pit": pit.get(name)} for name, v in lp.items()}
    return {"models": models, "splits": (None, Sequences(np.zeros((1, n_val, 1))), None),
            "val_nll": {name: val for name in lp}, "n_components": {name: k for name in lp},
            "seed_lp": seeds or {}, "val_nll_by_seed": {main.GRNN: {}},
            "val_nll_by_k": {main.STATIC: {"2": val}, main.HMM: {"2": val}},
            "hmm_converged": True, "hmm_iterations": 7}


def test_paired_difference_matches_a_hand_computation():
    mean, se = main.paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 2.0, 2.0])
    # differences 1, 0, 1, 2: mean 1, sample variance (0 + 1 + 0 + 1) / 3
    assert mean == pytest.approx(1.0) and se == pytest.approx(np.sqrt(2 / 3) / 2)


def test_rows_pool_folds_by_step_and_pair_steps_across_folds():
    grnn1, grnn2 = [-1.0, -2.0], [-1.0, -1.0, -4.0]
    hmm1, hmm2 = [-1.5, -2.0], [-2.0, -1.0, -3.0]
    # PIT values: dimension 0 in the 50% interval [0.25, 0.75] 3 times of 5, dimension 1 once.
    pit1 = np.array([[0.5, 0.1], [0.3, 0.9]])
    pit2 = np.array([[0.74, 0.5], [0.1, 0.2], [0.9, 0.98]])
    seeds1 = {main.GRNN: {0: np.array(grnn1), 1: np.array([-3.0, -3.0])}}
    seeds2 = {main.GRNN: {0: np.array(grnn2), 1: np.array([-3.0, -3.0, -3.0])}}
    folds = [_fold({main.GRNN: grnn1, main.STATIC: hmm1, main.HMM: hmm1},
                   {main.GRNN: pit1, main.STATIC: pit1, main.HMM: pit1}, val=1.0, k=2, seeds=seeds1,
                   n_val=10),
             _fold({main.GRNN: grnn2, main.STATIC: hmm2, main.HMM: hmm2},
                   {main.GRNN: pit2, main.STATIC: pit2, main.HMM: pit2}, val=4.0, k=3, seeds=seeds2,
                   n_val=30)]
    rows = main.summarise_folds(folds, levels=(0.5, 0.95), alpha=0.05)
    g, h = rows[main.GRNN], rows[main.HMM]
    assert g["test_nll"] == pytest.approx(9.0 / 5) and g["test_nll_by_fold"] == pytest.approx([1.5, 2.0])
    assert g["val_nll"] == pytest.approx((1.0 * 10 + 4.0 * 30) / 40) and g["n_components"] == [2, 3]
    diff = np.array(grnn1 + grnn2) - np.array(hmm1 + hmm2)  # 0.5, 0, 1, 0, -1
    assert h["test_nll_minus_grnn"] == pytest.approx(diff.mean())
    assert h["paired_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(5))
    np.testing.assert_allclose(g["coverage_by_dim"][0], [3 / 5, 1 / 5])
    np.testing.assert_allclose(g["coverage_by_dim"][1], [5 / 5, 4 / 5])
    assert g["coverage"] == pytest.approx([0.4, 0.9])
    assert g["pit_band"] == pytest.approx(calibration.ecdf_band(5, 0.05))
    assert g["test_nll_by_seed"] == pytest.approx({"0": 9.0 / 5, "1": 3.0})
    assert g["test_nll_seed_std"] == pytest.approx(np.std([9.0 / 5, 3.0], ddof=1))


def test_verdict_words_follow_the_numbers():
    def row(m, se):
        return {"test_nll": 2.0 + m, "test_nll_minus_grnn": m, "paired_se": se}
    rows = {main.GRNN: {"test_nll": 2.0}, main.SINGLE: row(0.5, 0.1), main.STATIC: row(0.15, 0.1),
            main.HMM: row(-0.3, 0.1)}
    text = main.verdict(rows, 90)
    assert "better, by more than two paired standard errors, than the single-Gaussian RNN" in text
    assert "cannot be told apart from the static GMM (+0.150 ± 0.100)" in text
    assert "worse, by more than two paired standard errors, than the Gaussian HMM (-0.300" in text
    assert "beats every baseline" not in text
    rows[main.STATIC], rows[main.HMM] = row(0.25, 0.1), row(0.3, 0.1)
    assert "It beats every baseline." in main.verdict(rows, 90)
    rows[main.ORACLE] = row(-0.2, 0.05)
    assert "the GRNN is 0.200 ± 0.050 nats/step above the oracle's 1.800" in main.verdict(rows, 90)


def test_rolling_origin_folds_never_train_or_validate_on_their_test_block():
    x = load_geyser()
    folds = rolling_origin_splits("geyser", 3, block=30, window=50)
    tests = [f.test.observed() for f in folds]
    np.testing.assert_array_equal(np.concatenate(tests), x[-90:])  # consecutive, disjoint, the end
    for i, f in enumerate(folds):
        start = len(x) - 30 * (3 - i)
        np.testing.assert_array_equal(f.val.observed(), x[start - 30:start])
        np.testing.assert_array_equal(f.train.observed(), x[:start - 30])
    with pytest.raises(ValueError, match="split by sequence"):
        rolling_origin_splits("storms", 2)
    with pytest.raises(ValueError, match="leave"):
        rolling_origin_splits("geyser", 9, block=30)


def test_hmm_converged_is_false_when_baum_welch_runs_out_of_iterations(switching):
    tr, _ = switching
    short = baselines.fit_hmm(tr, 3, seed=0, n_iter=2)
    assert short.monitor_.converged  # hmmlearn counts running out as converging
    assert not baselines.hmm_converged(short)
    assert baselines.hmm_converged(baselines.fit_hmm(tr, 2, seed=0, n_iter=1000))


@pytest.fixture(scope="module")
def switching():
    proc = default_switching_ar(2)
    tr, _ = sample_switching_ar(proc, seed=0, n_sequences=12, length=20)
    va, _ = sample_switching_ar(proc, seed=1, n_sequences=4, length=20)
    lengths = np.array([20, 13, 7, 1])
    va = Sequences(np.where(np.arange(20)[None, :, None] < lengths[:, None, None], va.x, np.nan),
                   lengths)
    return tr, va


def test_hmm_forward_filter_matches_hmmlearn_score(switching):
    tr, va = switching
    model = baselines.fit_hmm(tr, 3, seed=0, n_iter=20)
    lp = baselines.hmm_log_probs(model, va)
    assert lp.shape == (4, 20) and np.all(lp[~va.mask] == 0)
    np.testing.assert_allclose(lp.sum(), baselines.hmm_score(model, va), rtol=1e-10)
    np.testing.assert_allclose(lp.sum(axis=1)[3], model.score(va.x[3, :1]), rtol=1e-10)
    g = baselines.hmm_predictive(model, va)  # the same densities through the GMM container
    got = np.where(va.mask, np.asarray(gmm.log_prob(g, jnp.asarray(np.nan_to_num(va.x), jnp.float32))), 0)
    np.testing.assert_allclose(got, lp, rtol=1e-4, atol=1e-4)


def test_static_gmm_matches_scikit_learn(switching):
    tr, va = switching
    st = Standardiser.fit(tr)
    tr_z, va_z = st.transform(tr), st.transform(va)
    res = baselines.static_gmm_baseline(tr_z, va_z, log_jacobian=st.log_det, ks=[2])
    # Oracle: scikit-learn's EM, started from the fitted mixture and run to tight convergence,
    # gains almost nothing on the training steps (the fit is at a maximum; the likelihood is
    # flat there, so the parameters may still drift by ~1e-2) and scores validation alike.
    m = res.model
    sk = GaussianMixture(2, tol=1e-10, max_iter=1000, weights_init=np.asarray(gmm.weights(m)),
                         means_init=np.asarray(m.means), precisions_init=np.asarray(gmm.precisions(m)))
    sk.fit(tr_z.observed())
    ours = float(np.mean(np.asarray(gmm.log_prob(m, jnp.asarray(tr_z.observed(), jnp.float32)))))
    assert 0 <= sk.score(tr_z.observed()) - ours < 1e-4
    want = -sk.score(va_z.observed()) + st.log_det
    np.testing.assert_allclose(res.val_nll[2], want, atol=5e-3)
    # Original units: the same number from a mixture fitted to unstandardised data.
    g = res.predictive(va_z)
    assert g.batch_shape == (4, 20)
    np.testing.assert_allclose(res.nll(va_z, st.log_det), res.val_nll[2], rtol=1e-12)
    orig = plots.to_original_units(res.model, st)
    direct = -float(np.mean(np.asarray(gmm.log_prob(orig, jnp.asarray(va.observed(), jnp.float32)))))
    np.testing.assert_allclose(direct, res.val_nll[2], rtol=1e-4)


def test_report_states_when_the_grnn_loses():
    row = {"n_components": [2], "val_nll": 1.0, "coverage": [0.5, 0.8, 0.95], "pit_ks": [0.1],
           "pit_band": 0.2, "test_nll_by_seed": {"0": 2.0}, "val_nll_by_seed": [{"0": 1.0}],
           "val_nll_by_k": [{"2": 1.0}], "converged": [False], "iterations": [200]}
    r = {"dataset": "d", "n_folds": 1, "n_train_steps": [1], "n_train_sequences": [1],
         "n_val_steps": [1], "n_test_steps": 100, "n_test_sequences": 1, "seeds": [0],
         "levels": [0.5, 0.8, 0.95], "alpha": 0.05,
         "models": {main.GRNN: dict(row, test_nll=2.0),
                    main.SINGLE: dict(row, test_nll=2.5, test_nll_minus_grnn=0.5, paired_se=0.1),
                    main.STATIC: dict(row, test_nll=1.5, test_nll_minus_grnn=-0.5, paired_se=0.1),
                    main.HMM: dict(row, test_nll=2.1, test_nll_minus_grnn=0.1, paired_se=0.1)},
         "train_config": {}, "best_step": [1], "figures": {}, "timings_s": {}, "wall_time_s": 1.0}
    text = main.render_report(r)
    assert "worse, by more than two paired standard errors, than the static GMM (-0.500" in text
    assert "cannot be told apart from the Gaussian HMM" in text
    assert "beats" not in text
    assert "converged in every fold: NO (iterations 200)" in text


def test_covariance_types_comparison_smoke(tmp_path, capsys):
    from experiments import covariance_types

    cfg = str(Path(covariance_types.CONFIGS) / "test.py")
    assert covariance_types.main(["--configs", cfg, "--types", "full", "tied", "--out",
                                  str(tmp_path), "--quiet"]) == 0
    (res,) = json.loads((tmp_path / "results.json").read_text())["results"]
    full, tied = res["rows"]["full"], res["rows"]["tied"]
    assert (full["head_outputs"], tied["head_outputs"]) == (2 * (1 + 2 + 3), 2 * (1 + 2) + 3)
    assert len(tied["test_nll"]) == 2 and all(np.isfinite(tied["test_nll"]))
    # The paired difference is the difference of the two best seeds' test NLLs.
    assert tied["vs_full"][0] == pytest.approx(full["best_test_nll"] - tied["best_test_nll"],
                                               abs=1e-6)
    assert "| geyser | tied | 9 |" in capsys.readouterr().out
