"""The GMM container and conversions between its parametrisations.

A mixture is stored as unnormalised log-weights (``logits``), ``means`` and the
Cholesky factor of the precision matrices (``prec_chol``), as scikit-learn keeps
``precisions_cholesky_``: ``precision = prec_chol @ prec_chol.T``. With that
factor the E-step quadratic form is a matmul and the log-determinant is a sum of
log-diagonals. The factor of a full or tied precision is upper triangular.

Shapes, for ``K`` components in ``D`` dimensions (any leading batch shape may be
prepended to every field, e.g. ``(B, T)`` for the per-step mixtures of a GRNN):

=============  ==========  ==========  =================
type           logits      means       prec_chol
=============  ==========  ==========  =================
``full``       ``(K,)``    ``(K, D)``  ``(K, D, D)``
``diag``       ``(K,)``    ``(K, D)``  ``(K, D)``
``spherical``  ``(K,)``    ``(K, D)``  ``(K,)``
``tied``       ``(K,)``    ``(K, D)``  ``(D, D)``
=============  ==========  ==========  =================
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


def check_covariance_type(covariance_type: str) -> str:
    """Returns ``covariance_type`` or raises a ValueError naming the legal ones."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"unknown covariance_type {covariance_type!r}; expected one of {COVARIANCE_TYPES}"
        )
    return covariance_type


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["logits", "means", "prec_chol"],
    meta_fields=["covariance_type"],
)
@dataclasses.dataclass(frozen=True)
class GMM:
    """A Gaussian mixture (a pytree: its arrays are leaves, its type is static).

    Attributes:
      logits: (..., K) unnormalised log mixture weights. Domain: any real values (adding a
        constant changes nothing); -inf switches a component off.
      means: (..., K, D) component means. Domain: any real values.
      prec_chol: precision Cholesky factors; shape by type, see the module doc: full
        (..., K, D, D) and tied (..., D, D) upper triangular, diag (..., K, D), spherical
        (..., K). Domain: the diagonal (every entry, for diag and spherical) must be > 0,
        since log-densities take its log: a zero or negative entry gives -inf or NaN; the
        off-diagonal entries of full and tied are any real values and the lower triangle
        must be zero. To fit a mixture by gradient descent, step on
        :func:`~grnn_jax.gmm.to_unconstrained` (log of that diagonal), not on these fields.
      covariance_type: "full", "diag", "spherical" or "tied" (static: not a leaf).

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.zeros((2, 3)), jnp.ones((2, 3)), "diag")
      >>> g.n_components, g.n_features
      (2, 3)
    """

    logits: jax.Array
    means: jax.Array
    prec_chol: jax.Array
    covariance_type: str = "full"

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.means.shape[:-2]


def log_weights(gmm: GMM) -> jax.Array:
    """(..., K) normalised log mixture weights."""
    return jax.nn.log_softmax(gmm.logits, axis=-1)


def weights(gmm: GMM) -> jax.Array:
    """(..., K) mixture weights (they sum to one)."""
    return jax.nn.softmax(gmm.logits, axis=-1)


def _eye_like(m: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.eye(m.shape[-1], dtype=m.dtype), m.shape)


def precision_cholesky(covariances: jax.Array, covariance_type: str) -> jax.Array:
    """Upper-triangular precision Cholesky factors from covariances.

    Args:
      covariances: full (..., K, D, D), diag (..., K, D), spherical (..., K), tied (..., D, D).
      covariance_type: how ``covariances`` is shaped.

    Returns:
      ``prec_chol`` with the same shape, ``prec_chol @ prec_chol.T = inv(cov)``.
      A covariance that is not positive definite gives NaN: add ``reg_covar`` first.
    """
    check_covariance_type(covariance_type)
    if covariance_type in ("full", "tied"):
        chol = jnp.linalg.cholesky(covariances)
        inv_chol = solve_triangular(chol, _eye_like(chol), lower=True)
        return jnp.swapaxes(inv_chol, -1, -2)
    return jax.lax.rsqrt(covariances)


def covariances(gmm: GMM) -> jax.Array:
    """Covariances, shaped like ``gmm.prec_chol`` (see the module doc)."""
    p = gmm.prec_chol
    if gmm.covariance_type in ("full", "tied"):
        p_inv = solve_triangular(p, _eye_like(p), lower=False)
        return jnp.swapaxes(p_inv, -1, -2) @ p_inv
    return 1.0 / jnp.square(p)


def precisions(gmm: GMM) -> jax.Array:
    """Precision matrices (inverse covariances), shaped like ``gmm.prec_chol``."""
    p = gmm.prec_chol
    if gmm.covariance_type in ("full", "tied"):
        return p @ jnp.swapaxes(p, -1, -2)
    return jnp.square(p)


def as_full(gmm: GMM) -> GMM:
    """The same mixture with full covariance: its precision factors as (..., K, D, D) matrices.

    Exact (no inversion): a diagonal or spherical factor becomes a diagonal
    matrix, a tied one is repeated for every component.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.zeros((2, 3)), jnp.array([1.0, 4.0]), "spherical")
      >>> f = gmm.as_full(g)
      >>> f.covariance_type, gmm.covariances(f)[1].diagonal().tolist()
      ('full', [4.0, 4.0, 4.0])
    """
    p, ctype = gmm.prec_chol, gmm.covariance_type
    eye = jnp.eye(gmm.means.shape[-1], dtype=p.dtype)
    if ctype == "full":
        return gmm
    if ctype == "tied":
        full = jnp.broadcast_to(p[..., None, :, :], gmm.means.shape + gmm.means.shape[-1:])
    elif ctype == "diag":
        full = p[..., None] * eye
    else:
        full = p[..., None, None] * eye
    return GMM(gmm.logits, gmm.means, full, "full")


def _upper_cholesky(precision: jax.Array) -> jax.Array:
    # U with U @ U.T = A and U upper triangular, from the lower Cholesky factor
    # of A with rows and columns reversed: U = J chol(J A J) J.
    flipped = jnp.flip(precision, axis=(-1, -2))
    return jnp.flip(jnp.linalg.cholesky(flipped), axis=(-1, -2))


def _check_shapes(logits, means, cov, covariance_type: str) -> None:
    """Raises ValueError when the fields' shapes do not fit together (checked at trace time)."""
    k, d = means.shape[-2:]
    expected = {"full": (k, d, d), "diag": (k, d), "spherical": (k,), "tied": (d, d)}[covariance_type]
    if logits.shape[-1:] != (k,) or tuple(cov.shape[-len(expected):]) != expected:
        raise ValueError(
            f"{covariance_type} mixture with means {tuple(means.shape)} needs logits (..., {k}) and "
            f"covariances/precisions (..., {', '.join(map(str, expected))}); got logits "
            f"{tuple(logits.shape)} and {tuple(cov.shape)}"
        )


def from_covariances(
    logits: jax.Array, means: jax.Array, covariances: jax.Array, covariance_type: str
) -> GMM:
    """Builds a GMM from log-weights, means and covariances.

    Args:
      logits: (..., K) unnormalised log weights (``jnp.log(weights)`` works).
      means: (..., K, D).
      covariances: shaped by ``covariance_type`` (see the module doc).
      covariance_type: "full", "diag", "spherical" or "tied".

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 2)), 4 * jnp.eye(2)[None], "full")
      >>> print(gmm.covariances(g)[0, 0, 0])
      4.0
    """
    check_covariance_type(covariance_type)
    logits, means, covariances = map(jnp.asarray, (logits, means, covariances))
    _check_shapes(logits, means, covariances, covariance_type)
    return GMM(logits, means, precision_cholesky(covariances, covariance_type), covariance_type)


def from_precisions(
    logits: jax.Array, means: jax.Array, precisions: jax.Array, covariance_type: str
) -> GMM:
    """Builds a GMM from log-weights, means and precision matrices (shaped as covariances)."""
    check_covariance_type(covariance_type)
    logits, means, precisions = map(jnp.asarray, (logits, means, precisions))
    _check_shapes(logits, means, precisions, covariance_type)
    if covariance_type in ("full", "tied"):
        prec_chol = _upper_cholesky(precisions)
    else:
        prec_chol = jnp.sqrt(precisions)
    return GMM(logits, means, prec_chol, covariance_type)


def with_temperature(gmm: GMM, temperature: float | jax.Array) -> GMM:
    """Tempers a mixture as sketch-rnn does: logits / τ and covariances × τ.

    τ < 1 sharpens (fewer, tighter modes), τ > 1 flattens; τ = 1 is the identity.
    """
    temperature = jnp.asarray(temperature, gmm.means.dtype)
    return dataclasses.replace(
        gmm,
        logits=gmm.logits / temperature,
        prec_chol=gmm.prec_chol * jax.lax.rsqrt(temperature),
    )


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Number of free parameters, as scikit-learn counts them for BIC/AIC."""
    k, d = n_components, n_features
    cov = {
        "full": k * d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
        "tied": d * (d + 1) // 2,
    }[check_covariance_type(covariance_type)]
    return cov + k * d + k - 1
