"""Mixtures of linear regressions: components ``N(x | W_k phi + b_k, Sigma_k)``.

``phi (..., F)`` are the regressors of an observation ``x (..., D)``: for an
autoregression the last ``p`` observations (:func:`grnn_jax.data.lags.lagged`),
and covariates where given. Given ``phi``, the model is an ordinary Gaussian
mixture whose means are ``W_k phi + b_k`` (:func:`conditional_mixture`), so every
density, responsibility and sampling function of :mod:`grnn_jax.gmm` applies to
it unchanged; the functions here are that composition, plus the closed-form
M-step (weighted least squares for ``[W_k b_k]``, then the weighted residual
covariance).

Shapes, for ``K`` components, ``D`` features and ``F`` regressors (any leading
batch shape may be prepended to every field, as for :class:`~grnn_jax.gmm.GMM`):

=============  ==========  =============  =============  =================
type           logits      coef           intercept      prec_chol
=============  ==========  =============  =============  =================
``full``       ``(K,)``    ``(K, D, F)``  ``(K, D)``     ``(K, D, D)``
``diag``       ``(K,)``    ``(K, D, F)``  ``(K, D)``     ``(K, D)``
``spherical``  ``(K,)``    ``(K, D, F)``  ``(K, D)``     ``(K,)``
``tied``       ``(K,)``    ``(K, D, F)``  ``(K, D)``     ``(D, D)``
=============  ==========  =============  =============  =================

With ``F = 0`` a regression mixture is a plain GMM whose means are the
intercepts (:func:`regression_from_gmm`, :func:`regression_to_gmm`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from grnn_jax.gmm.container import (
    GMM,
    check_covariance_type,
    from_covariances,
    n_parameters,
    precision_cholesky,
)
from grnn_jax.gmm.density import component_log_prob, log_prob, log_responsibilities
from grnn_jax.gmm.sampling import sample_with_labels

_HIGHEST = jax.lax.Precision.HIGHEST


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["logits", "coef", "intercept", "prec_chol"],
    meta_fields=["covariance_type"],
)
@dataclasses.dataclass(frozen=True)
class RegressionMixture:
    """A mixture of linear regressions (a pytree: arrays are leaves, the type is static).

    Attributes:
      logits: (..., K) unnormalised log mixture weights.
      coef: (..., K, D, F) regression matrices ``W_k``.
      intercept: (..., K, D) intercepts ``b_k``.
      prec_chol: precision Cholesky factors of the residual covariances, shaped
        as :class:`~grnn_jax.gmm.GMM`'s (see the module doc).
      covariance_type: "full", "diag", "spherical" or "tied".

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.gmm import regression as rg
      >>> rm = rg.regression_from_covariances(jnp.zeros(2), jnp.ones((2, 3, 4)), jnp.zeros((2, 3)),
      ...                                      jnp.ones(2), "spherical")
      >>> rm.n_components, rm.n_features, rm.n_regressors
      (2, 3, 4)
    """

    logits: jax.Array
    coef: jax.Array
    intercept: jax.Array
    prec_chol: jax.Array
    covariance_type: str = "full"

    @property
    def n_components(self) -> int:
        return self.coef.shape[-3]

    @property
    def n_features(self) -> int:
        return self.coef.shape[-2]

    @property
    def n_regressors(self) -> int:
        return self.coef.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.coef.shape[:-3]


def regression_from_covariances(logits, coef, intercept, covariances, covariance_type: str) -> RegressionMixture:
    """Builds a regression mixture from log-weights, ``W``, ``b`` and residual covariances.

    Args:
      logits: (..., K) unnormalised log weights.
      coef: (..., K, D, F) regression matrices.
      intercept: (..., K, D) intercepts.
      covariances: shaped by ``covariance_type`` (see the module doc).
      covariance_type: "full", "diag", "spherical" or "tied".

    Raises:
      ValueError: unknown covariance type or shapes that do not fit together.
    """
    g = from_covariances(logits, intercept, covariances, covariance_type)
    coef = jnp.asarray(coef)
    if coef.ndim < 3 or coef.shape[-3:-1] != g.means.shape[-2:]:
        raise ValueError(f"coef must have shape (..., K, D, F) = (..., {g.n_components}, {g.n_features}, F) "
                         f"to match intercept {tuple(g.means.shape)}; got {tuple(coef.shape)}")
    return RegressionMixture(g.logits, coef, g.means, g.prec_chol, covariance_type)


def regression_from_gmm(g: GMM, n_regressors: int = 0) -> RegressionMixture:
    """The regression mixture with intercepts ``g.means`` and ``W = 0`` (F = ``n_regressors``).

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> from grnn_jax.gmm import regression as rg
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.ones((2, 3)), jnp.ones((2, 3)), "diag")
      >>> rg.regression_from_gmm(g, 5).coef.shape
      (2, 3, 5)
    """
    coef = jnp.zeros(g.means.shape + (n_regressors,), g.means.dtype)
    return RegressionMixture(g.logits, coef, g.means, g.prec_chol, g.covariance_type)


def regression_to_gmm(rm: RegressionMixture) -> GMM:
    """The plain GMM of a mixture without regressors (F = 0); a ValueError otherwise.

    For F > 0 use :func:`conditional_mixture`, the GMM of ``x`` given ``phi``.
    """
    if rm.n_regressors != 0:
        raise ValueError(f"regression_to_gmm needs F = 0 regressors; this mixture has {rm.n_regressors} "
                         "(use conditional_mixture(rm, phi) for the mixture given phi)")
    return GMM(rm.logits, rm.intercept, rm.prec_chol, rm.covariance_type)


def regression_means(rm: RegressionMixture, phi: jax.Array) -> jax.Array:
    """(..., K, D) component means ``W_k phi + b_k``.

    Args:
      rm: mixture with batch shape ``S``.
      phi: (..., F) regressors whose leading shape broadcasts against ``S``.
    """
    phi = jnp.asarray(phi)
    if phi.shape[-1:] != (rm.n_regressors,):
        raise ValueError(f"phi must have shape (..., {rm.n_regressors}); got {tuple(phi.shape)}")
    return jnp.einsum("...kdf,...f->...kd", rm.coef, phi, precision=_HIGHEST) + rm.intercept


def conditional_mixture(rm: RegressionMixture, phi: jax.Array, logits: jax.Array | None = None) -> GMM:
    """The Gaussian mixture of ``x`` given ``phi``: means ``W_k phi + b_k``, batch shape ``phi``'s.

    Every :mod:`grnn_jax.gmm` function applies to the result (densities,
    responsibilities, sampling, :func:`~grnn_jax.gmm.as_full`...).

    Args:
      rm: the regression mixture.
      phi: (..., F) regressors.
      logits: optional (..., K) unnormalised log-weights that replace
        ``rm.logits`` (per-step weights from a network or a regime filter).

    Returns:
      A :class:`~grnn_jax.gmm.GMM` with means (..., K, D) and ``rm``'s precision factors.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.gmm import regression as rg
      >>> rm = rg.regression_from_covariances(jnp.zeros(1), 2 * jnp.ones((1, 1, 1)), jnp.ones((1, 1)),
      ...                                      jnp.ones(1), "spherical")
      >>> rg.conditional_mixture(rm, jnp.array([[0.0], [3.0]])).means[:, 0, 0].tolist()
      [1.0, 7.0]
    """
    weights = rm.logits if logits is None else jnp.asarray(logits)
    return GMM(weights, regression_means(rm, phi), rm.prec_chol, rm.covariance_type)


def regression_component_log_prob(rm: RegressionMixture, x: jax.Array, phi: jax.Array) -> jax.Array:
    """(..., K) ``log N(x | W_k phi + b_k, Sigma_k)`` for x (..., D) and phi (..., F)."""
    return component_log_prob(conditional_mixture(rm, phi), x)


def regression_log_prob(rm: RegressionMixture, x: jax.Array, phi: jax.Array, logits: jax.Array | None = None):
    """(...,) ``log sum_k pi_k N(x | W_k phi + b_k, Sigma_k)``.

    Args:
      rm: the regression mixture.
      x: (..., D) observations.
      phi: (..., F) their regressors.
      logits: optional (..., K) per-row unnormalised log-weights replacing ``rm.logits``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.gmm import regression as rg
      >>> rm = rg.regression_from_covariances(jnp.zeros(1), jnp.ones((1, 1, 1)), jnp.zeros((1, 1)),
      ...                                      jnp.ones(1), "spherical")
      >>> print(round(float(rg.regression_log_prob(rm, jnp.array([2.0]), jnp.array([2.0]))), 4))
      -0.9189
    """
    return log_prob(conditional_mixture(rm, phi, logits), x)


def regression_log_responsibilities(rm: RegressionMixture, x: jax.Array, phi: jax.Array,
                                    logits: jax.Array | None = None) -> jax.Array:
    """(..., K) ``log p(k | x, phi)``; the prior weights where no component explains ``x``."""
    return log_responsibilities(conditional_mixture(rm, phi, logits), x)


def regression_responsibilities(rm: RegressionMixture, x: jax.Array, phi: jax.Array,
                                logits: jax.Array | None = None) -> jax.Array:
    """(..., K) ``p(k | x, phi)``; rows sum to one."""
    return jnp.exp(regression_log_responsibilities(rm, x, phi, logits))


def sample_regression(key: jax.Array, rm: RegressionMixture, phi: jax.Array, shape: tuple[int, ...] = (),
                      logits: jax.Array | None = None):
    """Draws ``x`` given ``phi``, with the component each draw came from.

    Args:
      key: PRNG key.
      rm: the regression mixture.
      phi: (*B, F) regressors.
      shape: sample shape prepended to ``B``.
      logits: optional (*B, K) log-weights replacing ``rm.logits``.

    Returns:
      ``(x, labels)``: x (*shape, *B, D) and labels (*shape, *B).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax.gmm import regression as rg
      >>> rm = rg.regression_from_covariances(jnp.zeros(2), jnp.ones((2, 3, 1)), jnp.zeros((2, 3)),
      ...                                      jnp.ones(2), "spherical")
      >>> x, labels = rg.sample_regression(jax.random.key(0), rm, jnp.ones((5, 1)), (4,))
      >>> x.shape, labels.shape
      ((4, 5, 3), (4, 5))
    """
    return sample_with_labels(key, conditional_mixture(rm, phi, logits), shape)


def _weighted(x, phi, resp, weights):
    """Masked copies: rows of weight 0 become zeros with zero responsibility."""
    if weights is None:
        return x, phi, resp
    keep = weights > 0
    x = jnp.where(keep[:, None], x, 0.0)
    phi = jnp.where(keep[:, None], phi, 0.0)
    return x, phi, jnp.where(keep[:, None], resp * weights[:, None], 0.0)


def _solve_coef(resp, dx, dphi, nk, ridge):
    """(K, D, F) ``W_k = Sxp_k (Spp_k + ridge I)^-1`` from centred rows dx (N, K, D), dphi (N, K, F)."""
    f = dphi.shape[-1]
    if f == 0:
        return jnp.zeros((nk.shape[0], dx.shape[-1], 0), dx.dtype)
    spp = jnp.einsum("nk,nkf,nkg->kfg", resp, dphi, dphi, precision=_HIGHEST)
    sxp = jnp.einsum("nk,nkd,nkf->kfd", resp, dx, dphi, precision=_HIGHEST)
    a = 0.5 * (spp + jnp.swapaxes(spp, -1, -2)) + jnp.eye(f, dtype=dx.dtype) * ridge
    return jnp.swapaxes(jnp.linalg.solve(a, sxp), -1, -2)


def regression_m_step(
    x: jax.Array,
    phi: jax.Array,
    resp: jax.Array,
    *,
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
    ridge: float = 1e-6,
    weights: jax.Array | None = None,
) -> RegressionMixture:
    """Maximum-likelihood regression mixture given (soft) assignments, in two passes.

    For each component: weighted least squares for ``[W_k b_k]`` (the ridge
    penalty ``ridge * |W_k|^2`` leaves the intercept free, so the fit is that of
    the rows centred on their weighted means), then the responsibility-weighted
    covariance of the residuals ``x - W_k phi - b_k`` plus ``reg_covar``. With
    F = 0 regressors the result is exactly :func:`~grnn_jax.gmm.m_step`'s.
    Counts are floored at ``10 * eps`` as there.

    Args:
      x: (N, D) observations.
      phi: (N, F) regressors.
      resp: (N, K) responsibilities (rows need not sum to one).
      covariance_type: "full", "diag", "spherical" or "tied".
      reg_covar: non-negative variance floor added to the diagonal.
      ridge: non-negative penalty on ``W`` (scalar or (F,)); with 0 each
        component's weighted regressors must have full rank.
      weights: optional (N,) non-negative row weights (0 ignores a row, NaN included).

    Returns:
      The fitted :class:`RegressionMixture`.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.gmm import regression as rg
      >>> phi = jnp.array([[0.0], [1.0], [2.0], [3.0]])
      >>> x = 2 * phi + 1
      >>> rm = rg.regression_m_step(x, phi, jnp.ones((4, 1)), covariance_type="diag", ridge=0.0)
      >>> round(float(rm.coef[0, 0, 0]), 4), round(float(rm.intercept[0, 0]), 4)
      (2.0, 1.0)
    """
    check_covariance_type(covariance_type)
    if x.ndim != 2 or phi.ndim != 2 or resp.ndim != 2 or not x.shape[0] == phi.shape[0] == resp.shape[0]:
        raise ValueError(f"regression_m_step expects x (N, D), phi (N, F) and resp (N, K); got "
                         f"{x.shape}, {phi.shape} and {resp.shape}")
    x, phi, resp = _weighted(x, phi, resp, weights)
    eps = jnp.finfo(x.dtype).eps
    nk = jnp.sum(resp, axis=0) + 10 * eps  # (K,)
    xbar = (resp.T @ x) / nk[:, None]  # (K, D)
    phibar = (resp.T @ phi) / nk[:, None]  # (K, F)
    dphi = phi[:, None, :] - phibar  # (N, K, F)
    diff = x[:, None, :] - xbar  # (N, K, D): with F = 0, gmm.m_step's residuals bit for bit
    coef = _solve_coef(resp, diff, dphi, nk, ridge)
    means = xbar
    if phi.shape[1]:
        means = xbar - jnp.einsum("kdf,kf->kd", coef, phibar, precision=_HIGHEST)
        diff = diff - jnp.einsum("kdf,nkf->nkd", coef, dphi, precision=_HIGHEST)
    cov = _residual_covariance(resp, diff, nk, covariance_type, reg_covar)
    logits = jnp.log(nk) - jnp.log(jnp.sum(nk))
    return RegressionMixture(logits, coef, means, precision_cholesky(cov, covariance_type), covariance_type)


def _residual_covariance(resp, diff, nk, covariance_type: str, reg_covar):
    """Covariances of the residuals diff (N, K, D) as :func:`~grnn_jax.gmm.m_step` computes them."""
    d = diff.shape[-1]
    dtype = diff.dtype
    if covariance_type == "full":
        cov = jnp.einsum("nk,nkd,nke->kde", resp, diff, diff) / nk[:, None, None]
        return cov + reg_covar * jnp.eye(d, dtype=dtype)
    if covariance_type == "tied":
        cov = jnp.einsum("nk,nkd,nke->de", resp, diff, diff) / jnp.sum(nk)
        return cov + reg_covar * jnp.eye(d, dtype=dtype)
    var = jnp.einsum("nk,nkd->kd", resp, jnp.square(diff)) / nk[:, None] + reg_covar
    return var if covariance_type == "diag" else jnp.mean(var, axis=-1)


def n_regression_parameters(n_components: int, n_features: int, n_regressors: int, covariance_type: str) -> int:
    """Number of free parameters (for BIC/AIC): a GMM's plus ``K * D * F`` regression coefficients.

    Example:
      >>> from grnn_jax import gmm
      >>> from grnn_jax.gmm import regression as rg
      >>> rg.n_regression_parameters(2, 3, 0, "diag") == gmm.n_parameters(2, 3, "diag")
      True
    """
    return n_parameters(n_components, n_features, covariance_type) + n_components * n_features * n_regressors
