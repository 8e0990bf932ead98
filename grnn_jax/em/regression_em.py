"""EM for mixtures of linear regressions: summable statistics, E-step, M-step, a jitted fit.

With augmented regressors ``phi~ = [phi, 1]`` the M-step of a regression mixture
(:mod:`grnn_jax.gmm.regression`) needs only the responsibility-weighted sums in
:class:`RegressionStats`. They are a NamedTuple of arrays, so the statistics of
chunks, devices or hosts add up (``jax.tree.map(jnp.add, a, b)``, ``lax.psum``)
and stepwise EM blends them as it blends a GMM's (:func:`~grnn_jax.em.blend`,
:func:`~grnn_jax.em.step_size`). With ``F = 0`` regressors they hold a GMM's
:class:`~grnn_jax.em.SufficientStats` and the M-step is
:func:`~grnn_jax.em.m_step_from_stats`'s, exactly.

The M-step solves each component's ridge normal equations
``[W_k b_k] (S_pp,k + diag(ridge, ..., ridge, 0)) = S_xp,k`` and takes the
residual second moment ``S_xx - B S_xp^T - S_xp B^T + B S_pp B^T`` (symmetrised)
over the count, plus ``reg_covar``; its covariance step is the GMM M-step's, with
the same floors and fallback (:func:`~grnn_jax.em.m_step_from_stats`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax._util.validation import check_finite, check_int, check_positive
from grnn_jax.em import checks
from grnn_jax.em.blocks import default_block_size, fit_standardiser
from grnn_jax.em.fit import restart_keys
from grnn_jax.em.init import INIT_METHODS, initialize
from grnn_jax.em.stats import SufficientStats, m_step_std
from grnn_jax.em.stepwise import stats_from_responsibilities
from grnn_jax.gmm import (
    GMM,
    Standardiser,
    check_covariance_type,
    log_prob,
    log_responsibilities,
)
from grnn_jax.gmm.regression import (
    RegressionMixture,
    conditional_mixture,
    regression_from_gmm,
    regression_means,
)

_HIGHEST = jax.lax.Precision.HIGHEST


class RegressionStats(NamedTuple):
    """Responsibility-weighted sums that determine the regression M-step.

    Attributes:
      n: (K,) ``sum_i w_i r_ik``.
      spp: (K, F+1, F+1) ``sum_i w_i r_ik phi~_i phi~_i^T`` (its last entry is ``n``).
      sxp: (K, D, F+1) ``sum_i w_i r_ik x_i phi~_i^T`` (its last column is ``sum r x``).
      sxx: second moments of ``x`` as :class:`~grnn_jax.em.SufficientStats` holds them:
        full (K, D, D), tied (D, D) ``sum_i w_i x_i x_i^T``, diag (K, D), spherical (K,).
    """

    n: jax.Array
    spp: jax.Array
    sxp: jax.Array
    sxx: jax.Array


def regression_stats(
    x: jax.Array, phi: jax.Array, resp: jax.Array, *, covariance_type: str, weights: jax.Array | None = None
) -> RegressionStats:
    """Statistics of observations and regressors under given responsibilities.

    Args:
      x: (N, D) observations (a row of weight 0 may hold anything, NaN included).
      phi: (N, F) regressors.
      resp: (N, K) responsibilities (rows need not sum to one).
      covariance_type: "full", "diag", "spherical" or "tied" (shapes ``sxx``).
      weights: optional (N,) non-negative row weights (0 masks a row).

    Returns:
      :class:`RegressionStats`, moments about the origin.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em import regression_em as rem
      >>> s = rem.regression_stats(jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [1.0]]), jnp.ones((2, 1)),
      ...                         covariance_type="diag")
      >>> s.spp[0].tolist(), s.sxp[0].tolist()
      ([[1.0, 1.0], [1.0, 2.0]], [[3.0, 4.0]])
    """
    if phi.ndim != 2 or phi.shape[0] != x.shape[0]:
        raise ValueError(f"expected x (N, D) and phi (N, F) with the same N; got {x.shape} and {phi.shape}")
    base = stats_from_responsibilities(x, resp, covariance_type=covariance_type, weights=weights)
    if weights is not None:
        keep = weights > 0
        x = jnp.where(keep[:, None], x, 0.0)
        phi = jnp.where(keep[:, None], phi, 0.0)
        resp = jnp.where(keep[:, None], resp * weights[:, None], 0.0)
    phi1 = jnp.concatenate([phi.astype(x.dtype), jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    spp = jnp.einsum("nk,nf,ng->kfg", resp, phi1, phi1, precision=_HIGHEST)
    sxp = jnp.einsum("nk,nd,nf->kdf", resp, x, phi, precision=_HIGHEST)
    sxp = jnp.concatenate([sxp, base.sx[:, :, None]], axis=-1)
    return RegressionStats(base.n, spp.at[..., -1, -1].set(base.n), sxp, base.sxx)


def regression_e_step(
    rm: RegressionMixture,
    x: jax.Array,
    phi: jax.Array,
    weights: jax.Array | None = None,
    *,
    logits: jax.Array | None = None,
):
    """One pass over the data: statistics under the posterior responsibilities, and the log-likelihood.

    Args:
      rm: regression mixture (no batch dimensions; ``vmap`` for several).
      x: (N, D) observations.
      phi: (N, F) regressors.
      weights: optional (N,) non-negative row weights; 0 ignores a row (NaN included).
      logits: optional (N, K) per-row log-weights replacing ``rm.logits`` (a
        network's or a filter's predictive weights).

    Returns:
      ``(stats, ll_sum)``: :class:`RegressionStats` and ``sum_i w_i log p(x_i | phi_i)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em import regression_em as rem
      >>> from grnn_jax.gmm import regression as rg
      >>> rm = rg.regression_from_covariances(jnp.zeros(2), jnp.zeros((2, 1, 1)), jnp.array([[-2.0], [2.0]]),
      ...                                      jnp.ones(2), "spherical")
      >>> stats, ll_sum = rem.regression_e_step(rm, jnp.array([[-2.0], [2.0], [0.0]]), jnp.zeros((3, 1)))
      >>> [round(v, 3) for v in stats.n.tolist()]
      [1.5, 1.5]
    """
    if weights is not None:
        keep = weights > 0
        x = jnp.where(keep[:, None], x, 0.0)
        phi = jnp.where(keep[:, None], phi, 0.0)
    cond = conditional_mixture(rm, phi, logits)
    resp = jnp.exp(log_responsibilities(cond, x))
    ll = log_prob(cond, x)
    stats = regression_stats(x, phi, resp, covariance_type=rm.covariance_type, weights=weights)
    if weights is None:
        return stats, jnp.sum(ll)
    return stats, jnp.sum(jnp.where(weights > 0, ll * weights, 0.0))


def _residual_moments(stats: RegressionStats, b: jax.Array, ctype: str) -> jax.Array:
    """``S_xx - B S_xp^T - S_xp B^T + B S_pp B^T``, reduced as ``stats.sxx`` is."""
    _, spp, sxp, sxx = stats
    bsp = jnp.matmul(b, spp, precision=_HIGHEST)  # (K, D, F+1)
    if ctype in ("full", "tied"):
        cross = jnp.matmul(b, jnp.swapaxes(sxp, -1, -2), precision=_HIGHEST)  # (K, D, D)
        quad = jnp.matmul(bsp, jnp.swapaxes(b, -1, -2), precision=_HIGHEST)
        rest = quad - cross - jnp.swapaxes(cross, -1, -2)
        rest = 0.5 * (rest + jnp.swapaxes(rest, -1, -2))
        return sxx + (jnp.sum(rest, axis=0) if ctype == "tied" else rest)
    rest = jnp.sum(bsp * b - 2.0 * b * sxp, axis=-1)  # (K, D) diagonals
    return sxx + (rest if ctype == "diag" else jnp.sum(rest, axis=-1))


def regression_m_step_from_stats(
    stats: RegressionStats, *, covariance_type: str, reg_covar=1e-6, ridge=1e-6
) -> RegressionMixture:
    """Closed-form M-step from :class:`RegressionStats` (e.g. summed over chunks or blended).

    Counts are floored at ``10 * eps`` (an empty component keeps finite
    parameters); a covariance that rounding made indefinite falls back to its
    diagonal, as in :func:`~grnn_jax.em.m_step_from_stats`, which this equals
    exactly when F = 0. Scaling the statistics by a constant changes the
    result only through ``ridge``: for per-observation statistics (stepwise EM's
    :func:`~grnn_jax.em.blend`) the penalty is per observation too.

    Args:
      stats: :class:`RegressionStats`.
      covariance_type: "full", "diag", "spherical" or "tied"; must match ``stats.sxx``.
      reg_covar: positive variance floor (scalar or (D,)).
      ridge: non-negative penalty on ``W`` (scalar or (F,)), never on the intercept.

    Returns:
      The new :class:`~grnn_jax.gmm.RegressionMixture`.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em import regression_em as rem
      >>> phi = jnp.array([[0.0], [1.0], [2.0]])
      >>> s = rem.regression_stats(3 * phi - 1, phi, jnp.ones((3, 1)), covariance_type="full")
      >>> rm = rem.regression_m_step_from_stats(s, covariance_type="full", ridge=0.0)
      >>> round(float(rm.coef[0, 0, 0]), 4), round(float(rm.intercept[0, 0]), 4)
      (3.0, -1.0)
    """
    check_covariance_type(covariance_type)
    n, spp, sxp, sxx = stats
    f = spp.shape[-1] - 1
    if f == 0:
        g = m_step_std(SufficientStats(n, sxp[..., 0], sxx), covariance_type, reg_covar)
        return regression_from_gmm(g, 0)
    dtype = sxp.dtype
    eps = jnp.finfo(dtype).eps
    spp = 0.5 * (spp + jnp.swapaxes(spp, -1, -2))
    spp = spp.at[..., f, f].set(n + 10 * eps)
    penalty = jnp.concatenate([jnp.broadcast_to(jnp.asarray(ridge, dtype), (f,)), jnp.zeros(1, dtype)])
    b = jnp.swapaxes(jnp.linalg.solve(spp + jnp.diag(penalty), jnp.swapaxes(sxp, -1, -2)), -1, -2)
    resid = _residual_moments(RegressionStats(n, spp, sxp, sxx), b, covariance_type)
    g = m_step_std(SufficientStats(n, jnp.zeros(sxp.shape[:-1], dtype), resid), covariance_type, reg_covar)
    return RegressionMixture(g.logits, b[..., :f], b[..., f], g.prec_chol, covariance_type)


class RegressionFitResult(NamedTuple):
    """What :func:`fit_regression` returns (fields as in :class:`~grnn_jax.em.FitResult`).

    Attributes:
      mixture: the fitted :class:`~grnn_jax.gmm.RegressionMixture` (of the best restart).
      log_likelihood: () mean (weighted) per-row ``log p(x | phi)`` at the last iteration.
      history: (max_iter,) mean log-likelihood per iteration, before each M-step; NaN after ``n_iter``.
      n_iter: () number of iterations run.
      converged: () whether the change fell below ``tol``.
    """

    mixture: RegressionMixture
    log_likelihood: jax.Array
    history: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def _defined(rm: RegressionMixture) -> jax.Array:
    return jnp.all(jnp.isfinite(rm.prec_chol)) & jnp.all(jnp.isfinite(rm.coef))


def _em_loop(z, u, w, total, rm0: RegressionMixture, reg, ridge, tol, max_iter: int):
    """EM iterations from ``rm0`` on standardised rows; returns ``(rm, bound, n_iter, converged, history)``."""
    ctype = rm0.covariance_type

    def cond(state):
        rm, _, it, converged, _ = state
        return (it < max_iter) & ~converged & _defined(rm)

    def body(state):
        rm, bound, it, _, history = state
        stats, ll_sum = regression_e_step(rm, z, u, w)
        new_bound = ll_sum / total
        rm = regression_m_step_from_stats(stats, covariance_type=ctype, reg_covar=reg, ridge=ridge)
        return rm, new_bound, it + 1, jnp.abs(new_bound - bound) < tol, history.at[it].set(new_bound)

    dtype = z.dtype
    state = (rm0, jnp.asarray(-jnp.inf, dtype), jnp.asarray(0, jnp.int32), jnp.asarray(False),
             jnp.full((max_iter,), jnp.nan, dtype))
    return jax.lax.while_loop(cond, body, state)


def _init_mixture(z, u, w, key, k: int, ctype: str, method: str, reg, ridge) -> RegressionMixture:
    """The M-step of initial responsibilities: uniform random ones, or a clustering of ``[x, phi]``."""
    if method == "random":
        resp = jax.random.uniform(key, (z.shape[0], k), z.dtype)
        resp = resp / jnp.sum(resp, axis=1, keepdims=True)
    else:
        zu = jnp.concatenate([z, u], axis=1)
        g0 = initialize(zu, k, key=key, covariance_type="diag", init=method, weights=w)
        resp = jnp.exp(log_responsibilities(g0, zu))
    stats = regression_stats(z, u, resp, covariance_type=ctype, weights=w)
    return regression_m_step_from_stats(stats, covariance_type=ctype, reg_covar=reg, ridge=ridge)


def _standardisers(x, phi, w, ctype: str):
    """Per-feature standardisers of ``x`` (one scale for spherical) and ``phi``, and the total weight."""
    bs = default_block_size(x.shape[1] + phi.shape[1], 1, "diag")
    sx, total, _ = fit_standardiser(x, w, bs, isotropic=ctype == "spherical")
    if phi.shape[1] == 0:
        return sx, Standardiser(jnp.zeros(0, x.dtype), jnp.ones(0, x.dtype)), total
    return sx, fit_standardiser(phi, w, bs)[0], total


def _to_data_units(rm: RegressionMixture, sx: Standardiser, sp: Standardiser) -> RegressionMixture:
    """Maps a mixture of ``(x - cx) / sx`` on ``(phi - cp) / sp`` back to ``x`` on ``phi``."""
    coef = rm.coef * sx.scale[:, None] / sp.scale
    g = sx.gmm_from(GMM(rm.logits, rm.intercept, rm.prec_chol, rm.covariance_type))
    intercept = g.means - jnp.einsum("kdf,f->kd", coef, sp.center, precision=_HIGHEST)
    return RegressionMixture(g.logits, coef, intercept, g.prec_chol, rm.covariance_type)


@functools.partial(jax.jit, static_argnames=("n_components", "covariance_type", "init", "n_init", "max_iter"))
def _fit_jit(x, phi, w, key, init_rm, tol, reg_covar, ridge, *, n_components, covariance_type, init, n_init,
             max_iter):
    if w is not None:
        x = jnp.where((w > 0)[:, None], x, 0.0)
        phi = jnp.where((w > 0)[:, None], phi, 0.0)
    sx, sp, total = _standardisers(x, phi, w, covariance_type)
    z, u = sx.apply(x), sp.apply(phi)
    reg = reg_covar / jnp.square(sx.scale)
    ridge = ridge / jnp.square(sp.scale)  # so the penalty on W in data units is unchanged

    def run(rm0):
        return _em_loop(z, u, w, total, rm0, reg, ridge, tol, max_iter)

    if init_rm is not None:  # a mixture in data units, mapped to standardised ones
        g = sx.gmm_to(GMM(init_rm.logits, regression_means(init_rm, sp.center), init_rm.prec_chol,
                          covariance_type))
        coef = init_rm.coef * sp.scale / sx.scale[:, None]
        rm, bound, it, converged, history = run(RegressionMixture(g.logits, coef, g.means, g.prec_chol,
                                                                  covariance_type))
    else:
        def restart(k):
            return run(_init_mixture(z, u, w, k, n_components, covariance_type, init, reg, ridge))

        runs = jax.vmap(restart)(restart_keys(key, n_init))
        ok = jax.vmap(_defined)(runs[0])
        best = jnp.argmax(jnp.where(ok & ~jnp.isnan(runs[1]), runs[1], -jnp.inf))
        rm, bound, it, converged, history = jax.tree.map(lambda a: a[best], runs)
    shift = sx.log_det.astype(x.dtype)
    return RegressionFitResult(_to_data_units(rm, sx, sp), bound - shift, history - shift, it, converged)


def _check_init(init, k: int, d: int, f: int, ctype: str):
    """``(method, mixture)`` from ``init``: a method name or a RegressionMixture of matching sizes."""
    if isinstance(init, str):
        if init not in INIT_METHODS:
            raise ValueError(f"unknown init {init!r}; expected a RegressionMixture or one of {INIT_METHODS}")
        return init, None
    if not isinstance(init, RegressionMixture):
        raise ValueError(f"init must be a RegressionMixture or a method name; got {type(init).__name__}")
    if init.covariance_type != ctype or init.coef.shape != (k, d, f):
        raise ValueError(f"init must be a {ctype} mixture with coef ({k}, {d}, {f}); got a "
                         f"{init.covariance_type} one with coef {tuple(init.coef.shape)}")
    for field in ("logits", "coef", "intercept", "prec_chol"):
        check_finite(np.asarray(getattr(init, field)), f"init.{field}")
    return None, init


def fit_regression(
    x,
    phi,
    n_components: int,
    *,
    key: jax.Array,
    covariance_type: str = "full",
    max_iter: int = 100,
    tol: float = 1e-3,
    n_init: int = 1,
    reg_covar: float = 1e-6,
    ridge: float = 1e-6,
    init: str | RegressionMixture = "kmeans",
    weights=None,
) -> RegressionFitResult:
    """Fits a mixture of linear regressions ``p(x | phi)`` by EM, all restarts in one compiled call.

    EM runs in standardised coordinates (``x`` and ``phi`` centred and scaled by
    their weighted means and standard deviations, ``reg_covar`` and ``ridge``
    mapped so that the fit is the same model in data units) as a
    ``lax.while_loop``; restarts run in one ``vmap`` and the one with the
    highest final log-likelihood is kept. Arguments are checked on the host.

    Args:
      x: (N, D) observations.
      phi: (N, F) regressors (F may be 0: then this is a GMM fit).
      n_components: K.
      key: PRNG key for the initialisation.
      covariance_type: "full", "diag", "spherical" or "tied".
      max_iter: the most EM iterations (the length of ``history``).
      tol: stop when the mean log-likelihood changes by less than this.
      n_init: restarts.
      reg_covar: non-negative variance floor.
      ridge: non-negative penalty on ``W`` in data units (never on the intercept).
      init: "kmeans", "k-means++", "random_from_data" (the responsibilities of
        :func:`~grnn_jax.em.initialize`'s diagonal mixture on ``[x, phi]``),
        "random" (uniformly random responsibilities), or a RegressionMixture to start from.
      weights: optional (N,) non-negative row weights (0 masks a row).

    Returns:
      :class:`RegressionFitResult` in data units.

    Raises:
      ValueError: bad arguments, or no restart with finite parameters (raise ``reg_covar`` or ``ridge``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax.em import regression_em as rem
      >>> phi = jax.random.normal(jax.random.key(0), (200, 1))
      >>> x = 2.0 * phi + 0.1 * jax.random.normal(jax.random.key(1), (200, 1))
      >>> res = rem.fit_regression(x, phi, 1, key=jax.random.key(2))
      >>> round(float(res.mixture.coef[0, 0, 0]), 1), bool(res.converged)
      (2.0, True)
    """
    for name, a in (("x", x), ("phi", phi), ("weights", weights), ("key", key)):
        if isinstance(a, jax.core.Tracer):
            raise TypeError(f"fit_regression checks its arguments on the host; {name} is traced")
    checks.check_fit_args(covariance_type, tol, reg_covar, max_iter, n_init, None)
    check_positive(ridge, "ridge", allow_zero=True)
    k = check_int(n_components, "n_components")
    key = checks.check_key(key)
    xa = checks.check_x(x, batched_ok=False)
    pa = np.asarray(phi) if np.size(phi) == 0 else checks.check_x(phi, "phi", batched_ok=False)
    if pa.ndim != 2 or pa.shape[0] != xa.shape[0]:
        raise ValueError(f"phi must have shape ({xa.shape[0]}, F) to match x {xa.shape}; got {pa.shape}")
    checks.check_rows(xa, k)
    w = checks.check_weights(weights, xa, k)
    method, init_rm = _check_init(init, k, xa.shape[1], pa.shape[1], covariance_type)
    xj = jnp.asarray(xa)
    dtype = jnp.result_type(xj.dtype, jnp.float32)
    xj, pj = xj.astype(dtype), jnp.asarray(pa, dtype)
    result = _fit_jit(xj, pj, None if w is None else jnp.asarray(w, dtype), key,
                      None if init_rm is None else jax.tree.map(lambda a: jnp.asarray(a, dtype), init_rm),
                      float(tol), float(reg_covar), float(ridge), n_components=k, covariance_type=covariance_type,
                      init=method, n_init=int(n_init), max_iter=int(max_iter))
    if not bool(_defined(result.mixture)):
        raise ValueError("every restart of fit_regression met a singular covariance or regression; "
                         "increase reg_covar or ridge, or decrease n_components")
    return result
