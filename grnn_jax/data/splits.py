"""Train/validation/test splits: by sequence (seeded), or in time order for one long series."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from grnn_jax.data.sequences import Sequences
from grnn_jax._util.validation import check_data


class Splits(NamedTuple):
    """Three disjoint parts of a dataset."""

    train: Sequences
    val: Sequences
    test: Sequences


def _check_fractions(fractions) -> tuple[float, float, float]:
    f = tuple(float(v) for v in fractions)
    if len(f) != 3 or any(not (v > 0) for v in f) or abs(sum(f) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1; got {fractions}")
    return f


def split_indices(n: int, fractions=(0.7, 0.15, 0.15), *, seed: int) -> tuple[np.ndarray, ...]:
    """A seeded partition of ``range(n)`` into three non-empty index sets.

    Example:
      >>> from grnn_jax.data import split_indices
      >>> a, b, c = split_indices(10, seed=0)
      >>> len(a), len(b), len(c), sorted([*a, *b, *c]) == list(range(10))
      (6, 2, 2, True)
    """
    f = _check_fractions(fractions)
    if n < 3:
        raise ValueError(f"need at least 3 sequences to split three ways; got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(f[1] * n)))
    n_test = max(1, int(round(f[2] * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} sequences leave none for training with fractions {f}")
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


def split_sequences(seqs: Sequences, fractions=(0.7, 0.15, 0.15), *, seed: int) -> Splits:
    """Splits a set of sequences by sequence (whole sequences go to one part only), seeded.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences, split_sequences
      >>> sp = split_sequences(Sequences(np.zeros((20, 4, 1))), seed=0)
      >>> [p.n_sequences for p in sp]
      [14, 3, 3]
    """
    idx = split_indices(seqs.n_sequences, fractions, seed=seed)
    return Splits(*(seqs.select(np.sort(i)) for i in idx))


def chunk_series(x: np.ndarray, window: int | None, u: np.ndarray | None = None) -> Sequences:
    """Cuts one series (T, D) into consecutive, non-overlapping chunks of ``window`` steps,
    in time order; the last chunk is shorter when ``window`` does not divide T.

    ``window=None`` keeps the series as a single sequence.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import chunk_series
      >>> s = chunk_series(np.arange(7.0)[:, None], 3)
      >>> s.x.shape, s.lengths.tolist(), float(s.x[2, 0, 0])
      ((3, 3, 1), [3, 3, 1], 6.0)
    """
    x = check_data(x, "series", ndim=2)
    t = x.shape[0]
    w = t if window is None else int(window)
    if w < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    starts = range(0, t, w)
    xs = [x[s : s + w] for s in starts]
    us = None if u is None else [np.asarray(u)[s : s + w] for s in starts]
    return Sequences.from_list(xs, us, max_length=min(w, t))


def split_series(
    x: np.ndarray,
    fractions=(0.7, 0.15, 0.15),
    *,
    window: int | None = None,
    eval_window: int | None = None,
    u: np.ndarray | None = None,
) -> Splits:
    """Splits one long series (T, D) in time order: train is the first part, validation the
    next, test the last, so no future step informs training. Each part is then cut into
    chunks (``window`` for train, ``eval_window`` for validation and test; None keeps a part
    whole).

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import split_series
      >>> sp = split_series(np.arange(20.0)[:, None], window=5)
      >>> sp.train.n_sequences, float(sp.val.observed()[0, 0]), float(sp.test.observed()[-1, 0])
      (3, 14.0, 19.0)
    """
    x = check_data(x, "series", ndim=2)
    f = _check_fractions(fractions)
    t = x.shape[0]
    n_val = max(1, int(round(f[1] * t)))
    n_test = max(1, int(round(f[2] * t)))
    n_train = t - n_val - n_test
    if n_train < 1:
        raise ValueError(f"a series of {t} steps leaves none for training with fractions {f}")
    cuts = [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, t)]
    parts = []
    for i, (a, b) in enumerate(cuts):
        w = window if i == 0 else eval_window
        parts.append(chunk_series(x[a:b], w, None if u is None else np.asarray(u)[a:b]))
    return Splits(*parts)
