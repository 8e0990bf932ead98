"""The floating-point type of everything the library creates, taken from JAX's configuration."""

import jax
import jax.numpy as jnp
import numpy as np


def default_float() -> np.dtype:
    """float64 when JAX's 64-bit mode is on (``jax_enable_x64``, also inside
    ``jax.enable_x64(True)``), float32 otherwise.

    Example:
      >>> import jax
      >>> from grnn_jax._util.dtypes import default_float
      >>> str(default_float())
      'float32'
      >>> with jax.enable_x64(True):
      ...     str(default_float())
      'float64'
    """
    return np.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
