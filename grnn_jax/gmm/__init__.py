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
from grnn_jax.gmm.sampling import sample, sample_with_labels
from grnn_jax.gmm.standardise import Standardiser

__all__ = [
    "COVARIANCE_TYPES",
    "GMM",
    "as_full",
    "check_covariance_type",
    "component_log_prob",
    "covariances",
    "from_covariances",
    "from_precisions",
    "joint_log_prob",
    "log_det_precision",
    "log_prob",
    "log_responsibilities",
    "log_weights",
    "m_step",
    "n_parameters",
    "precision_cholesky",
    "precisions",
    "responsibilities",
    "sample",
    "sample_with_labels",
    "Standardiser",
    "weights",
    "with_temperature",
]
