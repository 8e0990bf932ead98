"""Pure functions on one Gaussian mixture: container, densities, M-step, sampling.

Everything here runs under ``jit``, ``vmap`` and ``grad`` and knows nothing of
EM loops or networks.
"""

from grnn_jax.gmm.container import (
    COVARIANCE_TYPES,
    GMM,
    as_full,
    check_covariance_type,
    covariances,
    from_covariances,
    from_precisions,
    log_weights,
    n_parameters,
    precision_cholesky,
    precisions,
    weights,
    with_temperature,
)
from grnn_jax.gmm.density import (
    component_log_prob,
    joint_log_prob,
    log_det_precision,
    log_prob,
    log_responsibilities,
    responsibilities,
)
from grnn_jax.gmm.maximise import m_step
from grnn_jax.gmm.regression import (
    RegressionMixture,
    conditional_mixture,
    n_regression_parameters,
    regression_component_log_prob,
    regression_from_covariances,
    regression_from_gmm,
    regression_log_prob,
    regression_log_responsibilities,
    regression_m_step,
    regression_means,
    regression_responsibilities,
    regression_to_gmm,
    sample_regression,
)
from grnn_jax.gmm.sampling import sample, sample_with_labels
from grnn_jax.gmm.standardise import Standardiser
from grnn_jax.gmm.unconstrained import from_unconstrained, to_unconstrained

__all__ = [
    "as_full",
    "check_covariance_type",
    "component_log_prob",
    "conditional_mixture",
    "COVARIANCE_TYPES",
    "covariances",
    "from_covariances",
    "from_precisions",
    "from_unconstrained",
    "GMM",
    "joint_log_prob",
    "log_det_precision",
    "log_prob",
    "log_responsibilities",
    "log_weights",
    "m_step",
    "n_parameters",
    "n_regression_parameters",
    "precision_cholesky",
    "precisions",
    "regression_component_log_prob",
    "regression_from_covariances",
    "regression_from_gmm",
    "regression_log_prob",
    "regression_log_responsibilities",
    "regression_m_step",
    "regression_means",
    "regression_responsibilities",
    "regression_to_gmm",
    "RegressionMixture",
    "responsibilities",
    "sample",
    "sample_regression",
    "sample_with_labels",
    "Standardiser",
    "to_unconstrained",
    "weights",
    "with_temperature",
]
