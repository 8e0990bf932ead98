"""A scikit-learn compatible ``GaussianMixture`` whose EM runs in JAX.

The estimator is a thin shell around :func:`grnn_jax.em.fit` and the pure
functions of :mod:`grnn_jax.gmm`: it validates input as scikit-learn does,
turns ``random_state`` into an explicit key and exposes the fitted mixture both
as scikit-learn's numpy attributes and as ``gmm_`` (a :class:`grnn_jax.gmm.GMM`).

Compilation is keyed on array shapes, so every row count is padded up to one of
a few bucket sizes (padding rows carry weight zero and are dropped from the
outputs): fitting or scoring many differently sized arrays compiles a handful of
programs rather than one per size.
"""

from __future__ import annotations

import functools
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from grnn_jax import em, gmm
from grnn_jax.em.checks import check_defined
from grnn_jax._util.validation import check_finite

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
_MIN_BUCKET, _POW2_UP_TO = 256, 4096


def _bucket(n: int) -> int:
    """Padded row count for n rows: 256, 512, ..., 4096, then four sizes per octave.

    EM reads rows in blocks of at least 256 (see ``em.default_block_size``), so
    padding a small array to 256 rows costs about nothing and lets all small
    arrays share one program; doubling up to 4096 rows keeps compiles rare, and
    beyond that at most a quarter of the rows is padding.
    """
    if n <= _MIN_BUCKET:
        return _MIN_BUCKET
    if n <= _POW2_UP_TO:
        return 1 << int(n - 1).bit_length()
    step = 1 << (int(n - 1).bit_length() - 3)
    return -(-n // step) * step


def _compute_dtype(x_dtype) -> type:
    x64 = jax.config.jax_enable_x64
    return np.float64 if x64 and np.dtype(x_dtype) == np.float64 else np.float32


def _pad_rows(x: np.ndarray, weights: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    # Padding repeats the first row so that every padded row is a real point;
    # its weight of zero removes it from initialisation, EM and scores.
    n = x.shape[0]
    n_pad = _bucket(n) - n
    x = np.concatenate([x, np.repeat(x[:1], n_pad, axis=0)]).astype(dtype)
    w = np.concatenate([weights, np.zeros(n_pad, weights.dtype)]).astype(dtype)
    return x, w


@jax.jit
def _log_prob_and_resp(g: gmm.GMM, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return gmm.log_prob(g, x), gmm.log_responsibilities(g, x)


def _cast(g: gmm.GMM, dtype) -> gmm.GMM:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), g)


def _log_weights(w: np.ndarray, dtype) -> jax.Array:
    # A zero initial weight becomes a tiny one: logits must stay finite.
    return jnp.asarray(np.log(np.maximum(w, np.finfo(dtype).tiny)), dtype)


def _key_from(random_state) -> jax.Array:
    # An int gives the same key on every call (as scikit-learn re-seeds from
    # it); a RandomState or None advances and so gives a fresh key.
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    return jax.random.key(seed)


def _prec_chol_shape(ctype: str, k: int, d: int) -> tuple[int, ...]:
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ctype]


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM in JAX, with scikit-learn's interface.

    Parameters and fitted attributes are those of
    ``sklearn.mixture.GaussianMixture``, and so is the behaviour its
    documentation promises: ``reg_covar=0`` is allowed and a covariance that
    is actually ill-defined raises scikit-learn's ValueError (naming the
    component); ``warm_start=True`` measures the first change from the previous
    ``lower_bound_`` (so ``max_iter=1`` in a loop reports ``converged_``);
    the start of ``n_init=1`` is among those of any larger ``n_init`` for the
    same ``random_state``; bad ``weights_init``/``means_init``/
    ``precisions_init`` raise ValueError naming the parameter and the expected
    shape. ``fit`` also takes ``sample_weight`` (non-negative per-row weights;
    an integer weight equals repeating the row).

    Precision: EM runs in float32 by default, whatever the input's dtype. For
    scikit-learn's float64 precision, enable JAX's 64-bit mode
    (``jax.config.update("jax_enable_x64", True)`` at start-up, or the
    ``jax.enable_x64(True)`` context) and pass float64 ``X``; the numpy
    attributes are always float64 arrays, ``gmm_`` keeps the compute dtype.

    Remaining differences: when only some of ``weights_init``/``means_init``/
    ``precisions_init`` are given, the rest come from one ``init_params``
    initialisation (no restarts); ``init_params="k-means++"`` starts from
    the seeds with covariance ``reg_covar`` (scikit-learn assigns every row to
    its nearest seed first), so with ``reg_covar=0`` it is ill-defined: use
    ``"kmeans"`` (the default) there.

    Attributes:
      gmm_: the fitted :class:`grnn_jax.gmm.GMM`, for use with the pure functions.
      weights_: (K,) mixture weights.
      means_: (K, D) component means.
      covariances_, precisions_, precisions_cholesky_: shaped by
        ``covariance_type`` as in scikit-learn (full (K, D, D), tied (D, D),
        diag (K, D), spherical (K,)).
      converged_, n_iter_, lower_bound_, lower_bounds_: as in scikit-learn;
        ``lower_bound_`` is the mean log-likelihood before the last M-step.
      n_features_in_, feature_names_in_: set by scikit-learn's validation.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.em.estimator import GaussianMixture
      >>> x = np.concatenate([np.zeros((20, 1)), np.full((20, 1), 10.0)])
      >>> x = x + np.random.default_rng(0).normal(size=(40, 1))
      >>> est = GaussianMixture(n_components=2, random_state=0).fit(x)
      >>> sorted(int(round(m)) for m in est.means_[:, 0])
      [0, 10]
      >>> est.predict([[0.0], [10.0]]).tolist() in ([0, 1], [1, 0])
      True
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval

    # ----------------------------------------------------------------- checks
    def _check_params(self) -> None:
        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {v!r}")

        def real(name, positive):
            v = getattr(self, name)
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
            if not ok or (v <= 0 if positive else v < 0):
                raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} "
                                 f"number; got {v!r}")

        integer("n_components", 1)
        integer("max_iter", 0)
        integer("n_init", 1)
        integer("verbose_interval", 1)
        real("tol", positive=False)
        real("reg_covar", positive=False)
        gmm.check_covariance_type(self.covariance_type)
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"unknown init_params {self.init_params!r}; expected one of {INIT_PARAMS}")

    def _check_init(self, d: int) -> dict[str, np.ndarray]:
        k, ctype = self.n_components, self.covariance_type
        given = {}
        expected = {"weights_init": (k,), "means_init": (k, d),
                    "precisions_init": _prec_chol_shape(ctype, k, d)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            try:
                a = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name} must be a numeric array of shape {shape}; {err}") from None
            if a.shape != shape:
                # scikit-learn's wording, with the parameter's own name.
                raise ValueError(f"The parameter '{name}' should have the shape of {shape} "
                                 f"(n_components={k}, n_features={d}, covariance_type={ctype!r}), "
                                 f"but got {a.shape}")
            check_finite(a, name)
            given[name] = a
        if "weights_init" in given:
            w = given["weights_init"]
            if w.min() < 0 or w.max() > 1:
                raise ValueError(f"The parameter 'weights_init' should be in the range [0, 1], but got "
                                 f"max value {w.max():.5f}, min value {w.min():.5f}")
            if abs(w.sum() - 1.0) > 1e-6:
                raise ValueError(f"The parameter 'weights_init' should be normalized, but got "
                                 f"sum(weights_init) = {w.sum():.5f}")
        if "precisions_init" in given:
            p = given["precisions_init"]
            if ctype in ("full", "tied"):
                mats = p.reshape((-1, d, d))
                symmetric = np.allclose(mats, np.swapaxes(mats, -1, -2), atol=1e-10, rtol=0)
                if not symmetric or np.linalg.eigvalsh(mats).min() <= 0:
                    raise ValueError(f"The parameter 'precisions_init' ('{ctype}' precision) should be "
                                     "symmetric, positive-definite")
            elif p.min() <= 0:
                raise ValueError(f"The parameter 'precisions_init' ('{ctype}' precision) should be positive")
        return given

    def _validate_x(self, X, *, reset: bool, min_samples: int = 1) -> np.ndarray:
        x = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                          ensure_all_finite=False, ensure_min_samples=min_samples)
        check_finite(x, "X")
        return x

    # -------------------------------------------------------------------- fit
    def fit(self, X, y=None, sample_weight=None):
        """Fits the mixture by EM and returns ``self``.

        Args:
          X: (N, D) observations; N >= max(2, n_components).
          y: ignored.
          sample_weight: optional (N,) non-negative weights.
        """
        self._check_params()
        warm = bool(self.warm_start) and hasattr(self, "gmm_")
        x = self._validate_x(X, reset=True, min_samples=2)
        n, d = x.shape
        if n < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                             f"{self.n_components}, n_samples = {n}")
        sw = _check_sample_weight(sample_weight, x, dtype=x.dtype, ensure_non_negative=True)
        if not sw.sum() > 0:
            raise ValueError("sample_weight sums to zero: no data to fit")
        given = self._check_init(d)
        dtype = _compute_dtype(x.dtype)
        xj, wj = _pad_rows(x, sw, dtype)
        key = _key_from(self.random_state)
        if warm:
            if self.gmm_.n_features != d:
                raise ValueError(f"X has {d} features, but the warm start mixture has "
                                 f"{self.gmm_.n_features}")
            init = _cast(self.gmm_, dtype)
        elif len(given) == 3:
            init = gmm.from_precisions(_log_weights(given["weights_init"], dtype),
                                       jnp.asarray(given["means_init"], dtype),
                                       jnp.asarray(given["precisions_init"], dtype),
                                       self.covariance_type)
        elif given:
            init = self._partial_init(xj, wj, given, key, dtype)
        else:
            init = self.init_params
        if self.max_iter == 0:
            # scikit-learn's idiom for "initialise only".
            if not isinstance(init, gmm.GMM):
                init = em.initialize(xj, self.n_components, key=key, init=init, weights=wj,
                                     covariance_type=self.covariance_type, reg_covar=self.reg_covar)
            check_defined(init)
            self._set_fitted(em.FitResult(init, -np.inf, np.zeros(0), 0, False))
            return self
        if warm:
            # scikit-learn measures a warm start's first change from the
            # previous lower bound, so one iteration at a time can converge.
            result = em.fit_from(xj, init, weights=wj, tol=float(self.tol),
                                 reg_covar=float(self.reg_covar), max_iter=int(self.max_iter),
                                 lower_bound=float(self.lower_bound_))
            check_defined(result.gmm)
        else:
            result = em.fit(xj, self.n_components, key=key, covariance_type=self.covariance_type,
                            tol=self.tol, reg_covar=self.reg_covar, max_iter=self.max_iter,
                            init=init, n_init=self.n_init, weights=wj)
        self._set_fitted(result)
        if not self.converged_:
            warnings.warn("Best performing initialization did not converge. Try different init "
                          "parameters, or increase max_iter, tol, or check for degenerate data.",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _partial_init(self, xj, wj, given, key, dtype) -> gmm.GMM:
        """Initial mixture when only some of weights/means/precisions are given.

        As in scikit-learn, the missing ones come from the ``init_params``
        initialisation and the given ones replace their counterparts.
        """
        start = em.initialize(xj, self.n_components, key=key, init=self.init_params, weights=wj,
                              covariance_type=self.covariance_type, reg_covar=self.reg_covar)
        logits, means, prec_chol = start.logits, start.means, start.prec_chol
        if "weights_init" in given:
            logits = _log_weights(given["weights_init"], dtype)
        if "means_init" in given:
            means = jnp.asarray(given["means_init"], dtype)
        if "precisions_init" in given:
            p = jnp.asarray(given["precisions_init"], dtype)
            prec_chol = gmm.from_precisions(logits, means, p, self.covariance_type).prec_chol
        return gmm.GMM(logits, means, prec_chol, self.covariance_type)

    def _set_fitted(self, result) -> None:
        g = result.gmm
        self.gmm_ = g
        as64 = functools.partial(np.asarray, dtype=np.float64)
        self.weights_ = as64(gmm.weights(g))
        self.means_ = as64(g.means)
        self.precisions_cholesky_ = as64(g.prec_chol)
        self.covariances_ = as64(gmm.covariances(g))
        self.precisions_ = as64(gmm.precisions(g))
        self.n_iter_ = int(result.n_iter)
        self.converged_ = bool(result.converged)
        self.lower_bound_ = float(result.log_likelihood)
        history = np.asarray(result.history, dtype=np.float64)
        self.lower_bounds_ = history[: self.n_iter_].tolist()
        if self.verbose:
            self._print_progress()

    def _print_progress(self) -> None:
        print("Initialization 0")
        if self.verbose > 1:
            prev = -np.inf
            for i, lb in enumerate(self.lower_bounds_, start=1):
                if i % self.verbose_interval == 0:
                    print(f"  Iteration {i}\t ll change {lb - prev:.5f}")
                prev = lb
        status = "converged" if self.converged_ else "did not converge"
        print(f"Initialization {status}. n_iter {self.n_iter_}\t lower bound {self.lower_bound_:.5f}.")

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fits the mixture and returns the (N,) most probable component of each row."""
        return self.fit(X, y, sample_weight=sample_weight).predict(X)

    # ---------------------------------------------------------------- predict
    def _log_prob_and_resp(self, X) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "gmm_")
        x = self._validate_x(X, reset=False)
        dtype = _compute_dtype(np.float64 if self.gmm_.means.dtype == jnp.float64 else x.dtype)
        xj, _ = _pad_rows(x, np.ones(x.shape[0]), dtype)
        lp, lr = _log_prob_and_resp(_cast(self.gmm_, dtype), xj)
        n = x.shape[0]
        return np.asarray(lp[:n], np.float64), np.asarray(lr[:n], np.float64)

    def score_samples(self, X) -> np.ndarray:
        """(N,) log-density of each row under the fitted mixture."""
        return self._log_prob_and_resp(X)[0]

    def score(self, X, y=None) -> float:
        """Mean log-density of the rows of X."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X) -> np.ndarray:
        """(N, K) posterior probability of each component given each row."""
        return np.exp(self._log_prob_and_resp(X)[1])

    def predict(self, X) -> np.ndarray:
        """(N,) most probable component of each row."""
        return np.argmax(self._log_prob_and_resp(X)[1], axis=1)

    def bic(self, X) -> float:
        """Bayesian information criterion on X (lower is better)."""
        return self._criterion(em.bic, X)

    def aic(self, X) -> float:
        """Akaike information criterion on X (lower is better)."""
        return self._criterion(em.aic, X)

    def _criterion(self, fn, X) -> float:
        check_is_fitted(self, "gmm_")
        x = self._validate_x(X, reset=False)
        dtype = _compute_dtype(np.float64 if self.gmm_.means.dtype == jnp.float64 else x.dtype)
        xj, wj = _pad_rows(x, np.ones(x.shape[0]), dtype)
        return float(fn(_cast(self.gmm_, dtype), xj, weights=wj))

    def sample(self, n_samples=1):
        """Draws samples; returns ``(X (n, D), y (n,))`` grouped by component as scikit-learn does."""
        check_is_fitted(self, "gmm_")
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at "
                             "least one sample (an integer >= 1).")
        key = jax.random.fold_in(_key_from(self.random_state), 1)
        x, labels = gmm.sample_with_labels(key, self.gmm_, (int(n_samples),))
        labels = np.asarray(labels, np.int64)
        order = np.argsort(labels, kind="stable")
        return np.asarray(x, np.float64)[order], labels[order]
