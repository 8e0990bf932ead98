"""An unconstrained parametrisation of a GMM, for fitting it by gradient descent.

Every field of a :class:`~grnn_jax.gmm.GMM` but one may take any real value: ``logits`` and
``means`` are free, and so are the off-diagonal entries of a full or tied ``prec_chol``. The
exception is the diagonal of ``prec_chol`` (all of a diag or spherical one), which must be
positive: ``log_det_precision`` takes its log, so a gradient step that pushes an entry below
zero gives NaN log-densities. :func:`to_unconstrained` replaces that diagonal by its log; every
point of the resulting pytree maps back (:func:`from_unconstrained`) to a legal mixture, so an
optimiser can step anywhere.

Two choices, both for the conditioning of plain gradient steps:

* the diagonal goes through a log (not a softplus): the round trip is exact, the
  log-determinant is a plain sum of parameters, and a step changes a scale by a factor, the
  same for data in metres or millimetres;
* the off-diagonal entries of full and tied factors are stored divided by the diagonal entry
  of their column, ``prec_chol = N @ diag(exp(log_diag))`` with ``N`` unit upper triangular
  (a modified Cholesky factor). ``N``'s entries are regression coefficients between features,
  free of the data's scale; the raw entries scale with the diagonal, and descent on them
  diverges at steps that suit the diagonal once the diagonal has adapted to the data.

Fields of the pytree, for ``K`` components in ``D`` dimensions (any leading batch shape may
be prepended, as for the GMM):

=============  ==========  ==========  ================  ===========================
type           logits      means       log_diag          off_diag
=============  ==========  ==========  ================  ===========================
``full``       ``(K,)``    ``(K, D)``  ``(K, D)``        ``(K, D (D - 1) / 2)``
``diag``       ``(K,)``    ``(K, D)``  ``(K, D)``        (absent)
``spherical``  ``(K,)``    ``(K, D)``  ``(K,)``          (absent)
``tied``       ``(K,)``    ``(K, D)``  ``(D,)``          ``(D (D - 1) / 2,)``
=============  ==========  ==========  ================  ===========================

``off_diag`` holds the strictly upper triangle of ``N``, row by row
(``numpy.triu_indices(D, 1)`` order). Every entry of every field is a real number, free.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax._util.validation import concrete_value
from grnn_jax.gmm.container import GMM, check_covariance_type

_TRIANGULAR = ("full", "tied")


def _keys(covariance_type: str) -> tuple[str, ...]:
    extra = ("off_diag",) if covariance_type in _TRIANGULAR else ()
    return ("logits", "means", "log_diag") + extra


def to_unconstrained(g: GMM) -> dict[str, jax.Array]:
    """The mixture as a dict of real arrays that any value of maps back to a legal GMM.

    Args:
      g: a mixture whose ``prec_chol`` has a positive diagonal (any batch shape).

    Returns:
      ``{"logits", "means", "log_diag"}``, plus ``"off_diag"`` for full and tied; shapes in
      the module doc. ``from_unconstrained(to_unconstrained(g), g.covariance_type)`` is ``g``.

    Raises:
      ValueError: a concrete (not traced) ``prec_chol`` with a diagonal entry <= 0 or NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> g = gmm.from_covariances(jnp.zeros(2), jnp.zeros((2, 3)), jnp.ones((2, 3, 3)) * 0.5
      ...                          + 0.5 * jnp.eye(3), "full")
      >>> u = gmm.to_unconstrained(g)
      >>> {k: v.shape for k, v in u.items()}
      {'logits': (2,), 'means': (2, 3), 'log_diag': (2, 3), 'off_diag': (2, 3)}
    """
    ctype = check_covariance_type(g.covariance_type)
    p = g.prec_chol
    diag = jnp.diagonal(p, axis1=-2, axis2=-1) if ctype in _TRIANGULAR else p
    values = concrete_value(diag)
    if values is not None and not np.all(values > 0):
        raise ValueError("prec_chol has a diagonal entry <= 0 or NaN; a GMM's precision "
                         "Cholesky diagonal must be positive")
    u = {"logits": g.logits, "means": g.means, "log_diag": jnp.log(diag)}
    if ctype in _TRIANGULAR:
        rows, cols = np.triu_indices(p.shape[-1], 1)
        u["off_diag"] = p[..., rows, cols] / diag[..., cols]
    return u


def _n_features_of_triangle(n: int) -> int | None:
    """D with D (D - 1) / 2 = n, or None."""
    d = int(round((1 + (1 + 8 * n) ** 0.5) / 2))
    return d if d * (d - 1) // 2 == n else None


def _check(u: dict, ctype: str) -> None:
    keys = _keys(ctype)
    if not isinstance(u, dict) or set(u) != set(keys):
        got = sorted(u) if isinstance(u, dict) else type(u).__name__
        raise ValueError(f"an unconstrained {ctype} GMM has the entries {list(keys)}; got {got}")
    k, d = jnp.shape(u["means"])[-2:]
    diag = {"full": (k, d), "diag": (k, d), "spherical": (k,), "tied": (d,)}[ctype]
    if jnp.shape(u["logits"])[-1:] != (k,) or jnp.shape(u["log_diag"])[-len(diag):] != diag:
        raise ValueError(
            f"an unconstrained {ctype} GMM with means {jnp.shape(u['means'])} needs logits "
            f"(..., {k}) and log_diag (..., {', '.join(map(str, diag))}); got "
            f"{jnp.shape(u['logits'])} and {jnp.shape(u['log_diag'])}")
    if ctype in _TRIANGULAR and _n_features_of_triangle(jnp.shape(u["off_diag"])[-1]) != d:
        raise ValueError(f"off_diag must end in {d * (d - 1) // 2} entries (D = {d}); got shape "
                         f"{jnp.shape(u['off_diag'])}")


def from_unconstrained(u: dict, covariance_type: str) -> GMM:
    """The GMM that an unconstrained pytree stands for (the inverse of :func:`to_unconstrained`).

    Args:
      u: ``{"logits", "means", "log_diag"}`` (and ``"off_diag"`` for full and tied), any real
        values; shapes in the module doc.
      covariance_type: "full", "diag", "spherical" or "tied".

    Returns:
      A GMM whose ``prec_chol`` has the diagonal ``exp(log_diag)`` (positive for every finite
      value) and, for full and tied, the strict upper triangle ``off_diag`` times that
      diagonal's entry in each column. Differentiable, and fine under ``jit`` and ``vmap``.

    Raises:
      ValueError: an unknown covariance type, missing or extra entries, or shapes that do not
        fit together (checked at trace time).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> x = 3.0 * jax.random.normal(jax.random.key(0), (200, 2)) + 1.0
      >>> start = gmm.from_covariances(jnp.zeros(1), jnp.zeros((1, 2)), jnp.ones((1, 2)), "diag")
      >>> nll = lambda u: -gmm.log_prob(gmm.from_unconstrained(u, "diag"), x).mean()
      >>> u = gmm.to_unconstrained(start)
      >>> for _ in range(50):  # plain gradient descent: any step lands on a legal mixture
      ...     u = jax.tree.map(lambda p, g: p - 0.5 * g, u, jax.grad(nll)(u))
      >>> round(float(nll(gmm.to_unconstrained(start))), 2), round(float(nll(u)), 2)
      (11.3, 4.97)
    """
    ctype = check_covariance_type(covariance_type)
    _check(u, ctype)
    diag = jnp.exp(u["log_diag"])
    if ctype not in _TRIANGULAR:
        prec_chol = diag
    else:
        d = jnp.shape(u["means"])[-1]
        rows, cols = np.triu_indices(d, 1)
        off = u["off_diag"]
        unit = jnp.zeros(off.shape[:-1] + (d, d), off.dtype).at[..., rows, cols].set(off)
        unit = unit + jnp.eye(d, dtype=off.dtype)
        prec_chol = unit * diag[..., None, :]  # column j scaled by its diagonal entry
    return GMM(u["logits"], u["means"], prec_chol, ctype)
