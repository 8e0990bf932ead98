"""Population training: members equal independent runs, per-member early stopping and best
parameters, the written run, the ensemble mixture, and the command line."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from grnn_jax import data, gmm, model
from grnn_jax.cli import main
from grnn_jax._util.cpu_devices import available_cores
from grnn_jax.train import (
    ModelConfig,
    TrainConfig,
    evaluate,
    load_train_state,
    load_trained,
    read_metrics,
    train,
)
from grnn_jax.train.populations.ensemble import ensemble_gmm, evaluate_ensemble, load_ensemble
from grnn_jax.train.populations.population import (
    Members,
    default_members,
    evaluate_population,
    init_population,
    population_batch,
    population_program,
    train_population,
)

pytestmark = pytest.mark.slow

CFG = TrainConfig(ModelConfig(n_features=2, n_components=2, hidden_size=6), num_steps=6,
                  batch_size=4, eval_every=2, warmup_steps=2, log_every=2)
MEMBERS = Members(seeds=(3, 4, 5), learning_rates=(1e-2, 3e-3, 3e-2),
                  weight_decays=(0.0, 1e-2, 1e-4))


@pytest.fixture(scope="module")
def splits():
    proc = data.default_switching_ar(2)
    tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=10, length=7)
    va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=4, length=7)
    return tr, va


def _population_run(cfg, splits, tmp_path_factory, name):
    tr, va = splits
    wd = tmp_path_factory.mktemp(name)
    return train_population(cfg, tr, va, wd, members=MEMBERS, ensemble=2, progress=False), wd


@pytest.fixture(scope="module")
def pop_run(splits, tmp_path_factory):
    return _population_run(CFG, splits, tmp_path_factory, "pop")


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_member_equals_independent_run(splits, pop_run, tmp_path):
    i = 2  # not the first: its seed, learning rate and weight decay all differ from the config
    tr, va = splits
    res, _ = pop_run
    state, _ = train(MEMBERS.config(CFG, i), tr, None, tmp_path, progress=False)
    jax.tree.map(_close, jax.tree.map(lambda a: a[i], res.state.params), state.params)
    assert int(res.state.step[i]) == int(state.step) == CFG.num_steps


def test_best_member_and_records(splits, pop_run):
    tr, va = splits
    res, wd = pop_run
    net = CFG.model.build()
    nll = evaluate_population(net, res.best_params, va, standardiser=data.Standardiser.fit(tr))
    for r, v in zip(res.rows, nll):
        # Each member's best parameters score what its record says.
        assert r["best_val_nll"] == pytest.approx(float(v), rel=1e-5, abs=1e-5)
    assert res.best == int(np.argmin(nll))
    # The run directory holds the best member, readable as a single run.
    net, params, st, config = load_trained(wd)
    assert config == MEMBERS.config(CFG, res.best)
    assert evaluate(net, params, va, standardiser=st).nll == pytest.approx(float(nll[res.best]),
                                                                           rel=1e-5)
    record = json.loads((wd / "population.json").read_text())
    assert record["best_member"] == res.best and len(record["members"]) == 3


def test_ensemble_is_member_average(splits, pop_run):
    tr, va = splits
    res, wd = pop_run
    net, params, st, record = load_ensemble(wd)
    top = record["ensemble"]["members"]
    assert len(top) == 2 and res.best in top
    z = st.transform(va)
    x = jnp.asarray(z.x, jnp.float32)
    # Oracle: log of the average of the members' densities, step by step.
    per = np.stack([np.asarray(model.step_log_probs(net, jax.tree.map(lambda a: a[m], params), x))
                    for m in range(2)])
    want = logsumexp(per, axis=0) - np.log(2)
    got = np.asarray(gmm.log_prob(ensemble_gmm(net, params, x), x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    mask = np.asarray(model.mask_from_lengths(z.lengths, z.x.shape[1]))
    nll = -want[mask].sum() / mask.sum() + st.log_det
    assert record["ensemble"]["val_nll"] == pytest.approx(nll, rel=1e-5)


def test_frozen_member_does_not_change_and_early_stop(splits):
    tr, va = splits
    net, tx, step = population_program(CFG)  # the program pop_run compiled, also for P = 3
    b = population_batch(tr, 0, MEMBERS.seeds, batch_size=CFG.batch_size)
    s0 = init_population(net, tx, b, MEMBERS)
    s1 = s0
    for _ in range(2):  # the warm-up's first learning rate is 0
        s1, _ = step(s1, b, np.array([False, True, True]))
    jax.tree.map(lambda a, c: np.testing.assert_array_equal(a[0], c[0]), s1, s0)
    assert any(not np.allclose(a[1], c[1]) for a, c in zip(jax.tree.leaves(s1.params),
                                                           jax.tree.leaves(s0.params)))
    # A learning rate far too high makes a member's validation NLL worse at once; with
    # patience 1 it stops at its second evaluation while the other goes on.
    cfg = CFG.replace(eval_every=1, patience=1)
    res = train_population(cfg, tr, va, None, progress=False,
                           members=Members((0, 0, 0), (30.0, 1e-3, 1e-3), (0.0, 0.0, 0.0)))
    assert res.rows[0]["stopped_early"] and res.rows[0]["steps"] < cfg.num_steps
    assert res.rows[1]["steps"] > res.rows[0]["steps"]


def test_default_members_and_bad_input(splits):
    tr, va = splits
    m = default_members(CFG.replace(learning_rate=1e-3, seed=7), 4)
    assert m.seeds == (7, 8, 9, 10)
    assert m.learning_rates[0] == pytest.approx(5e-4) and m.learning_rates[-1] == pytest.approx(2e-3)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="--population must be a positive integer"):
            default_members(CFG, bad)
    with pytest.raises(ValueError, match="learning rate"):
        train_population(CFG, tr, va, None, members=Members((0,), (-1.0,), (0.0,)))


def _grnn(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_population(splits, tmp_path, capsys):
    tr, _ = splits
    path = tmp_path / "x.npz"
    np.savez(path, x=tr.x, lengths=tr.lengths)
    wd = tmp_path / "run"
    code, _, err = _grnn(capsys, "train", "--data", path, "--workdir", wd, "--population", "0")
    assert code == 2 and not wd.exists()
    assert err.strip() == "grnn train: error: --population must be a positive integer; got 0"
    # The settings of CFG, so that the step compiled for pop_run serves this run too.
    code, out, err = _grnn(capsys, "train", "--data", path, "--workdir", wd, "--population", "3",
                           "--ensemble", "2", "--steps", "6", "--hidden", "6", "-k", "2",
                           "--batch-size", "4", "--set", "warmup_steps=2", "--set",
                           "eval_every=2", "--json")
    assert code == 0, err
    out = json.loads(out)
    assert len(out["members"]) == 3 and len(out["ensemble"]["members"]) == 2
    assert out["best_member"] in out["ensemble"]["members"]
    code, out, err = _grnn(capsys, "evaluate", "--workdir", wd, "--data", path, "--json")
    assert code == 0, err
    assert np.isfinite(json.loads(out)["nll_per_step"])


def test_cli_population_over_host_devices(splits, tmp_path, capsys):
    """A fresh ``grnn`` process (one host device, as a user has) splits the members over
    gcd(P, cores) host devices by itself; they train as on one device (``--host-devices 1``,
    in this process)."""
    from xla_env import one_device_xla_flags

    tr, _ = splits
    path = tmp_path / "x.npz"
    np.savez(path, x=tr.x, lengths=tr.lengths)
    args = ["train", "--data", str(path), "--population", "2", "--steps", "4", "--hidden", "4",
            "-k", "2", "--batch-size", "4", "--set", "warmup_steps=1", "--set", "eval_every=2",
            "--json"]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=one_device_xla_flags(),
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # Trained, then read back by `grnn evaluate` in another one-device process, as a user does
    # (a checkpoint that recorded the training devices' layout would not restore there).
    def grnn(*argv):
        proc = subprocess.run([sys.executable, "-m", "grnn_jax.cli", *argv], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    auto = grnn(*args, "--workdir", str(tmp_path / "auto"))
    assert auto["devices"] == math.gcd(2, available_cores())
    evaluated = grnn("evaluate", "--workdir", str(tmp_path / "auto"), "--data", str(path), "--json")
    assert np.isfinite(evaluated["nll_per_step"])
    code, out, err = _grnn(capsys, *args, "--workdir", tmp_path / "one", "--host-devices", "1")
    assert code == 0, err
    one = json.loads(out)
    assert one["devices"] == 1
    np.testing.assert_allclose([m["best_val_nll"] for m in auto["members"]],
                               [m["best_val_nll"] for m in one["members"]], rtol=1e-5)


def test_cli_population_ctrl_c(splits, tmp_path, capsys, monkeypatch):
    import grnn_jax.cli.train_cmd as cli_train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "train_population", interrupted)
    tr, _ = splits
    path = tmp_path / "x.npz"
    np.savez(path, x=tr.x, lengths=tr.lengths)
    code, _, err = _grnn(capsys, "train", "--data", path, "--workdir", tmp_path / "run",
                         "--population", "2", "--hidden", "4")
    assert code == 130 and not (tmp_path / "run").exists()
    assert err.strip().startswith("grnn train: interrupted; a population run writes its work dir")


@pytest.mark.parametrize("flags, message", [
    (("--host-devices", "2"), "--host-devices applies to --population P"),
    (("--population", "4", "--host-devices", "0"), "--host-devices must be a positive integer; got 0"),
    (("--population", "4", "--host-devices", "3"), "--host-devices 3 must divide --population 4"),
    # This process's JAX started with 8 host devices (conftest.py).
    (("--population", "16", "--host-devices", "16"), "--host-devices 16: JAX has started with 8"),
])
def test_cli_host_devices_bad_input(splits, tmp_path, capsys, flags, message):
    tr, _ = splits
    path = tmp_path / "x.npz"
    np.savez(path, x=tr.x, lengths=tr.lengths)
    wd = tmp_path / "run"
    code, _, err = _grnn(capsys, "train", "--data", path, "--workdir", wd, "--hidden", "4",
                         "--batch-size", "4", *flags)
    assert code == 2 and not wd.exists()
    assert err.startswith(f"grnn train: error: {message}"), err


# A run with both kinds of EM state (an EM head and a hidden-state GMM, stepwise EM in
# aux_state), the hidden-state regulariser, the natural-gradient EM objective and EM
# initialisation: each member's head starts from EM, its hidden-state GMM from its own first
# batch, as its single run's do.
EM_CFG = CFG.replace(model={"head": "em"}, hidden_gmm=2, hidden_gmm_weight=0.1,
                     objective="ngem", em_init=True)


def _close_state(a, b):
    """Parameters and aux state equal to float tolerance. The hidden-state GMM's precision
    Cholesky factors are compared more loosely: a few dozen states in 6 dimensions give a
    nearly singular covariance, whose inverse factor amplifies float32 round-off (up to 1.0e-3
    relative measured, with the tests' compile flags; under x64 they agree to 1e-7). The
    statistics they are computed from are compared at the tight tolerance."""
    def check(path, x, y):
        key = jax.tree_util.keystr(path)
        loose = "hidden_gmm" in key and "prec_chol" in key
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=3e-3 if loose else 2e-5,
                                   atol=2e-6, err_msg=key)

    jax.tree_util.tree_map_with_path(check, a, b)


def _at(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


@pytest.fixture(scope="module")
def em_pop(splits, tmp_path_factory):
    return _population_run(EM_CFG, splits, tmp_path_factory, "empop")


def test_em_state_member_equals_independent_run(splits, em_pop, tmp_path):
    # Member 2's EM head and hidden-state GMM are seeded on its own first batch and updated on
    # its own batches: its last and best states are those of its single run.
    tr, va = splits
    res, _ = em_pop
    i = 2
    state, _ = train(MEMBERS.config(EM_CFG, i), tr, va, tmp_path, progress=False)
    _close_state((_at(res.state.params, i), _at(res.state.aux_state, i)),
                 (state.params, state.aux_state))
    _, best, _, _ = load_train_state(tmp_path, which="best")
    _close_state((_at(res.best_params, i), _at(res.best_aux_state, i)),
                 (best.params, best.aux_state))
    assert int(best.aux_state["em_head"]["count"]) == res.rows[i]["best_step"]


def test_em_state_written_run_ensemble_and_frozen_member(splits, em_pop, capsys, tmp_path):
    tr, va = splits
    res, wd = em_pop
    b = res.best
    # The kept member's best checkpoint holds its EM state at its best step; the run's
    # evaluation records carry its hidden-state GMM's, as a single run's do.
    net, best, st, config = load_train_state(wd, which="best")
    assert config == MEMBERS.config(EM_CFG, b)
    _close_state((best.params, best.aux_state),
                 (_at(res.best_params, b), _at(res.best_aux_state, b)))
    evals = [m for m in read_metrics(wd) if m["kind"] == "eval"]
    # The EM start (step 0) is scored too, as a single run's is.
    assert [m["step"] for m in evals] == [0, 2, 4, 6]
    assert all(np.isfinite(m["hidden_gmm_log_lik"]) for m in evals)
    path = tmp_path / "va.npz"
    np.savez(path, x=va.x, lengths=va.lengths)
    code, out, err = _grnn(capsys, "evaluate", "--workdir", wd, "--data", path, "--json")
    assert code == 0, err
    assert json.loads(out)["nll_per_step"] == pytest.approx(res.rows[b]["best_val_nll"], rel=1e-5)
    # The ensemble holds each member's global components.
    net, params, st, record = load_ensemble(wd)
    assert "em" in params
    assert evaluate_ensemble(net, params, va, standardiser=st) == pytest.approx(
        record["ensemble"]["val_nll"], rel=1e-5)
    # A frozen member's state (EM state included) does not move; an active one's does.
    _, _, step = population_program(EM_CFG)
    batch = population_batch(st.transform(tr), 6, MEMBERS.seeds, batch_size=EM_CFG.batch_size)
    s1, _ = step(res.state, batch, np.array([False, True, True]))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x[0], y[0]), s1, res.state)
    assert int(s1.aux_state["em_head"]["count"][1]) == CFG.num_steps + 1
    assert not np.allclose(s1.aux_state["hidden_gmm"]["stats"]["sx"][1],
                           res.state.aux_state["hidden_gmm"]["stats"]["sx"][1])


def test_population_on_a_mesh_equals_one_device(splits, pop_run):
    from jax.sharding import PartitionSpec

    from grnn_jax.train.distributed import sharding

    tr, va = splits
    res, _ = pop_run
    # 3 members on 3 device groups, each member's 4 rows over 2 devices.
    mesh = sharding.make_mesh(jax.devices()[:6], n_members=3)
    on_mesh = train_population(CFG, tr, va, None, members=MEMBERS, progress=False, mesh=mesh)
    leaf = jax.tree.leaves(on_mesh.state.params)[0]
    assert leaf.sharding.spec == PartitionSpec("members") and len(leaf.sharding.device_set) == 6
    for a, b in zip(res.rows, on_mesh.rows):
        assert a["best_step"] == b["best_step"] and a["steps"] == b["steps"]
        np.testing.assert_allclose(a["best_val_nll"], b["best_val_nll"], rtol=1e-5)
    jax.tree.map(_close, res.state.params, on_mesh.state.params)
    jax.tree.map(_close, res.best_params, on_mesh.best_params)
    with pytest.raises(ValueError, match="population of 3 must be a multiple of the 2 devices"):
        train_population(CFG, tr, va, None, members=MEMBERS, mesh=sharding.make_mesh(n_members=2))
    assert dict(sharding.population_mesh(4).shape) == {"members": 4, "data": 2}


def test_noisy_member_equals_independent_run(splits, tmp_path):
    # Member i draws its input noise and dropout masks as a single run with its seed does.
    tr, _ = splits
    cfg = CFG.replace(num_steps=2, input_noise=0.2, output_dropout=0.3, recurrent_dropout=0.2)
    res = train_population(cfg, tr, None, tmp_path / "pop", members=MEMBERS, progress=False)
    i = 1
    state, _ = train(MEMBERS.config(cfg, i), tr, None, tmp_path / "one", progress=False)
    jax.tree.map(_close, jax.tree.map(lambda a: a[i], res.state.params), state.params)


def test_sgd_member_equals_independent_run(splits, tmp_path):
    tr, va = splits
    cfg = CFG.replace(optimizer="sgd", momentum=0.7).validate()
    members = Members(seeds=(3, 4), learning_rates=(3e-2, 1e-1), weight_decays=(0.0, 1e-2))
    res = train_population(cfg, tr, va, tmp_path / "pop", members=members, progress=False)
    i = 1
    state, _ = train(members.config(cfg, i), tr, None, tmp_path / "one", progress=False)
    jax.tree.map(_close, jax.tree.map(lambda a: a[i], res.state.params), state.params)
    # SGD moved the parameters (not a no-op that trivially agrees).
    first, _ = train(members.config(cfg.replace(num_steps=1), i), tr, None, tmp_path / "first",
                     progress=False)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                                         state.params, first.params))
    assert max(moved) > 1e-4


def test_ensemble_of_tied_members_is_their_average_as_a_full_mixture():
    # Tied members share a covariance each, not one between them: the ensemble is full.
    net = ModelConfig(n_features=2, n_components=2, hidden_size=4, covariance_type="tied").build()
    x = jax.random.normal(jax.random.key(5), (3, 6, 2))
    params = jax.vmap(lambda k: net.init(k, x))(jax.random.split(jax.random.key(0), 3))
    g = ensemble_gmm(net, params, x)
    assert g.covariance_type == "full" and g.prec_chol.shape == (3, 6, 6, 2, 2)
    per = np.stack([np.asarray(model.step_log_probs(net, jax.tree.map(lambda a: a[m], params), x))
                    for m in range(3)])
    np.testing.assert_allclose(np.asarray(gmm.log_prob(g, x)), logsumexp(per, axis=0) - np.log(3),
                               rtol=1e-5, atol=1e-5)
