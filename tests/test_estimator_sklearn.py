"""What ``sklearn.mixture.GaussianMixture`` documents, checked behaviour by behaviour against it."""

import warnings

import numpy as np
import pytest
from sklearn import mixture
from sklearn.exceptions import ConvergenceWarning

import grnn_jax
from grnn_jax.em import estimator

K, D = 3, 2


def blobs(n=90, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    return centers[np.arange(n) % K] + rng.normal(size=(n, D))


PREC = {"full": np.stack([np.eye(D)] * K), "diag": np.ones((K, D)), "spherical": np.ones(K), "tied": np.eye(D)}
START = dict(weights_init=np.array([0.5, 0.3, 0.2]), means_init=np.array([[1.0, 1.0], [4.0, 0.0], [0.0, 4.0]]))


def start(ctype="full"):
    """A rough complete start shared by both implementations (so their iterations agree)."""
    return {**START, "precisions_init": PREC[ctype]}


def test_top_level_name_is_the_estimator():
    assert grnn_jax.GaussianMixture is estimator.GaussianMixture


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_reg_covar_zero_fits_well_posed_data_as_sklearn_does(x64, ctype):
    x = blobs()
    kw = dict(n_components=K, covariance_type=ctype, reg_covar=0.0, tol=1e-6, max_iter=60, **start(ctype))
    ours = grnn_jax.GaussianMixture(**kw).fit(x)
    ref = mixture.GaussianMixture(**kw).fit(x)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-9)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-8)


@pytest.mark.parametrize("lone", [[[40.0, 40.0]], [[40.0, 40.0], [41.0, 41.0], [43.0, 43.0]]],
                         ids=["point", "line"])
def test_reg_covar_zero_ill_defined_covariance_raises_as_sklearn_does(x64, lone):
    # Component 2 starts on far points and keeps only them: a covariance of rank < D.
    # (A diag or spherical variance is ill-defined only when exactly zero: for a
    # lone point both implementations get a tiny positive one from the count floor.)
    x = np.concatenate([blobs(60), lone])
    kw = dict(n_components=K, reg_covar=0.0, **{**start(), "means_init": [[0.0, 0.0], [5.0, 1.0], lone[0]]})
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        mixture.GaussianMixture(**kw).fit(x)
    with pytest.raises(ValueError, match=r"component\(s\) \[2\] have ill-defined empirical covariance.*"
                                         r"increase reg_covar"):
        grnn_jax.GaussianMixture(**kw).fit(x)
    # The same data are fine with the default floor.
    assert np.isfinite(grnn_jax.GaussianMixture(**{**kw, "reg_covar": 1e-6}).fit(x).lower_bound_)


def test_warm_start_one_iteration_at_a_time_converges_as_sklearn_does(x64):
    x = blobs()
    kw = dict(n_components=K, warm_start=True, max_iter=1, tol=1e-3, **start())
    ours, ref = grnn_jax.GaussianMixture(**kw), mixture.GaussianMixture(**kw)
    flags, bounds = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(40):
            ours.fit(x)
            ref.fit(x)
            flags.append((ours.converged_, ref.converged_))
            bounds.append((ours.lower_bound_, ref.lower_bound_))
            if ref.converged_:
                break
    assert ref.converged_, "the oracle should converge within 40 single iterations"
    assert [a for a, _ in flags] == [b for _, b in flags]
    np.testing.assert_allclose(*np.array(bounds).T, rtol=1e-9)
    # One cold fit runs the same number of iterations.
    cold = grnn_jax.GaussianMixture(**{**kw, "warm_start": False, "max_iter": 100}).fit(x)
    assert cold.n_iter_ == len(flags)


def test_more_restarts_never_give_a_lower_bound():
    x = np.concatenate([blobs(120), blobs(60, seed=1) + [10.0, -4.0]])
    gains = []
    for seed in range(4):
        one, four = (grnn_jax.GaussianMixture(6, covariance_type="diag", init_params="random_from_data",
                                              n_init=n, random_state=seed).fit(x).lower_bound_
                     for n in (1, 4))
        # The n_init=1 start is among the four (equal up to float32 rounding under vmap).
        assert four >= one - 1e-5, (seed, one, four)
        gains.append(four - one)
    assert max(gains) > 1e-3  # the data have local optima, so the property is not vacuous


BAD_INIT = [
    ("full", dict(weights_init=[0.5, 0.5]), r"'weights_init' should have the shape of \(3,\)"),
    ("full", dict(weights_init=[[0.2, 0.3, 0.5]]), r"'weights_init' should have the shape of \(3,\)"),
    ("full", dict(weights_init=[1.5, -0.25, -0.25]), r"'weights_init' should be in the range \[0, 1\]"),
    ("full", dict(weights_init=[0.2, 0.2, 0.2]), r"'weights_init' should be normalized"),
    ("full", dict(weights_init=["a", "b", "c"]), r"weights_init must be a numeric array of shape \(3,\)"),
    ("full", dict(weights_init=[np.nan, 0.5, 0.5]), "weights_init contains 1 non-finite"),
    ("full", dict(means_init=np.zeros((2, D))), r"'means_init' should have the shape of \(3, 2\)"),
    ("full", dict(means_init=np.zeros(D)), r"'means_init' should have the shape of \(3, 2\)"),
    ("full", dict(precisions_init=np.eye(D)), r"'precisions_init' should have the shape of \(3, 2, 2\)"),
    ("full", dict(precisions_init=PREC["full"] + [[0, 0.5], [0, 0]]), "symmetric, positive-definite"),
    ("full", dict(precisions_init=PREC["full"] + [[0, 2], [2, 0]]), "symmetric, positive-definite"),
    ("tied", dict(precisions_init=np.array([[1.0, 2.0], [2.0, 1.0]])), "symmetric, positive-definite"),
    ("diag", dict(precisions_init=-PREC["diag"]), "'precisions_init' .'diag' precision. should be positive"),
    ("spherical", dict(precisions_init=np.ones((K, D))), r"'precisions_init' should have the shape of \(3,\)"),
]


@pytest.mark.parametrize("ctype, params, match", BAD_INIT)
def test_bad_initial_parameters_raise_what_sklearn_raises(ctype, params, match):
    x = blobs(30)
    with pytest.raises(Exception) as ref:
        mixture.GaussianMixture(K, covariance_type=ctype, **params).fit(x)
    with pytest.raises(ref.type, match=match):
        grnn_jax.GaussianMixture(K, covariance_type=ctype, **params).fit(x)


def test_sample_zero_raises_what_sklearn_raises():
    x = blobs(30)
    # max_iter=0 from a given start: fitted without compiling EM.
    ref = mixture.GaussianMixture(K, max_iter=1, **start()).fit(x)
    ours = grnn_jax.GaussianMixture(K, max_iter=0, **start()).fit(x)
    for n in (0, -3):
        with pytest.raises(Exception) as err:
            ref.sample(n)
        with pytest.raises(err.type, match=f"Invalid value for 'n_samples': {n}"):
            ours.sample(n)
