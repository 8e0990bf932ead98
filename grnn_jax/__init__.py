"""grnn_jax: Gaussian mixture models and Gaussian-mixture recurrent networks in JAX.

The namespaces load on first use, so ``import grnn_jax`` stays fast:

* :mod:`grnn_jax.gmm` — pure functions on one Gaussian mixture;
* :mod:`grnn_jax.em` — fitting mixtures by EM (chunked, online, sharded);
* :mod:`grnn_jax.data` — padded sequences, splits, batching, shipped data sets;
* :mod:`grnn_jax.model` — the recurrent network and its mixture heads;
* :mod:`grnn_jax.train` — training runs, EM inside training, populations, sweeps;
* :mod:`grnn_jax.runtime` — process-level settings (host devices, allocator, float type);
* :class:`GaussianMixture` — the scikit-learn compatible estimator.

Example:
  >>> import grnn_jax
  >>> sorted(grnn_jax.__all__)
  ['GaussianMixture', 'data', 'em', 'gmm', 'model', 'runtime', 'train']
  >>> grnn_jax.gmm.COVARIANCE_TYPES
  ('full', 'diag', 'spherical', 'tied')
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
_NAMESPACES = ("data", "em", "gmm", "model", "runtime", "train")
__all__ = ["GaussianMixture", *_NAMESPACES]


def __getattr__(name: str):
    if name in _NAMESPACES:
        return importlib.import_module(f"grnn_jax.{name}")
    if name == "GaussianMixture":
        from grnn_jax.em.estimator import GaussianMixture

        return GaussianMixture
    raise AttributeError(f"module 'grnn_jax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
