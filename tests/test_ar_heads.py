"""Autoregressive components (``lags``) and the filtering head (``head="hmm"``).

Oracles: dynamax's ``LinearAutoregressiveHMM.marginal_log_prob`` and smoother, hmmlearn's
``GaussianHMM.score`` (p = 0), at shared parameters in float64; the one-step function against
the whole-sequence pass; EM updates that never lower the likelihood.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import gmm, model
from grnn_jax.data import Batch, lagged
from grnn_jax.train import ModelConfig, TrainConfig
from grnn_jax.train.em_training import em_state

pytestmark = pytest.mark.slow

K, D = 3, 2


def _filter_variables(net, x, log_init, log_trans, biases, coef, covs):
    """Variables of a constant-transition FilterGRNN holding the given AR-HMM."""
    v = net.init(jax.random.key(0), x)
    v = jax.tree.map(lambda a: a, v)  # a copy we may change
    head = v["params"]["head"]
    head["init_logits"] = jnp.asarray(log_init)
    head["trans_logits"] = jnp.asarray(log_trans).reshape(-1)
    prec = gmm.from_covariances(jnp.zeros(K), jnp.asarray(biases), jnp.asarray(covs), "full")
    em = {"means": jnp.asarray(biases), "prec_chol": prec.prec_chol}
    if coef is not None:
        em["ar_coef"] = jnp.asarray(coef)
    return {**v, "em": {"head": em}}


def _random_arhmm(rng, lags):
    trans = rng.dirichlet(np.full(K, 2.0), size=K) + np.eye(K) * 2
    trans /= trans.sum(1, keepdims=True)
    init = rng.dirichlet(np.ones(K))
    biases = rng.normal(size=(K, D))
    coef = 0.3 * rng.normal(size=(K, D, D * lags)) if lags else None
    a = rng.normal(size=(K, D, D))
    covs = a @ np.swapaxes(a, 1, 2) * 0.3 + np.eye(D) * 0.2
    return init, trans, biases, coef, covs


@pytest.mark.parametrize("lags", [1, 2])
def test_filter_head_equals_dynamax_linear_autoregressive_hmm(x64, lags):
    from dynamax.hidden_markov_model import LinearAutoregressiveHMM

    rng = np.random.default_rng(lags)
    init, trans, biases, coef, covs = _random_arhmm(rng, lags)
    x = rng.normal(size=(1, 14, D))
    net = model.FilterGRNN(n_features=D, n_components=K, hidden_size=4, cell="gru", lags=lags,
                           constant_transitions=True, dtype=jnp.float64)
    v = _filter_variables(net, x, np.log(init), np.log(trans), biases, coef, covs)
    ours = float(model.sequence_log_prob(net, v, x)[0])

    hmm = LinearAutoregressiveHMM(K, D, num_lags=lags)
    params, _ = hmm.initialize(jax.random.key(1), initial_probs=jnp.asarray(init),
                               transition_matrix=jnp.asarray(trans), emission_weights=jnp.asarray(coef),
                               emission_biases=jnp.asarray(biases), emission_covariances=jnp.asarray(covs))
    emissions = jnp.asarray(x[0])
    inputs = hmm.compute_inputs(emissions)
    np.testing.assert_allclose(np.asarray(inputs), lagged(x, lags)[0], atol=1e-12)
    theirs = float(hmm.marginal_log_prob(params, emissions, inputs=inputs))
    assert ours == pytest.approx(theirs, rel=1e-5)

    # The EM E-step's weights are dynamax's smoothed posteriors.
    post = em_state._responsibilities(net, v, jnp.asarray(x), None, jnp.ones((1, 14), bool))
    smoothed = hmm.smoother(params, emissions, inputs=inputs).smoothed_probs
    np.testing.assert_allclose(np.asarray(post[0]), np.asarray(smoothed), atol=1e-6)


def test_filter_head_without_lags_equals_hmmlearn(x64):
    from hmmlearn.hmm import GaussianHMM

    rng = np.random.default_rng(0)
    init, trans, biases, _, covs = _random_arhmm(rng, 0)
    x = rng.normal(size=(1, 11, D))
    net = model.FilterGRNN(n_features=D, n_components=K, hidden_size=4, cell="gru",
                           constant_transitions=True, dtype=jnp.float64)
    v = _filter_variables(net, x, np.log(init), np.log(trans), biases, None, covs)
    hmm = GaussianHMM(K, covariance_type="full", init_params="", params="")
    hmm.startprob_, hmm.transmat_, hmm.means_, hmm.covars_ = init, trans, biases, covs
    assert float(model.sequence_log_prob(net, v, x)[0]) == pytest.approx(hmm.score(x[0]), rel=1e-6)


NETS = {
    "mdn lags 2": lambda: model.GRNN(n_features=D, n_components=K, hidden_size=6, cell="gru", lags=2),
    "em lags 1": lambda: model.EMGRNN(n_features=D, n_components=K, hidden_size=6, lags=1),
    "hmm lags 1": lambda: model.FilterGRNN(n_features=D, n_components=K, hidden_size=6, lags=1),
    "hmm constant": lambda: model.FilterGRNN(n_features=D, n_components=K, hidden_size=6,
                                             constant_transitions=True),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_one_step_function_equals_the_sequence_pass(name):
    net = NETS[name]()
    x = jax.random.normal(jax.random.key(1), (3, 6, D))
    v = net.init(jax.random.key(0), x)
    v = jax.tree.map(lambda a: a + 0.2 * jax.random.normal(jax.random.key(2), a.shape, a.dtype), v)
    whole = model.step_log_probs(net, v, x)
    carry, x_prev, steps = net.apply(v, (3,), method=net.initial_carry), jnp.zeros((3, D)), []
    for t in range(6):
        carry, g = net.apply(v, carry, x_prev, method=model.GRNN.step)
        steps.append(gmm.log_prob(g, x[:, t]))
        x_prev = x[:, t]
    np.testing.assert_allclose(np.stack(steps, 1), whole, atol=2e-5)
    # Priming the generator reads the prefix the same way.
    out = model.forecast(jax.random.key(3), net, v, x[0, :4], 2, n_paths=5)
    assert out["paths"].shape == (5, 2, D) and np.isfinite(out["paths"]).all()


def test_zero_lags_keep_todays_parameters_and_zero_slopes_change_nothing():
    x = jax.random.normal(jax.random.key(1), (2, 5, D))
    plain = model.GRNN(n_features=D, n_components=K, hidden_size=6)
    v0 = plain.init(jax.random.key(0), x)
    assert "ar_coef" not in v0["params"]["head"]
    lagged_net = plain.clone(lags=1)
    v1 = lagged_net.init(jax.random.key(0), x)
    assert float(jnp.abs(v1["params"]["head"]["ar_coef"]).max()) == 0.0
    np.testing.assert_array_equal(model.step_log_probs(plain, v0, x),
                                  model.step_log_probs(lagged_net, v1, x))


def _batch(seed=0, s=6, t=12):
    x = jax.random.normal(jax.random.key(seed), (s, t, D))
    return Batch(x, jnp.full((s,), t), None)


@pytest.mark.parametrize("head, lags", [("hmm", 1), ("hmm", 0), ("em", 1)])
def test_an_exact_em_update_never_lowers_the_likelihood(head, lags):
    cfg = TrainConfig(ModelConfig(n_features=D, n_components=K, hidden_size=6, head=head, lags=lags,
                                  constant_transitions=head == "hmm"))
    net, batch = cfg.model.build(), _batch()
    params, aux = em_state.initial_params_and_aux(cfg, net, batch, key=jax.random.key(0))
    # Step size 1 at the first update: the new components are the M-step of this batch alone.
    update = em_state.make_aux_update(head, 0, 1.0, 1.0)
    before = model.sequence_log_prob(net, em_state.model_variables(params, aux), batch.x).sum()
    for _ in range(3):
        aux = update(net, params, aux, batch)
        after = model.sequence_log_prob(net, em_state.model_variables(params, aux), batch.x).sum()
        assert float(after) >= float(before) - 1e-3
        before = after
        aux = dict(aux, em_head=dict(aux["em_head"], count=jnp.zeros((), jnp.int32)))


@pytest.mark.parametrize("head, lags", [("hmm", 1), ("em", 2), ("mdn", 1)])
def test_resume_with_lags_is_exact(tmp_path, head, lags):
    from grnn_jax.train import train

    tr, _ = sample_switching_ar(default_switching_ar(2), seed=3, n_sequences=12, length=10)
    cfg = TrainConfig(ModelConfig(n_features=2, n_components=2, hidden_size=4, head=head, lags=lags),
                      num_steps=6, batch_size=4, learning_rate=1e-2, warmup_steps=0,
                      eval_every=3, log_every=3)
    whole, _ = train(cfg, tr, tr, tmp_path / "whole", progress=False)
    train(cfg, tr, tr, tmp_path / "split", progress=False, until_step=4)
    resumed, _ = train(None, tr, tr, tmp_path / "split", progress=False)
    assert int(resumed.step) == int(whole.step) == 6
    for a, b in zip(jax.tree.leaves((whole.params, whole.aux_state, whole.opt_state)),
                    jax.tree.leaves((resumed.params, resumed.aux_state, resumed.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("bad, message", [
    (dict(lags=-1), "lags"),
    (dict(constant_transitions=True), "needs --head hmm"),
])
def test_bad_head_settings_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(ModelConfig(n_features=D, **bad)).validate()
    with pytest.raises(ValueError, match="--head hmm"):
        TrainConfig(ModelConfig(n_features=D, head="hmm"), objective="gem").validate()


# ----------------------------------------------------------------------------- command line

from pathlib import Path  # noqa: E402

from grnn_jax.cli import main  # noqa: E402
from grnn_jax.data import default_switching_ar, sample_switching_ar  # noqa: E402

from dirstate import tree_hash  # noqa: E402

TEST_CONFIG = str(Path(__file__).resolve().parents[1] / "experiments" / "configs" / "test.py")
TINY = ["--config", TEST_CONFIG, "--set", "num_steps=3", "--set", "batch_size=4", "--quiet"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arheads")
    seqs, _ = sample_switching_ar(default_switching_ar(2), seed=0, n_sequences=10, length=12)
    seqs.save(tmp / "x.npz")
    return tmp / "x.npz"


def _grnn(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("flags", [["--head", "hmm", "--lags", "1", "--em-init"],
                                   ["--head", "em", "--lags", "2"],
                                   ["--head", "hmm", "--constant-transitions"]])
def test_train_evaluate_sample_regimes_resume(npz, tmp_path, capsys, flags):
    wd = tmp_path / "run"
    code, _, err = _grnn(capsys, "train", "--data", npz, "--workdir", wd, *flags, *TINY)
    assert code == 0, err
    code, out, _ = _grnn(capsys, "evaluate", "--data", npz, "--workdir", wd, "--json")
    assert code == 0 and np.isfinite(json.loads(out)["nll_per_step"])
    code, _, err = _grnn(capsys, "sample", "--workdir", wd, "--num", 3, "--steps", 4,
                         "--out", tmp_path / "s.npz")
    assert code == 0, err
    code, _, err = _grnn(capsys, "regimes", "--workdir", wd, "--data", npz, "--out", tmp_path / "r.npz")
    assert code == 0, err
    r = np.load(tmp_path / "r.npz")
    np.testing.assert_allclose(r["smoothed"].sum(-1), 1.0, rtol=1e-5)
    assert ("coefficients" in r) == ("--lags" in flags)


def test_population_of_filtering_heads(npz, tmp_path, capsys):
    code, _, err = _grnn(capsys, "train", "--data", npz, "--workdir", tmp_path / "pop", "--head", "hmm",
                         "--lags", "1", "--population", "2", *TINY)
    assert code == 0, err
    assert (tmp_path / "pop" / "population.json").exists()


@pytest.mark.parametrize("flags, message", [
    (["--lags", "-1"], "--lags"),
    (["--lags", "12"], "--lags 12"),
    (["--constant-transitions"], "--head hmm"),
    (["--head", "hmm", "--objective", "gem"], "--head hmm"),
])
def test_bad_head_flags_one_line_nothing_touched(npz, tmp_path, capsys, flags, message):
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "keep.txt").write_text("mine")
    before = tree_hash(wd)
    code, out, err = _grnn(capsys, "train", "--data", npz, "--workdir", wd, *flags, *TINY)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert tree_hash(wd) == before


def test_lags_need_two_consecutive_observed_steps(tmp_path, capsys):
    np.savez(tmp_path / "one.npz", x=np.random.default_rng(0).normal(size=(12, 1, 2)))
    code, _, err = _grnn(capsys, "train", "--data", tmp_path / "one.npz", "--workdir",
                         tmp_path / "run", "--lags", "1", *TINY)
    assert code == 2 and "--lags 1" in err, err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_race_keeps_the_best_candidate_on_validation(npz, tmp_path, capsys):
    wd = tmp_path / "race"
    code, out, err = _grnn(capsys, "train", "--data", npz, "--workdir", wd, "--race", "--json",
                           *TINY)
    assert code == 0, err
    report, saved = json.loads(out), json.loads((wd / "race.json").read_text())
    rows = {r["name"]: r for r in saved["candidates"]}
    assert list(rows) == ["default", "arhmm"]
    assert (rows["default"]["head"], rows["default"]["lags"]) == ("mdn", 0)
    # The filtering head of the AR-HMM that Baum-Welch fits chose on validation, started there.
    choice = saved["arhmm_choice"]
    grid = {(r["n_components"], r["lags"]): r["val_nll"] for r in choice["table"]}
    assert set(grid) == {(k, p) for k in (2, 4, 8, 12) for p in (1, 2)}
    assert choice["val_nll"] == min(grid.values()) == grid[choice["n_components"], choice["lags"]]
    arhmm = rows["arhmm"]
    assert (arhmm["head"], arhmm["n_components"], arhmm["lags"], arhmm["em_init"]) == (
        "hmm", choice["n_components"], choice["lags"], True)
    records = [json.loads(line) for line in (wd / "race" / "arhmm" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["kind"] == "eval")  # the start, scored at step 0
    assert first["step"] == 0 and first["val_nll"] == pytest.approx(choice["val_nll"], abs=2e-3)
    assert saved["rounds"] == [1.0] and all(r["rounds"] == 1 for r in rows.values())
    assert saved["winner"] == saved["ranking"][-1][0]
    assert [r["name"] for r in rows.values() if r["won"]] == [saved["winner"]]
    # Each round's better half (rounded up) of its ranking goes on; a candidate ranked ahead of
    # the round's lowest-NLL one is earlier in the list and within the margin of it.
    order = list(rows)
    for r, ranked in enumerate(saved["ranking"]):
        ran = {n for n, v in rows.items() if v["val_nll"][r] is not None}
        assert set(ranked) == ran
        (best,) = [n for n in ran if rows[n]["z"][r] is None]  # the highest validation log-lik
        assert rows[best]["val_nll"][r] <= min(rows[n]["val_nll"][r] for n in ran) + 1e-5
        for n in ranked[: ranked.index(best)]:
            assert order.index(n) < order.index(best) and rows[n]["z"][r] <= saved["margin_z"]
        if r + 1 < len(saved["ranking"]):
            assert set(saved["ranking"][r + 1]) == set(ranked[: (len(ranked) + 1) // 2])
    head = json.loads((wd / "config.json").read_text())["train_config"]["model"]
    assert (head["head"], head["lags"]) == (rows[saved["winner"]]["head"], rows[saved["winner"]]["lags"])
    assert report["race"] == saved["candidates"]
    code, out, _ = _grnn(capsys, "evaluate", "--data", npz, "--workdir", wd, "--json")
    assert code == 0
    code, _, err = _grnn(capsys, "train", "--data", npz, "--workdir", tmp_path / "r2", "--race",
                         "--head", "mdn", *TINY)
    assert code == 2 and "--race" in err and not (tmp_path / "r2").exists()
