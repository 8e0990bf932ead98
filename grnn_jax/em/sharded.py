"""EM with the rows sharded over a device mesh: statistics ``psum``-ed inside ``shard_map``.

The rows (padded with weight-0 rows to a multiple of the mesh axis) are
placed with ``NamedSharding(mesh, P(axis))``. Inside ``shard_map`` each device
holds only its rows: the standardiser's moments and the E-step statistics are
``psum``-ed over ``axis``, the quadratic-form guard's row-norm bound is
``pmax``-ed, and the M-step runs replicated. The whole fit — standardiser,
initialisation, every iteration — is one compiled program.

The initialisation (k-means++ and the other methods) runs on a seeded uniform
sample of rows gathered from across the mesh (all rows when N is at most
``init_sample``, which makes it :func:`~grnn_jax.em.fit.fit`'s own).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from grnn_jax.em import checks
from grnn_jax.em.blocks import block_columns, data_columns, default_block_size, standardiser_from_moments, weighted_moments
from grnn_jax.em.fit import FitResult, _em_loop
from grnn_jax.em.init import init_std
from grnn_jax.em.options import SHARDED, EMOptions, resolve_options
from grnn_jax._util.validation import check_int


def data_mesh(devices=None, axis: str = "data") -> Mesh:
    """A one-axis mesh over ``devices`` (all of them by default) named ``axis``.

    Example:
      >>> from grnn_jax.em.sharded import data_mesh
      >>> data_mesh().axis_names
      ('data',)
    """
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis,))


@functools.partial(
    jax.jit,
    static_argnames=("mesh", "axis", "n_rows", "n_components", "ctype", "method", "max_iter", "block_size", "init_sample"),
)
def _fit_sharded(x, w, key, init_gmm, tol, reg_covar, *, mesh, axis, n_rows, n_components, ctype, method,
                 max_iter, block_size, init_sample):
    dtype = x.dtype
    bs = block_size
    # The first row of positive weight, as fit_standardiser anchors its moments (a cross-device gather).
    anchor = x[jnp.argmax(w > 0)]

    def local_moments(xl, wl, anchor):
        return lax.psum(weighted_moments(xl, wl, anchor, bs), axis)

    moments = jax.shard_map(local_moments, mesh=mesh, in_specs=(P(axis), P(axis), P()), out_specs=P(),
                            check_vma=False)(x, w, anchor)
    std, total, mean_var = standardiser_from_moments(anchor, *moments, isotropic=ctype == "spherical")
    reg = jnp.asarray(reg_covar, dtype) / jnp.square(std.scale)
    if init_gmm is not None:
        g0 = std.gmm_to(jax.tree.map(lambda a: jnp.asarray(a, dtype), init_gmm))
    else:
        if n_rows <= init_sample:
            idx = jnp.arange(n_rows)
        else:
            idx = jnp.sort(jax.random.choice(jax.random.fold_in(key, 0x5A3E), n_rows, (init_sample,), replace=False))
        xs, ws = x[idx], w[idx]  # gathered from across the mesh
        g0 = init_std(block_columns(xs, ws, std), ws, mean_var, key, n_components, ctype, method, reg, bs)

    def local_em(xl, wl, std, g0, reg, tol, total):
        xt1, sq_norm = data_columns(xl, wl, std, bs)
        sq_norm = lax.pmax(sq_norm, axis)
        return _em_loop(xt1, wl, sq_norm, total, g0, reg, tol, max_iter, bs, reduce=lambda t: lax.psum(t, axis))

    g, bound, history, it, converged = jax.shard_map(
        local_em,
        mesh=mesh,
        in_specs=(P(axis), P(axis), P(), P(), P(), P(), P()),
        out_specs=P(),
        check_vma=False,
    )(x, w, std, g0, reg, jnp.asarray(tol, dtype), total)
    shift = std.log_det.astype(dtype)
    return FitResult(std.gmm_from(g), bound - shift, history - shift, it, converged)


def shard_rows(x, weights, mesh: Mesh, axis: str = "data"):
    """``(x, w)`` padded with weight-0 rows to a multiple of the mesh axis and sharded by rows."""
    n_dev = mesh.shape[axis]
    n = x.shape[0]
    pad = -n % n_dev
    dtype = jnp.zeros((), jnp.asarray(x).dtype).dtype
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    xp = np.concatenate([np.asarray(x), np.zeros((pad, x.shape[1]), np.asarray(x).dtype)])
    wp = np.concatenate([w, np.zeros(pad)])
    rows = NamedSharding(mesh, P(axis))
    return jax.device_put(jnp.asarray(xp, dtype), rows), jax.device_put(jnp.asarray(wp, dtype), rows)


def fit_sharded(
    x,
    n_components: int,
    *,
    key: jax.Array,
    mesh: Mesh | None = None,
    axis: str = "data",
    options: EMOptions | None = None,
    weights=None,
    **settings,
) -> FitResult:
    """EM with the rows sharded over ``mesh``'s ``axis``; the result is replicated.

    Equal to :func:`~grnn_jax.em.fit.fit_from` (and, with ``N <= init_sample``,
    to :func:`~grnn_jax.em.fit.fit` with ``n_init=1``) up to the order of
    float sums.

    Args:
      x: (N, D) observations (host or device memory).
      n_components: K.
      key: PRNG key of the initialisation.
      mesh: device mesh; all devices on one axis by default (:func:`data_mesh`).
      axis: the mesh axis the rows are split over.
      options: the EM settings (:class:`~grnn_jax.em.options.EMOptions`; None: its
        defaults); the initialisation sees ``init_sample`` rows (a seeded uniform sample
        when N is larger; ``n_init`` is not used: one start).
      weights: as :func:`~grnn_jax.em.fit`.
      **settings: those fields by keyword, in place of the options' own:
        ``covariance_type``, ``tol``, ``reg_covar``, ``max_iter``, ``init``,
        ``init_sample``, ``block_size``.

    Returns:
      :class:`~grnn_jax.em.fit.FitResult`.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax import em
      >>> x = np.concatenate([np.random.default_rng(0).normal(size=(100, 2)) + 4,
      ...                     np.random.default_rng(1).normal(size=(100, 2)) - 4])
      >>> res = em.fit_sharded(x, 2, key=jax.random.key(0))
      >>> sorted(res.gmm.means[:, 0].round(0).tolist()), bool(res.converged)
      ([-4.0, 4.0], True)
    """
    opts = resolve_options("fit_sharded", options, settings, SHARDED)
    k = check_int(n_components, "n_components")
    key = checks.check_key(key)
    xa = checks.check_x(x, batched_ok=False)
    checks.check_rows(xa, k)
    w = checks.check_weights(weights, xa, k)
    mesh = data_mesh(axis=axis) if mesh is None else mesh
    if axis not in mesh.axis_names:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {mesh.axis_names}")
    ctype, init_gmm = opts.covariance_type, None
    if opts.init_method is None:
        init_gmm = checks.check_gmm(opts.init, k, xa.shape[1], ctype, ((),))
    xs, ws = shard_rows(xa, w, mesh, axis)
    return _fit_sharded(
        xs, ws, key, init_gmm, float(opts.tol), float(opts.reg_covar),
        mesh=mesh, axis=axis, n_rows=int(xa.shape[0]), n_components=k, ctype=ctype,
        method=opts.init_method, max_iter=int(opts.max_iter),
        block_size=opts.block_size or default_block_size(xa.shape[1], k, ctype),
        init_sample=int(opts.init_sample),
    )
