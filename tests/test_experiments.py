"""The main experiment end to end with the tiny config, and its baselines against their oracles."""

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from experiments import baselines, main, plots
from grnn_jax import gmm
from grnn_jax.training import load_config_file
from grnn_jax.data import Sequences, Standardiser, default_switching_ar, sample_switching_ar

ROOT = Path(__file__).resolve().parents[1]


def test_main_job_end_to_end(tmp_path):
    cfg = load_config_file(ROOT / "experiments" / "configs" / "test.py")
    cfg["experiment"]["max_train_sequences"] = 4
    res = main.run(cfg, tmp_path, progress=False)
    report = (tmp_path / "report.md").read_text()
    ensemble = "GRNN ensemble of 2 seeds"
    assert set(res["models"]) == {main.GRNN, ensemble, main.SINGLE, main.STATIC, main.HMM}
    by_seed = res["models"][main.GRNN]["val_nll_by_seed"]
    assert res["models"][main.GRNN]["val_nll"] == min(by_seed.values()) and len(by_seed) == 2
    assert res["models"][ensemble]["n_components"] == 4
    for name, row in res["models"].items():
        assert math.isfinite(row["test_nll"]) and math.isfinite(row["val_nll"]), name
        assert len(row["coverage"]) == 3 and all(0 <= c <= 1 for c in row["coverage"])
        assert f"| {name} | {row['n_components']} |" in report
        assert f"**{row['test_nll']:.3f}**" in report
        # The paired difference is the difference of the two NLLs (the same test steps).
        np.testing.assert_allclose(row["test_nll_minus_grnn"],
                                   row["test_nll"] - res["models"][main.GRNN]["test_nll"], atol=1e-4)
        assert row["paired_se"] >= 0
    assert res["n_train_sequences"] == 4
    for fname in res["figures"].values():
        assert (tmp_path / fname).stat().st_size > 1000
        assert f"]({fname})" in report
    assert set(res["figures"]) == {"learning_curves", "next_step_density", "samples", "pit"}
    assert json.loads((tmp_path / "results.json").read_text())["dataset"] == "geyser"


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
    res = baselines.static_gmm_baseline(tr_z, va_z, log_jacobian=st.log_jacobian, ks=[2])
    # Oracle: scikit-learn's EM, started from the fitted mixture and run to tight convergence,
    # gains almost nothing on the training steps (the fit is at a maximum; the likelihood is
    # flat there, so the parameters may still drift by ~1e-2) and scores validation alike.
    m = res.model
    sk = GaussianMixture(2, tol=1e-10, max_iter=1000, weights_init=np.asarray(gmm.weights(m)),
                         means_init=np.asarray(m.means), precisions_init=np.asarray(gmm.precisions(m)))
    sk.fit(tr_z.observed())
    ours = float(np.mean(np.asarray(gmm.log_prob(m, jnp.asarray(tr_z.observed(), jnp.float32)))))
    assert 0 <= sk.score(tr_z.observed()) - ours < 1e-4
    want = -sk.score(va_z.observed()) + st.log_jacobian
    np.testing.assert_allclose(res.val_nll[2], want, atol=5e-3)
    # Original units: the same number from a mixture fitted to unstandardised data.
    g = res.predictive(va_z)
    assert g.batch_shape == (4, 20)
    np.testing.assert_allclose(res.nll(va_z, st.log_jacobian), res.val_nll[2], rtol=1e-12)
    orig = plots.to_original_units(res.model, st.mean, st.std)
    direct = -float(np.mean(np.asarray(gmm.log_prob(orig, jnp.asarray(va.observed(), jnp.float32)))))
    np.testing.assert_allclose(direct, res.val_nll[2], rtol=1e-4)


def test_report_states_when_the_grnn_loses():
    row = {"n_components": 2, "val_nll": 1.0, "coverage": [0.5, 0.8, 0.95]}
    row = dict(row, test_nll_minus_grnn=0.0, paired_se=0.1)
    r = {"dataset": "d", "n_train_steps": 1, "n_train_sequences": 1, "n_val_steps": 1,
         "n_test_steps": 1, "n_test_sequences": 1, "levels": [0.5, 0.8, 0.95],
         "models": {main.GRNN: dict(row, test_nll=2.0), main.SINGLE: dict(row, test_nll=2.5),
                    main.STATIC: dict(row, test_nll=1.5, val_nll_by_k={"2": 1.0}),
                    main.HMM: dict(row, test_nll=2.2, val_nll_by_k={"2": 1.0})},
         "train_config": {}, "best_step": 1, "figures": {}, "timings_s": {}, "wall_time_s": 1.0}
    text = main.render_report(r)
    assert "does not beat the static GMM" in text and "static GMM -0.500" in text
