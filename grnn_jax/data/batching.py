"""Fixed-shape batches of padded sequences, so that a jitted step compiles once.

The training stream is a pure function of ``(seed, step)``: the batch at global step ``s``
is the ``s % n_batches``-th slice of epoch ``s // n_batches``'s seeded permutation. Resuming
at step ``s`` therefore continues the exact stream without storing iterator state.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from grnn_jax.data.sequences import Sequences
from grnn_jax.data.masks import mask_from_lengths


class Batch(NamedTuple):
    """One batch (a pytree; ``u`` may be None).

    Attributes:
      x: (B, T, D) observations; 0 at padded steps and in filler rows.
      lengths: (B,) int32 observed steps per row; 0 for filler rows.
      u: optional (B, T, C) covariates.
    """

    x: np.ndarray
    lengths: np.ndarray
    u: np.ndarray | None = None


def _gather(seqs: Sequences, idx: np.ndarray, dtype) -> Batch:
    """Rows ``idx`` of ``seqs``; ``-1`` gives an empty filler row (length 0)."""
    real = idx >= 0
    safe = np.where(real, idx, 0)
    lengths = np.where(real, seqs.lengths[safe], 0).astype(np.int32)
    mask = mask_from_lengths(lengths, seqs.max_length)
    x = np.where(mask[..., None], seqs.x[safe], 0.0).astype(dtype)
    u = None
    if seqs.u is not None:
        u = np.where(mask[..., None], seqs.u[safe], 0.0).astype(dtype)
    return Batch(x, lengths, u)


def batches_per_epoch(n_sequences: int, batch_size: int) -> int:
    """Batches in one training epoch: the partial last batch is dropped (its sequences come
    up in other epochs), unless there are fewer sequences than ``batch_size``."""
    return max(1, n_sequences // batch_size)


def batch_at(seqs: Sequences, step: int, *, batch_size: int, seed: int, dtype=np.float32,
             rows: slice | None = None) -> Batch:
    """The training batch for global step ``step`` (shuffled per epoch, seeded).

    Args:
      seqs: training sequences.
      step: global step (>= 0).
      batch_size: rows per batch; with fewer sequences, empty rows pad the batch.
      seed: shuffling seed.
      dtype: floating dtype of ``x`` and ``u``.
      rows: only these rows of the batch (a process's share in data-parallel training);
        the others are never gathered.

    Returns:
      A Batch of shape (batch_size, T, D) whatever the step (its ``rows`` with ``rows``).

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences, batch_at
      >>> s = Sequences(np.ones((5, 4, 2)), np.array([4, 3, 2, 1, 4]))
      >>> b = batch_at(s, 7, batch_size=2, seed=0)
      >>> b.x.shape, b.lengths.shape
      ((2, 4, 2), (2,))
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    n = seqs.n_sequences
    per_epoch = batches_per_epoch(n, batch_size)
    epoch, pos = divmod(int(step), per_epoch)
    perm = np.random.default_rng([int(seed), epoch]).permutation(n)
    idx = perm[pos * batch_size : (pos + 1) * batch_size]
    if idx.size < batch_size:
        idx = np.concatenate([idx, np.full(batch_size - idx.size, -1)])
    return _gather(seqs, idx if rows is None else idx[rows], dtype)


def train_batches(
    seqs: Sequences, *, batch_size: int, seed: int, start_step: int = 0, dtype=np.float32
) -> Iterator[Batch]:
    """The endless training stream ``batch_at(seqs, step)`` for ``step = start_step, ...``;
    resuming at a step only needs that step.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences, batch_at, train_batches
      >>> s = Sequences(np.random.default_rng(0).normal(size=(5, 3, 1)))
      >>> it = train_batches(s, batch_size=2, seed=0, start_step=3)
      >>> np.array_equal(next(it).x, batch_at(s, 3, batch_size=2, seed=0).x)
      True
    """
    step = int(start_step)
    while True:
        yield batch_at(seqs, step, batch_size=batch_size, seed=seed, dtype=dtype)
        step += 1


def iterate_batches(seqs: Sequences, *, batch_size: int, dtype=np.float32) -> Iterator[Batch]:
    """All sequences once, in order, in fixed-shape batches (the last padded with empty rows);
    for evaluation.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences, iterate_batches
      >>> s = Sequences(np.ones((5, 3, 1)))
      >>> [b.lengths.tolist() for b in iterate_batches(s, batch_size=2)]
      [[3, 3], [3, 3], [3, 0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    n = seqs.n_sequences
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        idx = np.where(idx < n, idx, -1)
        yield _gather(seqs, idx, dtype)
