"""Training-time noise for a GRNN: Gaussian input noise and variational dropout.

Variational dropout (Gal & Ghahramani 2016) draws one mask per sequence and unit and keeps
it at every time step, so that a recurrent network sees one thinned network per sequence
rather than fresh noise at each step. Here it thins the network's inputs (``x_{t-1} ++
u_t``), the state each recurrent layer's recurrent matmul reads (not the carried state),
and every recurrent layer's outputs (what the next layer and the mixture head read);
input noise adds ``N(0, input_noise^2)`` to the previous observations the network
reads, never to the observations its mixture is scored on.

Only training draws any of it: a :class:`Noise` passed to ``GRNN.__call__`` (through
``model.step_log_probs(..., noise=...)`` or a training objective) carries the settings and
the key; evaluation, sampling and forecasting pass none and are deterministic.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp


class Regulariser(NamedTuple):
    """Strengths of the training-time noise (all 0: none), drawn during training only.

    The one declaration of the noise settings: ``grnn_jax.train.TrainConfig`` takes these
    fields (names, types and defaults) as its own.

    Attributes:
      input_noise: standard deviation of Gaussian noise added to the previous observations
        the network reads (model units, i.e. standardised when the run standardises), >= 0;
        the observations the loss scores stay clean.
      input_dropout: variational dropout rate on the network's inputs (one mask per
        sequence, the same at every time step), in [0, 1).
      output_dropout: variational dropout rate on every recurrent layer's outputs (what the
        next layer and the mixture head read), in [0, 1).
      recurrent_dropout: variational dropout rate on the state every layer's recurrent
        matmul reads (one mask per sequence for all steps), in [0, 1).
    """

    input_noise: float = 0.0
    input_dropout: float = 0.0
    output_dropout: float = 0.0
    recurrent_dropout: float = 0.0

    @property
    def active(self) -> bool:
        """Whether training draws any noise at all."""
        return any(float(v) > 0 for v in self)


def check_regulariser(reg: Regulariser, names: tuple[str, ...] | None = None) -> Regulariser:
    """Returns ``reg`` or raises a one-line ValueError naming the bad setting.

    Args:
      reg: the settings.
      names: how errors name the fields (e.g. config keys); the field names if None.

    Example:
      >>> check_regulariser(Regulariser(input_dropout=1.0))
      Traceback (most recent call last):
      ...
      ValueError: input_dropout must lie in [0, 1); got 1.0
    """
    names = names or Regulariser._fields
    for name, v in zip(names, reg):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number; got {v!r}")
    if reg.input_noise < 0:
        raise ValueError(f"{names[0]} must be >= 0; got {reg.input_noise!r}")
    for name, v in zip(names[1:], reg[1:]):
        if not 0 <= v < 1:
            raise ValueError(f"{name} must lie in [0, 1); got {v!r}")
    return reg


@flax.struct.dataclass
class Noise:
    """The noise of one training step: its key and (static) settings.

    Attributes:
      key: a PRNG key; the step's draws all derive from it.
      settings: a :class:`Regulariser` (static: part of what a jitted step compiles for).
    """

    key: jax.Array
    settings: Regulariser = flax.struct.field(pytree_node=False)


def variational_mask(key: jax.Array, rate: float, shape: tuple[int, ...], dtype) -> jax.Array:
    """Inverted-dropout multipliers, 0 with probability ``rate`` and ``1 / (1 - rate)``
    otherwise, so that their mean is 1: ``shape`` is (B, F), one per sequence and unit, to
    be broadcast over time.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> m = variational_mask(jax.random.key(0), 0.5, (1000, 4), jnp.float32)
      >>> sorted(set(m.ravel().tolist())), bool(abs(float(m.mean()) - 1) < 0.05)
      ([0.0, 2.0], True)
    """
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def noisy_inputs(noise: Noise, x_prev: jax.Array, u: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """``(x_prev + noise, u)`` with the input noise drawn (observations only, not covariates).

    Args:
      noise: the step's noise.
      x_prev: (B, T, D) previous observations (the network's input, already shifted).
      u: (B, T, C) covariates or None.
    """
    s = noise.settings.input_noise
    if s > 0:
        eps = jax.random.normal(jax.random.fold_in(noise.key, 0), x_prev.shape, x_prev.dtype)
        x_prev = x_prev + jnp.asarray(s, x_prev.dtype) * eps
    return x_prev, u


def input_mask(noise: Noise, batch: int, width: int, dtype) -> jax.Array | None:
    """(B, F) variational mask of the network's inputs, or None when the rate is 0."""
    p = noise.settings.input_dropout
    return variational_mask(jax.random.fold_in(noise.key, 1), p, (batch, width), dtype) if p > 0 else None


def output_masks(noise: Noise, n_layers: int, batch: int, width: int, dtype) -> tuple:
    """One (B, H) variational mask per recurrent layer's outputs (None when the rate is 0)."""
    return _layer_masks(noise, 2, noise.settings.output_dropout, n_layers, batch, width, dtype)


def recurrent_masks(noise: Noise, n_layers: int, batch: int, width: int, dtype) -> tuple:
    """One (B, H) variational mask per layer of the state its recurrent matmul reads (None
    when the rate is 0)."""
    return _layer_masks(noise, 3, noise.settings.recurrent_dropout, n_layers, batch, width, dtype)


def _layer_masks(noise, stream: int, p: float, n_layers, batch, width, dtype) -> tuple:
    if p <= 0:
        return (None,) * n_layers
    key = jax.random.fold_in(noise.key, stream)
    return tuple(variational_mask(jax.random.fold_in(key, i), p, (batch, width), dtype)
                 for i in range(n_layers))
