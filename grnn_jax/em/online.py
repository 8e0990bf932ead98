"""Stepwise (online) EM over mini-batches of a stream (Cappé & Moulines 2009; Liang & Klein 2009).

After each mini-batch of B rows the running statistics, normalised per unit
weight, are blended with the batch's::

    s_t = (1 - eta_t) s_{t-1} + eta_t * stats(batch_t) / weight(batch_t)
    eta_t = (t + 2) ** -step_exponent,     t = 0, 1, 2, ...

and the mixture is the M-step of ``s_t`` (Liang & Klein's rule). ``s_{-1}``
holds the statistics of the initialisation sample under the initial mixture,
so a first batch that misses some clusters cannot empty their components
(with ``eta_0 = 1`` it would, and an emptied component never recovers). Any
exponent in (0.5, 1] satisfies the stochastic-approximation conditions
(sum eta = inf, sum eta^2 < inf); the default 0.6 follows Liang & Klein, who
found 0.6-0.7 best with batches of a few thousand rows.

Array and ``.npy`` data are read in contiguous batches whose order is shuffled
every pass (seeded); an iterable is read in its own order. The standardiser
and the initial mixture come from a seeded uniform sample of ``init_sample``
rows (the first ``init_sample`` rows of an iterable).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax.gmm import GMM
from grnn_jax.em import checks
from grnn_jax.em.blocks import data_columns, default_block_size, fit_standardiser
from grnn_jax.em.chunked import compute_dtype, sample_indices
from grnn_jax.em.init import init_std
from grnn_jax.em.options import ONLINE, EMOptions, resolve_options
from grnn_jax.em.rows import RowSource
from grnn_jax.em.stats import e_step_std, m_step_std
from grnn_jax.em.stepwise import blend, check_step_schedule, step_size

# eta_t = (t + 2)^-alpha: the first blended batch gets eta_0 = 2^-alpha < 1, so the
# initialisation sample's statistics are never forgotten at once.
_OFFSET = 2.0
from grnn_jax._util.validation import check_int


class OnlineResult(NamedTuple):
    """What :func:`fit_online` returns.

    Attributes:
      gmm: the mixture after the last step.
      n_steps: () mini-batch steps taken.
      history: (passes,) mean log-likelihood of each pass's batches under the
        mixture before each batch's step (a prequential, held-out-like score).
      step_size: () the last ``eta_t`` (0 before any step).
    """

    gmm: GMM
    n_steps: jax.Array
    history: jax.Array
    step_size: jax.Array


@functools.partial(jax.jit, static_argnames=("block_size",))
def _step(g, s, t, x, w, std, reg, exponent, *, block_size):
    """One stepwise-EM update on a batch; a batch with no weight changes nothing."""
    xt1, sq_norm = data_columns(x, w, std, block_size)
    stats, ll_sum = e_step_std(g, xt1, w, block_size, sq_norm)
    tw = jnp.sum(w)
    ok = tw > 0
    eta = jnp.where(ok, step_size(t, exponent=exponent, offset=_OFFSET), 0.0).astype(x.dtype)
    s = blend(s, stats, tw, eta)
    new = m_step_std(s, g.covariance_type, reg)
    g = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, g)
    return g, s, t + ok.astype(t.dtype), ll_sum, tw, eta


@functools.partial(jax.jit, static_argnames=("n_components", "ctype", "method", "block_size", "isotropic"))
def _start(x, w, key, init_gmm, reg_covar, *, n_components, ctype, method, block_size, isotropic):
    std, total, mean_var = fit_standardiser(x, w, block_size, isotropic=isotropic)
    reg = reg_covar / jnp.square(std.scale)
    xt1, sq_norm = data_columns(x, w, std, block_size)
    if init_gmm is None:
        g = init_std(xt1, w, mean_var, key, n_components, ctype, method, reg, block_size)
    else:
        g = std.gmm_to(jax.tree.map(lambda a: jnp.asarray(a, x.dtype), init_gmm))
    stats, _ = e_step_std(g, xt1, w, block_size, sq_norm)
    return std, reg, g, jax.tree.map(lambda a: a / total, stats)


def _sample(source: RowSource, key, size: int, chunk: int):
    """Rows of the seeded uniform sample (the first ``size`` rows of an iterable), with weights."""
    if source.n_total is None:
        xs, ws, got = [], [], 0
        for x, w, _ in source.chunks(chunk):
            xs.append(x), ws.append(w)
            got += len(x)
            if got >= size:
                break
        return np.concatenate(xs)[:size], np.concatenate(ws)[:size]
    idx = sample_indices(key, source.n_total, size)
    out_x, out_w = [], []
    for x, w, start in source.chunks(chunk):
        lo, hi = np.searchsorted(idx, [start, start + len(x)])
        out_x.append(x[idx[lo:hi] - start]), out_w.append(w[idx[lo:hi] - start])
    return np.concatenate(out_x), np.concatenate(out_w)


def fit_online(
    data,
    n_components: int,
    *,
    key: jax.Array,
    batch_size: int,
    passes: int = 1,
    step_exponent: float = 0.6,
    options: EMOptions | None = None,
    weights=None,
    shuffle: bool = True,
    on_pass: Callable[[int, GMM], None] | None = None,
    **settings,
) -> OnlineResult:
    """Stepwise EM: one M-step per mini-batch on statistics blended with a decreasing step size.

    Args:
      data: an (N, D) array, an ``.npy`` path (read a batch at a time) or a
        re-iterable of (n_i, D) chunks (a stream, read in order).
      n_components: K.
      key: PRNG key of the sample, the initialisation and the batch order.
      batch_size: rows per mini-batch B (>= 1); the last is padded with weight 0.
      passes: passes over the data (>= 1).
      step_exponent: alpha in ``eta_t = (t + 2) ** -alpha``, in (0.5, 1].
      options: the EM settings (:class:`~grnn_jax.em.options.EMOptions`; None: its
        defaults); ``init_sample`` rows fit the standardiser and the initialisation (the
        method runs on them); ``tol``, ``max_iter`` and ``n_init`` are not used.
      weights: optional (N,) row weights (array or file data).
      shuffle: shuffle the order of the batches every pass (array or file data).
      on_pass: called as ``on_pass(p, gmm)`` after pass ``p`` (from 1) with the
        mixture then (e.g. to score it on held-out data).
      **settings: those fields by keyword, in place of the options' own:
        ``covariance_type``, ``reg_covar``, ``init``, ``init_sample``, ``block_size``.

    Returns:
      :class:`OnlineResult`.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax import em
      >>> rng = np.random.default_rng(0)
      >>> x = np.concatenate([rng.normal(size=(2000, 1)) + 4, rng.normal(size=(2000, 1)) - 4])
      >>> res = em.fit_online(x, 2, key=jax.random.key(0), batch_size=256, passes=2)
      >>> sorted(res.gmm.means[:, 0].round(1).tolist()), int(res.n_steps)
      ([-4.0, 4.0], 32)
    """
    opts = resolve_options("fit_online", options, settings, ONLINE)
    k = check_int(n_components, "n_components")
    b = check_int(batch_size, "batch_size")
    n_passes = check_int(passes, "passes")
    key = checks.check_key(key)
    check_step_schedule(step_exponent, _OFFSET, names=("step_exponent", "offset"))
    if jax.process_count() > 1:
        raise ValueError("online EM runs in one process; use fit_chunked across processes")
    source = data if isinstance(data, RowSource) else RowSource(data, weights=weights)
    dtype = compute_dtype()
    k_sample, k_init, k_order = jax.random.split(key, 3)
    xs, ws = _sample(source, k_sample, opts.init_sample, b)
    d = source.n_features
    if not (ws > 0).any():
        raise ValueError("the initialisation sample holds no row of positive weight; raise init_sample")
    if int((ws > 0).sum()) < k:
        raise ValueError(f"the initialisation sample holds {int((ws > 0).sum())} rows of positive weight, "
                         f"fewer than n_components={k}")
    bad = ~np.isfinite(xs[ws > 0])
    if bad.any():
        raise ValueError(f"{source.describe} has non-finite values")
    ctype, method = opts.covariance_type, opts.init_method
    init_gmm = None if method else checks.check_gmm(opts.init, k, d, ctype, ((),))
    bs = opts.block_size or default_block_size(d, k, ctype)
    std, reg, g, s = _start(
        jnp.asarray(xs, dtype), jnp.asarray(ws, dtype), k_init, init_gmm, jnp.asarray(opts.reg_covar, dtype),
        n_components=k, ctype=ctype, method=method, block_size=bs, isotropic=ctype == "spherical",
    )
    t = jnp.zeros((), jnp.int32)
    exponent = jnp.asarray(step_exponent, dtype)
    history = []
    eta = jnp.zeros((), dtype)
    for p in range(n_passes):
        order = None
        n_chunks = source.n_chunks(b)
        if shuffle and n_chunks is not None:
            order = np.asarray(jax.random.permutation(jax.random.fold_in(k_order, p), n_chunks))
        ll_acc, w_acc = 0.0, 0.0
        for x, w, start in source.chunks(b, order=order):
            bad = ~np.isfinite(x[w > 0])
            if bad.any():
                row = start + int(np.flatnonzero(w > 0)[np.argwhere(bad)[0][0]])
                raise ValueError(f"{source.describe} has a non-finite value in row {row}")
            x_j, w_j = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
            jax.block_until_ready(g)  # read the next batch while this one computes, no further ahead
            g, s, t, ll, tw, eta = _step(g, s, t, x_j, w_j, std, reg, exponent, block_size=bs)
            ll_acc, w_acc = ll_acc + ll, w_acc + tw
        history.append(ll_acc / w_acc - std.log_det)
        if on_pass is not None:
            on_pass(p + 1, std.gmm_from(g))
    return OnlineResult(std.gmm_from(g), t, jnp.stack(history).astype(dtype), eta)
