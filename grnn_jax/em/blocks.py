"""Single passes over the rows of a data set in fixed-size blocks.

Every pass of EM (E-step, k-means++ seeding, Lloyd steps, scores) reads the data
block by block inside a ``lax.scan`` so that no per-row-per-component array
(``N x K`` responsibilities or distances) is ever held in memory. The blocks are
``dynamic_slice`` s of the array, which is never padded: when N is not a
multiple of the block size, the last block is shifted back to end at row N.

EM works in standardised coordinates (:class:`Standardiser`). A fit holds one
standardised copy of the data, column-major with a row of ones appended
(:func:`block_columns`), and passes over it with ``map_reduce(..., axis=1)``;
one-off passes over raw rows (scores, the standardiser itself) standardise each
block on the fly.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from grnn_jax.em.features import uses_packed_moments
from grnn_jax.gmm.standardise import Standardiser

# Floats per block buffer and the block-size bounds: a CPU's caches (2-core EPYC) or an
# accelerator's memory and parallelism (H200: bigger blocks were 4.7-5.6x faster).
_TARGET_BLOCK_FLOATS = {"cpu": 2**20, "accelerator": 2**26}
_MIN_BLOCK = 256
_MAX_BLOCK = {"cpu": 16384, "accelerator": 65536}


def default_block_size(n_features: int, n_components: int, covariance_type: str,
                       platform: str | None = None) -> int:
    """Rows per block for the E-step, sized for the platform the fit runs on.

    A block of R rows holds its features (``(D+1)(D+2)/2`` rows of R for full
    covariance with packed moments, see :mod:`grnn_jax.em.features`) and its
    ``(K, R)`` log-densities; without packed moments, the ``(K*D, R)``
    projections and responsibility-weighted rows instead.

    * On a CPU the per-block buffers stay near 4 MB, so they keep in the 2 MB
      L2 / 32 MB L3 caches of a 2-core EPYC while the matmuls stay large: the
      best sizes when calibrated there (256 rows at D=64, K=32; 4,096 at D=16,
      K=32; other sizes cost up to 1.5x).
    * On a GPU or TPU a block may hold up to 2**26 floats (256 MB per restart:
      restarts run vmapped), at most 65,536 rows: one E-step is then a few large
      launches. On an H200 at N=1e6, K=32, full covariance, the CPU sizes took
      6.3 ms (D=16, 4,096 rows) and 117 ms (D=64, 256 rows) per iteration; the
      sizes chosen here, 65,536 and 16,384 rows, took 1.35 and 20.8 ms
      (``scripts/bench_gpu.sh``, README; 65,536 rows at D=64: 19.0 ms).

    Args:
      n_features, n_components, covariance_type: the mixture's D, K and covariance type.
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``...; None: JAX's default backend.

    Example:
      >>> from grnn_jax import em
      >>> em.default_block_size(64, 32, "full", "cpu"), em.default_block_size(16, 32, "full", "cpu")
      (256, 4096)
      >>> em.default_block_size(64, 32, "full", "gpu"), em.default_block_size(16, 32, "full", "gpu")
      (16384, 65536)
    """
    kind = "cpu" if (platform or jax.default_backend()) == "cpu" else "accelerator"
    d, k = int(n_features), int(n_components)
    if covariance_type == "full":
        per_row = (d + 1) * (d + 2) // 2 + k if uses_packed_moments(d, k) else d + 1 + 2 * k * d
    elif covariance_type == "tied":
        per_row = 3 * d + k
    else:
        per_row = 2 * d + 2 * k
    rows = max(_TARGET_BLOCK_FLOATS[kind] // max(per_row, 1), 1)
    rows = 1 << (rows.bit_length() - 1)  # a power of two
    return int(min(max(rows, _MIN_BLOCK), _MAX_BLOCK[kind]))


BlockFn = Callable  # (carry, xb (R, D) or (D', R), wb (R,), start) -> (carry, y | None)


def map_reduce(fn: BlockFn, carry, x: jax.Array, w: jax.Array | None, block_size: int, *, axis: int = 0):
    """Runs ``fn`` over blocks of the rows of ``x``; returns the carry and the per-row outputs.

    When N is not a multiple of the block size, the last block is shifted back
    to end at row N and the rows an earlier block already covered get weight 0.
    So one traced body handles every block and the data are never padded.

    Args:
      fn: ``fn(carry, xb, wb, start) -> (carry, y)``; ``xb`` the block (R, D)
        (or (D', R) for ``axis=1``), ``wb`` (R,) its rows' weights (0 for
        rows to ignore: zero-weight, or already seen), ``start`` the index of
        the first row. ``y`` is a pytree of per-row arrays with leading axis
        R, or None.
      carry: initial accumulator pytree.
      x: (N, D) rows, or (D', N) columns with ``axis=1``
        (:func:`block_columns` of the whole data set).
      w: (N,) weights or None (all ones).
      block_size: rows per block (clipped to N).
      axis: the axis of ``x`` that indexes rows.

    Returns:
      ``(carry, ys)`` with ys' leaves (N, ...) (None if fn returns None).
    """
    n = x.shape[axis]
    block = int(min(block_size, n))
    n_blocks = -(-n // block)
    rows = jnp.arange(block)

    def body(c, i):
        start = jnp.minimum(i * block, n - block)
        xb = lax.dynamic_slice_in_dim(x, start, block, axis=axis)
        wb = jnp.ones(block, x.dtype) if w is None else lax.dynamic_slice_in_dim(w, start, block)
        wb = jnp.where(start + rows >= i * block, wb, 0.0)
        return fn(c, xb, wb, start)

    carry, ys = lax.scan(body, carry, jnp.arange(n_blocks))
    if ys is None:
        return carry, None
    last = n - (n_blocks - 1) * block  # fresh rows at the end of the last block

    def assemble(a):
        head = a[:-1].reshape(((n_blocks - 1) * block,) + a.shape[2:])
        return jnp.concatenate([head, a[-1, block - last :]], axis=0)

    return carry, jax.tree.map(assemble, ys)


def standardise_block(xb: jax.Array, wb: jax.Array | None, std: Standardiser) -> jax.Array:
    """``(xb - center) / scale``; rows with weight 0 become 0 (they may hold anything)."""
    inv = (1.0 / std.scale).astype(xb.dtype)
    z = (xb - std.center.astype(xb.dtype)) * inv
    return z if wb is None else jnp.where((wb > 0)[:, None], z, 0.0)


def block_columns(xb: jax.Array, wb: jax.Array | None, std: Standardiser) -> jax.Array:
    """(D+1, R) standardised rows as columns, plus a row of ones.

    Rows with weight 0 become zero columns (they may hold anything, NaN
    included); their ones stay, so weight them out of any sum. Applied to a
    whole data set it gives the column-major copy that EM passes over
    (``map_reduce(..., axis=1)``).

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em.blocks import block_columns
      >>> from grnn_jax.gmm.standardise import Standardiser
      >>> std = Standardiser(jnp.array([1.0, 0.0]), jnp.array([2.0, 1.0]))
      >>> block_columns(jnp.array([[5.0, 2.0]]), jnp.ones(1), std)[:, 0].tolist()
      [2.0, 2.0, 1.0]
    """
    zt = standardise_block(xb, wb, std).T
    return jnp.concatenate([zt, jnp.ones((1, zt.shape[1]), zt.dtype)], axis=0)


def max_sq_norm(x: jax.Array, w: jax.Array | None, std: Standardiser, block_size: int) -> jax.Array:
    """() the largest squared norm of a standardised row with positive weight (one blocked pass)."""

    def fn(c, xb, wb, start):
        return jnp.maximum(c, jnp.max(jnp.sum(jnp.square(standardise_block(xb, wb, std)), axis=-1))), None

    return map_reduce(fn, jnp.zeros((), x.dtype), x, w, block_size)[0]


def data_columns(x: jax.Array, w: jax.Array | None, std: Standardiser, block_size: int):
    """``(xt1, sq_norm)``: the data as one standardised column-major copy (:func:`block_columns`) and its :func:`max_sq_norm`.

    The norm comes from a blocked pass over the rows: as one reduction over
    ``xt1``, or over all rows at once, XLA materialised a second copy of the data.
    """
    return block_columns(x, w, std), max_sq_norm(x, w, std, block_size)


def fit_standardiser(
    x: jax.Array, w: jax.Array | None, block_size: int, *, isotropic: bool = False
) -> tuple[Standardiser, jax.Array, jax.Array]:
    """Weighted mean and standard deviation of the data, in one blocked pass.

    The moments are accumulated relative to a data point, so float32 loses
    nothing to an offset of 1e6. Only the centre needs to be accurate (EM is
    exactly equivariant under any positive scale, which only conditions the
    arithmetic); a feature with zero variance keeps scale 1.

    Returns:
      ``(standardiser, total_weight, mean_var)``; ``mean_var`` is the mean
      feature variance in standardised coordinates (1 unless features are constant).
    """
    anchor = x[0] if w is None else x[jnp.argmax(w)]
    return standardiser_from_moments(anchor, *weighted_moments(x, w, anchor, block_size), isotropic=isotropic)


def weighted_moments(x: jax.Array, w: jax.Array | None, anchor: jax.Array, block_size: int):
    """``(sum w, sum w (x - anchor), sum w (x - anchor)**2)`` in one blocked pass.

    The sums of disjoint chunks (or devices) add up; :func:`standardiser_from_moments`
    turns them into a :class:`Standardiser`.
    """
    dtype = x.dtype

    def fn(c, xb, wb, start):
        z = jnp.where((wb > 0)[:, None], xb - anchor, 0.0)
        return (c[0] + jnp.sum(wb), c[1] + wb @ z, c[2] + wb @ jnp.square(z)), None

    zero = jnp.zeros(x.shape[1], dtype)
    return map_reduce(fn, (jnp.zeros((), dtype), zero, zero), x, w, block_size)[0]


def standardiser_from_moments(anchor, total, s1, s2, *, isotropic: bool = False):
    """``(standardiser, total_weight, mean_var)`` from :func:`weighted_moments` (see :func:`fit_standardiser`)."""
    d = anchor.shape[-1]
    dtype = s1.dtype
    shift = s1 / total
    mean = anchor + shift
    var = jnp.maximum(s2 / total - jnp.square(shift), 0.0)
    var_s = jnp.full((d,), jnp.mean(var), dtype) if isotropic else var
    scale = jnp.where(var_s > 0, jnp.sqrt(var_s), 1.0).astype(dtype)
    return Standardiser(mean, scale), total, jnp.mean(var / jnp.square(scale))
