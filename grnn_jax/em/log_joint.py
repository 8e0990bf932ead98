"""Per-block ``log pi_k + log N(z | k)`` for the E-step, in two numerical forms.

The E-step needs, for every row block ``zb (R, D)``, the ``(R, K)`` log-joint
densities. Two ways to get them:

* **Projection form** (accurate): ``y = z P_k - mu_k P_k`` for all K factors as
  one ``(R, D) @ (D, K*D)`` matmul, then ``|y|^2`` per component. Its rounding
  error is small near each component, but the elementwise work on the
  ``(R, K*D)`` projections dominates at moderate D.
* **Quadratic form** (fast): ``maha_k = z^T L_k z - 2 z^T L_k mu_k + mu_k^T L_k mu_k``
  with ``L_k = P_k P_k^T`` is linear in the features ``phi(z) = [z, triu(z z^T)]``
  that the M-step needs anyway, so the log-joint is one ``(R, F) @ (F, K)``
  matmul on them. Its rounding error grows like ``eps * |z|^2 * |L_k|``: in
  float32 a component collapsed to a tiny variance away from the origin would
  lose about a nat per point.

The E-step (:func:`grnn_jax.em.stats.e_step_std`) takes the quadratic form
only when :func:`error_bound` for the mixture and the data's largest row norm
is below :data:`QUAD_FORM_TOL` nats, and the projection form otherwise; under
``vmap`` (restarts, batched data sets) :func:`branch` makes the choice for the
whole batch, so it stays a branch rather than running both forms.

The features ``phi`` are ``[z, z_i z_j (i <= j)]`` for full covariance,
``[z, z**2]`` for diag and ``[z, |z|^2]`` for spherical (:func:`stat_features`);
their responsibility-weighted sums are the M-step's sufficient statistics.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap

from grnn_jax.gmm import GMM, log_weights

_HI = lax.Precision.HIGHEST  # EM sums need full float32 on accelerators too

QUAD_FORM_TOL = 1e-2
"""Largest bound (nats per row) on the quadratic form's rounding error that is accepted.

The bound, ``0.5 * eps * sqrt(F) * max_k (a_k r^2 + 2 b_k r + c_k)`` with ``r``
the largest row norm, ``a_k`` the largest row sum of ``|P_k| |P_k|^T``,
``b_k = |L_k mu_k|`` and ``c_k = mu_k^T L_k mu_k``, measured 8x to 250x above
the largest actual float32 error near a component (against float64; D = 16
and 64, component variances 1e-1 to 1e-3 in standardised units, nearly
diagonal to strongly correlated covariances, and fitted mixtures). So the
quadratic form is used where its error is at most ~1e-3 nats.
"""


def packed_outer(z: jax.Array) -> jax.Array:
    """(R, D(D+1)/2) products ``z_i z_j`` for ``i <= j``, row-major over the triangle.

    Two static column gathers and one product: on CPU this measured 1.3-1.6x
    faster than concatenating ``D`` slices ``z[:, i:i+1] * z[:, i:]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em.log_joint import packed_outer
      >>> packed_outer(jnp.array([[1.0, 2.0, 3.0]])).tolist()
      [[1.0, 2.0, 3.0, 4.0, 6.0, 9.0]]
    """
    iu, ju = np.triu_indices(z.shape[-1])
    return z[..., iu] * z[..., ju]


def unpack_triangle(packed: jax.Array, d: int) -> jax.Array:
    """(..., D(D+1)/2) upper triangle, as :func:`packed_outer` orders it -> (..., D, D) symmetric."""
    iu, ju = np.triu_indices(d)
    index = np.zeros((d, d), np.int32)
    index[iu, ju] = np.arange(iu.size)
    index[ju, iu] = np.arange(iu.size)
    return packed[..., index]


def uses_packed_moments(n_features: int, n_components: int) -> bool:
    """Whether full-covariance statistics (and the quadratic form) use packed features.

    Building the ``D(D+1)/2`` packed columns costs the same for any K, while
    the batched ``(D, R) @ (R, D)`` products of the alternative scale with K:
    on a 2-core CPU the packed form was faster for ``D <= 2K`` (1.3x at D=64,
    K=32) and the batched one for larger D (1.6x at D=64, K=8).
    """
    return n_features <= 2 * n_components


def stat_features(zb: jax.Array, ctype: str, n_components: int = 0) -> jax.Array:
    """(R, F) per-row features whose responsibility-weighted sums are the M-step's statistics.

    ``[z, triu(z z^T)]`` (full, when :func:`uses_packed_moments`), ``[z, z**2]``
    (diag), ``[z, |z|^2]`` (spherical), else ``z``.
    """
    if ctype == "full" and uses_packed_moments(zb.shape[1], n_components):
        return jnp.concatenate([zb, packed_outer(zb)], axis=1)
    if ctype == "diag":
        return jnp.concatenate([zb, jnp.square(zb)], axis=1)
    if ctype == "spherical":
        return jnp.concatenate([zb, jnp.sum(jnp.square(zb), -1, keepdims=True)], axis=1)
    return zb


def _log_norm(g: GMM) -> jax.Array:
    """(K,) ``log pi_k + log|P_k| - D/2 log(2 pi)``: the log-joint at the component's mean."""
    p = g.prec_chol
    d = g.n_features
    ctype = g.covariance_type
    if ctype in ("full", "tied"):
        log_det = jnp.sum(jnp.log(jnp.diagonal(p, axis1=-2, axis2=-1)), axis=-1)
    elif ctype == "diag":
        log_det = jnp.sum(jnp.log(p), axis=-1)
    else:
        log_det = d * jnp.log(p)
    return log_weights(g) + log_det - 0.5 * d * math.log(2 * math.pi)


def projection_log_joint(g: GMM) -> Callable[[jax.Array], jax.Array]:
    """A function ``zb (R, D) -> (R, K)`` of ``log pi_k + log N(z | k)`` in projection form.

    Everything that depends only on the parameters is computed once here, not
    per block.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> from grnn_jax.em.log_joint import projection_log_joint
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1, 1)), "full")
      >>> round(float(projection_log_joint(g)(jnp.zeros((1, 1)))[0, 0]), 4)
      -0.9189
    """
    ctype = g.covariance_type
    d, k = g.n_features, g.n_components
    p, mu = g.prec_chol, g.means
    const = _log_norm(g)

    if ctype == "full":
        # All K factors side by side: one (R, D) @ (D, K*D) matmul per block.
        p_all = jnp.transpose(p, (1, 0, 2)).reshape(d, k * d)
        offset = jnp.einsum("kd,kde->ke", mu, p, precision=_HI).reshape(k * d)

        def log_joint(zb):
            y = jnp.matmul(zb, p_all, precision=_HI) - offset
            return const - 0.5 * jnp.sum(jnp.square(y.reshape(zb.shape[0], k, d)), axis=-1)

    elif ctype == "tied":
        mp = jnp.matmul(mu, p, precision=_HI)  # (K, D)

        def log_joint(zb):
            y = jnp.matmul(zb, p, precision=_HI)
            return const - 0.5 * jnp.sum(jnp.square(y[:, None, :] - mp), axis=-1)

    else:
        scale = p if ctype == "diag" else p[:, None]

        def log_joint(zb):
            return const - 0.5 * jnp.sum(jnp.square((zb[:, None, :] - mu) * scale), axis=-1)

    return log_joint


class QuadraticForm(NamedTuple):
    """The log-joint as an affine function of the features, and its error terms.

    Attributes:
      coef: (F, K) so that the log-joint of features ``phi (R, F)``
        (:func:`stat_features`) is ``min(phi @ coef + const, peak)``.
      const: (K,) the affine part's constant.
      peak: (K,) the log-joint at each component's mean (its maximum).
      err: (3, K) ``a_k, b_k, c_k`` of :data:`QUAD_FORM_TOL`'s bound.
    """

    coef: jax.Array
    const: jax.Array
    peak: jax.Array
    err: jax.Array


def quadratic_form(g: GMM) -> QuadraticForm:
    """The quadratic-form coefficients of a full, diag or spherical mixture."""
    ctype = g.covariance_type
    p, mu = g.prec_chol, g.means
    peak = _log_norm(g)
    if ctype == "full":
        d = g.n_features
        lam = jnp.einsum("kij,klj->kil", p, p, precision=_HI)
        iu, ju = np.triu_indices(d)
        twice = np.where(iu == ju, 1.0, 2.0).astype(p.dtype)
        quad = lam[:, iu, ju] * twice  # (K, D(D+1)/2)
        lam_mu = jnp.einsum("kij,kj->ki", lam, mu, precision=_HI)
        abs_p = jnp.abs(p)
        a = jnp.max(jnp.einsum("kil,kl->ki", abs_p, jnp.sum(abs_p, axis=1)), axis=-1)
    else:
        lam = jnp.square(p)  # (K, D) or (K,)
        lam_d = lam if ctype == "diag" else lam[:, None]
        quad = lam_d
        lam_mu = lam_d * mu
        a = jnp.max(lam_d, axis=-1)
    c = jnp.sum(lam_mu * mu, axis=-1)
    b = jnp.sqrt(jnp.sum(jnp.square(lam_mu), axis=-1))
    coef = jnp.concatenate([lam_mu, -0.5 * quad], axis=1).T
    return QuadraticForm(coef, peak - 0.5 * c, peak, jnp.stack([a, b, c]))


def error_bound(form: QuadraticForm, max_sq_norm: jax.Array) -> jax.Array:
    """() bound, in nats per row, on the quadratic form's rounding error (see :data:`QUAD_FORM_TOL`).

    Args:
      form: :func:`quadratic_form` of the mixture.
      max_sq_norm: () the largest squared row norm ``|z|^2`` it will be evaluated at.
    """
    a, b, c = form.err
    n_features = form.coef.shape[0]
    eps = jnp.finfo(form.coef.dtype).eps
    return 0.5 * eps * math.sqrt(n_features) * jnp.max(a * max_sq_norm + 2.0 * b * jnp.sqrt(max_sq_norm) + c)


def branch(pred, if_true: Callable, if_false: Callable, operands):
    """``lax.cond(pred, if_true, if_false, operands)`` that stays a branch under ``vmap``.

    ``vmap`` of a ``lax.cond`` with a batched predicate runs both branches and
    selects; here a batched predicate is reduced with ``all`` instead, so the
    whole batch takes ``if_true`` only when every member may. Nested ``vmap``s
    reduce over every batch axis.
    """

    @custom_vmap
    def cond(pred, operands):
        return lax.cond(pred, if_true, if_false, operands)

    @cond.def_vmap
    def _rule(axis_size, in_batched, pred, operands):
        pred_batched, ops_batched = in_batched
        pred = jnp.all(pred) if pred_batched else pred
        if not any(jax.tree.leaves(ops_batched)):
            out = branch(pred, if_true, if_false, operands)
            return out, jax.tree.map(lambda _: False, out)
        axes = (jax.tree.map(lambda b: 0 if b else None, ops_batched),)
        # The batched branches go through branch() again, so an outer vmap
        # reduces its predicate too instead of selecting between both.
        out = branch(pred, jax.vmap(if_true, in_axes=axes), jax.vmap(if_false, in_axes=axes), operands)
        return out, jax.tree.map(lambda _: True, out)

    return cond(pred, operands)


def quadratic_log_joint(form: QuadraticForm) -> Callable[[jax.Array], jax.Array]:
    """A function ``phi (R, F) -> (R, K)`` of ``log pi_k + log N(z | k)`` in quadratic form.

    ``phi`` are the rows' :func:`stat_features`; check :func:`error_bound` first.
    """
    return lambda phi: jnp.minimum(jnp.matmul(phi, form.coef, precision=_HI) + form.const, form.peak)


def has_quadratic_form(g: GMM) -> bool:
    """Whether the mixture's E-step can use the quadratic form (static: type and shape only)."""
    ctype = g.covariance_type
    return ctype in ("diag", "spherical") or (
        ctype == "full" and uses_packed_moments(g.n_features, g.n_components)
    )
