"""Host-side argument checks for the EM entry points (before any compute)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax.gmm import GMM, check_covariance_type
from grnn_jax._util.validation import check_data, check_finite, check_int, check_positive


def check_key(key) -> jax.Array:
    """A PRNG key (``jax.random.key`` or legacy ``PRNGKey``), else a ValueError."""
    if key is None:
        raise ValueError("key is required (e.g. key=jax.random.key(0))")
    k = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jnp.issubdtype(k.dtype, jax.dtypes.prng_key)
    if not (typed and k.shape == ()) and not (k.dtype == jnp.uint32 and k.shape == (2,)):
        raise ValueError(f"key must be a single PRNG key such as jax.random.key(0); got {k.dtype}{k.shape}")
    return k


def check_x(x, name: str = "x", *, batched_ok: bool = True):
    """Observations (N, D), or (B, N, D) where allowed, as a finite float array.

    A JAX array is checked on its device and returned as is (no host copy of
    large data); anything else comes back as a numpy array.
    """
    allowed = (2, 3) if batched_ok else (2,)
    shape = np.shape(x)
    if len(shape) not in allowed:
        shapes = "(N, D) or (B, N, D)" if batched_ok else "(N, D)"
        raise ValueError(f"{name} must have shape {shapes}; got shape {shape}")
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating) and x.size:
        if bool(jnp.all(jnp.isfinite(x))):
            return x
        x = np.asarray(x)  # only to name the first bad entry
    return check_data(np.asarray(x), name, ndim=len(shape))


def check_weights(weights, x: np.ndarray, n_components: int | None = None) -> np.ndarray | None:
    """Row weights shaped ``x.shape[:-1]``: finite, non-negative, enough positive per data set."""
    if weights is None:
        return None
    w = np.asarray(weights)
    if w.dtype == object or not (np.issubdtype(w.dtype, np.number) or w.dtype == bool):
        raise ValueError(f"weights must be numeric; got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != x.shape[:-1]:
        raise ValueError(f"weights must have shape {x.shape[:-1]} (one per row of x); got {w.shape}")
    check_finite(w, "weights")
    if (w < 0).any():
        where = tuple(int(i) for i in np.argwhere(w < 0)[0])
        raise ValueError(f"weights must be non-negative; the first negative one is at index {where}")
    positive = (w > 0).sum(axis=-1)
    if (positive == 0).any():
        raise ValueError("weights are all zero" + (" for some data set" if w.ndim > 1 else ""))
    if n_components is not None and (positive < n_components).any():
        raise ValueError(
            f"only {int(positive.min())} rows have positive weight; at least n_components="
            f"{n_components} are needed"
        )
    return w


def check_rows(x: np.ndarray, n_components: int) -> None:
    n = x.shape[-2]
    if n < n_components:
        raise ValueError(f"x has {n} rows, fewer than n_components={n_components}")


def check_gmm(g, n_components: int | None, n_features: int, covariance_type: str, batch_ok: tuple) -> GMM:
    """A GMM whose sizes and type agree with the fit's, with finite parameters."""
    if not isinstance(g, GMM):
        raise ValueError(f"init must be a GMM or a method name; got {type(g).__name__}")
    if g.covariance_type != covariance_type:
        raise ValueError(
            f"init has covariance_type {g.covariance_type!r} but covariance_type={covariance_type!r}"
        )
    if n_components is not None and g.n_components != n_components:
        raise ValueError(f"init has {g.n_components} components; n_components={n_components}")
    if g.n_features != n_features:
        raise ValueError(f"init has {g.n_features} features; x has {n_features}")
    if g.batch_shape not in batch_ok:
        raise ValueError(f"init has batch shape {g.batch_shape}; expected one of {batch_ok}")
    for field in ("logits", "means", "prec_chol"):
        check_finite(np.asarray(getattr(g, field)), f"init.{field}")
    return g


def check_not_traced(fn: str, **arrays) -> None:
    """A TypeError pointing to the pure alternatives when ``fn`` is called under a transformation."""
    for name, a in arrays.items():
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(a)):
            raise TypeError(
                f"em.{fn} checks its arguments on the host and cannot run under jax.jit, jax.vmap "
                f"or jax.grad ({name} is traced): call em.fit_from (the pure, jitted EM loop from an "
                f"initial mixture, e.g. em.initialize's) inside your transformation, or pass fit a "
                f"(B, N, D) batch to fit B data sets in one vmap"
            )


def ill_defined_components(g: GMM) -> np.ndarray:
    """Indices ``(batch..., component)`` of the components whose precision factor is not finite.

    A tied covariance is shared: every component is then listed.
    """
    p = np.asarray(g.prec_chol)
    k = g.n_components
    if g.covariance_type == "tied":
        bad = ~np.isfinite(p).all(axis=(-2, -1))
        bad = np.broadcast_to(bad[..., None], bad.shape + (k,))
    else:
        trailing = {"full": 2, "diag": 1, "spherical": 0}[g.covariance_type]
        bad = ~np.isfinite(p).all(axis=tuple(range(p.ndim - trailing, p.ndim)))
    return np.argwhere(bad)


def check_defined(g: GMM) -> None:
    """Raises scikit-learn's ValueError, naming the components, if a covariance is ill-defined."""
    bad = ill_defined_components(g)
    if not len(bad):
        return
    if bad.shape[1] == 1:
        where = f"component(s) {sorted(set(int(i) for i in bad[:, 0]))}"
    else:
        first = tuple(int(i) for i in bad[0])
        where = f"{len(bad)} component(s), the first component {first[-1]} of data set {first[:-1]}"
    raise ValueError(
        f"Fitting the mixture model failed because {where} have ill-defined empirical covariance "
        "(for instance caused by singleton or collapsed samples). Try to decrease the number of "
        "components, increase reg_covar, or scale the input data."
    )


def check_fit_args(covariance_type, tol, reg_covar, max_iter, n_init, block_size):
    check_covariance_type(covariance_type)
    check_positive(tol, "tol", allow_zero=True)
    check_positive(reg_covar, "reg_covar", allow_zero=True)
    check_int(max_iter, "max_iter")
    check_int(n_init, "n_init")
    if block_size is not None:
        check_int(block_size, "block_size")
