"""Per-block ``log pi_k + log N(z | k)`` for the E-step, in two numerical forms.

A block of R standardised rows arrives as augmented columns ``zt1 (D+1, R)``
(rows as columns, plus a row of ones; :func:`~grnn_jax.em.blocks.block_columns`)
and its log-joint densities are ``(K, R)``. Two ways to get them:

* **Projection form** (accurate): ``y = P_k^T (z - mu_k)`` for all K factors as
  one ``(K*D, D+1) @ (D+1, R)`` matmul (the ones row carries the ``-P_k^T mu_k``
  offsets), then ``|y|^2`` per component. Its rounding error is small near
  each component, but the elementwise work on the ``(K*D, R)`` projections
  costs about a quarter of the matmul's time at D=64.
* **Quadratic form** (fast): ``maha_k = z^T L_k z - 2 z^T L_k mu_k + mu_k^T L_k mu_k``
  with ``L_k = P_k P_k^T`` is linear in the pair products ``phi`` that the
  M-step needs anyway (:func:`~grnn_jax.em.features.stat_features`), so the
  log-joint is one ``(K, F) @ (F, R)`` matmul on them. Its rounding error
  grows like ``eps * |z|^2 * |L_k|``: in float32 a component collapsed to a
  tiny variance away from the origin would lose about a nat per point.

The E-step (:func:`grnn_jax.em.stats.e_step_std`) takes the quadratic form
only when :func:`error_bound` for the mixture and the data's largest row norm
is below :data:`QUAD_FORM_TOL` nats, and the projection form otherwise; under
``vmap`` (restarts, batched data sets) :func:`branch` makes the choice for the
whole batch, so it stays a branch rather than running both forms.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap

from grnn_jax.gmm import GMM, log_det_precision, log_weights
from grnn_jax.em.features import feature_pairs, uses_packed_moments

HIGHEST = lax.Precision.HIGHEST  # EM sums need full float32 on accelerators too

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


def _log_norm(g: GMM) -> jax.Array:
    """(K,) ``log pi_k + log|P_k| - D/2 log(2 pi)``: the log-joint at the component's mean."""
    d = g.n_features
    return log_weights(g) + log_det_precision(g) - 0.5 * d * math.log(2 * math.pi)


def projection_log_joint(g: GMM) -> Callable[[jax.Array], jax.Array]:
    """A function ``zt1 (D+1, R) -> (K, R)`` of ``log pi_k + log N(z | k)`` in projection form.

    ``zt1`` holds the rows as columns and a last row of ones
    (:func:`~grnn_jax.em.blocks.block_columns`). Everything that depends only
    on the parameters is computed once here, not per block.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> from grnn_jax.em.log_joint import projection_log_joint
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1, 1)), "full")
      >>> round(float(projection_log_joint(g)(jnp.array([[0.0], [1.0]]))[0, 0]), 4)
      -0.9189
    """
    ctype = g.covariance_type
    d, k = g.n_features, g.n_components
    p, mu = g.prec_chol, g.means
    const = _log_norm(g)[:, None]

    if ctype == "full":
        # All K factors stacked, the offsets in the ones column: one matmul per block.
        offset = jnp.einsum("kd,kde->ke", mu, p, precision=HIGHEST)
        p_all = jnp.concatenate([jnp.swapaxes(p, 1, 2), -offset[:, :, None]], axis=2).reshape(k * d, d + 1)

        def log_joint(zt1):
            y = jnp.matmul(p_all, zt1, precision=HIGHEST)
            return const - 0.5 * jnp.sum(jnp.square(y.reshape(k, d, zt1.shape[1])), axis=1)

    elif ctype == "tied":
        mp = jnp.matmul(mu, p, precision=HIGHEST)[:, :, None]  # (K, D, 1)
        p_t = jnp.concatenate([p.T, jnp.zeros((d, 1), p.dtype)], axis=1)

        def log_joint(zt1):
            y = jnp.matmul(p_t, zt1, precision=HIGHEST)
            return const - 0.5 * jnp.sum(jnp.square(y - mp), axis=1)

    else:
        scale = (p if ctype == "diag" else jnp.broadcast_to(p[:, None], (k, d)))[:, :, None]

        def log_joint(zt1):
            return const - 0.5 * jnp.sum(jnp.square((zt1[:d] - mu[:, :, None]) * scale), axis=1)

    return log_joint


class QuadraticForm(NamedTuple):
    """The log-joint as a linear function of the features, and its error terms.

    Attributes:
      coef: (K, F) so that the log-joint of features ``phi (F, R)``
        (:func:`~grnn_jax.em.features.stat_features`) is ``min(coef @ phi + const, peak)``.
      const: (K, 1) the constant term, added outside the matmul (where its
        rounding error does not scale with ``sqrt(F)``).
      peak: (K, 1) the log-joint at each component's mean (its maximum).
      err: (3, K) ``a_k, b_k, c_k`` of :data:`QUAD_FORM_TOL`'s bound.
    """

    coef: jax.Array
    const: jax.Array
    peak: jax.Array
    err: jax.Array


def quadratic_form(g: GMM) -> QuadraticForm:
    """The quadratic-form coefficients of a mixture for which :func:`has_quadratic_form`."""
    if not has_quadratic_form(g):
        raise ValueError(
            f"no quadratic form for {g.covariance_type!r} covariance with D={g.n_features}, K={g.n_components}"
        )
    ctype = g.covariance_type
    d, k = g.n_features, g.n_components
    p, mu = g.prec_chol, g.means
    peak = _log_norm(g)
    if ctype == "full":
        lam = jnp.einsum("kij,klj->kil", p, p, precision=HIGHEST)
        lam_mu = jnp.einsum("kij,kj->ki", lam, mu, precision=HIGHEST)
        abs_p = jnp.abs(p)
        a = jnp.max(jnp.einsum("kil,kl->ki", abs_p, jnp.sum(abs_p, axis=1)), axis=-1)
    else:
        lam = jnp.broadcast_to(jnp.square(p) if ctype == "diag" else jnp.square(p)[:, None], (k, d))
        lam_mu = lam * mu
        a = jnp.max(lam, axis=-1)
    c = jnp.sum(lam_mu * mu, axis=-1)
    b = jnp.sqrt(jnp.sum(jnp.square(lam_mu), axis=-1))
    # The log-joint's coefficients on the augmented products z1_i z1_j (z1 = [z, 1]):
    # -L/2 on z z^T, L mu on z (pair (i, D)); the constant (D, D) goes in ``const``.
    aug = jnp.zeros((k, d + 1, d + 1), p.dtype)
    aug = aug.at[:, :d, :d].set(-0.5 * lam if ctype == "full" else jax.vmap(jnp.diag)(-0.5 * lam))
    aug = aug.at[:, :d, d].set(lam_mu)
    rows, cols = feature_pairs(d, ctype, k)
    # A product z_i z_j with i != j stands for both (i, j) and (j, i).
    coef = aug[:, rows, cols] + jnp.where(rows == cols, 0.0, aug[:, cols, rows])
    return QuadraticForm(coef, (peak - 0.5 * c)[:, None], peak[:, None], jnp.stack([a, b, c]))


def error_bound(form: QuadraticForm, max_sq_norm: jax.Array) -> jax.Array:
    """() bound, in nats per row, on the quadratic form's rounding error (see :data:`QUAD_FORM_TOL`).

    Args:
      form: :func:`quadratic_form` of the mixture.
      max_sq_norm: () the largest squared row norm ``|z|^2`` it will be evaluated at.
    """
    a, b, c = form.err
    n_features = form.coef.shape[1]
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
    """A function ``phi (F, R) -> (K, R)`` of ``log pi_k + log N(z | k)`` in quadratic form.

    ``phi`` are the block's :func:`~grnn_jax.em.features.stat_features`; check
    :func:`error_bound` first.
    """
    return lambda phi: jnp.minimum(jnp.matmul(form.coef, phi, precision=HIGHEST) + form.const, form.peak)


def has_quadratic_form(g: GMM) -> bool:
    """Whether the mixture's E-step can use the quadratic form (static: type and shape only)."""
    ctype = g.covariance_type
    return ctype in ("diag", "spherical") or (
        ctype == "full" and uses_packed_moments(g.n_features, g.n_components)
    )
