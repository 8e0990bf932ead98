"""Baselines a GRNN must beat, scored per observed step like the GRNN.

* static GMM — one mixture for every step, fitted by the library's own EM: the
  best a model can do that ignores the order of the steps;
* Gaussian HMM (hmmlearn) — a K-state Markov chain with Gaussian emissions; its
  one-step predictive density is a mixture whose weights come from forward
  filtering, computed here as a (T, K) array so that calibration and plots can
  judge it like the GRNN;
* dynamax's ``GaussianHMM`` (lags 0) and ``LinearAutoregressiveHMM`` (lags p >= 1,
  an AR-HMM: regime k emits ``N(x_t | W_k [x_{t-1}, ..., x_{t-p}] + b_k, Sigma_k)``,
  zero lags before a sequence's first step), fitted by EM from k-means starts, the best
  of a few restarts kept (local optima are real), K and lags chosen on validation;
* the single-Gaussian RNN is the GRNN with K=1 and is trained by ``main.py``.

Every baseline is fitted on standardised training sequences; K (and lags) are chosen on
the validation split (never on test). Log-likelihoods are sums over observed steps
in standardised units; ``nll_per_step`` turns them into nats per step in the
data's original units with the standardiser's log-Jacobian, as
``grnn_jax.train.evaluate`` scores the GRNN.

Sequences of different lengths (dynamax's EM wants equal lengths): training sequences
that all have the same length are fitted as one batch; otherwise they are concatenated
into one series, each keeping its own zero lags at its start, which adds one spurious
transition per sequence boundary, and the initial distribution (which one series would
fit to its first step alone) is then re-estimated by one M-step from the smoothed first
regimes of every training sequence. Held-out sequences are always scored one by one.

Zero lags before the first step are zeros of the standardised data, i.e. the training mean
in original units, as for the GRNN's lags. A synthetic process that starts from
``x_{-1} = 0`` in its own units is then not quite in the AR-HMM's class at a sequence's
first step: on 40-step sequences of ``default_switching_ar`` a K = 2, 1-lag AR-HMM sits
0.068 nats/step above the exact density fitted on standardised data and 0.005 fitted on
the raw data.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from grnn_jax import em, gmm
from grnn_jax.data import Sequences, lagged

COMPONENTS_GRID = (1, 2, 3, 4, 5, 6)


def nll_per_step(total_log_likelihood: float, n_steps: int, log_jacobian: float) -> float:
    """Nats per observed step in original units from a summed standardised log-likelihood."""
    return -float(total_log_likelihood) / int(n_steps) + float(log_jacobian)


# ----------------------------------------------------------------------------- static GMM


def fit_static_gmm(train: Sequences, n_components: int, *, seed: int,
                   covariance_type: str = "full", n_init: int = 5) -> gmm.GMM:
    """EM (best of ``n_init`` k-means++ restarts) on the observed steps of ``train`` pooled,
    ignoring their order."""
    x = jnp.asarray(train.observed(), jnp.float32)
    result = em.fit(x, n_components, key=jax.random.key(seed), covariance_type=covariance_type,
                    n_init=n_init, max_iter=500, tol=1e-5)
    return result.gmm


_log_prob = jax.jit(gmm.log_prob)  # one compiled program instead of one per primitive


def static_gmm_log_probs(g: gmm.GMM, seqs: Sequences) -> np.ndarray:
    """(S, T) per-step log-densities (0 at padded steps)."""
    lp = np.asarray(_log_prob(g, jnp.asarray(np.nan_to_num(seqs.x), jnp.float32)), np.float64)
    return np.where(seqs.mask, lp, 0.0)


def static_gmm_predictive(g: gmm.GMM, seqs: Sequences) -> gmm.GMM:
    """The same mixture at every step, broadcast to batch shape (S, T)."""
    shape = (seqs.n_sequences, seqs.max_length)
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, shape + a.shape), g)


# ----------------------------------------------------------------------------- Gaussian HMM


def fit_hmm(train: Sequences, n_components: int, *, seed: int, n_iter: int = 200,
            covariance_type: str = "full") -> Any:
    """hmmlearn ``GaussianHMM`` fitted by Baum-Welch on the training sequences."""
    from hmmlearn import hmm

    model = hmm.GaussianHMM(n_components=n_components, covariance_type=covariance_type,
                            n_iter=n_iter, tol=1e-4, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("hmmlearn").setLevel(logging.ERROR)
        model.fit(train.observed(), train.lengths)
    return model


def hmm_converged(model) -> bool:
    """Whether Baum-Welch stopped because its log-likelihood gain fell below ``tol``
    (hmmlearn's ``monitor_.converged`` also says True when it ran out of iterations)."""
    history = list(model.monitor_.history)
    return len(history) >= 2 and history[-1] - history[-2] < model.monitor_.tol


def hmm_score(model, seqs: Sequences) -> float:
    """hmmlearn's own ``score``: the log-likelihood summed over every observed step."""
    return float(model.score(seqs.observed(), seqs.lengths))


def _filter(log_init: np.ndarray, log_trans: np.ndarray, emis: np.ndarray):
    """Forward filter over (S, T, K) log emission densities (padding only at the ends of rows):
    ``(log c (S, T), log p(s_t | x_<t) (S, T, K), log p(s_t | x_<=t) (S, T, K))``."""
    log_pred = np.empty_like(emis)
    log_filt = np.empty_like(emis)
    log_c = np.empty(emis.shape[:2])
    log_pred[:, 0] = log_init
    for t in range(emis.shape[1]):
        if t > 0:
            log_pred[:, t] = logsumexp(log_filt[:, t - 1, :, None] + log_trans[None], axis=1)
        joint = log_pred[:, t] + emis[:, t]
        log_c[:, t] = logsumexp(joint, axis=-1)
        log_filt[:, t] = joint - log_c[:, t, None]
    return log_c, log_pred, log_filt


def _smooth(log_trans: np.ndarray, emis: np.ndarray, mask: np.ndarray, log_c, log_filt) -> np.ndarray:
    """(S, T, K) smoothed ``p(s_t | x_1:T)`` by the scaled backward recursion (0 at padding)."""
    log_beta = np.zeros(emis.shape[::2])
    out = np.empty_like(emis)
    for t in range(emis.shape[1] - 1, -1, -1):
        out[:, t] = log_filt[:, t] + log_beta
        back = logsumexp(log_trans[None] + (emis[:, t] + log_beta)[:, None, :], axis=2) - log_c[:, t, None]
        log_beta = np.where(mask[:, t, None] & (t > 0), back, log_beta)
    return np.where(mask[..., None], np.exp(out), 0.0)


def _hmm_forward(model, seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """(S, T) per-step log-densities (0 at padding) and (S, T, K) log P(s_t | x_<t)."""
    x = np.nan_to_num(seqs.x)
    # scipy on the host: no compilation for every new (S, T)
    emis = np.stack([multivariate_normal(m, c, allow_singular=True).logpdf(x).reshape(x.shape[:2])
                     for m, c in zip(model.means_, model.covars_)], axis=-1)  # (S, T, K)
    log_a = np.log(np.maximum(model.transmat_, 1e-300))
    log_c, log_pred, _ = _filter(np.log(np.maximum(model.startprob_, 1e-300)), log_a, emis)
    return np.where(seqs.mask, log_c, 0.0), log_pred


def hmm_log_probs(model, seqs: Sequences) -> np.ndarray:
    """(S, T) one-step predictive log-densities of an HMM by forward filtering (0 at padding).

    ``p(x_t | x_<t) = sum_k P(s_t = k | x_<t) N(x_t | mu_k, Sigma_k)``: the
    filtered state probabilities pushed through the transition matrix (the start
    distribution at t = 0). Their sum over steps equals hmmlearn's ``score``.
    """
    return _hmm_forward(model, seqs)[0]


def hmm_predictive(model, seqs: Sequences) -> gmm.GMM:
    """The HMM's one-step predictive mixtures, batch shape (S, T), full covariances."""
    log_pred = _hmm_forward(model, seqs)[1]
    shape = log_pred.shape[:2]
    k, d = model.means_.shape
    means = np.broadcast_to(model.means_, shape + (k, d))
    covs = np.broadcast_to(np.asarray(model.covars_), shape + (k, d, d))  # (K, D, D) for every type
    return gmm.from_covariances(jnp.asarray(log_pred, jnp.float32), jnp.asarray(means, jnp.float32),
                                jnp.asarray(covs, jnp.float32), "full")


# ----------------------------------------------------------------------------- selection


@dataclasses.dataclass
class BaselineResult:
    """A baseline with K (and lags) chosen on validation.

    Attributes:
      name: what to call it in a report.
      n_components: the chosen K.
      model: the fitted model (a ``gmm.GMM``, an hmmlearn model or an :class:`HMMFit`).
      val_nll: validation nats per step, original units, for every candidate tried: keyed by
        K, or by (K, lags) for the dynamax HMMs.
      log_probs: callable Sequences -> (S, T) per-step log-densities, standardised units.
      predictive: callable Sequences -> predictive GMM with batch shape (S, T).
      lags: the chosen lag order (0 for the models without lags).
      fit_seconds: wall time of every candidate's fit (compilation included), same keys as
        ``val_nll``.
    """

    name: str
    n_components: int
    model: Any
    val_nll: dict
    log_probs: Callable[[Sequences], np.ndarray]
    predictive: Callable[[Sequences], gmm.GMM]
    lags: int = 0
    fit_seconds: dict = dataclasses.field(default_factory=dict)

    def nll(self, seqs: Sequences, log_jacobian: float) -> float:
        """Nats per observed step of ``seqs`` (standardised) in original units."""
        return nll_per_step(self.log_probs(seqs).sum(), seqs.n_steps, log_jacobian)

    @property
    def chosen_val_nll(self) -> float:
        """The validation NLL of the kept candidate."""
        return self.val_nll[(self.n_components, self.lags) if self.keyed_by_lags else self.n_components]

    @property
    def keyed_by_lags(self) -> bool:
        return any(isinstance(key, tuple) for key in self.val_nll)


def candidate_text(key) -> str:
    """"K=4" for a K, "K=4 lags=1" for a (K, lags) candidate."""
    return f"K={key[0]} lags={key[1]}" if isinstance(key, tuple) else f"K={key}"


def _select(name, fit, log_probs, predictive, train, val, keys, log_jacobian, *,
            verbose: bool = False) -> BaselineResult:
    """Fits every candidate (a K, or a (K, lags) pair) on ``train`` and keeps the one with the
    lowest finite validation NLL; prints each fit's time and score when ``verbose``."""
    best, val_nll, seconds = None, {}, {}
    for key in keys:
        t = time.perf_counter()
        model = fit(train, key)
        seconds[key] = time.perf_counter() - t
        with np.errstate(all="ignore"):
            val_nll[key] = v = nll_per_step(log_probs(model, val).sum(), val.n_steps, log_jacobian)
        if verbose:
            print(f"  {name} {candidate_text(key)}: fitted in {seconds[key]:.1f} s, validation NLL "
                  f"{v:.4f} nats/step", flush=True)
        if np.isfinite(v) and (best is None or v < val_nll[best[0]]):
            best = (key, model)
    if best is None:
        raise RuntimeError(f"{name}: no candidate gave a finite validation NLL ({val_nll})")
    key, model = best
    k, lags = key if isinstance(key, tuple) else (key, 0)
    return BaselineResult(name, k, model, val_nll, lambda s: log_probs(model, s),
                          lambda s: predictive(model, s), lags=lags, fit_seconds=seconds)


def static_gmm_baseline(train: Sequences, val: Sequences, *, log_jacobian: float, seed: int = 0,
                        ks=COMPONENTS_GRID, covariance_type: str = "full",
                        verbose: bool = False) -> BaselineResult:
    """Static GMM with K chosen on validation; ``train``/``val`` standardised."""
    ks = [k for k in ks if k <= train.n_steps]
    return _select(
        "static GMM",
        lambda s, k: fit_static_gmm(s, k, seed=seed, covariance_type=covariance_type),
        static_gmm_log_probs, static_gmm_predictive, train, val, ks, log_jacobian, verbose=verbose)


def hmm_baseline(train: Sequences, val: Sequences, *, log_jacobian: float, seed: int = 0,
                 ks=COMPONENTS_GRID, covariance_type: str = "full", n_iter: int = 200,
                 verbose: bool = False) -> BaselineResult:
    """Gaussian HMM (hmmlearn) with K chosen on validation; ``train``/``val`` standardised."""
    ks = [k for k in ks if k <= train.n_steps]
    return _select(
        "Gaussian HMM",
        lambda s, k: fit_hmm(s, k, seed=seed, covariance_type=covariance_type, n_iter=n_iter),
        hmm_log_probs, hmm_predictive,
        train, val, ks, log_jacobian, verbose=verbose)


# ----------------------------------------------------------------------------- dynamax HMMs

ARHMM_COMPONENTS_GRID = (2, 3, 4, 6, 8, 10, 12)
ARHMM_LAGS = (1, 2)
# dynamax's default Dirichlet concentration on the initial and transition probabilities.
DYNAMAX_CONCENTRATION = 1.1


class HMMFit(NamedTuple):
    """A dynamax HMM fitted by EM (the best restart), as float64 NumPy arrays.

    Attributes:
      lags: p; 0 is dynamax's ``GaussianHMM``, p >= 1 its ``LinearAutoregressiveHMM``.
      log_init: (K,) initial log-probabilities.
      log_trans: (K, K) transition log-probabilities, ``[j, k] = log p(s_t = k | s_{t-1} = j)``.
      weights: (K, D, p*D) ``[W_k1, ..., W_kp]``, most recent lag first (``data.lagged``).
      biases: (K, D) ``b_k`` (the means when p = 0).
      covs: (K, D, D) ``Sigma_k``.
      objectives: (R,) each restart's final EM objective on the training data (dynamax's
        log prior plus log-likelihood, standardised units; NaN where EM broke down).
      params: the kept restart's dynamax parameters (initial distribution as fitted by dynamax).
    """

    lags: int
    log_init: np.ndarray
    log_trans: np.ndarray
    weights: np.ndarray
    biases: np.ndarray
    covs: np.ndarray
    objectives: np.ndarray
    params: Any

    @property
    def n_components(self) -> int:
        return self.log_init.shape[0]


def dynamax_model(n_components: int, n_features: int, lags: int):
    """dynamax's ``GaussianHMM`` (lags 0) or ``LinearAutoregressiveHMM`` (lags >= 1)."""
    from dynamax.hidden_markov_model import GaussianHMM, LinearAutoregressiveHMM

    if lags == 0:
        return GaussianHMM(n_components, n_features)
    return LinearAutoregressiveHMM(n_components, n_features, num_lags=lags)


@functools.cache
def _em_program(k: int, d: int, lags: int, n_iter: int):
    """The jitted EM per (K, D, lags, iterations). The EM is vmapped over a batch of
    starts, so the restarts share one compilation (per data shape). A start is dynamax's
    k-means start (centroids as means or biases, zero weights, unit covariances, initial and
    transition probabilities drawn from their Dirichlet priors) built from host arrays: its
    own jitted k-means and prior draws cost long compilations per K on a slow CPU."""
    model = dynamax_model(k, d, lags)
    eye = jnp.tile(jnp.eye(d, dtype=jnp.float32), (k, 1, 1))

    def one(start, emissions, inputs):
        init, trans, centroids = start
        given = {"initial_probs": init, "transition_matrix": trans, "emission_covariances": eye}
        if lags:
            given.update(emission_biases=centroids,
                         emission_weights=jnp.zeros((k, d, d * lags), jnp.float32))
        else:
            given.update(emission_means=centroids)
        # Everything is given: "prior" draws nothing that is kept (its draws are dead code).
        params, props = model.initialize(jax.random.key(0), method="prior", **given)
        params, objective = model.fit_em(params, props, emissions, inputs=inputs, num_iters=n_iter,
                                         verbose=False)
        return params, objective[-1]

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def _starts(k: int, x: np.ndarray, seed: int, n_restarts: int):
    """``n_restarts`` stacked starts ``(initial (R, K), transitions (R, K, K), centroids (R, K, D))``:
    scikit-learn k-means (3 inits each) on the observed steps ``x (N, D)``, Dirichlet draws."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    init = rng.dirichlet(np.full(k, DYNAMAX_CONCENTRATION), size=n_restarts)
    trans = rng.dirichlet(np.full(k, DYNAMAX_CONCENTRATION), size=(n_restarts, k))
    cent = [KMeans(k, n_init=3, random_state=seed * 1000 + r).fit(x).cluster_centers_
            for r in range(n_restarts)]
    return tuple(jnp.asarray(a, jnp.float32) for a in (init, trans, np.stack(cent)))


def _training_arrays(seqs: Sequences, lags: int):
    """``(emissions (B, T, D), inputs (B, T, p*D) or None, concatenated)``: one batch when every
    sequence has the same length, else one series (B = 1) of every sequence in turn."""
    x = np.where(seqs.mask[..., None], seqs.x, 0.0)
    phi = lagged(x, lags, lengths=seqs.lengths, check=False)
    joined = bool((seqs.lengths != seqs.max_length).any())
    if joined:
        x, phi = x[seqs.mask][None], phi[seqs.mask][None]
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return f32(x), (f32(phi) if lags else None), joined


def fit_dynamax_hmm(train: Sequences, n_components: int, lags: int, *, seed: int,
                    n_restarts: int = 3, n_iter: int = 100) -> HMMFit:
    """dynamax's EM from ``n_restarts`` k-means starts; keeps the restart with the highest final
    objective (see the module doc for sequences of different lengths).

    Args:
      train: training sequences (standardised).
      n_components: K.
      lags: p >= 0.
      seed: seeds the k-means starts.
      n_restarts: EM runs from different starts.
      n_iter: EM iterations per run.
    """
    if lags < 0 or n_components < 1 or n_restarts < 1 or n_iter < 1:
        raise ValueError(f"need lags >= 0 and K, restarts, iterations >= 1; got {lags}, "
                         f"{n_components}, {n_restarts}, {n_iter}")
    x, phi, joined = _training_arrays(train, lags)
    program = _em_program(int(n_components), train.n_features, int(lags), int(n_iter))
    starts = _starts(int(n_components), train.observed(), seed, n_restarts)
    params, objectives = program(starts, x, phi)
    objectives = np.asarray(objectives, np.float64)
    best = int(np.argmax(np.where(np.isfinite(objectives), objectives, -np.inf)))
    params = jax.tree_util.tree_map(lambda a: a[best], params)
    kept = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    e = kept.emissions
    k, d = e.covs.shape[:2]
    weights, biases = (e.weights, e.biases) if lags else (np.zeros((k, d, 0)), e.means)
    with np.errstate(divide="ignore"):
        fit = HMMFit(int(lags), np.log(kept.initial.probs), np.log(kept.transitions.transition_matrix),
                     weights, biases, e.covs, objectives, params)
    return _refit_initial(fit, train) if joined else fit


def _refit_initial(fit: HMMFit, train: Sequences) -> HMMFit:
    """One M-step for the initial distribution from the smoothed first regime of every
    training sequence (Dirichlet mode, dynamax's concentration); the rest stays."""
    emis = _hmm_fit_emissions(fit, train)
    if not np.isfinite(emis[train.mask]).all():
        return fit
    log_c, _, log_filt = _filter(fit.log_init, fit.log_trans, emis)
    first = _smooth(fit.log_trans, emis, train.mask, log_c, log_filt)[:, 0].sum(axis=0)
    counts = first + DYNAMAX_CONCENTRATION - 1
    return fit._replace(log_init=np.log(counts / counts.sum()))


def _hmm_fit_emissions(fit: HMMFit, seqs: Sequences) -> np.ndarray:
    """(S, T, K) ``log N(x_t | W_k phi_t + b_k, Sigma_k)``; 0 at padding, NaN for broken parameters."""
    x = np.where(seqs.mask[..., None], seqs.x, 0.0)
    phi = lagged(x, fit.lags, lengths=seqs.lengths, check=False)
    mean = np.einsum("kdf,stf->stkd", fit.weights, phi) + fit.biases  # (S, T, K, D)
    try:
        chol = np.linalg.cholesky(fit.covs)
    except np.linalg.LinAlgError:
        return np.full(x.shape[:2] + (fit.n_components,), np.nan)
    y = np.einsum("kde,stke->stkd", np.linalg.inv(chol), x[:, :, None, :] - mean)
    log_det = np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
    lp = -0.5 * (x.shape[-1] * np.log(2 * np.pi) + (y ** 2).sum(-1)) - log_det
    return np.where(seqs.mask[..., None], lp, 0.0)


def _hmm_fit_forward(fit: HMMFit, seqs: Sequences):
    emis = _hmm_fit_emissions(fit, seqs)
    with np.errstate(invalid="ignore"):
        return emis, _filter(fit.log_init, fit.log_trans, emis)


def hmm_fit_log_probs(fit: HMMFit, seqs: Sequences) -> np.ndarray:
    """(S, T) one-step predictive log-densities ``log p(x_t | x_<t)`` (0 at padding); their sum
    over a sequence is dynamax's ``marginal_log_prob`` (with this fit's initial distribution)."""
    log_c = _hmm_fit_forward(fit, seqs)[1][0]
    return np.where(seqs.mask, log_c, 0.0)


def hmm_fit_predictive(fit: HMMFit, seqs: Sequences) -> gmm.GMM:
    """The one-step predictive mixtures, batch shape (S, T): filtered regime weights, means
    ``W_k phi_t + b_k``, full covariances."""
    log_pred = _hmm_fit_forward(fit, seqs)[1][1]
    x = np.where(seqs.mask[..., None], seqs.x, 0.0)
    phi = lagged(x, fit.lags, lengths=seqs.lengths, check=False)
    means = np.einsum("kdf,stf->stkd", fit.weights, phi) + fit.biases
    covs = np.broadcast_to(fit.covs, means.shape + means.shape[-1:])
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return gmm.from_covariances(f32(log_pred), f32(means), f32(covs), "full")


def hmm_fit_regimes(fit: HMMFit, seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """``(filtered p(s_t | x_<=t), smoothed p(s_t | x_1:T))``, each (S, T, K), 0 at padding."""
    emis, (log_c, _, log_filt) = _hmm_fit_forward(fit, seqs)
    filtered = np.where(seqs.mask[..., None], np.exp(log_filt), 0.0)
    return filtered, _smooth(fit.log_trans, emis, seqs.mask, log_c, log_filt)


def arhmm_baseline(train: Sequences, val: Sequences, *, log_jacobian: float, seed: int = 0,
                   ks=ARHMM_COMPONENTS_GRID, lags=ARHMM_LAGS, n_restarts: int = 3,
                   n_iter: int = 100, name: str = "AR-HMM", verbose: bool = False) -> BaselineResult:
    """dynamax HMMs over a grid of K and lags, the pair with the best validation NLL kept.

    ``lags=(0,)`` gives dynamax's Gaussian HMM; ``train``/``val`` standardised. Cost: one
    compilation per (K, lags, training shape), the restarts vmapped inside it; fit times are
    in ``fit_seconds`` (and printed when ``verbose``).
    """
    # K >= 2: dynamax's Dirichlet priors need two regimes at least.
    keys = [(int(k), int(p)) for p in lags for k in ks if 2 <= k <= train.n_steps]
    return _select(
        name,
        lambda s, key: fit_dynamax_hmm(s, key[0], key[1], seed=seed, n_restarts=n_restarts,
                                       n_iter=n_iter),
        hmm_fit_log_probs, hmm_fit_predictive, train, val, keys, log_jacobian, verbose=verbose)
