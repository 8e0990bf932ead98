"""Exact EM over data read in chunks: larger than memory, and split over processes.

One EM iteration is one pass over a :class:`~grnn_jax.em.rows.RowSource`:
each fixed-size chunk's E-step statistics (:func:`~grnn_jax.em.stats.e_step_std`)
are summed, then summed over processes (:mod:`grnn_jax.em.distributed`), and
one M-step follows. Before the iterations, two passes fit the standardiser
(weighted moments about a common anchor row) and the row-norm bound of the
quadratic-form guard, as :func:`~grnn_jax.em.fit.fit` does on data in memory;
the second also collects the initialisation sample. So from the same start the
result is in-memory EM's up to the order of float sums.

Initialisation (k-means++, k-means, random) runs on a seeded uniform sample of
``init_sample`` rows (all rows when there are fewer), drawn by global row index:
it does not depend on chunking or on how rows are split over processes, and
with all rows in the sample it is :func:`~grnn_jax.em.fit.fit`'s own.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax.gmm import GMM
from grnn_jax.em import checks, distributed
from grnn_jax.em.blocks import (
    block_columns,
    default_block_size,
    max_sq_norm,
    standardiser_from_moments,
    weighted_moments,
)
from grnn_jax.em.fit import FitResult
from grnn_jax.em.init import init_std
# DEFAULT_INIT_SAMPLE is re-exported here, where the command line reads it.
from grnn_jax.em.options import CHUNKED, DEFAULT_INIT_SAMPLE, EMOptions, resolve_options  # noqa: F401
from grnn_jax.em.rows import RowSource
from grnn_jax.em.select import log_likelihood_sum
from grnn_jax.em.stats import e_step_std, m_step_std
from grnn_jax._util.validation import check_int
from grnn_jax._util.dtypes import default_float

# DEFAULT_INIT_SAMPLE stays importable from here, where it used to live.


def compute_dtype():
    """float32, or float64 when ``jax_enable_x64`` is on."""
    return default_float()


@functools.partial(jax.jit, static_argnames=("block_size",))
def _chunk_moments(x, w, anchor, *, block_size):
    return weighted_moments(x, w, anchor, block_size)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _chunk_sq_norm(x, w, std, *, block_size):
    return max_sq_norm(x, w, std, block_size)


@functools.partial(jax.jit, static_argnames=("block_size",))
def _chunk_e_step(g, x, w, std, sq_norm, *, block_size):
    return e_step_std(g, block_columns(x, w, std), w, block_size, sq_norm)


@jax.jit
def _add(a, b):
    return jax.tree.map(jnp.add, a, b)


@functools.partial(jax.jit, static_argnames=("ctype",))
def _m_step(stats, reg, *, ctype):
    return m_step_std(stats, ctype, reg)


@functools.partial(jax.jit, static_argnames=("n_components", "ctype", "method", "block_size"))
def _init_on_sample(x, w, std, mean_var, key, reg, *, n_components, ctype, method, block_size):
    return init_std(block_columns(x, w, std), w, mean_var, key, n_components, ctype, method, reg, block_size)


def _fold(acc, new, op):
    """``op(acc, new)``, first waiting for ``acc``: the host reads the next chunk while this one
    computes, but never runs further ahead (queued chunks would hold memory in proportion to N)."""
    if acc is None:
        return new
    jax.block_until_ready(acc)
    return op(acc, new)


def _device(chunk, w, dtype):
    return jnp.asarray(chunk, dtype), jnp.asarray(w, dtype)


def _first_row(source: RowSource, chunk_size: int):
    """This process's first row of positive weight (None if it holds none)."""
    for x, w, _ in source.chunks(chunk_size):
        pos = np.flatnonzero(w > 0)
        if pos.size:
            return x[pos[0]]
    return None


def standardise_pass(source: RowSource, chunk_size: int, block_size: int, *, isotropic: bool):
    """Pass 1: weighted moments about a common anchor; checks every chunk for NaN/inf.

    Returns ``(std, total, mean_var, n_rows, offset)``: ``n_rows`` over all
    processes and ``offset`` the global index of this process's first row
    (for iterables, whose rows carry no index of their own).
    """
    dtype = compute_dtype()
    first = _first_row(source, chunk_size)
    # The anchor is the first row of the lowest process that has one, so every process uses the same.
    anchor = _anchor_across(first, source.n_features or 0)
    if anchor is None:
        raise ValueError(f"{source.describe} has no row with positive weight")
    anchor = jnp.asarray(anchor, dtype)
    acc, bad_row = None, -1
    for x, w, start in source.chunks(chunk_size):
        bad = ~np.isfinite(x[w > 0])
        if bad.any():
            bad_row = start + int(np.flatnonzero(w > 0)[np.argwhere(bad)[0][0]])
            break
        m = _chunk_moments(*_device(x, w, dtype), anchor, block_size=block_size)
        acc = _fold(acc, m, _add)
    # Every process learns of bad rows anywhere, so all stop together instead of waiting on one another.
    facts = distributed.gather_over_processes(np.array([(source.stop or 0) - source.start, bad_row]))
    counts, bad_rows = facts[:, 0], facts[:, 1]
    offset = source.start if not source.is_stream else int(np.sum(counts[: jax.process_index()]))
    if (bad_rows >= 0).any():
        who = int(np.flatnonzero(bad_rows >= 0)[0])
        row = int(bad_rows[who]) + (0 if not source.is_stream else int(np.sum(counts[:who])))
        raise ValueError(f"{source.describe} has a non-finite value in row {row}")
    if (counts == 0).any():
        raise ValueError(f"process {int(np.argmin(counts))} holds no rows; use fewer processes than the "
                         f"{int(np.sum(counts))} rows")
    n_rows = source.n_total if not source.is_stream else int(np.sum(counts))
    total, s1, s2 = distributed.sum_over_processes(acc)
    std, total, mean_var = standardiser_from_moments(
        anchor, jnp.asarray(total, dtype), jnp.asarray(s1, dtype), jnp.asarray(s2, dtype), isotropic=isotropic
    )
    return std, total, mean_var, n_rows, offset


def _anchor_across(first, d):
    has = first is not None
    rows = distributed.gather_over_processes(
        {"has": np.array(has), "row": np.asarray(first, np.float64) if has else np.zeros(d)}
    )
    owners = np.flatnonzero(rows["has"])
    return None if owners.size == 0 else rows["row"][owners[0]]


def sample_indices(key, n_rows: int, size: int) -> np.ndarray:
    """Sorted global row indices of a seeded uniform sample (all rows if ``n_rows <= size``).

    Example:
      >>> import jax
      >>> from grnn_jax.em.chunked import sample_indices
      >>> sample_indices(jax.random.key(0), 5, 10).tolist()
      [0, 1, 2, 3, 4]
      >>> len(sample_indices(jax.random.key(0), 10**8, 1000))
      1000
    """
    if n_rows <= size:
        return np.arange(n_rows)
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, 0x5A3E)), np.uint32)
    rng = np.random.default_rng(seed)
    # Floyd-style draws without a permutation of all N rows: oversample, dedupe, trim.
    picked = np.unique(rng.integers(0, n_rows, size=2 * size + 64))
    while picked.size < size:
        picked = np.unique(np.concatenate([picked, rng.integers(0, n_rows, size=size)]))
    return np.sort(rng.permutation(picked)[:size])


def norm_and_sample_pass(source: RowSource, chunk_size, block_size, std, offset, idx):
    """Pass 2: the largest standardised squared row norm, and the rows ``idx`` (global indices) with weights."""
    dtype = compute_dtype()
    d = source.n_features
    xs = np.zeros((len(idx), d), np.float64)
    ws = np.zeros(len(idx), np.float64)
    acc = None
    for x, w, start in source.chunks(chunk_size):
        g0 = start + offset if source.is_stream else start
        lo, hi = np.searchsorted(idx, [g0, g0 + len(x)])
        if hi > lo:
            local = idx[lo:hi] - g0
            xs[lo:hi], ws[lo:hi] = x[local], w[local]
        m = _chunk_sq_norm(*_device(x, w, dtype), std, block_size=block_size)
        acc = _fold(acc, m, jnp.maximum)
    sq_norm = distributed.max_over_processes(acc)
    xs, ws = distributed.sum_over_processes((xs, ws))
    return jnp.asarray(sq_norm, dtype), xs, ws


def e_step_pass(g_std: GMM, source: RowSource, chunk_size, block_size, std, sq_norm):
    """One E-step pass: ``(stats, ll_sum)`` summed over chunks and processes (standardised coordinates)."""
    dtype = compute_dtype()
    acc = None
    for x, w, _ in source.chunks(chunk_size):
        out = _chunk_e_step(g_std, *_device(x, w, dtype), std, sq_norm, block_size=block_size)
        acc = _fold(acc, out, _add)
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), distributed.sum_over_processes(acc))


def _check_source(data, weights, split: bool) -> RowSource:
    if isinstance(data, RowSource):
        return data
    src = RowSource(data, weights=weights)
    if split and jax.process_count() > 1 and src.n_total is not None:
        src = RowSource(data, weights=weights, rows=distributed.process_rows(src.n_total))
    return src


def fit_chunked(
    data,
    n_components: int,
    *,
    key: jax.Array,
    chunk_size: int,
    options: EMOptions | None = None,
    weights=None,
    split_over_processes: bool = True,
    **settings,
) -> FitResult:
    """Exact EM reading the data ``chunk_size`` rows at a time (one M-step per pass).

    The data never need to fit in memory: an ``.npy`` path is mapped one chunk
    at a time. Every chunk has one shape (the last padded with weight-0 rows),
    so each per-chunk function compiles once. In a multi-process run
    (:func:`grnn_jax.em.distributed.initialize`) each process reads only its
    slice of the rows (:func:`~grnn_jax.em.distributed.process_rows`) and the
    statistics are summed over processes after every pass; every process
    returns the same result.

    Args:
      data: an (N, D) array, an ``.npy`` path, a re-iterable of (n_i, D)
        chunks (in a multi-process run: this process's own rows), or a
        :class:`~grnn_jax.em.rows.RowSource`.
      n_components: K.
      key: PRNG key of the initialisation sample and method.
      chunk_size: rows per chunk (>= 1).
      options: the EM settings (:class:`~grnn_jax.em.options.EMOptions`; None: its
        defaults); the initialisation method runs on a sample of ``init_sample`` rows
        (``n_init`` is not used: one start).
      weights: optional (N,) row weights (array or file data).
      split_over_processes: read only this process's slice of array or file data.
      **settings: those fields by keyword, in place of the options' own:
        ``covariance_type``, ``tol``, ``reg_covar``, ``max_iter``, ``init``,
        ``init_sample``, ``block_size``.

    Returns:
      :class:`~grnn_jax.em.fit.FitResult` (``history`` holds ``max_iter`` entries).

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax import em
      >>> x = np.concatenate([np.random.default_rng(0).normal(size=(300, 2)) + 4,
      ...                     np.random.default_rng(1).normal(size=(300, 2)) - 4])
      >>> res = em.fit_chunked(x, 2, key=jax.random.key(0), chunk_size=128)
      >>> sorted(res.gmm.means[:, 0].round(0).tolist()), bool(res.converged)
      ([-4.0, 4.0], True)
    """
    opts = resolve_options("fit_chunked", options, settings, CHUNKED)
    k = check_int(n_components, "n_components")
    c = check_int(chunk_size, "chunk_size")
    key = checks.check_key(key)
    source = _check_source(data, weights, split_over_processes)
    if source.n_total is not None:  # no chunk longer than the rows it would hold
        c = max(1, min(c, source.stop - source.start))
    dtype = compute_dtype()
    ctype, init, method = opts.covariance_type, opts.init, opts.init_method
    if source.n_features is not None and method is None:  # before any pass, where known
        checks.check_gmm(init, k, source.n_features, ctype, ((),))
    std, total, mean_var, n_rows, offset = standardise_pass(
        source, c, opts.block_size or default_block_size(source.n_features or 1, k, ctype),
        isotropic=ctype == "spherical",
    )
    d = source.n_features
    if method is None:
        checks.check_gmm(init, k, d, ctype, ((),))
    if n_rows < k:
        raise ValueError(f"data has {n_rows} rows, fewer than n_components={k}")
    bs = opts.block_size or default_block_size(d, k, ctype)
    reg = jnp.asarray(opts.reg_covar, dtype) / jnp.square(std.scale)
    idx = sample_indices(key, n_rows, opts.init_sample) if method else np.zeros(0, np.int64)
    sq_norm, xs, ws = norm_and_sample_pass(source, c, bs, std, offset, idx)
    if method:
        if not (ws > 0).any():
            raise ValueError("the initialisation sample holds no row of positive weight; raise init_sample")
        g = _init_on_sample(*_device(xs, ws, dtype), std, mean_var, key, reg,
                            n_components=k, ctype=ctype, method=method, block_size=bs)
    else:
        g = std.gmm_to(jax.tree.map(lambda a: jnp.asarray(a, dtype), init))
    bound, history, converged, it = -np.inf, np.full(opts.max_iter, np.nan), False, 0
    while it < opts.max_iter and not converged:
        stats, ll_sum = e_step_pass(g, source, c, bs, std, sq_norm)
        new_bound = float(ll_sum / total)
        g = _m_step(stats, reg, ctype=ctype)
        converged = abs(new_bound - bound) < opts.tol
        bound, history[it], it = new_bound, new_bound, it + 1
    shift = float(std.log_det)
    return FitResult(
        std.gmm_from(g),
        jnp.asarray(bound - shift, dtype),
        jnp.asarray(history - shift, dtype),
        jnp.asarray(it, jnp.int32),
        jnp.asarray(converged),
    )


@functools.partial(jax.jit, static_argnames=("block_size",))
def _chunk_ll(g, x, w, *, block_size):
    return log_likelihood_sum(g, x, w, block_size=block_size)


def log_likelihood_chunked(g: GMM, data, *, chunk_size: int, weights=None, block_size: int | None = None):
    """``(sum_i w_i log p(x_i), sum_i w_i)`` over chunks (and processes), as :func:`~grnn_jax.em.log_likelihood_sum`.

    Example:
      >>> import jax.numpy as jnp, numpy as np
      >>> from grnn_jax import em, gmm
      >>> g = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones(1), "spherical")
      >>> ll, total = em.log_likelihood_chunked(g, np.zeros((3, 1)), chunk_size=2)
      >>> round(float(ll), 4), float(total)
      (-2.7568, 3.0)
    """
    c = check_int(chunk_size, "chunk_size")
    source = _check_source(data, weights, True)
    dtype = compute_dtype()
    g = jax.tree.map(lambda a: jnp.asarray(a, dtype), g)
    bs = block_size or default_block_size(g.n_features, g.n_components, g.covariance_type)
    acc = None
    for x, w, _ in source.chunks(c):
        out = _chunk_ll(g, *_device(x, w, dtype), block_size=bs)
        acc = _fold(acc, out, _add)
    ll, total = distributed.sum_over_processes(acc)
    return float(ll), float(total)

