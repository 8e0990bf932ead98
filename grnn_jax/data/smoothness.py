"""How smooth a set of sequences is: the one-step move relative to the spread."""

from __future__ import annotations

import numpy as np

from grnn_jax.data.sequences import Sequences


def step_change_ratio(seqs: Sequences) -> float:
    """How far the series move in one step relative to their spread: the mean over features
    of ``std(x_t - x_{t-1}) / std(x)`` over consecutive observed steps.

    Near 0 for smooth series (each step nearly repeats the last); about ``sqrt(2)`` for
    independent steps. NaN when no sequence has two observed steps; features that are
    constant are left out.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> t = np.arange(200.0)
      >>> smooth = Sequences(np.sin(t / 20)[None, :, None])
      >>> noisy = Sequences(np.random.default_rng(0).normal(size=(1, 200, 1)))
      >>> round(step_change_ratio(smooth), 2), round(step_change_ratio(noisy), 1)
      (0.05, 1.4)
    """
    obs = seqs.observed()
    std = obs.std(axis=0)
    both = seqs.mask[:, 1:] & seqs.mask[:, :-1]
    if not both.any():
        return float("nan")
    steps = (seqs.x[:, 1:] - seqs.x[:, :-1])[both]
    keep = std > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(steps.std(axis=0)[keep] / std[keep]))
