"""Data-parallel training on 8 fake CPU devices: the same loss trajectory as one device."""

import jax
import numpy as np
import pytest

from grnn_jax.data import Sequences, batch_at
from grnn_jax.train import ModelConfig, init_state, make_optimizer, make_train_step
from grnn_jax.train.distributed import sharding

pytestmark = pytest.mark.slow


def test_loss_trajectory_equals_one_device():
    net = ModelConfig(n_features=2, n_components=3, hidden_size=8).build()
    tx = make_optimizer(learning_rate=3e-2, num_steps=6, warmup_steps=0, weight_decay=1e-4, clip_norm=1.0)
    rng = np.random.default_rng(0)
    # Uneven lengths: the loss is a mean over observed steps, so padding must not shift it.
    seqs = Sequences(rng.normal(size=(24, 7, 2)), lengths=rng.integers(2, 8, 24))
    batches = [batch_at(seqs, s, batch_size=16, seed=0) for s in range(5)]
    step = make_train_step(net, tx)
    state0 = init_state(net, tx, batches[0], key=jax.random.key(0))

    one, losses_one = state0, []
    for b in batches:
        one, m = step(one, b)
        losses_one.append(float(m["loss"]))

    mesh = sharding.make_mesh()
    assert mesh.shape == {"members": 1, "data": 8}
    dp_step = sharding.make_data_parallel_step(step, mesh)
    dp, losses_dp = sharding.replicate(state0, mesh), []
    for b in batches:
        dp, m = dp_step(dp, b)
        losses_dp.append(float(m["loss"]))
    assert len(sharding.shard_batch(batches[0], mesh).x.sharding.device_set) == 8
    leaf = jax.tree.leaves(dp.params)[0]
    assert len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated
    np.testing.assert_allclose(losses_dp, losses_one, rtol=1e-5)
    assert losses_one[-1] < losses_one[0]  # it trains
    for a, b in zip(jax.tree.leaves(dp.params), jax.tree.leaves(one.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size 6 must be a multiple of the 8 devices"):
        dp_step(dp, batch_at(seqs, 0, batch_size=6, seed=0))
