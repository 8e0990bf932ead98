"""A scikit-learn compatible ``GaussianMixture`` whose EM runs in JAX.

The estimator is a thin shell around :func:`grnn_jax.em.fit` and the pure
functions of :mod:`grnn_jax.gmm`: it validates input as scikit-learn does
(:mod:`grnn_jax.em.estimator_checks`), draws its starts as scikit-learn does
(:mod:`grnn_jax.em.estimator_init`), computes in the precision of its input,
and exposes the fitted mixture both as scikit-learn's numpy attributes and as
``gmm_`` (a :class:`grnn_jax.gmm.GMM`).

Compilation is keyed on array shapes, so every row count is padded up to one of
a few bucket sizes (padding rows carry weight zero and are dropped from the
outputs): fitting or scoring many differently sized arrays compiles a handful of
programs rather than one per size.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from grnn_jax import em, gmm
from grnn_jax.em import estimator_init
from grnn_jax.em.checks import check_defined
from grnn_jax.em.estimator_checks import (
    check_init,
    check_params,
    check_sample_weight,
    check_x,
    sklearn_ill_defined_error,
)

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


def _result_dtype(*dtypes) -> np.dtype:
    """float64 if any of ``dtypes`` is (as numpy promotes float32 with float64), else float32."""
    return np.dtype(np.float64 if any(np.dtype(t) == np.float64 for t in dtypes) else np.float32)


def _precision(dtype) -> contextlib.AbstractContextManager:
    """JAX's 64-bit mode on for float64 and off for float32, for the calls inside only.

    ``jax.enable_x64`` is a context manager that restores the caller's setting
    on exit, so the estimator never changes the process-wide mode.
    """
    return jax.enable_x64(np.dtype(dtype) == np.float64)


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


@functools.partial(jax.jit, static_argnames="n")
def _sample(key: jax.Array, g: gmm.GMM, n: int) -> tuple[jax.Array, jax.Array]:
    return gmm.sample_with_labels(key, g, (n,))


def _cast(g: gmm.GMM, dtype) -> gmm.GMM:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), g)


def _key_from(random_state) -> jax.Array:
    # An int gives the same key on every call (as scikit-learn re-seeds from
    # it); a RandomState or None advances and so gives a fresh key.
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    return jax.random.key(seed)


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM in JAX, with scikit-learn's interface.

    Parameters and fitted attributes are those of
    ``sklearn.mixture.GaussianMixture``, and so is the behaviour its
    documentation promises: ``reg_covar=0`` is allowed and a covariance that
    is actually ill-defined raises scikit-learn's ValueError (its cause,
    ``err.__cause__``, names the components); ``warm_start=True`` measures
    the first change from the previous ``lower_bound_`` (so ``max_iter=1`` in
    a loop reports ``converged_``); the start of ``n_init=1`` is among those
    of any larger ``n_init`` for the same ``random_state``; bad
    ``weights_init``/``means_init``/``precisions_init`` raise scikit-learn's
    ValueError (its words, then our parameter's name and the expected shape).
    ``fit`` also takes ``sample_weight`` (non-negative per-row weights; an
    integer weight equals repeating the row).

    Precision, as in scikit-learn: float32 ``X`` is fitted in float32 and
    float64 ``X`` in float64 (other dtypes, integers included, become
    float64); a float64 ``weights_init``/``means_init``/``precisions_init``
    (a list included) or a float64 fit continued by ``warm_start`` makes the
    fit float64, as numpy's promotion does. The estimator turns JAX's 64-bit
    mode on (or off) for its own calls only (``jax.enable_x64``), leaving the
    process-wide setting as it was. The fitted attributes have the dtype of
    the fit; ``score_samples`` and ``predict_proba`` return float64 when X
    or the fit is float64. After a float64 fit ``gmm_`` holds float64 JAX
    arrays: use it under ``jax.enable_x64(True)`` to keep that precision
    (outside, JAX computes in float32).

    Starts, as in scikit-learn: each of the ``n_init`` restarts draws its
    responsibilities from one ``RandomState`` made from ``random_state``
    (scikit-learn's ``KMeans``, uniform noise, or random or k-means++ seed
    rows), by the same calls in the same order (:mod:`grnn_jax.em.estimator_init`),
    so an integer ``random_state`` gives scikit-learn's start; the M-step and
    EM then run in JAX, one restart after another. One difference remains:
    from ``"random_from_data"`` or ``"k-means++"`` seeds (one row per
    component) a ``"tied"`` start here is the seeds' covariance (``reg_covar``),
    while scikit-learn's tied formula also sums the other rows' second
    moments (a broad start), so those fits can end in other optima.

    Attributes:
      gmm_: the fitted :class:`grnn_jax.gmm.GMM`, for use with the pure functions.
      weights_: (K,) mixture weights.
      means_: (K, D) component means.
      covariances_, precisions_, precisions_cholesky_: shaped by
        ``covariance_type`` as in scikit-learn (full (K, D, D), tied (D, D),
        diag (K, D), spherical (K,)).
      converged_, n_iter_, lower_bound_, lower_bounds_: as in scikit-learn;
        ``lower_bound_`` (a numpy scalar of the fit's dtype) is the mean
        log-likelihood before the last M-step.
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

    # -------------------------------------------------------------------- fit
    def fit(self, X, y=None, sample_weight=None):
        """Fits the mixture by EM and returns ``self``.

        Args:
          X: (N, D) observations; N >= max(2, n_components).
          y: ignored.
          sample_weight: optional (N,) non-negative weights.
        """
        check_params(self)
        warm = bool(self.warm_start) and hasattr(self, "gmm_")
        x = check_x(self, X, reset=True, min_samples=2)
        n, d = x.shape
        if n < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                             f"{self.n_components}, n_samples = {n}")
        if warm and self.gmm_.n_features != d:
            raise ValueError(f"X has {d} features, but the warm start mixture has {self.gmm_.n_features}")
        given = check_init(self, d)
        # The fit's dtype is what numpy's promotion gives, as in scikit-learn: float64
        # if X, a given start or the mixture a warm start continues from is float64.
        starts = [a.dtype for a in given.values()] + ([self.gmm_.means.dtype] if warm else [])
        dtype = _result_dtype(x.dtype, *starts)
        sw = check_sample_weight(sample_weight, n, dtype, self.n_components)
        with _precision(dtype), sklearn_ill_defined_error():
            xj, wj = _pad_rows(x, sw, dtype)
            result = self._continue(xj, wj, dtype) if warm else self._restarts(x, sw, xj, wj, given, dtype)
            self._set_fitted(result, dtype)
        if self.max_iter > 0 and not self.converged_:
            warnings.warn("Best performing initialization did not converge. Try different init "
                          "parameters, or increase max_iter, tol, or check for degenerate data.",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _restarts(self, x, sw, xj, wj, given, dtype) -> em.FitResult:
        """scikit-learn's restarts: each starts from the next draw of one ``RandomState``;
        the first with the highest final bound is kept (with ``max_iter=0``, the last start).
        """
        rs = check_random_state(self.random_state)
        best = None
        for _ in range(1 if len(given) == 3 else self.n_init):  # a given start is one start
            resp = (None if len(given) == 3 else
                    estimator_init.responsibilities(x, sw, self.init_params, self.n_components, rs))
            g0 = estimator_init.start(xj, wj, resp, given, self.covariance_type, self.reg_covar, dtype)
            check_defined(g0)
            if self.max_iter == 0:  # scikit-learn's idiom for "initialise only"
                result = em.FitResult(g0, -np.inf, np.zeros(0), 0, False)
            else:
                result = em.fit(xj, self.n_components, key=jax.random.key(0), init=g0, weights=wj,
                                covariance_type=self.covariance_type, tol=self.tol,
                                reg_covar=self.reg_covar, max_iter=self.max_iter)
            bound = float(result.log_likelihood)
            if best is None or bound > best[0] or best[0] == -np.inf:
                best = (bound, result)
        return best[1]

    def _continue(self, xj, wj, dtype) -> em.FitResult:
        """A warm start: EM from the fitted mixture, the first change measured from ``lower_bound_``
        (as scikit-learn does, so one iteration at a time can converge)."""
        g0 = _cast(self.gmm_, dtype)
        if self.max_iter == 0:
            return em.FitResult(g0, self.lower_bound_, np.zeros(0), 0, False)
        result = em.fit_from(xj, g0, weights=wj, tol=float(self.tol), reg_covar=float(self.reg_covar),
                             max_iter=int(self.max_iter), lower_bound=float(self.lower_bound_))
        check_defined(result.gmm)
        return result

    def _set_fitted(self, result: em.FitResult, dtype: np.dtype) -> None:
        """The fitted attributes in ``dtype`` (under the precision mode of the fit)."""
        g = result.gmm
        self.gmm_ = g
        self.weights_ = np.asarray(gmm.weights(g), dtype)
        self.means_ = np.asarray(g.means, dtype)
        self.precisions_cholesky_ = np.asarray(g.prec_chol, dtype)
        self.covariances_ = np.asarray(gmm.covariances(g), dtype)
        self.precisions_ = np.asarray(gmm.precisions(g), dtype)
        self.n_iter_ = int(result.n_iter)
        self.converged_ = bool(result.converged)
        self.lower_bound_ = dtype.type(result.log_likelihood)
        history = np.asarray(result.history, dtype=np.float64)
        self.lower_bounds_ = history[: self.n_iter_].tolist()
        if self.verbose:
            self._print_progress()

    def _n_parameters(self) -> int:
        """Number of free parameters of the fitted mixture (scikit-learn's count, for BIC/AIC)."""
        check_is_fitted(self, "gmm_")
        return gmm.n_parameters(self.gmm_.n_components, self.gmm_.n_features, self.covariance_type)

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
    def _scoring_input(self, X):
        """Checked X, padded to its bucket, with its row weights and the dtype to compute in."""
        check_is_fitted(self, "gmm_")
        x = check_x(self, X, reset=False)
        dtype = _result_dtype(x.dtype, self.gmm_.means.dtype)
        xj, wj = _pad_rows(x, np.ones(x.shape[0], dtype), dtype)
        return x.shape[0], xj, wj, dtype

    def _log_prob_and_resp(self, X) -> tuple[np.ndarray, np.ndarray]:
        n, xj, _, dtype = self._scoring_input(X)
        with _precision(dtype):
            lp, lr = _log_prob_and_resp(_cast(self.gmm_, dtype), xj)
            return np.asarray(lp[:n], dtype), np.asarray(lr[:n], dtype)

    def score_samples(self, X) -> np.ndarray:
        """(N,) log-density of each row under the fitted mixture (float64 unless X and the fit are float32)."""
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
        _, xj, wj, dtype = self._scoring_input(X)
        with _precision(dtype):
            return float(fn(_cast(self.gmm_, dtype), xj, weights=wj))

    def sample(self, n_samples=1):
        """Draws samples; returns ``(X (n, D) float64, y (n,))`` grouped by component as scikit-learn does."""
        check_is_fitted(self, "gmm_")
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at "
                             "least one sample (an integer >= 1).")
        n = int(n_samples)
        with _precision(self.gmm_.means.dtype):
            key = jax.random.fold_in(_key_from(self.random_state), 1)
            # The first n of a bucket's draws: a few programs serve every n.
            x, labels = _sample(key, self.gmm_, _bucket(n))
            x, labels = np.asarray(x[:n], np.float64), np.asarray(labels[:n], np.int64)
        order = np.argsort(labels, kind="stable")
        return x[order], labels[order]
