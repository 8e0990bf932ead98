"""Lagged observations as regressors for autoregressive mixtures.

``lagged(x, p)`` turns padded sequences ``x (S, T, D)`` into ``phi (S, T, p*D)``
with ``phi[s, t] = [x[s, t-1], x[s, t-2], ..., x[s, t-p]]`` (the most recent lag
first) and zeros in place of every ``x[s, t-j]`` with ``t - j < 0``. So the first
``p`` steps condition on what has been seen and zeros for the rest: step 0 on
zeros only (a regression component scores it as ``N(x_0 | b_k, Sigma_k)``), step
``t < p`` on ``x_{t-1}, ..., x_0`` followed by ``(p - t) * D`` zeros. This is
dynamax's ``compute_inputs`` convention for its linear autoregressive HMM.

A valid step never reads a padded one (``t - j < t < length``); padded steps of
``x`` are zeroed first when ``lengths`` is given, so their regressors stay finite
whatever the padding holds.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _xp(a):
    return jnp if isinstance(a, jax.Array) else np


def _check(x, p, lengths) -> None:
    """One-line ValueErrors for a bad rank, lag order or lengths (lengths checked when concrete)."""
    if np.ndim(x) != 3:
        raise ValueError(f"x must have shape (S, T, D); got shape {np.shape(x)}")
    if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 0:
        raise ValueError(f"the lag order p must be an integer >= 0; got {p!r}")
    t = np.shape(x)[1]
    if lengths is None or isinstance(lengths, jax.core.Tracer):
        shortest = t
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != np.shape(x)[:1] or (lengths < 1).any() or (lengths > t).any():
            raise ValueError(f"lengths must have shape ({np.shape(x)[0]},) with values in [1, {t}]; "
                             f"got {lengths.tolist() if lengths.size <= 8 else lengths.shape}")
        shortest = int(lengths.min())
    if p >= shortest:
        raise ValueError(f"the lag order p={p} must be smaller than the shortest sequence ({shortest} steps)")


def lagged(x, p: int, *, lengths=None, check: bool = True):
    """The last ``p`` observations before every step, most recent first, zeros before the start.

    Args:
      x: (S, T, D) padded sequences (NumPy in gives NumPy out; a JAX array gives a
        JAX array and works under ``jit`` with ``p`` static).
      p: lag order, ``0 <= p <`` the shortest sequence's length.
      lengths: optional (S,) observed steps per sequence; steps ``t >= lengths[s]``
        are padding, zeroed before lagging.
      check: False skips the checks that ``p`` is shorter than every sequence (a model
        scores any prefix, a single step included: its missing lags are zeros).

    Returns:
      (S, T, p*D) regressors: ``phi[s, t, (j-1)*D:j*D] = x[s, t-j]`` for ``t >= j``, else 0.

    Raises:
      ValueError: x not rank 3, p negative or not an integer, p >= the shortest
        length, or lengths of the wrong shape or out of [1, T].

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data.lags import lagged
      >>> x = np.arange(1.0, 5.0).reshape(1, 4, 1)
      >>> lagged(x, 2)[0].tolist()
      [[0.0, 0.0], [1.0, 0.0], [2.0, 1.0], [3.0, 2.0]]
    """
    if check:
        _check(x, p, lengths)
    xp = _xp(x)
    x = xp.asarray(x)
    s, t, d = x.shape
    if lengths is not None:
        valid = xp.arange(t)[None, :] < xp.asarray(lengths)[:, None]
        x = xp.where(valid[..., None], x, 0.0)
    padded = xp.concatenate([xp.zeros((s, p, d), x.dtype), x], axis=1)  # (S, p + T, D)
    lags = [padded[:, p - j : p - j + t] for j in range(1, p + 1)]
    return xp.concatenate(lags, axis=-1) if lags else xp.zeros((s, t, 0), x.dtype)


def regressors(x, p: int, *, covariates=None, lengths=None):
    """``[lagged(x, p), covariates]``: lags of ``x`` and the step's own covariates.

    Args:
      x: (S, T, D) padded sequences.
      p: lag order (see :func:`lagged`).
      covariates: optional (S, T, C) covariates aligned with ``x`` (``u[s, t]`` is
        known when ``x[s, t]`` is predicted); zeroed at padded steps.
      lengths: optional (S,) observed steps per sequence.

    Returns:
      (S, T, p*D + C) regressors.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data.lags import regressors
      >>> x, u = np.ones((2, 3, 2)), np.full((2, 3, 1), 5.0)
      >>> regressors(x, 1, covariates=u).shape
      (2, 3, 3)
    """
    phi = lagged(x, p, lengths=lengths)
    if covariates is None:
        return phi
    xp = _xp(phi)
    u = xp.asarray(covariates)
    if u.ndim != 3 or u.shape[:2] != phi.shape[:2]:
        raise ValueError(f"covariates must have shape ({phi.shape[0]}, {phi.shape[1]}, C); got {tuple(u.shape)}")
    if lengths is not None:
        u = xp.where((xp.arange(u.shape[1])[None, :] < xp.asarray(lengths)[:, None])[..., None], u, 0.0)
    return xp.concatenate([phi, u.astype(phi.dtype)], axis=-1)
