"""Input checks that run on the host before any compute, with messages that name the problem."""

from __future__ import annotations

import numbers

import jax
import numpy as np


def check_int(value, name: str, *, minimum: int = 1) -> int:
    """Returns ``value`` as an int, or raises a ValueError unless it is an integer >= minimum.

    Example:
      >>> from grnn_jax._util.validation import check_int
      >>> check_int(3, "n_steps")
      3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_finite(a: np.ndarray, name: str) -> None:
    """Raises ValueError naming the first NaN/inf entry of ``a`` and how many there are."""
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[where]) else "inf"
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s); the first is {kind} at index {where}"
        )


def check_finite_steps(a: np.ndarray, valid: np.ndarray, name: str) -> None:
    """Raises ValueError naming the first NaN/inf of ``a (S, T, D)`` at a valid step.

    ``valid`` is an (S, T) bool mask; values at invalid (padded) steps are ignored.
    """
    bad = ~np.isfinite(a) & valid[..., None]
    if bad.any():
        s, t, d = (int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[s, t, d]) else "inf"
        raise ValueError(
            f"{name} has a non-finite value at index {(s, t, d)}, inside the valid steps: "
            f"{kind} at sequence {s}, step {t}, feature {d} ({int(bad.sum())} in all)"
        )


def check_data(
    x, name: str = "X", *, ndim: int = 2, min_rows: int | None = None, n_features: int | None = None
) -> np.ndarray:
    """Validates an observation array and returns it as a floating numpy array.

    Args:
      x: array-like, (N, D) when ``ndim=2``.
      name: what to call it in messages.
      ndim: the required rank.
      min_rows: the least number of rows (e.g. the number of components).
      n_features: the required size of the last axis.

    Raises:
      ValueError: wrong rank, empty, too few rows, wrong dimension, NaN or inf.
    """
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must be numeric; got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}; got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    check_finite(a, name)
    if min_rows is not None and a.shape[0] < min_rows:
        raise ValueError(f"{name} has {a.shape[0]} rows; at least {min_rows} are needed")
    if n_features is not None and a.shape[-1] != n_features:
        raise ValueError(f"{name} has {a.shape[-1]} features; expected {n_features}")
    return a


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Raises ValueError unless ``value`` is a finite number > 0 (or >= 0)."""
    v = float(value)
    ok = np.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value!r}")
    return v


def concrete_value(a) -> np.ndarray | None:
    """``a`` as numpy when it holds values, None when it is a tracer (inside ``jit`` or
    ``vmap``), so that host-side checks run wherever values are known and are skipped,
    not failed, under tracing.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> concrete_value(jnp.arange(3)).tolist()
      [0, 1, 2]
      >>> jax.jit(lambda a: jnp.float32(concrete_value(a) is None))(jnp.ones(2)).item()
      1.0
    """
    if isinstance(a, jax.core.Tracer):
        return None
    return np.asarray(a)
