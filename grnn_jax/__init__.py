"""grnn_jax: Gaussian mixture models and Gaussian-mixture recurrent networks in JAX.

``from grnn_jax import GaussianMixture`` gives the scikit-learn compatible
estimator (:class:`grnn_jax.estimator.GaussianMixture`).
"""

from grnn_jax import gmm
from grnn_jax.estimator import GaussianMixture

__version__ = "0.1.0"
__all__ = ["GaussianMixture", "gmm"]
