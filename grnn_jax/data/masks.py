"""Step masks of padded sequences: which of a (B, T) batch's steps are observed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def mask_from_lengths(lengths, n_steps: int):
    """(B, T) boolean mask, True at steps ``t < lengths[b]``.

    NumPy lengths give a NumPy mask (host-side data handling, no device
    transfer); JAX arrays, also under ``jit``, give a JAX mask.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> mask_from_lengths(jnp.array([1, 3]), 3).astype(int).tolist()
      [[1, 0, 0], [1, 1, 1]]
      >>> type(mask_from_lengths(np.array([2]), 3)).__name__
      'ndarray'
    """
    xp = jnp if isinstance(lengths, jax.Array) else np
    lengths = xp.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must have shape (B,); got {lengths.shape}")
    return xp.arange(n_steps)[None, :] < lengths[:, None]
