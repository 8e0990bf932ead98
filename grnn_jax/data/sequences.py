"""A host-side container for a set of padded sequences, with validation and ``.npz`` I/O."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence as _Seq

import numpy as np

from grnn_jax.data.masks import mask_from_lengths
from grnn_jax._util.validation import check_finite_steps


@dataclasses.dataclass(frozen=True)
class Sequences:
    """``S`` sequences padded to a common length ``T``; step ``t`` of sequence ``s`` is
    observed when ``t < lengths[s]``. Values in padded steps are ignored (they may be NaN).

    Attributes:
      x: (S, T, D) observations.
      lengths: (S,) int64 numbers of observed steps, each in [1, T]; all T when omitted.
      u: optional (S, T, C) covariates aligned with ``x``.

    Raises:
      ValueError: wrong rank, empty, lengths out of range, shapes that disagree, or a
        NaN/inf in an observed step (the message names sequence, step and feature).

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> s = Sequences(np.zeros((3, 5, 2)), lengths=np.array([5, 2, 1]))
      >>> s.n_sequences, s.max_length, s.n_features, s.n_steps
      (3, 5, 2, 8)
    """

    x: np.ndarray
    lengths: np.ndarray | None = None
    u: np.ndarray | None = None

    def __post_init__(self):
        x = np.asarray(self.x)
        if x.dtype == object or not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"x must be numeric; got dtype {x.dtype}")
        if x.ndim != 3:
            raise ValueError(f"x must have rank 3 (sequences, steps, features); got shape {x.shape}")
        if 0 in x.shape:
            raise ValueError(f"x is empty (shape {x.shape})")
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
        n_seq, n_t, _ = x.shape
        if self.lengths is None:
            lengths = np.full(n_seq, n_t, dtype=np.int64)
        else:
            raw = np.asarray(self.lengths)
            if raw.shape != (n_seq,):
                raise ValueError(f"lengths must have shape ({n_seq},); got {raw.shape}")
            if not (np.issubdtype(raw.dtype, np.integer) or np.all(np.mod(raw, 1) == 0)):
                raise ValueError("lengths must be integers")
            lengths = raw.astype(np.int64)
            bad = (lengths < 1) | (lengths > n_t)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"lengths must lie in [1, {n_t}]; sequence {i} has length {int(lengths[i])}"
                )
        check_finite_steps(x, mask_from_lengths(lengths, x.shape[1]), "x")
        u = self.u
        if u is not None:
            u = np.asarray(u)
            if u.ndim != 3 or u.shape[:2] != (n_seq, n_t):
                raise ValueError(f"u must have shape ({n_seq}, {n_t}, C); got {u.shape}")
            if not np.issubdtype(u.dtype, np.floating):
                u = u.astype(np.float64)
            check_finite_steps(u, mask_from_lengths(lengths, u.shape[1]), "u")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "u", u)

    @property
    def n_sequences(self) -> int:
        return self.x.shape[0]

    @property
    def max_length(self) -> int:
        return self.x.shape[1]

    @property
    def n_features(self) -> int:
        return self.x.shape[2]

    @property
    def n_covariates(self) -> int:
        return 0 if self.u is None else self.u.shape[2]

    @property
    def n_steps(self) -> int:
        """Total number of observed steps."""
        return int(self.lengths.sum())

    @property
    def mask(self) -> np.ndarray:
        """(S, T) bool, True at observed steps."""
        return mask_from_lengths(self.lengths, self.max_length)

    def __len__(self) -> int:
        return self.n_sequences

    def select(self, index) -> "Sequences":
        """The sequences at ``index`` (an int array or slice), trimmed to their longest length."""
        idx = np.arange(self.n_sequences)[index]
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise ValueError("selection is empty")
        lengths = self.lengths[idx]
        t = int(lengths.max())
        u = None if self.u is None else self.u[idx, :t]
        return Sequences(self.x[idx, :t], lengths, u)

    def observed(self) -> np.ndarray:
        """(n_steps, D) the observed steps stacked in sequence order."""
        return self.x[self.mask]

    def with_x(self, x: np.ndarray) -> "Sequences":
        """The same lengths and covariates with new observations of the same (S, T)."""
        return Sequences(x, self.lengths, self.u)

    @classmethod
    def from_list(cls, xs: _Seq[np.ndarray], us: _Seq[np.ndarray] | None = None,
                  *, max_length: int | None = None) -> "Sequences":
        """Pads a list of (T_i, D) arrays (and optional (T_i, C) covariates) with zeros.

        Example:
          >>> import numpy as np
          >>> from grnn_jax.data import Sequences
          >>> s = Sequences.from_list([np.ones((3, 1)), np.ones((1, 1))])
          >>> s.x.shape, s.lengths.tolist()
          ((2, 3, 1), [3, 1])
        """
        if len(xs) == 0:
            raise ValueError("no sequences given")
        arrays = [np.asarray(a, dtype=np.float64) for a in xs]
        for i, a in enumerate(arrays):
            if a.ndim != 2 or a.shape[0] == 0:
                raise ValueError(f"sequence {i} must be a non-empty (T, D) array; got shape {a.shape}")
        d = arrays[0].shape[1]
        if any(a.shape[1] != d for a in arrays):
            raise ValueError("sequences have different numbers of features")
        lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        t = int(lengths.max()) if max_length is None else int(max_length)
        x = np.zeros((len(arrays), t, d))
        for i, a in enumerate(arrays):
            x[i, : a.shape[0]] = a
        u = None
        if us is not None:
            c = np.asarray(us[0]).shape[1]
            u = np.zeros((len(arrays), t, c))
            for i, b in enumerate(us):
                u[i, : np.asarray(b).shape[0]] = b
        return cls(x, lengths, u)

    def save(self, path: str | os.PathLike) -> None:
        """Writes ``x``, ``lengths`` and (when present) ``u`` to an ``.npz`` file."""
        arrays = {"x": self.x, "lengths": self.lengths}
        if self.u is not None:
            arrays["u"] = self.u
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Sequences":
        """Reads an ``.npz`` holding ``x`` (S, T, D) or (T, D), optional ``lengths`` and ``u``.

        A rank-2 ``x`` is read as one sequence.

        Raises:
          ValueError: no ``x`` in the file, or any check of the container fails.
        """
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise ValueError(f"{os.fspath(path)} has no array named 'x' (found {f.files})")
            x = f["x"]
            lengths = f["lengths"] if "lengths" in f.files else None
            u = f["u"] if "u" in f.files else None
        if x.ndim == 2:
            x = x[None]
            u = None if u is None else (u[None] if u.ndim == 2 else u)
        return cls(x, lengths, u)
