"""Tests of the training loop: the step, skipping, checkpoints and exact resume, bad input,
and a statistical test against the exact density of a known process."""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grnn_jax import data, gmm, model
from grnn_jax import train as T
from grnn_jax.data import Sequences, synthetic
from grnn_jax.train import loop as loop_mod
from grnn_jax.train import run_state

PROC = data.default_switching_ar(2)


def _cfg(**changes):
    cfg = T.TrainConfig(
        model=T.ModelConfig(n_features=2, n_components=2, cell="lstm", hidden_size=8),
        num_steps=30, batch_size=8, learning_rate=1e-2, warmup_steps=0, eval_every=10,
        log_every=5, max_consecutive_skips=3, patience=0, seed=0,
    )
    return cfg.replace(**changes)


def _small_data():
    tr, _ = data.sample_switching_ar(PROC, seed=1, n_sequences=24, length=12)
    va, _ = data.sample_switching_ar(PROC, seed=2, n_sequences=8, length=12)
    # ragged training sequences, so that padding is exercised everywhere
    tr = Sequences(tr.x, np.random.default_rng(0).integers(4, 13, size=24))
    return tr, va


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One uninterrupted run of the small config."""
    workdir = tmp_path_factory.mktemp("run")
    tr, va = _small_data()
    state, history = T.train(_cfg(), tr, va, workdir, resume=False, progress=False)
    return workdir, state, history, tr, va


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------- the step


def _step_setup():
    # The loop's own cached step for this config: the other tests reuse its compilation.
    net, tx, step_fn, _ = run_state.compiled(_cfg(), False)
    tr, _ = _small_data()
    z = data.Standardiser.fit(tr).transform(tr)
    batch = data.batch_at(z, 0, batch_size=8, seed=0)
    state = T.init_state(net, tx, batch, key=jax.random.key(0))
    return net, step_fn, state, batch


_batch_loss = jax.jit(T.batch_loss, static_argnums=0)
_step_log_probs = jax.jit(model.step_log_probs, static_argnums=0)


def test_one_step_reduces_loss_on_a_fixed_batch(compilations):
    net, step_fn, state, batch = _step_setup()
    before, n = _batch_loss(net, state.params, batch)
    new, metrics = step_fn(state, batch)
    # The compiled step is shared (cached) with other tests in this process, which may have
    # compiled it for other argument types first: count what this test's calls add.
    compiled = compilations(step_fn)
    after, _ = _batch_loss(net, new.params, batch)
    assert int(n) == int(batch.lengths.sum())
    np.testing.assert_allclose(float(metrics["loss"]), float(before), rtol=1e-6)
    assert float(after) < float(before)
    # the loss is the model's own density: mean of -step_log_probs over observed steps
    lp = _step_log_probs(net, state.params, batch.x, batch.lengths)
    np.testing.assert_allclose(float(before), -float(lp.sum()) / int(n), rtol=1e-6)
    # other batches of the stream have the same shapes: no recompilation
    tr, _ = _small_data()
    z = data.Standardiser.fit(tr).transform(tr)
    for i, b in zip(range(3), data.train_batches(z, batch_size=8, seed=0, start_step=1)):
        new, _ = step_fn(new, b)
    assert compiled() == 0


def test_nonfinite_steps_are_skipped_and_counted():
    net, step_fn, state, batch = _step_setup()
    x = np.array(batch.x)
    x[0, 0, 0] = np.nan
    bad = batch._replace(x=x)
    s1, m1 = step_fn(state, bad)
    s2, m2 = step_fn(s1, bad)
    assert bool(m1["skipped"]) and bool(m2["skipped"])
    assert (int(s2.step), int(s2.n_skipped), int(s2.n_consecutive_skipped)) == (2, 2, 2)
    _assert_trees_equal(s2.params, state.params)
    _assert_trees_equal(s2.opt_state, state.opt_state)
    s3, m3 = step_fn(s2, batch)
    assert not bool(m3["skipped"])
    assert (int(s3.n_skipped), int(s3.n_consecutive_skipped)) == (2, 0)
    # the optimiser starts from where it was: the same update as a first step on ``batch``
    s_ref, _ = step_fn(state, batch)
    _assert_trees_equal(s3.params, s_ref.params)


def test_training_stops_after_consecutive_skips_keeping_the_last_checkpoint(tmp_path, monkeypatch):
    tr, va = _small_data()
    real = loop_mod.batch_at

    def poisoned(seqs, step, **kw):
        b = real(seqs, step, **kw)
        return b._replace(x=np.full_like(b.x, np.nan)) if step >= 22 else b

    monkeypatch.setattr(loop_mod, "batch_at", poisoned)
    with pytest.raises(T.NonFiniteTrainingError, match="3 consecutive.*checkpoint \\(step 20\\)"):
        T.train(_cfg(), tr, va, tmp_path, resume=False, progress=False)
    with T.RunCheckpoints(tmp_path, read_only=True) as ck:
        assert ck.latest_step("last") == 20
    _, params, _, _ = T.load_trained(tmp_path, which="last")
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))


# ----------------------------------------------------------------------------- checkpoints


# Training-time noise (input noise, variational dropout) is drawn from the seed and the
# global step, so a resumed run draws what an uninterrupted one does.
NOISE = {"input_noise": 0.2, "input_dropout": 0.1, "output_dropout": 0.3, "recurrent_dropout": 0.2}


@pytest.mark.parametrize("noise", [{}, NOISE], ids=["clean", "noise"])
@pytest.mark.slow
def test_resume_gives_the_parameters_of_an_uninterrupted_run(run, noise, tmp_path):
    workdir, state, history, tr, va = run
    if noise:
        state, history = T.train(_cfg(**noise), tr, va, tmp_path / "full", resume=False,
                                 progress=False)
        assert not np.allclose(np.asarray(jax.tree.leaves(state.params)[0]),
                               np.asarray(jax.tree.leaves(run[1].params)[0]))
    # Stop off the evaluation grid (step 15), then resume in a fresh call.
    s_half, _ = T.train(_cfg(**noise), tr, va, tmp_path, resume=False, progress=False,
                        until_step=15)
    assert int(s_half.step) == 15
    s_full, hist2 = T.train(None, tr, va, tmp_path, resume=True, progress=False)
    assert int(s_full.step) == 30
    _assert_trees_equal(s_full.params, state.params)
    _assert_trees_equal(s_full.opt_state, state.opt_state)
    strip = lambda h: [{k: v for k, v in r.items() if "per_s" not in k} for r in h]  # noqa: E731
    assert strip(hist2) == strip(history)
    # Resuming a finished run does nothing.
    s_again, _ = T.train(None, tr, va, tmp_path, resume=True, progress=False)
    _assert_trees_equal(s_again.params, state.params)


def test_early_stopping_keeps_the_best_checkpoint_and_survives_resume(tmp_path, monkeypatch):
    tr, va = _small_data()
    scores = iter([3.0, 2.0, 2.5, 2.6, 1.0])  # best at step 10, then two worse evaluations
    monkeypatch.setattr(
        loop_mod, "evaluate", lambda *a, **k: T.EvalResult(next(scores), 0.0, 1, 0.0)
    )
    cfg = _cfg(patience=2, eval_every=5)
    state, hist = T.train(cfg, tr, va, tmp_path, resume=False, progress=False)
    assert int(state.step) == 20
    evals = [(r["step"], r["val_nll"], r["best_step"]) for r in hist if r["kind"] == "eval"]
    assert evals == [(5, 3.0, 5), (10, 2.0, 10), (15, 2.5, 10), (20, 2.6, 10)]
    with T.RunCheckpoints(tmp_path, read_only=True) as ck:
        assert (ck.latest_step("best"), ck.latest_step("last")) == (10, 20)
    again, _ = T.train(None, tr, va, tmp_path, resume=True, progress=False)
    assert int(again.step) == 20  # a stopped run stays stopped


def test_bad_input_leaves_the_work_dir_unchanged(run, tmp_path):
    src, _, _, tr, va = run
    workdir = tmp_path / "copy"
    shutil.copytree(src, workdir)
    before = _snapshot(workdir)
    wide = Sequences(np.zeros((4, 12, 3)) + np.arange(3.0))
    calls = [
        (lambda: T.train(None, wide, None, workdir), "3"),  # D differs from the saved model's
        (lambda: T.train(None, tr, wide, workdir), "validation data have 3 features"),
        (lambda: T.train(_cfg(num_steps=99), tr, va, workdir),
         r"different settings \(num_steps 30 -> 99\)"),
        (lambda: T.train(None, va, va, workdir), "training data differ"),
        (lambda: T.train(_cfg(model={"n_features": 3}), tr, va, workdir, resume=False), "3 features"),
        (lambda: T.train(None, tr.x, va, workdir, resume=False), "Sequences"),
        (lambda: T.train(_cfg(learning_rate=-1.0), tr, va, workdir, resume=False), "learning_rate"),
    ]
    for call, msg in calls:
        with pytest.raises(ValueError, match=msg):
            call()
        assert _snapshot(workdir) == before


def test_a_crash_mid_save_leaves_the_previous_checkpoint_readable(run, tmp_path, monkeypatch):
    src, state, _, tr, va = run
    workdir = tmp_path / "copy"
    shutil.copytree(src, workdir)
    handler = ocp.handlers.JsonCheckpointHandler

    def crash(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:  # the second item of the composite fails to write
        m.setattr(handler, "async_save", crash)
        m.setattr(handler, "save", crash)
        with T.RunCheckpoints(workdir) as ck, pytest.raises(OSError, match="disk full"):
            ck.save("last", state, {"step": 99})
    assert any(".orbax-checkpoint-tmp" in p.name for p in (workdir / "checkpoints/last").iterdir())
    with T.RunCheckpoints(workdir, read_only=True) as ck:
        assert ck.latest_step("last") == 30
    _, params, _, _ = T.load_trained(workdir, which="last")
    _assert_trees_equal(params, state.params)
    resumed, _ = T.train(None, tr, va, workdir, resume=True, progress=False)
    assert int(resumed.step) == 30
    with T.RunCheckpoints(workdir) as ck:  # the debris does not block a later save
        ck.save("last", state, {"step": 99})
        assert ck.latest_step("last") == 99


def test_load_trained_rebuilds_the_best_model_from_the_work_dir(run):
    workdir, state, history, tr, va = run
    net, params, st, cfg = T.load_trained(workdir)
    assert cfg == _cfg()
    np.testing.assert_allclose(st.center, data.Standardiser.fit(tr).center)
    evals = [r for r in history if r["kind"] == "eval"]
    best = min(evals, key=lambda r: r["val_nll"])
    res = T.evaluate(net, params, va, standardiser=st)
    np.testing.assert_allclose(res.nll, best["val_nll"], rtol=1e-6)
    assert res.n_steps == va.n_steps
    # original units by hand: -mean step_log_probs of the standardised data + sum(log std)
    z = st.transform(va)
    lp = _step_log_probs(net, params, jnp.asarray(z.x, jnp.float32), jnp.asarray(z.lengths))
    manual = -float(lp.sum()) / va.n_steps + float(np.log(st.scale).sum())
    np.testing.assert_allclose(res.nll, manual, rtol=1e-5)
    np.testing.assert_allclose(res.log_likelihood, -res.nll * res.n_steps)
    np.testing.assert_allclose(T.evaluate(net, params, va, standardiser=st, batch_size=3).nll, res.nll,
                               rtol=1e-6)
    _, last, _, _ = T.load_trained(workdir, which="last")
    _assert_trees_equal(last, state.params)
    assert [r["step"] for r in T.read_metrics(workdir)] == [r["step"] for r in history]


def test_default_config_scales_with_the_data():
    small = T.default_config(Sequences(np.zeros((10, 50, 2))))
    big = T.default_config(Sequences(np.zeros((2000, 100, 12))))
    assert small.model.hidden_size < big.model.hidden_size
    assert small.model.covariance_type == "full" and big.model.covariance_type == "diag"
    assert big.batch_size == 32 and small.batch_size == 10
    assert small.validate() is small
    assert T.TrainConfig.from_dict(big.to_dict()) == big
    with pytest.raises(ValueError, match="batch_size"):
        small.replace(batch_size=0).validate()


# ----------------------------------------------------------------------------- statistics


def _static_gmm_nll(train: Sequences, test: Sequences, k: int, n_iter: int = 100) -> float:
    """Held-out NLL per step of a static GMM fitted to the training steps by EM (gmm.m_step
    from responsibilities, started from a seeded random soft assignment)."""
    st = data.Standardiser.fit(train)
    x = jnp.asarray(st.apply(train.observed()))
    resp0 = jax.random.dirichlet(jax.random.key(0), jnp.ones(k), (x.shape[0],))

    @jax.jit
    def fit(resp):
        def body(_, resp):
            return gmm.responsibilities(gmm.m_step(x, resp, covariance_type="full"), x)
        return gmm.m_step(x, jax.lax.fori_loop(0, n_iter, body, resp), covariance_type="full")

    lp = gmm.log_prob(fit(resp0), jnp.asarray(st.apply(test.observed())))
    return -float(lp.mean()) + st.log_det


@pytest.mark.slow
def test_trained_model_approaches_the_oracle_and_beats_a_static_gmm(tmp_path):
    train, _ = data.sample_switching_ar(PROC, seed=1, n_sequences=1024, length=30)
    val, _ = data.sample_switching_ar(PROC, seed=2, n_sequences=64, length=30)
    test, _ = data.sample_switching_ar(PROC, seed=3, n_sequences=64, length=30)
    cfg = T.TrainConfig(
        model=T.ModelConfig(n_features=2, n_components=3, cell="lstm", hidden_size=32),
        num_steps=300, batch_size=32, learning_rate=1e-2, warmup_steps=30, eval_every=100,
        log_every=50,
    )
    T.train(cfg, train, val, tmp_path, resume=False, progress=False)
    net, params, st, _ = T.load_trained(tmp_path)
    nll = T.evaluate(net, params, test, standardiser=st).nll
    oracle = -synthetic.step_log_probs(PROC, test).sum() / test.n_steps
    static = _static_gmm_nll(train, test, k=3)
    # measured: oracle 0.616, trained ~0.70, static GMM ~1.82 nats per step
    assert oracle - 0.03 < nll < oracle + 0.15, (nll, oracle)
    assert nll < static - 0.5, (nll, static)


@pytest.mark.slow
def test_tied_head_approaches_the_oracle_of_a_tied_process(tmp_path):
    # Both regimes share one noise covariance, so the next step's exact density is a
    # two-component mixture with a tied covariance: the tied head is well specified.
    p = data.default_switching_ar(2)
    cov = np.array([[0.15, 0.05], [0.05, 0.15]])
    proc = synthetic.SwitchingAR(p.init, p.trans, p.A, p.b, np.stack([cov, cov]))
    train, _ = data.sample_switching_ar(proc, seed=1, n_sequences=512, length=30)
    val, _ = data.sample_switching_ar(proc, seed=2, n_sequences=64, length=30)
    test, _ = data.sample_switching_ar(proc, seed=3, n_sequences=64, length=30)
    cfg = T.TrainConfig(
        model=T.ModelConfig(n_features=2, n_components=2, hidden_size=32, covariance_type="tied"),
        num_steps=250, batch_size=32, learning_rate=1e-2, warmup_steps=25, eval_every=125,
        log_every=50,
    )
    T.train(cfg, train, val, tmp_path, resume=False, progress=False)
    net, params, st, _ = T.load_trained(tmp_path)
    assert net.covariance_type == "tied"
    nll = T.evaluate(net, params, test, standardiser=st).nll
    oracle = -synthetic.step_log_probs(proc, test).sum() / test.n_steps
    static = _static_gmm_nll(train, test, k=2)
    assert oracle - 0.03 < nll < oracle + 0.15, (nll, oracle)
    assert nll < static - 0.3, (nll, static)
