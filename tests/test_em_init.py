"""EM initialisation: the untrained model predicts the EM-fitted GMM at every step; bad input
fails before anything is written."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import data, gmm
from grnn_jax import train as T
from grnn_jax.cli import main
from grnn_jax.em.arhmm_em import arhmm_log_likelihood
from grnn_jax.train.em_training.arhmm_choice import arhmm_start, choose_arhmm, start_key
from grnn_jax.train.em_training.em_init import fit_observation_gmm, fit_observation_regression

from dirstate import tree_hash

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("head", ["mdn", "em"])
def test_initial_heldout_nll_equals_the_static_gmm(tmp_path, x64, head):
    ctype = "full"
    proc = data.default_switching_ar(2)
    tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=6, length=20)
    va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=3, length=20)
    cfg = T.TrainConfig(T.ModelConfig(n_features=2, n_components=3, hidden_size=4,
                                      covariance_type=ctype, head=head),
                        num_steps=2, batch_size=3, eval_every=1, em_init=True,
                        objective="ngem", seed=3)
    T.train(cfg, tr, va, tmp_path, progress=False, until_step=0)
    net, params, st, _ = T.load_trained(tmp_path, which="last")
    got = T.evaluate(net, params, va, standardiser=st).nll
    # The oracle: the same EM fit (same key), scored on its own on the held-out steps.
    g = fit_observation_gmm(st.transform(tr), 3, ctype,
                            key=jax.random.fold_in(jax.random.key(3), 1))
    z = jnp.asarray(st.transform(va).observed())
    want = -float(jnp.mean(gmm.log_prob(g, z))) + st.log_det
    assert got == pytest.approx(want, abs=1e-4)
    # Training goes on from there with any objective.
    state, hist = T.train(cfg, tr, va, tmp_path, progress=False)
    assert int(state.step) == 2 and all(np.isfinite(r["val_nll"]) for r in hist
                                        if r["kind"] == "eval")


@pytest.mark.parametrize("ctype", ["diag", "spherical", "tied"])
def test_em_init_params_give_the_gmm_at_every_step(x64, ctype):
    proc = data.default_switching_ar(2)
    tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=4, length=15)
    net = T.ModelConfig(n_features=2, n_components=2, hidden_size=3,
                        covariance_type=ctype).build()
    params = T.em_init_params(net, net.init(jax.random.key(0), tr.x[:1, :1]), tr,
                              key=jax.random.key(1))
    g = fit_observation_gmm(tr, 2, ctype, key=jax.random.key(1))
    got = T.evaluate(net, params, tr).nll
    want = -float(jnp.mean(gmm.log_prob(g, jnp.asarray(tr.observed()))))
    assert got == pytest.approx(want, abs=1e-6)


def test_em_init_needs_as_many_observed_steps_as_components(tmp_path, capsys):
    x = np.zeros((2, 3, 1))
    x[:, 1:] = np.nan
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, lengths=np.array([1, 1]))
    wd = tmp_path / "run"
    code = main(["train", "--data", str(path), "--workdir", str(wd), "--em-init", "-k", "3",
                 "--val-fraction", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--em-init" in err and len(err.strip().splitlines()) == 1, err
    assert not wd.exists()
    # An existing run stays exactly as it was.
    ok = tmp_path / "ok.npz"
    np.savez(ok, x=np.random.default_rng(0).normal(size=(4, 5, 1)))
    assert main(["train", "--data", str(ok), "--workdir", str(wd), "--steps", "1", "-k", "2",
                 "--hidden", "2", "--quiet"]) == 0
    before = tree_hash(wd)
    code = main(["train", "--data", str(path), "--workdir", str(wd), "--em-init", "-k", "3",
                 "--val-fraction", "0", "--restart", "--quiet"])
    assert code == 2 and "--em-init" in capsys.readouterr().err
    assert tree_hash(wd) == before


def test_unknown_objective_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--data", "x.npz", "--workdir", str(tmp_path / "w"), "--objective", "em"])
    err = capsys.readouterr().err
    assert "--objective" in err and "invalid choice" in err
    assert not (tmp_path / "w").exists()
    with pytest.raises(ValueError, match="unknown objective 'em'"):
        T.TrainConfig(T.ModelConfig(n_features=1), objective="em").validate()


@pytest.mark.parametrize("constant", [True, False], ids=["constant", "network"])
def test_filter_head_starts_at_the_baum_welch_ar_hmm(tmp_path, x64, constant):
    proc = data.default_switching_ar(2)
    tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=8, length=25)
    va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=4, length=25)
    cfg = T.TrainConfig(T.ModelConfig(n_features=2, n_components=2, hidden_size=4, head="hmm",
                                      lags=1, constant_transitions=constant),
                        num_steps=2, batch_size=4, eval_every=1, em_init=True, seed=3)
    T.train(cfg, tr, va, tmp_path, progress=False, until_step=0)
    net, params, st, _ = T.load_trained(tmp_path, which="last")
    got = T.evaluate(net, params, va, standardiser=st).nll
    # The oracle: Baum-Welch from the same k-means starts (same key), scored by the exact
    # forward algorithm on the held-out sequences.
    z_tr, z_va = st.transform(tr), st.transform(va)
    fit = arhmm_start(z_tr, 2, 1, covariance_type="full", key=start_key(3))
    head = params["params"]["head"]

    def arrays(s):
        x = jnp.asarray(s.x)
        return x, jnp.asarray(data.lagged(s.x, 1, lengths=s.lengths)), jnp.asarray(s.mask)

    ll = arhmm_log_likelihood(fit.mixture, fit.log_init, fit.log_trans, *arrays(z_va))
    want = -float(ll) / va.n_steps + st.log_det
    # The choice of K and lags scores the same fit (its grid pads K and the lags with unused
    # regimes and zero columns, so it agrees up to rounding).
    choice = choose_arhmm(tr, va, ks=(2,), lags=(1,), seed=3)
    assert choice.val_nll == pytest.approx(want, abs=1e-4)
    # Right after the choice, a start of the chosen size is the very fit it scored.
    again = arhmm_start(z_tr, 2, 1, covariance_type="full", key=start_key(3))
    ll = arhmm_log_likelihood(again.mixture, again.log_init, again.log_trans, *arrays(z_va))
    assert -float(ll) / va.n_steps + st.log_det == pytest.approx(choice.val_nll, rel=1e-12)
    assert got == pytest.approx(want, abs=1e-4)
    np.testing.assert_allclose(jax.nn.log_softmax(head["init_logits"]), fit.log_init, atol=1e-5)
    # Training goes on from there; the start is scored as a model of its own (step 0), so the
    # best checkpoint is never worse on validation than the AR-HMM.
    state, hist = T.train(cfg, tr, va, tmp_path, progress=False)
    evals = [r for r in T.read_metrics(tmp_path) if r["kind"] == "eval"]
    assert int(state.step) == 2 and [r["step"] for r in evals] == [0, 1, 2]
    assert evals[0]["val_nll"] == pytest.approx(want, abs=1e-4)
    assert evals[-1]["best_val_nll"] <= evals[0]["val_nll"]
