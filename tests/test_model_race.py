"""The model race's evidence: validation log-likelihood in blocks, and the ranking that keeps
the simpler candidate unless a paired comparison shows a clear gain."""

import numpy as np
import pytest

from grnn_jax.data import Sequences, default_switching_ar, sample_switching_ar
from grnn_jax.train import ModelConfig, TrainConfig, evaluate, load_trained, train
from grnn_jax.train.populations import paired_z, rank_candidates, validation_blocks
from grnn_jax.train.populations.model_race import MARGIN_Z
from grnn_jax.train.step import batch_step_log_probs


@pytest.mark.slow
def test_validation_blocks_sum_to_the_best_checkpoints_log_likelihood(tmp_path, compilations):
    seqs, _ = sample_switching_ar(default_switching_ar(2), seed=1, n_sequences=12, length=15)
    tr, va = Sequences(seqs.x[:8]), Sequences(seqs.x[8:])
    cfg = TrainConfig(ModelConfig(n_features=2, n_components=2, hidden_size=4, lags=1),
                      num_steps=4, batch_size=4, eval_every=2, warmup_steps=0)
    train(cfg, tr, va, tmp_path)
    count = compilations(batch_step_log_probs)
    blocks = validation_blocks(tmp_path, va, 5)
    assert count() == 0  # the evaluation program training compiled
    net, params, st, _ = load_trained(tmp_path)
    assert blocks.shape == (5,)
    np.testing.assert_allclose(blocks.sum(), evaluate(net, params, va, standardiser=st).log_likelihood,
                               rtol=1e-5)


def test_ranking_keeps_the_simpler_candidate_unless_clearly_beaten():
    rng = np.random.default_rng(0)
    base = rng.normal(-50.0, 5.0, size=20)
    noisy = base + rng.normal(0.0, 1.0, size=20)
    noisy += 0.05 - noisy.mean() + base.mean()  # higher on average, by far less than its noise
    clear = base + 2.0 + rng.normal(0.0, 0.5, size=20)
    assert paired_z(noisy, base) < MARGIN_Z < paired_z(clear, base)
    assert rank_candidates(["simple", "complex"], {"simple": base, "complex": noisy}) == ["simple", "complex"]
    assert rank_candidates(["simple", "complex"], {"simple": base, "complex": clear}) == ["complex", "simple"]
    # Without the margin, the higher total always wins.
    assert rank_candidates(["simple", "complex"], {"simple": base, "complex": noisy}, z=-np.inf)[0] == "complex"
    assert paired_z(base + 1.0, base) == np.inf and paired_z(base, base) == 0.0
