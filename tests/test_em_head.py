"""The EM-updated mixture head (``--head em``): stepwise-EM statistics against the batch
E-step and M-step, monotone pure M-steps, recovery of known regimes, the checkpoint, the
``grnn regimes`` / ``evaluate`` / ``sample`` commands and bad input."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import em, gmm, model
from grnn_jax.cli import main
from grnn_jax.data import Sequences, batch_at
from grnn_jax.data.regime_process import default_gaussian_regimes, sample_gaussian_regimes, step_log_probs
from grnn_jax.train import (
    ModelConfig,
    TrainConfig,
    evaluate,
    load_trained,
    read_metrics,
    regime_probabilities,
    train,
)
from grnn_jax.train.em_training.em_state import (
    EM_HEAD_KEY,
    em_head_update,
    initial_params_and_aux,
    model_variables,
)

CTYPES = ("full", "diag", "spherical", "tied")


def _data(seed=0, n=60, d=2, k=3):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)) + rng.integers(0, 3, size=(n, 1)) * 2.0)
    resp = jnp.asarray(rng.dirichlet(np.ones(k), size=n))
    w = jnp.asarray((rng.random(n) > 0.2).astype(np.float32))
    return x, resp, w


@pytest.mark.parametrize("ctype", CTYPES)
@pytest.mark.slow
def test_stats_from_responsibilities_match_e_step_and_m_step(ctype):
    x, resp, w = _data()
    # Oracle 1: the closed-form M-step on the raw responsibilities (two passes).
    s = em.stats_from_responsibilities(x, resp, covariance_type=ctype, weights=w)
    got = em.m_step_from_stats(s, covariance_type=ctype, reg_covar=1e-6)
    want = gmm.m_step(x, resp, covariance_type=ctype, reg_covar=1e-6, weights=w)
    np.testing.assert_allclose(got.means, want.means, atol=1e-4)
    np.testing.assert_allclose(gmm.covariances(got), gmm.covariances(want), atol=1e-4)
    # Oracle 2: the blocked E-step's statistics for one static mixture's responsibilities.
    g = em.m_step_from_stats(s, covariance_type=ctype, reg_covar=1e-3)
    stats, _ = em.e_step(g, x, w)
    mine = em.stats_from_responsibilities(x, gmm.responsibilities(g, x), covariance_type=ctype,
                                          weights=w)
    for a, b in zip(mine, stats):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_masked_rows_may_hold_nan():
    x, resp, w = _data()
    x = x.at[0].set(jnp.nan)
    w = w.at[0].set(0.0)
    s = em.stats_from_responsibilities(x, resp, covariance_type="full", weights=w)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in s)


def test_step_size_schedule_and_bad_settings():
    rho = np.asarray(em.step_size(jnp.arange(200), exponent=0.6, offset=2.0))
    np.testing.assert_allclose(rho, (np.arange(200) + 2.0) ** -0.6, rtol=1e-6)
    assert rho[0] <= 1 and np.all(np.diff(rho) < 0)
    with pytest.raises(ValueError, match="em_step_exponent"):
        TrainConfig(ModelConfig(n_features=1), em_step_exponent=0.5).validate()
    with pytest.raises(ValueError, match="em_step_offset"):
        TrainConfig(ModelConfig(n_features=1), em_step_offset=0.5).validate()


PROC = default_gaussian_regimes()


@functools.lru_cache(maxsize=None)
def _net_and_batch(ctype: str):
    # The shapes of the trained run below, so the seeding's compiled programs are shared.
    seqs, _ = sample_gaussian_regimes(PROC, seed=3, n_sequences=16, length=30)
    lengths = np.where(np.arange(16) % 3 == 0, 30, np.arange(16) + 5)
    seqs = Sequences(seqs.x / 2.0, lengths=lengths)
    cfg = TrainConfig(ModelConfig(n_features=2, n_components=3, hidden_size=12, head="em",
                                  covariance_type=ctype))
    net = cfg.model.build()
    batch = batch_at(seqs, 0, batch_size=16, seed=0)
    params, aux = initial_params_and_aux(cfg, net, batch, key=jax.random.key(0))
    return net, batch, params, aux


@pytest.fixture(scope="module")
def net_and_batch():
    return _net_and_batch("full")


def test_params_hold_no_components(net_and_batch):
    net, batch, params, aux = net_and_batch
    assert set(params) == {"params"}
    assert model.EM_COLLECTION not in params and EM_HEAD_KEY in aux
    means, _ = model.em_components(aux[EM_HEAD_KEY]["components"])
    assert means.shape == (3, 2)


@pytest.mark.parametrize("ctype", ["full", "tied"])
def test_pure_m_steps_never_decrease_the_expected_complete_data_log_likelihood(ctype):
    net, batch, params, aux = _net_and_batch(ctype)
    x = jnp.asarray(batch.x)
    mask = jnp.asarray(np.arange(x.shape[1])[None, :] < batch.lengths[:, None])

    @jax.jit
    def one(aux):
        """(Q before, Q after, log-likelihood before, new aux) of one full M-step: Q is the
        expected complete-data log-likelihood under the responsibilities before it."""
        def q_ll(a, resp):
            g = net.apply(model_variables(params, a), x)
            q = jnp.sum(jnp.where(mask[..., None], resp * gmm.joint_log_prob(g, x), 0.0))
            return q, jnp.sum(jnp.where(mask, gmm.log_prob(g, x), 0.0))

        resp = gmm.responsibilities(net.apply(model_variables(params, aux), x), x)
        q_old, ll = q_ll(aux, resp)
        # rho = 1 at every update (count 0, n0 = 1): the blend keeps only this batch.
        head = dict(aux[EM_HEAD_KEY], count=jnp.zeros((), jnp.int32))
        new = {**aux, EM_HEAD_KEY: em_head_update(net, params, {**aux, EM_HEAD_KEY: head},
                                                  batch, schedule=(1.0, 1.0))}
        q_new, _ = q_ll(new, resp)
        return q_old, q_new, ll, new

    lls = []
    for _ in range(8):
        q_old, q_new, ll, aux = one(aux)
        assert float(q_new) >= float(q_old) - 1e-4 * abs(float(q_old))
        lls.append(float(ll))
    assert all(b >= a - 1e-4 * abs(a) for a, b in zip(lls, lls[1:]))
    assert lls[-1] > lls[0]


# ----------------------------------------------------------------------------- a trained run

ORACLE_MARGIN = 0.08  # nats per step above the process's exact held-out NLL
MEAN_TOL = 0.25  # max abs error of a regime mean (the regimes' stds are 0.55 to 0.8)
COV_TOL = 0.2  # max abs error of a covariance entry


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emhead")
    tr, _ = sample_gaussian_regimes(PROC, seed=0, n_sequences=48, length=30)
    va, _ = sample_gaussian_regimes(PROC, seed=1, n_sequences=32, length=30)
    cfg = TrainConfig(ModelConfig(n_features=2, n_components=3, hidden_size=12, head="em"),
                      num_steps=160, batch_size=16, learning_rate=1e-2, warmup_steps=10,
                      eval_every=80, log_every=40)
    state, _ = train(cfg, tr, va, tmp / "run", progress=False)
    np.savez(tmp / "val.npz", x=va.x)
    return {"tmp": tmp, "workdir": tmp / "run", "val": va, "state": state, "cfg": cfg}


def _match(est, true):
    """Estimated components reordered to the true ones (nearest mean)."""
    d = np.linalg.norm(est[:, None] - true[None], axis=-1)
    return np.argmin(d, axis=0)


def _learned_components(net, variables, st):
    """The trained EM head's means (K, D) and covariances (shaped by type), original units."""
    g = net.apply(variables, np.zeros((1, 1, 2), np.float32))
    g = gmm.GMM(g.logits[0, 0], g.means[0, 0], g.prec_chol[0, 0], g.covariance_type)
    means = st.inverse(np.asarray(g.means, np.float64))
    return means, np.asarray(gmm.covariances(g)) * np.outer(st.scale, st.scale)


@pytest.mark.slow
def test_recovers_regimes_and_nears_the_oracle_nll(run):
    net, variables, st, _ = load_trained(run["workdir"])
    means, cov = _learned_components(net, variables, st)
    order = _match(means, PROC.means)
    assert len(set(order.tolist())) == 3
    np.testing.assert_allclose(means[order], PROC.means, atol=MEAN_TOL)
    np.testing.assert_allclose(cov[order], PROC.covariances, atol=COV_TOL)
    oracle = -step_log_probs(PROC, run["val"]).sum() / run["val"].n_steps
    res = evaluate(net, variables, run["val"], standardiser=st)
    assert res.nll < oracle + ORACLE_MARGIN, (res.nll, oracle)
    # The filtering probabilities pick the true regime of most steps.
    filt, pred, _ = regime_probabilities(net, variables, run["val"], standardiser=st)
    np.testing.assert_allclose(filt.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(pred.sum(-1), 1.0, atol=1e-5)


def test_checkpoint_holds_components_apart_from_params(run):
    state = run["state"]
    assert model.EM_COLLECTION not in state.params
    assert int(state.aux_state[EM_HEAD_KEY]["count"]) == run["cfg"].num_steps
    # Weight decay and the optimiser never touched the components: the optimiser state holds
    # nothing of their shape (the head's only parameters are the logits' kernel and bias).
    head = state.params["params"]["head"]
    assert set(head) == {"logits"}
    evals = [r for r in read_metrics(run["workdir"]) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [80, 160]


def _grnn(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_evaluate_sample_and_regimes_from_the_checkpoint(run, capsys):
    tmp, wd = run["tmp"], run["workdir"]
    code, out, _ = _grnn(["evaluate", "--workdir", wd, "--data", tmp / "val.npz", "--json"], capsys)
    assert code == 0
    net, variables, st, _ = load_trained(wd)
    assert json.loads(out)["nll_per_step"] == pytest.approx(
        evaluate(net, variables, run["val"], standardiser=st).nll, abs=1e-6)
    code, _, _ = _grnn(["sample", "--workdir", wd, "--num", 3, "--steps", 7,
                        "--out", tmp / "s.npz"], capsys)
    assert code == 0
    x = np.load(tmp / "s.npz")["x"]
    assert x.shape == (3, 7, 2) and np.all(np.isfinite(x))
    code, _, _ = _grnn(["regimes", "--workdir", wd, "--data", tmp / "val.npz",
                        "--out", tmp / "r.npz"], capsys)
    assert code == 0
    r = np.load(tmp / "r.npz")
    assert r["filtering"].shape == r["predictive"].shape == (32, 30, 3)
    order = _match(r["means"], PROC.means)
    np.testing.assert_allclose(r["means"][order], PROC.means, atol=MEAN_TOL)
    np.testing.assert_allclose(r["covariances"][order], PROC.covariances, atol=COV_TOL)


def test_bad_input_one_line_nothing_touched(run, capsys, tmp_path):
    np.savez(tmp_path / "d.npz", x=run["val"].x)
    wd = tmp_path / "w"
    code, _, err = _grnn(["train", "--data", tmp_path / "d.npz", "--workdir", wd, "--head", "em",
                          "--set", "model.covariance_type=bogus", "--quiet"], capsys)
    assert code == 2 and "'bogus'" in err and len(err.strip().splitlines()) == 1
    assert not wd.exists()
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path / "d.npz"), "--workdir", str(wd), "--head", "nope"])
    assert "--head" in capsys.readouterr().err and not wd.exists()
    code, _, err = _grnn(["train", "--data", tmp_path / "d.npz", "--workdir", wd,
                          "--hidden-gmm-weight", "0.1", "--quiet"], capsys)
    assert code == 2 and "--hidden-gmm" in err and not wd.exists()
    # grnn regimes on a model without the EM head.
    mdn = tmp_path / "mdn"
    train(TrainConfig(ModelConfig(n_features=2, n_components=2, hidden_size=4), num_steps=1,
                      batch_size=4, eval_every=1), run["val"], None, mdn, progress=False)
    code, _, err = _grnn(["regimes", "--workdir", mdn, "--data", tmp_path / "d.npz",
                          "--out", tmp_path / "r.npz"], capsys)
    assert code == 2 and "--head em" in err and not (tmp_path / "r.npz").exists()


@pytest.mark.slow
def test_resume_of_an_em_head_run_with_a_hidden_gmm_is_exact(tmp_path):
    # EM state (components, their blended statistics, the hidden-state GMM) must resume
    # bit for bit, like the gradient parameters and the optimiser.
    tr, _ = sample_gaussian_regimes(PROC, seed=3, n_sequences=12, length=10)
    cfg = TrainConfig(ModelConfig(n_features=2, n_components=3, hidden_size=4, head="em"),
                      num_steps=6, batch_size=4, learning_rate=1e-2, warmup_steps=0,
                      eval_every=3, log_every=3, hidden_gmm=2)
    whole, _ = train(cfg, tr, tr, tmp_path / "whole", progress=False)
    train(cfg, tr, tr, tmp_path / "split", progress=False, until_step=4)
    resumed, _ = train(None, tr, tr, tmp_path / "split", progress=False)
    assert int(resumed.step) == int(whole.step) == 6
    assert set(whole.aux_state) >= {EM_HEAD_KEY, "hidden_gmm"}
    for a, b in zip(jax.tree.leaves((whole.params, whole.aux_state, whole.opt_state)),
                    jax.tree.leaves((resumed.params, resumed.aux_state, resumed.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tied_em_head_recovers_a_shared_covariance_and_nears_the_oracle(tmp_path):
    # The default regimes with one covariance shared by all three: the tied head is well
    # specified, and its single covariance must match the shared one.
    shared = np.array([[0.45, 0.15], [0.15, 0.35]])
    proc = PROC._replace(covariances=np.stack([shared] * 3))
    tr, _ = sample_gaussian_regimes(proc, seed=0, n_sequences=48, length=30)
    va, _ = sample_gaussian_regimes(proc, seed=1, n_sequences=32, length=30)
    cfg = TrainConfig(ModelConfig(n_features=2, n_components=3, hidden_size=12, head="em",
                                  covariance_type="tied"),
                      num_steps=160, batch_size=16, learning_rate=1e-2, warmup_steps=10,
                      eval_every=80, log_every=40)
    train(cfg, tr, va, tmp_path, progress=False)
    net, variables, st, _ = load_trained(tmp_path)
    means, cov = _learned_components(net, variables, st)
    assert net.covariance_type == "tied" and cov.shape == (2, 2)
    order = _match(means, proc.means)
    assert len(set(order.tolist())) == 3
    np.testing.assert_allclose(means[order], proc.means, atol=MEAN_TOL)
    np.testing.assert_allclose(cov, shared, atol=COV_TOL)
    oracle = -step_log_probs(proc, va).sum() / va.n_steps
    assert evaluate(net, variables, va, standardiser=st).nll < oracle + ORACLE_MARGIN
