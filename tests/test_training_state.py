"""The train state's two kinds of state, objectives by name, the typed run progress, and
checkpoints of non-gradient state."""

import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grnn_jax import data
from grnn_jax import train as T
from grnn_jax.data import Sequences

NET = T.ModelConfig(n_features=1, n_components=2, hidden_size=4).build()
TX = T.make_optimizer(learning_rate=1e-2, num_steps=10, warmup_steps=0, weight_decay=0.1,
                      clip_norm=1.0)


def _batch(nan=False):
    b = data.batch_at(Sequences(np.random.default_rng(0).normal(size=(4, 6, 1))), 0,
                      batch_size=4, seed=0)
    if nan:
        x = np.array(b.x)
        x[0, 0, 0] = np.nan
        b = b._replace(x=x)
    return b


def _count_update(net, params, aux, batch):
    # A stand-in for an EM update: counts applied steps and accumulates observed steps.
    del net, params
    return {"n": aux["n"] + 1, "obs": aux["obs"] + jnp.sum(batch.lengths).astype(jnp.float32)}


@pytest.mark.slow
def test_aux_state_is_untouched_by_the_optimiser_and_updated_only_on_good_steps():
    aux0 = {"n": jnp.zeros((), jnp.int32), "obs": jnp.zeros((), jnp.float32)}
    state = T.init_state(NET, TX, _batch(), key=jax.random.key(0), aux_state=aux0)
    step = T.make_train_step(NET, TX, aux_update=_count_update)
    s1, m1 = step(state, _batch())
    assert not bool(m1["skipped"])
    assert int(s1.aux_state["n"]) == 1 and float(s1.aux_state["obs"]) == 24.0
    s2, m2 = step(s1, _batch(nan=True))
    assert bool(m2["skipped"])
    assert int(s2.aux_state["n"]) == 1  # a skipped step leaves the non-gradient state as it was
    # without an aux_update the non-gradient state passes through unchanged, whatever weight
    # decay and the optimiser do to the parameters
    s3, _ = T.make_train_step(NET, TX)(state, _batch())
    assert jax.tree.map(float, s3.aux_state) == {"n": 0.0, "obs": 0.0}
    assert not np.allclose(np.asarray(jax.tree.leaves(s3.params)[0]),
                           np.asarray(jax.tree.leaves(state.params)[0]))


def test_objective_by_name_and_unknown_names():
    state = T.init_state(NET, TX, _batch(), key=jax.random.key(0))
    loss, metrics = T.get_objective("nll").loss(NET, state.params, state.aux_state, _batch())
    ref, n = T.batch_loss(NET, state.params, _batch())
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
    assert int(metrics["n_obs"]) == int(n) == 24
    with pytest.raises(ValueError, match="unknown objective 'em'; known: .*nll"):
        T.get_objective("em")
    cfg = T.TrainConfig(T.ModelConfig(n_features=1), objective="bogus")
    with pytest.raises(ValueError, match="unknown objective 'bogus'"):
        cfg.validate()
    assert T.TrainConfig.from_dict(T.TrainConfig(T.ModelConfig(n_features=1)).to_dict()).objective == "nll"


def test_given_initial_params_are_used():
    state = T.init_state(NET, TX, _batch(), key=jax.random.key(0))
    doubled = jax.tree.map(lambda p: 2 * p, state.params)
    s = T.init_state(NET, TX, _batch(), key=jax.random.key(1), params=doubled)
    for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(doubled)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(s.step) == 0


def test_checkpoints_hold_non_gradient_state(tmp_path):
    aux = {"components": jnp.arange(6.0).reshape(2, 3), "count": jnp.asarray(7, jnp.int32)}
    state = T.init_state(NET, TX, _batch(), key=jax.random.key(0), aux_state=aux)
    prog = T.RunProgress().after_eval(3, 1.5).replace(step=3)
    with T.RunCheckpoints(tmp_path) as ck:
        ck.save("last", state, prog.to_dict())
    abstract = jax.eval_shape(lambda: state)
    with T.RunCheckpoints(tmp_path, read_only=True) as ck:
        restored, saved = ck.restore("last", abstract)
    np.testing.assert_array_equal(np.asarray(restored.aux_state["components"]),
                                  np.asarray(aux["components"]))
    assert int(restored.aux_state["count"]) == 7
    assert T.RunProgress.from_dict(saved) == prog


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler, whatever this process inherited (a job a shell started in
    the background ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals reach the main thread only")
def test_ctrl_c_inside_a_save_waits_for_the_save(tmp_path, monkeypatch, python_ctrl_c):
    """Ctrl-C that lands inside Orbax's save used to leave its temporary directory behind
    (the next save failed on it, and a stopped run could hang); now the save completes
    and the interrupt follows."""
    import orbax.checkpoint as ocp

    state = T.init_state(NET, TX, _batch(), key=jax.random.key(0))
    original = ocp.CheckpointManager.save

    def interrupted_save(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came now
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", interrupted_save)
    with T.RunCheckpoints(tmp_path) as ck:
        with pytest.raises(KeyboardInterrupt):
            ck.save("last", state, T.RunProgress(step=1).to_dict())
        assert ck.latest_step("last") == 1
        monkeypatch.setattr(ocp.CheckpointManager, "save", original)
        ck.save("last", state, T.RunProgress(step=2).to_dict())  # the next save works
    with T.RunCheckpoints(tmp_path, read_only=True) as ck:
        restored, saved = ck.restore("last", jax.eval_shape(lambda: state))
    assert saved["step"] == 2
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]


def test_run_progress_ignores_non_finite_scores():
    p = T.RunProgress().after_eval(5, float("nan"))
    assert p.best_val_nll is None and p.evals_since_best == 1
    p = p.after_eval(10, 3.0).after_eval(15, float("inf")).after_eval(20, 2.0)
    assert (p.best_step, p.best_val_nll, p.evals_since_best, p.step) == (20, 2.0, 0, 20)


def test_patience_follows_the_smoothed_score_and_the_best_follows_the_raw_one():
    # raw: 3.0, 2.0 (best), 2.9, 1.9 (new raw best), 3.5
    p = T.RunProgress()
    for step, nll in zip((1, 2, 3, 4, 5), (3.0, 2.0, 2.9, 1.9, 3.5)):
        p = p.after_eval(step, nll, smoothing=0.5)
    # smoothed: 3.0, 2.5, 2.7, 2.3, 2.9 -> best smoothed 2.3 at step 4, one eval since
    assert (p.best_step, p.best_val_nll) == (4, 1.9)
    np.testing.assert_allclose([p.smoothed_val_nll, p.best_smoothed_val_nll], [2.9, 2.3])
    assert p.evals_since_best == 1
    # with smoothing the single lucky 1.9 at step 4 would not have reset the counter if the
    # average had not improved: 2.0 -> 4.0 -> 1.9 keeps the average at 2.95 > 2.0
    q = T.RunProgress().after_eval(1, 2.0, 0.5).after_eval(2, 4.0, 0.5).after_eval(3, 1.9, 0.5)
    assert q.best_step == 3 and q.evals_since_best == 2


def test_a_given_budget_brings_its_own_schedule_and_evaluation_grid():
    seqs = Sequences(np.random.default_rng(0).normal(size=(20, 30, 2)))
    c = T.resolve_train_config({"num_steps": 8000}, seqs)
    assert (c.num_steps, c.warmup_steps, c.eval_every) == (8000, 400, 320)
    assert c.stop_from_fraction == 0.6 and c.patience == 5
    # explicit settings still win
    c = T.resolve_train_config({"num_steps": 8000, "eval_every": 50}, seqs)
    assert c.eval_every == 50
    with pytest.raises(ValueError, match="stop_from_fraction must lie in"):
        T.resolve_train_config({"stop_from_fraction": 2.0}, seqs)


def test_early_stopping_waits_for_the_stated_share_of_the_run(tmp_path, monkeypatch):
    from grnn_jax.train import loop as loop_mod

    tr = Sequences(np.random.default_rng(1).normal(size=(8, 6, 1)))
    scores = iter([1.0] + [2.0] * 50)  # never better after the first evaluation

    class _Res:
        def __init__(self, nll):
            self.nll = nll

    monkeypatch.setattr(loop_mod, "evaluate", lambda *a, **k: _Res(next(scores)))
    cfg = T.TrainConfig(T.ModelConfig(n_features=1, n_components=1, hidden_size=4),
                        num_steps=20, batch_size=4, eval_every=2, patience=2, warmup_steps=0,
                        stop_from_fraction=0.5)
    state, _ = T.train(cfg, tr, tr, tmp_path, resume=False, progress=False)
    # patience ran out at step 6, but stopping waits until step 10 (half of 20)
    assert int(state.step) == 10
