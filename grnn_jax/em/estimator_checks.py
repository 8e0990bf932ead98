"""Input checks of :class:`grnn_jax.GaussianMixture`, worded as scikit-learn words them.

Every check runs on the host before any compute. Messages that scikit-learn's
own tests match are scikit-learn's, word for word; each then names our
parameter (``weights_init`` rather than scikit-learn's ``'weights'``) where
that helps.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np
from sklearn.utils.validation import check_non_negative

from grnn_jax import gmm
from grnn_jax._util.validation import check_finite

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sklearn_validate_data
except ImportError:  # scikit-learn 1.4 and 1.5: the estimator's own method
    _sklearn_validate_data = None

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
ILL_DEFINED = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)


def validate_data(estimator, X, *, reset: bool, min_samples: int = 1) -> np.ndarray:
    """scikit-learn's ``validate_data`` (1.6+) or, before 1.6, ``estimator._validate_data``.

    Returns X as a 2-D float64 or float32 array (other dtypes become float64, as
    in scikit-learn) and sets or checks ``n_features_in_``/``feature_names_in_``.
    Non-finite values are left for :func:`check_x` to name.
    """
    kw = dict(reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=min_samples)
    if _sklearn_validate_data is not None:
        return _sklearn_validate_data(estimator, X, ensure_all_finite=False, **kw)
    return estimator._validate_data(X, force_all_finite=False, **kw)


def check_x(estimator, X, *, reset: bool, min_samples: int = 1) -> np.ndarray:
    """Validated, finite (N, D) data (a ValueError names the first NaN or inf)."""
    x = validate_data(estimator, X, reset=reset, min_samples=min_samples)
    check_finite(x, "X")
    return x


def check_sample_weight(sample_weight, n: int, dtype, n_components: int) -> np.ndarray:
    """(N,) finite non-negative row weights in ``dtype`` (ones when None; a scalar for every
    row), at least ``n_components`` of them positive."""
    if sample_weight is None:
        return np.ones(n, dtype)
    w = np.asarray(sample_weight)
    if not (np.issubdtype(w.dtype, np.number) or w.dtype == bool):
        raise ValueError(f"sample_weight must be numeric; got dtype {w.dtype}")
    w = np.full(n, w, dtype) if w.ndim == 0 else w.astype(dtype)
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected {(n,)}!")
    check_finite(w, "sample_weight")
    check_non_negative(w, "`sample_weight` (input to GaussianMixture.fit)")
    if not w.sum() > 0:
        raise ValueError("sample_weight sums to zero: no data to fit")
    if (w > 0).sum() < n_components:
        raise ValueError(f"only {(w > 0).sum()} rows have positive sample_weight; at least "
                         f"n_components={n_components} are needed")
    return w


def check_params(est) -> None:
    """The scalar hyper-parameters of ``est`` (a GaussianMixture)."""

    def integer(name, low):
        v = getattr(est, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {v!r}")

    def real(name):
        v = getattr(est, name)
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
        if not ok or v < 0:
            raise ValueError(f"{name} must be a non-negative number; got {v!r}")

    for name, low in (("n_components", 1), ("max_iter", 0), ("n_init", 1), ("verbose_interval", 1)):
        integer(name, low)
    real("tol")
    real("reg_covar")
    gmm.check_covariance_type(est.covariance_type)
    if est.init_params not in INIT_PARAMS:
        raise ValueError(f"unknown init_params {est.init_params!r}; expected one of {INIT_PARAMS}")


def _sk_name(name: str, ctype: str) -> str:
    return {"weights_init": "weights", "means_init": "means"}.get(name, f"{ctype} precision")


def _as_array(value, name: str, shape: tuple, sk: str, sizes: str) -> np.ndarray:
    try:
        a = np.asarray(value)
        # float32 stays float32 and the rest becomes float64, as for X.
        a = a.astype(np.float32 if a.dtype == np.float32 else np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array of shape {shape}; {err}") from None
    if a.shape != shape:
        raise ValueError(f"The parameter '{sk}' should have the shape of {shape}, but got "
                         f"{a.shape} ({name}, for {sizes})")
    check_finite(a, name)
    return a


def _check_weights(w: np.ndarray) -> None:
    lo, hi = w.min(), w.max()
    if lo < 0 or hi > 1:
        # scikit-learn prints the minimum as "max value" and the maximum as "min
        # value"; its tests match that text, so it is kept, then said plainly.
        raise ValueError(f"The parameter 'weights' should be in the range [0, 1], but got max value "
                         f"{lo:.5f}, min value {hi:.5f} (weights_init ranges from {lo:.5f} to {hi:.5f})")
    if abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = "
                         f"{w.sum():.5f} (weights_init)")


def _check_precisions(p: np.ndarray, ctype: str, d: int) -> None:
    if ctype in ("full", "tied"):
        mats = p.reshape((-1, d, d))
        symmetric = np.allclose(mats, np.swapaxes(mats, -1, -2), atol=1e-10, rtol=0)
        if not symmetric or np.linalg.eigvalsh(mats).min() <= 0:
            raise ValueError(f"'{ctype} precision' should be symmetric, positive-definite "
                             "(precisions_init)")
    elif p.min() <= 0:
        raise ValueError(f"'{ctype} precision' should be positive (precisions_init)")


def check_init(est, d: int) -> dict[str, np.ndarray]:
    """The given ``weights_init``/``means_init``/``precisions_init`` of ``est``, checked, by name."""
    k, ctype = est.n_components, est.covariance_type
    shapes = {"weights_init": (k,), "means_init": (k, d),
              "precisions_init": {"full": (k, d, d), "tied": (d, d), "diag": (k, d),
                                  "spherical": (k,)}[ctype]}
    sizes = f"n_components={k}, n_features={d}, covariance_type={ctype!r}"
    given = {name: _as_array(getattr(est, name), name, shape, _sk_name(name, ctype), sizes)
             for name, shape in shapes.items() if getattr(est, name) is not None}
    if "weights_init" in given:
        _check_weights(given["weights_init"])
    if "precisions_init" in given:
        _check_precisions(given["precisions_init"], ctype, d)
    return given


@contextlib.contextmanager
def sklearn_ill_defined_error():
    """Re-raises an ill-defined covariance error in scikit-learn's words (the cause names the components)."""
    try:
        yield
    except ValueError as err:
        if "ill-defined empirical covariance" not in str(err):
            raise
        raise ValueError(ILL_DEFINED) from err
