"""Rows read in fixed-size chunks: from an array, a memory-mapped ``.npy`` file or an iterable.

Out-of-core, online and multi-process EM pass over a :class:`RowSource` once
per iteration. Every chunk it yields has the same shape ``(C, D)``, the last
one padded with zero rows of weight 0, so a jitted per-chunk function compiles
once. A ``.npy`` path is mapped one chunk at a time (a fresh ``np.memmap`` of
just those rows, closed after the copy), so the resident memory stays near a
chunk's footprint however large the file is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from grnn_jax._util.validation import check_finite, check_int


def open_npy(path) -> tuple[Path, int, tuple[int, int], np.dtype]:
    """Checks an ``.npy`` file without reading its data: ``(path, data_offset, shape, dtype)``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an ``.npy`` array, not rank 2, empty, Fortran-ordered,
        or a dtype other than real integers and floats.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    try:
        m = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{p} is not a plain numeric .npy array: {err}") from None
    shape, dtype, offset, fortran = m.shape, m.dtype, m.offset, m.flags.f_contiguous and m.ndim > 1
    del m
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)) or dtype.fields:
        raise ValueError(f"{p} must hold real numbers (float or int); got dtype {dtype}")
    if len(shape) != 2:
        raise ValueError(f"{p} must hold an (N, D) array of rank 2; got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{p} is empty (shape {shape})")
    # An (N, 1) or (1, D) array is both C- and Fortran-ordered.
    if fortran and min(shape) > 1:
        raise ValueError(f"{p} is stored in Fortran order; save it in C order to read it by rows")
    return p, int(offset), (int(shape[0]), int(shape[1])), dtype


class RowSource:
    """The rows of a data set, read in chunks of a fixed number of rows.

    Args:
      data: an (N, D) array (numpy, ``np.memmap``, JAX), a path to an ``.npy``
        file (mapped a chunk at a time), or a re-iterable of (n_i, D) arrays
        (e.g. a list, or an object whose ``__iter__`` restarts the stream; a
        one-shot generator is refused, as EM passes over the data many times).
      weights: optional (N,) row weights for array and file data.
      rows: ``(start, stop)``, the rows this reader owns (a process's slice
        in multi-process EM); all rows by default. Not for iterables.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.em.rows import RowSource
      >>> src = RowSource(np.arange(10.0).reshape(5, 2))
      >>> [(c.shape, w.tolist()) for c, w, start in src.chunks(3)]
      [((3, 2), [1.0, 1.0, 1.0]), ((3, 2), [1.0, 1.0, 0.0])]
    """

    def __init__(self, data, *, weights=None, rows: tuple[int, int] | None = None):
        self._path = None
        self._iterable = None
        self._array = None
        if isinstance(data, (str, os.PathLike)):
            self._path, self._offset, shape, self.dtype = open_npy(data)
            self._size = self._path.stat().st_size
            self.n_total, self.n_features = shape
        elif hasattr(data, "shape") and hasattr(data, "dtype"):
            if len(data.shape) != 2 or 0 in data.shape:
                raise ValueError(f"data must have shape (N, D) with N, D >= 1; got shape {tuple(data.shape)}")
            if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
                raise ValueError(f"data must hold real numbers (float or int); got dtype {data.dtype}")
            self._array = data
            self.n_total, self.n_features = (int(s) for s in data.shape)
            self.dtype = np.dtype(data.dtype)
        elif isinstance(data, Iterable):
            if iter(data) is data:
                raise ValueError("data is a one-shot iterator; pass a re-iterable (a list, or an "
                                 "object whose __iter__ starts the stream again)")
            if weights is not None or rows is not None:
                raise ValueError("weights and rows apply to array or .npy data, not to an iterable of chunks")
            self._iterable = data
            self.n_total = None  # known after one pass
            self.n_features = None
            self.dtype = None
        else:
            raise ValueError(f"data must be an (N, D) array, an .npy path or an iterable of chunks; "
                             f"got {type(data).__name__}")
        self._weights = None
        if weights is not None:
            w = np.asarray(weights, np.float64)
            if w.shape != (self.n_total,):
                raise ValueError(f"weights must have shape ({self.n_total},) (one per row); got {w.shape}")
            check_finite(w, "weights")
            if (w < 0).any():
                raise ValueError(f"weights must be non-negative; the first negative one is at index "
                                 f"{int(np.argmax(w < 0))}")
            self._weights = w
        if rows is None:
            rows = (0, self.n_total)
        self.start, self.stop = rows
        if self._iterable is None and not 0 <= self.start <= self.stop <= self.n_total:
            raise ValueError(f"rows {rows} are not a slice of the {self.n_total} rows")

    @property
    def is_stream(self) -> bool:
        """Whether the rows come from an iterable (no row count or index until a pass)."""
        return self._iterable is not None

    @property
    def describe(self) -> str:
        return str(self._path) if self._path is not None else "data"

    def check_unchanged(self) -> None:
        """Raises a ValueError if an ``.npy`` file changed size since it was opened."""
        if self._path is None:
            return
        try:
            size = self._path.stat().st_size
        except OSError as err:
            raise ValueError(f"{self._path} can no longer be read: {err}") from None
        if size != self._size:
            raise ValueError(f"{self._path} changed size between passes over it ({self._size} bytes, "
                             f"now {size}); EM needs the same rows on every pass")

    def _read(self, lo: int, hi: int) -> np.ndarray:
        if self._path is not None:
            item = self.dtype.itemsize * self.n_features
            m = np.memmap(self._path, self.dtype, "r", offset=self._offset + lo * item,
                          shape=(hi - lo, self.n_features))
            out = np.array(m)
            del m  # unmaps: the file's pages leave this process's resident memory
            return out
        return np.asarray(self._array[lo:hi])

    def chunks(self, chunk_size: int, *, order: np.ndarray | None = None) -> Iterator:
        """Yields ``(chunk (C, D), weights (C,), start)`` with ``start`` the global index of its first row.

        Rows past the end of the data are zeros with weight 0. ``order``
        permutes the chunks of array and file data (online EM shuffles them).
        """
        c = check_int(chunk_size, "chunk_size")
        if self._iterable is not None:
            yield from self._rechunk(c)
            return
        self.check_unchanged()
        n = self.stop - self.start
        n_chunks = -(-n // c)
        for i in range(n_chunks) if order is None else order:
            lo = self.start + int(i) * c
            hi = min(lo + c, self.stop)
            x = self._read(lo, hi)
            w = np.ones(hi - lo) if self._weights is None else self._weights[lo:hi]
            yield (*_pad(x, w, c, self.n_features, self.dtype), lo)

    def n_chunks(self, chunk_size: int) -> int | None:
        if self._iterable is not None:
            return None
        return -(-(self.stop - self.start) // chunk_size)

    def _rechunk(self, c: int) -> Iterator:
        buf, filled, start = [], 0, 0
        for i, piece in enumerate(self._iterable):
            a = np.asarray(piece)
            if a.ndim != 2 or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise ValueError(f"chunk {i} of data must be an (n, D) array of real numbers; "
                                 f"got shape {a.shape}, dtype {a.dtype}")
            if self.n_features is None:
                self.n_features, self.dtype = a.shape[1], np.dtype(a.dtype)
            if a.shape[1] != self.n_features:
                raise ValueError(f"chunk {i} of data has {a.shape[1]} features; the first had {self.n_features}")
            while len(a):
                take = min(c - filled, len(a))
                buf.append(a[:take])
                a, filled = a[take:], filled + take
                if filled == c:
                    yield (*_pad(np.concatenate(buf), np.ones(c), c, self.n_features, self.dtype), start)
                    start, buf, filled = start + c, [], 0
        if filled:
            yield (*_pad(np.concatenate(buf), np.ones(filled), c, self.n_features, self.dtype), start)
            start += filled
        if self.n_total is None:
            if start == 0:
                raise ValueError("data yielded no rows")
            self.n_total, self.stop = start, start
        elif start != self.n_total:
            raise ValueError(f"data yielded {start} rows on this pass but {self.n_total} on the first; "
                             f"EM needs the same rows on every pass")


def _pad(x: np.ndarray, w: np.ndarray, c: int, d: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    if len(x) == c:
        return x, np.asarray(w, np.float64)
    xp = np.zeros((c, d), dtype)
    xp[: len(x)] = x
    wp = np.zeros(c)
    wp[: len(w)] = w
    return xp, wp
