"""Training entry points (the implementation lives in :mod:`grnn_jax.training`)."""

from grnn_jax.training import *  # noqa: F401,F403
from grnn_jax.training import __all__  # noqa: F401
