"""grnn_jax: Gaussian mixture models and Gaussian-mixture recurrent networks in JAX."""

from grnn_jax import gmm

__version__ = "0.1.0"
__all__ = ["gmm"]
