"""A pytest plugin that runs scikit-learn's own GaussianMixture tests on ``grnn_jax.GaussianMixture``.

Loaded with ``-p sklearn_suite`` by ``test_estimator_sklearn.py`` in a subprocess
that collects ``sklearn/mixture/tests/test_gaussian_mixture.py``: every test there
that names ``GaussianMixture`` gets ours instead.
"""

import pytest

import grnn_jax


@pytest.fixture(autouse=True)
def _grnn_estimator(request, monkeypatch):
    if hasattr(request.module, "GaussianMixture"):
        monkeypatch.setattr(request.module, "GaussianMixture", grnn_jax.GaussianMixture)
