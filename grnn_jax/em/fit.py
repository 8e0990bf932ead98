"""Fitting a mixture by EM: a ``lax.while_loop`` in one ``jit``, restarts in one ``vmap``.

The loop is scikit-learn's: for each iteration the E-step gives the mean
log-likelihood of the current parameters (the "lower bound"), the M-step
updates them, and the loop stops when the bound changed by less than ``tol``.
So ``history[i]`` belongs to the parameters before the i-th M-step and the
returned parameters are those after the last one.

EM runs in standardised coordinates (weighted mean 0 and unit variance per
feature; one common scale for spherical covariance) with ``reg_covar`` mapped
accordingly; EM is equivariant under this change, so the result is the same
mixture while float32 keeps its precision for data far from the origin or at
tiny or huge scales. A fit holds one standardised copy of the data, column-major
((D+1) x N, see :func:`~grnn_jax.em.blocks.block_columns`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
from jax import lax

from grnn_jax.gmm import GMM
from grnn_jax.em import checks
from grnn_jax.em.blocks import data_columns, default_block_size, fit_standardiser
from grnn_jax.em.init import init_std
from grnn_jax.em.options import FIT, EMOptions, resolve_options
from grnn_jax.em.stats import e_step_std, m_step_std


class FitResult(NamedTuple):
    """What :func:`fit` returns (with a leading B axis on every field for batched data).

    Attributes:
      gmm: the fitted mixture (of the best restart).
      log_likelihood: () mean (weighted) per-row log-likelihood at the last
        iteration, as scikit-learn's ``lower_bound_``.
      history: (max_iter,) mean log-likelihood per iteration; NaN after ``n_iter``.
        ``history[i]`` is the log-likelihood of the parameters *before* the
        (i+1)-th M-step, so ``history[0]`` scores the initial mixture. For
        k-means++ and random-from-data seeds (covariance ``reg_covar``) that
        value is far below the rest (e.g. -6.7e5 against -3): plot
        ``history[1:n_iter]`` to see the convergence.
      n_iter: () number of iterations run.
      converged: () whether the change fell below ``tol``.
    """

    gmm: GMM
    log_likelihood: jax.Array
    history: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def defined(g: GMM) -> jax.Array:
    """() whether every precision factor is finite (False once a covariance is ill-defined).

    With ``reg_covar > 0`` the M-step always gives finite factors; with
    ``reg_covar = 0`` a component that collapsed onto a point or a subspace has
    no finite factor, and the loop stops there so that the caller can name it.
    """
    return jnp.all(jnp.isfinite(g.prec_chol))


def _em_loop(xt1, w, sq_norm, total, g0: GMM, reg, tol, max_iter: int, block_size: int, reduce=None,
             bound0=-jnp.inf):
    """The EM iterations; ``reduce`` sums each E-step's ``(stats, ll_sum)`` across devices (``psum``).

    ``bound0`` is the bound the first change is measured from (standardised units).
    """
    ctype = g0.covariance_type
    dtype = xt1.dtype

    def cond(state):
        g, _, it, converged, _ = state
        return (it < max_iter) & ~converged & defined(g)

    def body(state):
        g, bound, it, _, history = state
        stats, ll_sum = e_step_std(g, xt1, w, block_size, sq_norm)
        if reduce is not None:
            stats, ll_sum = reduce((stats, ll_sum))
        new_bound = ll_sum / total
        g = m_step_std(stats, ctype, reg)
        converged = jnp.abs(new_bound - bound) < tol
        return g, new_bound, it + 1, converged, history.at[it].set(new_bound)

    state = (
        g0,
        jnp.asarray(bound0, dtype),
        jnp.asarray(0, jnp.int32),
        jnp.asarray(False),
        jnp.full((max_iter,), jnp.nan, dtype),
    )
    g, bound, it, converged, history = lax.while_loop(cond, body, state)
    return g, bound, history, it, converged


def restart_keys(key: jax.Array, n_init: int) -> jax.Array:
    """(n_init,) keys whose first is ``key`` itself and the i-th ``fold_in(key, i)``.

    So the starts of ``n_init=k`` are a prefix of those of ``n_init=k+1``
    and ``n_init=1`` starts from ``key``: more restarts never give a lower
    best log-likelihood for one seed.
    """
    rest = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(1, n_init))
    return jnp.concatenate([key[None], rest])


def _fit_one(x, w, key, init_gmm, tol, reg_covar, lower_bound=None, *, n_components, covariance_type, init, n_init,
             max_iter, block_size):
    """Fits one data set; ``init_gmm`` (in data coordinates) overrides ``init``.

    ``lower_bound`` (data units) is the bound the first change is measured
    from (a warm start's previous one); None means ``-inf``.
    """
    x = jnp.asarray(x)
    dtype = x.dtype
    ctype = covariance_type
    bs = block_size or default_block_size(x.shape[1], n_components, ctype)
    std, total, mean_var = fit_standardiser(x, w, bs, isotropic=ctype == "spherical")
    reg = jnp.asarray(reg_covar, dtype) / jnp.square(std.scale)
    tol = jnp.asarray(tol, dtype)
    # One standardised, column-major copy of the data ((D+1) x N) for all
    # passes: standardising and transposing each block on the fly cost 20-30%
    # per iteration on CPU (XLA fuses the standardisation into every consumer).
    xt1, sq_norm = data_columns(x, w, std, bs)
    shift = std.log_det.astype(dtype)
    bound0 = -jnp.inf if lower_bound is None else jnp.asarray(lower_bound, dtype) + shift

    def run(g0):
        return _em_loop(xt1, w, sq_norm, total, g0, reg, tol, max_iter, bs, bound0=bound0)

    if init_gmm is not None:
        g0 = jax.tree.map(lambda a: jnp.asarray(a, dtype), init_gmm)
        g, bound, history, it, converged = run(std.gmm_to(g0))
    else:

        def restart(k):
            return run(init_std(xt1, w, mean_var, k, n_components, ctype, init, reg, bs))

        if n_init == 1:
            g, bound, history, it, converged = restart(key)
        else:
            runs = jax.vmap(restart)(restart_keys(key, n_init))
            bounds = jnp.where(jnp.isnan(runs[1]), -jnp.inf, runs[1])
            # scikit-learn keeps the first restart with the highest final
            # bound, and fails if any restart meets an ill-defined covariance:
            # such a restart is kept so that the caller sees it.
            bounds = jnp.where(jax.vmap(defined)(runs[0]), bounds, jnp.inf)
            best = jnp.argmax(bounds)
            g, bound, history, it, converged = jax.tree.map(lambda a: a[best], runs)
    return FitResult(std.gmm_from(g), bound - shift, history - shift, it, converged)


@functools.partial(jax.jit, static_argnames=("max_iter", "block_size"))
def fit_from(
    x: jax.Array,
    init_gmm: GMM,
    *,
    weights: jax.Array | None = None,
    tol: float | jax.Array = 1e-3,
    reg_covar: float | jax.Array = 1e-6,
    max_iter: int = 100,
    block_size: int | None = None,
    lower_bound: float | jax.Array | None = None,
) -> FitResult:
    """EM from given parameters: the pure, jitted core of :func:`fit`.

    No argument checks (use :func:`fit` for those); ``jax.vmap`` it over data
    sets or initial mixtures, or call it inside your own ``jit``. ``tol`` and
    ``reg_covar`` may be traced; ``max_iter`` and ``block_size`` are static.

    Args:
      x: (N, D) observations.
      init_gmm: starting mixture (its covariance type is the fit's).
      weights: optional (N,) non-negative row weights.
      tol: stop when the mean log-likelihood changes by less than this.
      reg_covar: non-negative variance floor (with 0, a collapsed component
        stops the loop with a non-finite ``prec_chol``; see :func:`fit`).
      max_iter: the most EM iterations (and the length of ``history``).
      block_size: rows per E-step block; None picks one from D and K.
      lower_bound: the mean log-likelihood the first change is measured from
        (a warm start passes the previous fit's ``log_likelihood``, as
        scikit-learn's ``warm_start`` does); None means ``-inf``, so at least
        two iterations run.

    Returns:
      :class:`FitResult`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import em, gmm
      >>> x = jnp.array([[0.0], [0.2], [0.1], [5.0], [5.2], [5.1]])
      >>> g0 = gmm.from_covariances(jnp.zeros(2), jnp.array([[1.0], [4.0]]), jnp.ones((2, 1)), "diag")
      >>> res = em.fit_from(x, g0, max_iter=50)
      >>> [round(m, 2) for m in res.gmm.means[:, 0].tolist()], bool(res.converged)
      ([0.1, 5.1], True)
    """
    # Shape checks that hold under jit and vmap (on the traced shapes).
    chex.assert_rank(x, 2)
    chex.assert_shape(init_gmm.means, (init_gmm.n_components, x.shape[-1]))
    if weights is not None:
        chex.assert_shape(weights, x.shape[:1])
    return _fit_one(
        x,
        weights,
        None,
        init_gmm,
        tol,
        reg_covar,
        lower_bound,
        n_components=init_gmm.n_components,
        covariance_type=init_gmm.covariance_type,
        init=None,
        n_init=1,
        max_iter=max_iter,
        block_size=block_size,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "n_components",
        "covariance_type",
        "init",
        "n_init",
        "max_iter",
        "block_size",
        "batched",
        "gmm_batched",
    ),
)
def _fit_jit(x, w, key, init_gmm, tol, reg_covar, *, batched, gmm_batched, **static):
    one = functools.partial(_fit_one, **static)
    if not batched:
        return one(x, w, key, init_gmm, tol, reg_covar)
    keys = jax.random.split(key, x.shape[0])
    axes = (0, None if w is None else 0, 0, 0 if gmm_batched else None, None, None)
    return jax.vmap(one, in_axes=axes)(x, w, keys, init_gmm, tol, reg_covar)


def fit(
    x,
    n_components: int,
    *,
    key: jax.Array,
    options: EMOptions | None = None,
    weights=None,
    **settings,
) -> FitResult:
    """Fits a Gaussian mixture by EM (scikit-learn's ``GaussianMixture.fit``).

    Arguments are checked on the host first (ValueError naming the problem),
    so ``fit`` cannot itself run under ``jax.jit`` or ``jax.vmap`` (a
    TypeError says so): use :func:`fit_from` there, or pass (B, N, D) data to
    fit B data sets in one ``vmap``. Then initialisation, all restarts and all iterations run in one compiled
    call, which a second call with the same shapes and static arguments reuses.

    Args:
      x: (N, D) observations, or (B, N, D) for B independent data sets fitted
        in one ``vmap`` (every result field then gets a leading B axis).
      n_components: K.
      key: PRNG key for the initialisation (split per data set and restart).
      options: the EM settings (:class:`~grnn_jax.em.options.EMOptions`; None: its
        defaults): covariance type, tolerance, ``reg_covar``, iterations, initialisation,
        restarts and block size (its ``init_sample`` is not used: fit initialises on
        all rows).
      weights: optional non-negative row weights shaped ``x.shape[:-1]``; an
        integer weight acts as that many copies of the row.
      **settings: those fields by keyword, in place of the options' own:
        ``covariance_type``, ``tol``, ``reg_covar``, ``max_iter``, ``init``, ``n_init``,
        ``block_size``.

    Returns:
      :class:`FitResult`. Degenerate but legal data (identical rows, constant
      features, tiny or huge scales) give finite parameters: ``reg_covar``
      floors every variance, empty components keep a negligible weight, and
      covariances that rounding made indefinite fall back to their diagonal.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import em
      >>> x = jnp.concatenate([jax.random.normal(jax.random.key(1), (100, 2)) + 5,
      ...                      jax.random.normal(jax.random.key(2), (100, 2)) - 5])
      >>> res = em.fit(x, 2, key=jax.random.key(0))
      >>> sorted(res.gmm.means[:, 0].round(0).tolist()), bool(res.converged)
      ([-5.0, 5.0], True)
    """
    checks.check_not_traced("fit", x=x, weights=weights, key=key)
    opts = resolve_options("fit", options, settings, FIT)
    checks.check_not_traced("fit", init=opts.init)
    k = checks.check_int(n_components, "n_components")
    key = checks.check_key(key)
    xa = checks.check_x(x)
    batched = xa.ndim == 3
    checks.check_rows(xa, k)
    w = checks.check_weights(weights, xa, k)
    init_gmm, n_init = None, opts.n_init
    gmm_batched = False
    if opts.init_method is None:
        batch_ok = ((), (xa.shape[0],)) if batched else ((),)
        init_gmm = checks.check_gmm(opts.init, k, xa.shape[-1], opts.covariance_type, batch_ok)
        gmm_batched = batched and init_gmm.batch_shape != ()
        n_init = 1
    xj = jnp.asarray(xa)
    wj = None if w is None else jnp.asarray(w, xj.dtype)
    result = _fit_jit(
        xj,
        wj,
        key,
        init_gmm,
        float(opts.tol),
        float(opts.reg_covar),
        batched=batched,
        gmm_batched=gmm_batched,
        n_components=k,
        covariance_type=opts.covariance_type,
        init=opts.init_method,
        n_init=int(n_init),
        max_iter=int(opts.max_iter),
        block_size=opts.block_size,
    )
    if opts.reg_covar == 0:
        checks.check_defined(result.gmm)
    return result
