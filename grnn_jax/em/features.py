"""Row blocks as augmented columns, and the per-row features whose sums are EM's statistics.

The E-step holds a block of R standardised rows **column-major and augmented
with a row of ones**: ``zt1 (D+1, R)`` with ``zt1[:D] = z^T`` and ``zt1[D] = 1``
(:func:`~grnn_jax.em.blocks.block_columns`). With the rows on the fast axis every elementwise pass
and reduction over a block is a contiguous vector loop whatever D and K are,
and the M-step's ``phi @ resp^T`` is a plain ``(F, R) @ (R, K)`` matmul (on a
2-core CPU 1.2-1.5x faster than the row-major ``resp^T @ phi``).

The features ``phi (F, R)`` (:func:`stat_features`) are products of pairs of
rows of ``zt1``, gathered in one fused pass: with the ones row, the products
include ``z_i`` (pair ``(i, D)``) and the constant 1 (pair ``(D, D)``), so one
matmul gives the counts, first and second moments together, and no
concatenation (which XLA materialises as one more copy, and which cost 3x
the gathers at D=64) is needed:

* full covariance with packed moments (:func:`uses_packed_moments`): every pair
  ``i <= j`` of the ``D+1`` rows, ``(D+1)(D+2)/2`` features, whose sums are
  the augmented second-moment matrix ``[[S_xx, S_x], [S_x^T, n]]``;
* diag and spherical: ``[z, z**2, 1]``;
* otherwise (tied, full with D > 2K, k-means): ``zt1`` itself, ``[z, 1]``.

:func:`split_sums` turns the responsibility-weighted sums back into counts,
first and second moments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def uses_packed_moments(n_features: int, n_components: int) -> bool:
    """Whether full-covariance statistics (and the quadratic form) use packed pair products.

    Building the ``(D+1)(D+2)/2`` products costs the same for any K, while the
    alternative, one ``(K*D, R) @ (R, D)`` matmul on responsibility-weighted
    rows (:func:`~grnn_jax.em.stats.accumulate`), scales with K: on a 2-core
    CPU the packed form was faster for ``D <= 2K`` (1.3x at D=64, K=32) and
    the other for larger D (1.6x at D=64, K=8; measured in the earlier
    row-major layout).
    """
    return n_features <= 2 * n_components


def feature_pairs(n_features: int, ctype: str, n_components: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(F,) static row indices ``(a, b)`` into ``zt1`` with ``phi = zt1[a] * zt1[b]``, or None for ``phi = zt1``.

    Example:
      >>> from grnn_jax.em.features import feature_pairs
      >>> [a.tolist() for a in feature_pairs(2, "diag", 1)]
      [[0, 1, 0, 1, 2], [2, 2, 0, 1, 2]]
    """
    d = n_features
    if ctype == "full" and uses_packed_moments(d, n_components):
        return np.triu_indices(d + 1)
    if ctype in ("diag", "spherical"):
        idx = np.arange(d)
        ones = np.full(d, d)
        return np.concatenate([idx, idx, [d]]), np.concatenate([ones, idx, [d]])
    return None


def n_stat_features(n_features: int, ctype: str, n_components: int) -> int:
    """F, the number of rows :func:`stat_features` returns."""
    pairs = feature_pairs(n_features, ctype, n_components)
    return n_features + 1 if pairs is None else int(pairs[0].size)


def stat_features(zt1: jax.Array, ctype: str, n_components: int) -> jax.Array:
    """(F, R) features of augmented columns ``zt1 (D+1, R)`` (see the module doc).

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax.em.features import stat_features
      >>> stat_features(jnp.array([[3.0], [1.0]]), "full", 1)[:, 0].tolist()  # z = 3: [z^2, z, 1]
      [9.0, 3.0, 1.0]
    """
    pairs = feature_pairs(zt1.shape[0] - 1, ctype, n_components)
    if pairs is None:
        return zt1
    a, b = pairs
    return zt1[a] * zt1[b]


def unpack_triangle(packed: jax.Array, d: int) -> jax.Array:
    """(..., d(d+1)/2) upper triangle in ``np.triu_indices(d)`` order -> (..., d, d) symmetric."""
    iu, ju = np.triu_indices(d)
    index = np.zeros((d, d), np.int32)
    index[iu, ju] = np.arange(iu.size)
    index[ju, iu] = np.arange(iu.size)
    return packed[..., index]


def split_sums(s: jax.Array, n_features: int, ctype: str, n_components: int):
    """``(n (K,), sx (K, D), sxx)`` from feature sums ``s (K, F)``.

    ``sxx`` is (K, D, D) for packed full covariance, (K, D) for diag, (K,) for
    spherical and None where the features hold first moments only.
    """
    d = n_features
    if ctype == "full" and uses_packed_moments(d, n_components):
        aug = unpack_triangle(s, d + 1)
        return aug[:, d, d], aug[:, :d, d], aug[:, :d, :d]
    if ctype in ("diag", "spherical"):
        sq = s[:, d : 2 * d]
        return s[:, 2 * d], s[:, :d], sq if ctype == "diag" else jnp.sum(sq, axis=-1)
    return s[:, d], s[:, :d], None
