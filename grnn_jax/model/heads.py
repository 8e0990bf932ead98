"""Flax mixture heads: a hidden state in, a :class:`grnn_jax.gmm.GMM` out.

The head never writes its own density: its output is a GMM container, so the
loss of a network that ends in it is ``gmm.log_prob``.

Constraints that keep training stable:

* mixture weights stay logits (``log_softmax`` happens inside ``gmm``);
* every diagonal entry of the precision Cholesky factor is
  ``1 / (min_scale + softplus(r)) + 1 / max_scale``: a smooth map into
  ``(1 / max_scale, 1 / min_scale + 1 / max_scale)``. The upper bound caps the
  log-determinant, so the density cannot run away to infinity on a repeated
  point; the lower bound keeps every conditional standard deviation below
  ``max_scale``, so the log-density stays finite for any hidden state;
* off-diagonal entries (``full``, ``tied``) are unconstrained: they can only lower the
  density, never raise the log-determinant.

``tied``: one precision-Cholesky factor per step, shared by the K components (and still a
function of the hidden state, so the noise level may change over time).

With ``n_regressors = F > 0`` every component's mean adds a linear term ``W_k phi`` over the
regressors ``phi (..., F)`` (the last observations): ``mu_tk = W_k phi_t + b_tk``, with
``W (K, D, F)`` a parameter of its own (``ar_coef``, zero at initialisation, so the head
starts as the one without regressors) and ``b_tk`` the network's per-step output.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax import gmm as gmm_lib

HEAD_COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


def check_head_covariance_type(covariance_type: str) -> str:
    """Returns ``covariance_type`` or raises a ValueError naming the ones a head supports."""
    if covariance_type not in HEAD_COVARIANCE_TYPES:
        raise ValueError(
            f"unknown covariance_type {covariance_type!r} for a mixture head; "
            f"expected one of {HEAD_COVARIANCE_TYPES}"
        )
    return covariance_type


def n_scale_params(n_features: int, covariance_type: str) -> int:
    """Raw scale parameters per scale block: D(D+1)/2 (full, tied), D (diag) or 1
    (spherical)."""
    d = n_features
    return {"full": d * (d + 1) // 2, "diag": d, "spherical": 1, "tied": d * (d + 1) // 2}[
        check_head_covariance_type(covariance_type)
    ]


def n_scale_blocks(n_components: int, covariance_type: str) -> int:
    """Scale blocks per step: one per component, or one shared (tied)."""
    return 1 if check_head_covariance_type(covariance_type) == "tied" else n_components


def n_head_outputs(n_components: int, n_features: int, covariance_type: str) -> int:
    """Width of the head's linear layer: K logits + K*D means + the scale blocks.

    Example:
      >>> n_head_outputs(20, 3, "full"), n_head_outputs(20, 3, "tied")
      (200, 86)
    """
    return n_components * (1 + n_features) + n_scale_blocks(
        n_components, covariance_type) * n_scale_params(n_features, covariance_type)


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _triangular_embedding(n_features: int) -> np.ndarray:
    """(D + D(D-1)/2, D*D) 0/1 matrix placing [diag, strict upper] into a flat D x D matrix.

    A product with a constant matrix is cheaper on CPU than a scatter into
    zeros, and its gradient is a plain matmul too.
    """
    d = n_features
    iu, ju = np.triu_indices(d, k=1)
    rows = [i * d + i for i in range(d)] + [i * d + j for i, j in zip(iu, ju)]
    e = np.zeros((len(rows), d * d), dtype=np.float32)
    e[np.arange(len(rows)), rows] = 1.0
    return e


def precision_diagonal(raw: jax.Array, min_scale: float, max_scale: float) -> jax.Array:
    """Maps unconstrained values to precision-Cholesky diagonals in (1/max_scale, 1/min_scale + 1/max_scale).

    Example:
      >>> import jax.numpy as jnp
      >>> d = precision_diagonal(jnp.array([-1e30, 0.0, 1e30]), 1e-3, 1e3)
      >>> bool(jnp.all(jnp.isfinite(d))) and bool(d[0] <= 1e3 + 1e-3) and bool(d[2] >= 1e-3)
      True
    """
    return 1.0 / (min_scale + jax.nn.softplus(raw)) + 1.0 / max_scale


def inverse_precision_diagonal(diag: jax.Array, min_scale: float, max_scale: float) -> jax.Array:
    """Inverse of :func:`precision_diagonal`; values outside its range are clipped into it first.

    Example:
      >>> import jax.numpy as jnp
      >>> r = jnp.array([-2.0, 0.0, 3.0])
      >>> bool(jnp.allclose(inverse_precision_diagonal(precision_diagonal(r, 1e-3, 1e3), 1e-3, 1e3), r, atol=1e-4))
      True
    """
    lo, hi = 1.0 / max_scale, 1.0 / min_scale + 1.0 / max_scale
    eps = jnp.finfo(jnp.result_type(diag, jnp.float32)).eps
    d = jnp.clip(diag, lo * (1 + 4 * eps) + 4 * eps, hi * (1 - 4 * eps))
    y = 1.0 / (d - lo) - min_scale
    return y + jnp.log(-jnp.expm1(-y))


def head_bias_from_gmm(g: gmm_lib.GMM, *, min_scale: float = 1e-3, max_scale: float = 1e3) -> jax.Array:
    """The bias of a :class:`MixtureHead` whose output is ``g`` when its kernel is zero.

    Useful to start a head from a fitted mixture (e.g. EM on the data) or to
    hand-set one in tests. Precision diagonals outside the head's range
    (standard deviations below ``min_scale`` or above ``max_scale``) are clipped.

    Args:
      g: a mixture without batch dimensions, of a head's covariance type.
      min_scale, max_scale: those of the head.

    Returns:
      (:func:`n_head_outputs`,) bias.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.log(jnp.array([0.3, 0.7])), jnp.array([[0.0], [2.0]]),
      ...                          jnp.array([[[1.0]], [[0.25]]]), "full")
      >>> head = MixtureHead(n_components=2, n_features=1)
      >>> params = head.init(jax.random.key(0), jnp.zeros(4))
      >>> params = jax.tree_util.tree_map(jnp.zeros_like, params)
      >>> params["params"]["out"]["bias"] = head_bias_from_gmm(g)
      >>> out = head.apply(params, jnp.ones(4))
      >>> [round(float(v), 4) for v in gmm.covariances(out).ravel()]
      [1.0, 0.25]
    """
    ctype = check_head_covariance_type(g.covariance_type)
    k, d = g.n_components, g.n_features
    if g.batch_shape:
        raise ValueError(f"expected a single mixture; got batch shape {g.batch_shape}")
    logits = jax.nn.log_softmax(g.logits)
    if ctype == "spherical":
        scale = inverse_precision_diagonal(g.prec_chol, min_scale, max_scale)[:, None]
    elif ctype == "diag":
        scale = inverse_precision_diagonal(g.prec_chol, min_scale, max_scale)
    else:  # full (K, D, D) or tied (D, D): [diagonal, strict upper triangle] per factor
        diag = jnp.diagonal(g.prec_chol, axis1=-2, axis2=-1)
        iu, ju = np.triu_indices(d, k=1)
        scale = jnp.concatenate(
            [inverse_precision_diagonal(diag, min_scale, max_scale), g.prec_chol[..., iu, ju]],
            axis=-1,
        )
    return jnp.concatenate([logits, g.means.reshape(k * d), scale.reshape(-1)])


def _spread_means(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Component means drawn from N(0, I): spread over standardised data's bulk."""
    return jax.random.normal(key, shape, dtype)


class MixtureHead(nn.Module):
    """Hidden state -> Gaussian mixture over the next observation.

    One linear layer gives, per component, a logit, a mean and raw scale
    parameters; the scales are constrained as the module doc says. At
    initialisation the mixture suits standardised data: near-uniform weights,
    means drawn from N(0, I) (the bias) that move little with the hidden state
    (a small kernel), and unit scales with zero correlation.

    Attributes:
      n_components: K.
      n_features: D.
      covariance_type: "full", "diag", "spherical" or "tied" (one factor per step shared by
        the components).
      min_scale: lower bound (approximately) on every conditional standard deviation.
      max_scale: upper bound on every conditional standard deviation.
      kernel_scale: standard deviation multiplier of the initial kernel, relative
        to LeCun-normal; small so the initial mixture barely depends on the state.
      n_regressors: F; with F > 0 the call takes regressors ``phi`` and every mean adds
        ``W_k phi`` (``W``: the ``ar_coef`` parameter, (K, D, F)).
      dtype: computation dtype (``None``: that of the input).
      param_dtype: parameter dtype.

    Call:
      h: (..., H) hidden states; phi: (..., F) regressors when ``n_regressors > 0``.

    Returns:
      a ``gmm.GMM`` with batch shape ``(...)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> head = MixtureHead(n_components=4, n_features=2, covariance_type="full")
      >>> h = jnp.zeros((5, 7, 16))
      >>> params = head.init(jax.random.key(0), h)
      >>> g = head.apply(params, h)
      >>> g.logits.shape, g.means.shape, g.prec_chol.shape
      ((5, 7, 4), (5, 7, 4, 2), (5, 7, 4, 2, 2))
    """

    n_components: int
    n_features: int
    covariance_type: str = "full"
    min_scale: float = 1e-3
    max_scale: float = 1e3
    kernel_scale: float = 0.1
    n_regressors: int = 0
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def _check(self) -> None:
        check_head_covariance_type(self.covariance_type)
        if self.n_components < 1 or self.n_features < 1:
            raise ValueError(
                f"n_components and n_features must be >= 1; got {self.n_components}, {self.n_features}"
            )
        if not 0 < self.min_scale < 1 < self.max_scale:
            raise ValueError(
                f"need 0 < min_scale < 1 < max_scale; got min_scale={self.min_scale}, "
                f"max_scale={self.max_scale}"
            )

    def _bias_init(self, key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
        k, d = self.n_components, self.n_features
        n_s = n_scale_params(d, self.covariance_type)
        n_b = n_scale_blocks(k, self.covariance_type)
        logits = jnp.zeros((k,), dtype)
        means = _spread_means(key, (k, d), dtype).reshape(-1)
        # Unit precision diagonal: 1 / (min_scale + softplus(r)) + 1 / max_scale = 1.
        target = 1.0 / (1.0 - 1.0 / self.max_scale) - self.min_scale
        n_diag = 1 if self.covariance_type == "spherical" else d
        diag = jnp.full((n_b, n_diag), _inverse_softplus(target), dtype)
        off = jnp.zeros((n_b, n_s - n_diag), dtype)
        return jnp.concatenate([logits, means, jnp.concatenate([diag, off], -1).reshape(-1)])

    @nn.compact
    def __call__(self, h: jax.Array, phi: jax.Array | None = None) -> gmm_lib.GMM:
        self._check()
        k, d, ctype = self.n_components, self.n_features, self.covariance_type
        n_s = n_scale_params(d, ctype)
        n_b = n_scale_blocks(k, ctype)
        out = nn.Dense(
            n_head_outputs(k, d, ctype),
            kernel_init=nn.initializers.variance_scaling(
                self.kernel_scale**2, "fan_in", "truncated_normal"
            ),
            bias_init=self._bias_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(h)
        lead = out.shape[:-1]
        # The diagonal map runs over the whole output row and a constant mask keeps it on the
        # diagonal entries: slicing them out first (a minor-axis slice, then a concatenation)
        # makes XLA:CPU emit scalar loops, several times slower than this vectorised one.
        n_diag = 1 if ctype == "spherical" else d
        is_diag = np.zeros(n_head_outputs(k, d, ctype), bool)
        is_diag[k + k * d :] = np.tile(np.arange(n_s) < n_diag, n_b)
        out = jnp.where(is_diag, precision_diagonal(out, self.min_scale, self.max_scale), out)
        logits = out[..., :k]
        means = out[..., k : k + k * d].reshape(lead + (k, d))
        scale = out[..., k + k * d :].reshape(lead + (n_b, n_s))
        if ctype == "spherical":
            prec_chol = scale[..., 0]
        elif ctype == "diag":
            prec_chol = scale
        else:  # full: (K, D, D); tied: one (D, D)
            embed = jnp.asarray(_triangular_embedding(d), scale.dtype)
            shape = (k, d, d) if ctype == "full" else (d, d)
            prec_chol = (scale @ embed).reshape(lead + shape)
        means = add_lag_terms(means, declare_coef(self), phi)
        return gmm_lib.GMM(logits, means, prec_chol, ctype)


def declare_coef(module: nn.Module, collection: str = "params") -> jax.Array | None:
    """The slopes ``W`` (K, D, F) of a head with ``n_regressors = F > 0``: the variable
    ``ar_coef`` of ``collection`` (zeros at initialisation; a gradient-trained parameter in the
    per-step head, EM-updated in the EM heads), or None when F = 0. Call it from ``setup`` or
    an ``nn.compact`` method."""
    f = int(module.n_regressors)
    if f == 0:
        return None
    k, d = module.n_components, module.n_features
    return module.variable(collection, "ar_coef", jnp.zeros, (k, d, f), module.param_dtype).value


def add_lag_terms(means: jax.Array, coef: jax.Array | None, phi: jax.Array | None) -> jax.Array:
    """``means (..., K, D)`` plus ``W_k phi`` for slopes ``coef (K, D, F)`` and regressors
    ``phi (..., F)``; ``means`` as they are when ``coef`` is None.

    Example:
      >>> import jax.numpy as jnp
      >>> add_lag_terms(jnp.zeros((1, 2, 1)), jnp.ones((2, 1, 3)), jnp.ones((1, 3))).tolist()
      [[[3.0], [3.0]]]
    """
    if coef is None:
        return means
    f = coef.shape[-1]
    if phi is None or phi.shape[-1] != f:
        raise ValueError(f"this head expects regressors phi (..., {f}); got "
                         f"{None if phi is None else phi.shape}")
    return means + jnp.einsum("kdf,...f->...kd", coef.astype(means.dtype), phi.astype(means.dtype))
