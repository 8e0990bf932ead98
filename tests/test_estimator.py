"""The scikit-learn compatible estimator against scikit-learn itself."""

import contextlib
import inspect
import io
import warnings

import jax
import numpy as np
import pytest
import sklearn.utils.validation
from sklearn import mixture
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import check_estimator

from grnn_jax import gmm
from grnn_jax.em import estimator_checks
from grnn_jax.em.estimator import GaussianMixture, _bucket, _log_prob_and_resp

CTYPES = ("full", "diag", "spherical", "tied")
K, D = 3, 2


def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    scales = np.array([[1.0, 0.5], [0.7, 1.2], [0.9, 0.9]])
    labels = np.arange(n) % K
    return centers[labels] + scales[labels] * rng.normal(size=(n, D))


def start(ctype):
    """Deliberately rough initial parameters shared by both implementations."""
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[1.0, 1.0], [4.0, 0.0], [0.0, 4.0]])
    prec = {
        "full": np.stack([np.eye(D), [[1.0, 0.3], [0.3, 2.0]], 0.5 * np.eye(D)]),
        "tied": np.array([[1.0, 0.2], [0.2, 0.8]]),
        "diag": np.array([[1.0, 2.0], [0.5, 1.0], [1.5, 1.5]]),
        "spherical": np.array([1.0, 0.5, 2.0]),
    }[ctype]
    return dict(weights_init=weights, means_init=means, precisions_init=prec)


@pytest.mark.slow
def test_passes_sklearn_check_estimator():
    if "callback" not in inspect.signature(check_estimator).parameters:  # scikit-learn < 1.6
        check_estimator(GaussianMixture())  # raises at the first failing check
        return
    failures = []

    def collect(estimator, check_name, exception, status, expected_to_fail, expected_to_fail_reason):
        if status == "failed":
            failures.append(f"{check_name}: {exception!r}")

    results = check_estimator(GaussianMixture(), on_fail=None, on_skip=None, callback=collect)
    assert len(results) > 40
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("ctype", CTYPES)
def test_matches_sklearn_from_same_start(ctype):
    # float64 data, JAX's 64-bit mode off: the estimator computes in float64 all the same.
    x, x_new = blobs(), blobs(37, seed=1)
    kw = dict(n_components=K, covariance_type=ctype, tol=1e-6, max_iter=60, **start(ctype))
    ours = GaussianMixture(**kw).fit(x)
    ref = mixture.GaussianMixture(**kw).fit(x)
    assert ours.gmm_.means.dtype == np.float64 and not jax.config.jax_enable_x64
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_
    assert ours._n_parameters() == ref._n_parameters()
    close = dict(rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, **close)
    if hasattr(ref, "lower_bounds_"):  # scikit-learn >= 1.6
        np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, **close)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert getattr(ours, name).shape == getattr(ref, name).shape, name
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), **close, err_msg=name)
    np.testing.assert_allclose(ours.score_samples(x_new), ref.score_samples(x_new), **close)
    np.testing.assert_allclose(ours.predict_proba(x_new), ref.predict_proba(x_new), **close)
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))
    np.testing.assert_allclose(ours.score(x_new), ref.score(x_new), **close)
    np.testing.assert_allclose(ours.bic(x_new), ref.bic(x_new), **close)
    np.testing.assert_allclose(ours.aic(x_new), ref.aic(x_new), **close)


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_integer_sample_weight_equals_repeating_rows(ctype):
    x = blobs(60)
    w = np.random.default_rng(3).integers(0, 4, size=len(x))
    # max_iter as in the oracle test: same shapes, same compiled program.
    kw = dict(n_components=K, covariance_type=ctype, tol=1e-8, max_iter=60, **start(ctype))
    weighted = GaussianMixture(**kw).fit(x, sample_weight=w)
    repeated = GaussianMixture(**kw).fit(np.repeat(x, w, axis=0))
    assert weighted.n_iter_ == repeated.n_iter_
    np.testing.assert_allclose(weighted.lower_bound_, repeated.lower_bound_, rtol=1e-9)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-8,
                                   atol=1e-10, err_msg=name)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), r"NaN at index \(3, 1\)"),
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 4, np.inf, x), r"inf at index \(2, 0\)"),
        (lambda x: x[:, 0], "Expected 2D array"),
        (lambda x: x[None], "dim 3"),
        (lambda x: x[:2], "n_samples >= n_components"),
        (lambda x: x[:1], "1 sample"),
    ],
    ids=["nan", "inf", "rank1", "rank3", "fewer_than_k", "one_row"],
)
def test_bad_data_raises_before_compute(make, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(n_components=K).fit(make(blobs(12)))


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(covariance_type="banana"), "unknown covariance_type 'banana'"),
        (dict(init_params="best"), "unknown init_params"),
        (dict(reg_covar=-1e-6), "reg_covar must be a non-negative"),
        (dict(tol=-1.0), "tol must be a non-negative"),
        (dict(n_components=0), "n_components must be an integer >= 1"),
        (dict(n_init=1.5), "n_init must be an integer"),
        (dict(means_init=np.zeros((K, D + 1))),
         r"'means' should have the shape of \(3, 2\), but got \(3, 3\) \(means_init"),
        (dict(weights_init=np.ones(K - 1) / 2), r"'weights' should have the shape of \(3,\).*weights_init"),
        (dict(weights_init=np.ones(K) / 2), r"'weights' should be normalized.*weights_init"),
        (dict(covariance_type="diag", precisions_init=np.ones((K, D, D))),
         r"'diag precision' should have the shape of \(3, 2\).*precisions_init"),
        (dict(precisions_init=-np.stack([np.eye(D)] * K)),
         r"'full precision' should be symmetric, positive-definite \(precisions_init\)"),
    ],
)
def test_bad_parameters_raise(params, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**{"n_components": K, **params}).fit(blobs(12))


def test_bad_input_after_fit_raises():
    est = GaussianMixture(K, random_state=0).fit(blobs(30))
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2"):
        est.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"NaN at index \(1, 0\)"):
        est.score_samples(np.array([[0.0, 0.0], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="Invalid value for 'n_samples': 0"):
        est.sample(0)
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        GaussianMixture().fit(blobs(30), sample_weight=-np.ones(30))


@pytest.mark.parametrize("init_params, n_init", [("kmeans", 1), ("k-means++", 1), ("random", 3),
                                                 ("random_from_data", 3)])
def test_every_init_recovers_separated_clusters(init_params, n_init):
    x = blobs(90)
    est = GaussianMixture(K, init_params=init_params, n_init=n_init, random_state=0).fit(x)
    assert est.converged_
    found = est.means_[np.argsort(est.means_[:, 0] + 10 * est.means_[:, 1])]
    # True centres (sorted the same way) within ~4 standard errors of 30 points.
    np.testing.assert_allclose(found, [[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]], atol=0.8)
    assert est.predict(x).shape == (90,)


def test_random_state_and_warm_start():
    x = blobs(60)
    a = GaussianMixture(K, random_state=7).fit(x)
    b = GaussianMixture(K, random_state=np.random.RandomState(7)).fit(x)
    c = GaussianMixture(K, random_state=7).fit(x)
    np.testing.assert_array_equal(a.means_, c.means_)
    np.testing.assert_array_equal(a.covariances_, c.covariances_)
    assert not np.array_equal(a.sample(5)[0], b.sample(5)[0])
    # Five warm-started single iterations are one five-iteration fit (tol=0:
    # none converges, so every call runs its one iteration).
    kw = dict(n_components=K, tol=0.0, **start("full"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        five = GaussianMixture(max_iter=5, **kw).fit(x)
        warm = GaussianMixture(max_iter=1, warm_start=True, **kw)
        for _ in range(5):
            warm.fit(x)
    np.testing.assert_allclose(warm.means_, five.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(warm.covariances_, five.covariances_, rtol=1e-10, atol=1e-12)


def test_convergence_warning_and_verbose_output():
    x = blobs(60)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        est = GaussianMixture(K, max_iter=5, tol=0.0, **start("full")).fit(x)
    assert not est.converged_ and est.n_iter_ == 5 and len(est.lower_bounds_) == 5
    assert np.all(np.diff(est.lower_bounds_) >= -1e-12)  # EM never lowers the likelihood
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        GaussianMixture(K, verbose=2, verbose_interval=1, random_state=0).fit(x)
    out = buf.getvalue()
    assert "Initialization converged" in out and "Iteration 1" in out


DTYPES = [(np.float32, np.float32), (np.float64, np.float64), (np.int64, np.float64),
          (np.float16, np.float64)]


@pytest.mark.parametrize("x64_mode", [False, True], ids=["x64_off", "x64_on"])
@pytest.mark.parametrize("in_dtype, out_dtype", DTYPES, ids=["f32", "f64", "int64", "f16"])
def test_the_fit_has_the_input_dtype_and_leaves_the_x64_mode_alone(in_dtype, out_dtype, x64_mode):
    # scikit-learn's rule: float32 stays float32, every other dtype becomes float64.
    x = np.round(blobs(60) * 4).astype(in_dtype)
    with jax.enable_x64(x64_mode):
        est = GaussianMixture(K, random_state=0).fit(x)
        outs = [est.score_samples(x), est.predict_proba(x)]
        for method in (est.predict, est.bic, est.aic):
            method(x)
        est.sample(3)
        assert jax.config.jax_enable_x64 is x64_mode
    assert est.gmm_.means.dtype == out_dtype and np.asarray(est.lower_bound_).dtype == out_dtype
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert getattr(est, name).dtype == out_dtype, name
    assert all(o.dtype == out_dtype for o in outs)


def test_float32_matches_sklearn_in_float32_and_warm_start_keeps_float64():
    x = blobs().astype(np.float32)
    start32 = {name: a.astype(np.float32) for name, a in start("full").items()}
    kw = dict(n_components=K, tol=1e-4, max_iter=60, **start32)
    ours = GaussianMixture(**kw).fit(x)
    ref = mixture.GaussianMixture(**kw).fit(x)
    # scikit-learn keeps float32 since 1.6 (before, it computed in float64).
    assert ours.means_.dtype == np.float32 and ours.n_iter_ == ref.n_iter_
    # A float64 start makes the fit float64 in both (numpy's promotion).
    assert GaussianMixture(**{**kw, **start("full"), "max_iter": 0}).fit(x).means_.dtype == np.float64
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(ours.score_samples(x), ref.score_samples(x), rtol=1e-5, atol=1e-5)
    # A float64 fit, warm-started on float32 data, stays float64 (as numpy promotes).
    warm = GaussianMixture(**{**kw, "warm_start": True}).fit(x.astype(np.float64)).fit(x)
    assert warm.means_.dtype == warm.gmm_.means.dtype == np.float64


def test_gmm_attribute_works_with_the_pure_functions():
    x = blobs(40)
    est = GaussianMixture(K, random_state=0).fit(x)
    assert isinstance(est.gmm_, gmm.GMM) and est.gmm_.covariance_type == "full"
    with jax.enable_x64(True):
        np.testing.assert_allclose(est.score_samples(x), gmm.log_prob(est.gmm_, x), rtol=1e-12)
    np.testing.assert_array_equal(est.fit_predict(x), est.predict(x))


def test_validate_data_falls_back_to_the_estimator_method_before_sklearn_1_6(monkeypatch):
    # scikit-learn 1.6 added validate_data and later removed BaseEstimator._validate_data.
    assert estimator_checks._sklearn_validate_data is getattr(sklearn.utils.validation, "validate_data", None)
    calls = []

    class Pre16:
        def _validate_data(self, X, **kw):
            calls.append(kw)
            return np.asarray(X, np.float64)

    monkeypatch.setattr(estimator_checks, "_sklearn_validate_data", None)
    x = estimator_checks.validate_data(Pre16(), [[1, 2]], reset=True, min_samples=2)
    assert x.dtype == np.float64
    assert calls == [dict(reset=True, dtype=[np.float64, np.float32], ensure_min_samples=2,
                          force_all_finite=False)]


def test_row_counts_share_compiled_programs(compilations):
    est = GaussianMixture(K, random_state=0).fit(blobs(40))
    assert _bucket(17) == _bucket(256) == 256 and _bucket(257) == 512 and all(n <= _bucket(n) < 1.25 * n for n in (5000, 9999, 10**6))
    est.score_samples(blobs(17))
    compiled = compilations(_log_prob_and_resp)
    for n in (18, 25, 32):
        est.score_samples(blobs(n))
    assert compiled() == 0


def test_sample_follows_the_fitted_mixture():
    x = blobs(90)
    est = GaussianMixture(K, random_state=0).fit(x)
    xs, ys = est.sample(3000)
    assert xs.shape == (3000, D) and ys.shape == (3000,)
    assert np.all(np.diff(ys) >= 0)  # grouped by component, as scikit-learn returns them
    counts = np.bincount(ys, minlength=K) / 3000
    np.testing.assert_allclose(counts, est.weights_, atol=4 * np.sqrt(0.25 / 3000))
    for k in range(K):
        sd = np.sqrt(np.diag(est.covariances_[k]) / np.sum(ys == k))
        assert np.all(np.abs(xs[ys == k].mean(0) - est.means_[k]) < 4.5 * sd)


def test_max_iter_zero_initialises_only_and_partial_inits_are_used():
    x, init = blobs(60), start("diag")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # max_iter=0 must not warn
        est = GaussianMixture(K, covariance_type="diag", max_iter=0, **init).fit(x)
    assert est.n_iter_ == 0 and est.lower_bound_ == -np.inf and not est.converged_
    np.testing.assert_array_equal(est.means_, init["means_init"])
    np.testing.assert_allclose(est.precisions_, init["precisions_init"], rtol=1e-6)
    np.testing.assert_allclose(est.weights_, init["weights_init"], rtol=1e-6)
    # Only means given: EM keeps the components in the given order.
    est = GaussianMixture(K, means_init=init["means_init"], random_state=0).fit(x)
    np.testing.assert_allclose(est.means_, [[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]], atol=0.8)
