"""train(mesh=...) on 8 fake CPU devices: the single-device run, step by step, resumes included."""

import jax
import numpy as np
import pytest

from dirstate import tree_hash
from grnn_jax import data
from grnn_jax.train import ModelConfig, TrainConfig, load_trained, train
from grnn_jax.train.distributed import sharding

pytestmark = pytest.mark.slow

CFG = TrainConfig(ModelConfig(n_features=1, n_components=2, hidden_size=4), num_steps=6,
                  batch_size=8, eval_every=2, log_every=1, warmup_steps=1, learning_rate=3e-2)


@pytest.fixture(scope="module")
def seqs():
    proc = data.default_switching_ar(1)
    # Uneven lengths: the loss is a mean over observed steps, whatever device holds a row.
    tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=20, length=7)
    tr = data.Sequences(tr.x, lengths=np.random.default_rng(0).integers(3, 8, tr.n_sequences))
    va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=5, length=7)
    return tr, va


@pytest.fixture(scope="module")
def one_device(seqs, tmp_path_factory):
    wd = tmp_path_factory.mktemp("one")
    state, history = train(CFG, *seqs, wd, progress=False)
    return wd, state, history


def _by_kind(history, kind, key):
    return [(r["step"], r[key]) for r in history if r["kind"] == kind]


def test_eight_devices_follow_one_device_through_resumes(seqs, one_device, tmp_path):
    _, one, h_one = one_device
    mesh = sharding.make_mesh()
    assert mesh.shape == {"members": 1, "data": 8}
    # Two steps on one device, resumed on 8 devices up to step 3 (between evaluations),
    # resumed again on 8 up to step 5, then back on one device to the end: the run one
    # device made in one go.
    train(CFG, *seqs, tmp_path, progress=False, until_step=2)
    train(CFG, *seqs, tmp_path, progress=False, mesh=mesh, until_step=3)
    mid, _ = train(CFG, *seqs, tmp_path, progress=False, mesh=mesh, until_step=5)
    leaf = jax.tree.leaves(mid.params)[0]
    assert len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated
    dp, h_dp = train(CFG, *seqs, tmp_path, progress=False)
    assert len(jax.tree.leaves(dp.params)[0].sharding.device_set) == 1
    losses, losses_dp = _by_kind(h_one, "train", "loss"), _by_kind(h_dp, "train", "loss")
    assert [s for s, _ in losses_dp] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in losses_dp], [v for _, v in losses], rtol=1e-5)
    val, val_dp = _by_kind(h_one, "eval", "val_nll"), _by_kind(h_dp, "eval", "val_nll")
    assert [s for s, _ in val_dp] == [2, 4, 6]
    np.testing.assert_allclose([v for _, v in val_dp], [v for _, v in val], rtol=1e-5)
    assert val[-1][1] < val[0][1]  # it trains
    for a, b in zip(jax.tree.leaves(dp.params), jax.tree.leaves(one.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The checkpoints hold the same parameters; they load on one device.
    _, best, _, _ = load_trained(tmp_path)
    _, best_one, _, _ = load_trained(one_device[0])
    for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(best_one)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bad_meshes_fail_before_anything_is_written(seqs, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    before = tree_hash(tmp_path)
    with pytest.raises(ValueError, match="batch_size 6 must be a multiple of the 8 devices"):
        train(CFG.replace(batch_size=6), *seqs, tmp_path, mesh=sharding.make_mesh())
    with pytest.raises(ValueError, match="mesh has 2 devices on its 'members' axis"):
        train(CFG, *seqs, tmp_path, mesh=sharding.make_mesh(n_members=2))
    with pytest.raises(ValueError, match=r"mesh must be a jax Mesh with axes \('members', 'data'\)"):
        train(CFG, *seqs, tmp_path, mesh=jax.sharding.Mesh(np.array(jax.devices()), ("data",)))
    assert tree_hash(tmp_path) == before
