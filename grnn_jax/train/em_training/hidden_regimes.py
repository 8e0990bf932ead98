"""Regimes of a trained model: the EM and filtering heads' regime probabilities, and Gaussian mixtures
over the network's hidden states (fitted after training with K chosen by BIC, or kept
during training by stepwise EM, :mod:`grnn_jax.train.em_training.em_state`).

Every function takes sequences in original units and the standardiser the model was
trained under, and returns per-step arrays (``(S, T, ...)``, zeros at padded steps) or one
row per observed step in the order of ``seqs.valid_steps``-style row-major traversal
(sequence by sequence, step by step).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax import em
from grnn_jax import gmm as gmm_lib
from grnn_jax import model as model_lib
from grnn_jax.data import Sequences, Standardiser
from grnn_jax.train.em_training.em_state import HIDDEN_GMM_KEY, HIDDEN_GMM_REG_COVAR, hidden_gmm
from grnn_jax.train.step import standardised_batches


@functools.partial(jax.jit, static_argnums=0)
def _regimes(net, variables, x, lengths, u):
    mask = model_lib.mask_from_lengths(lengths, x.shape[1])
    x = jnp.where(mask[..., None], x, 0)
    m = mask[..., None]
    if isinstance(net, model_lib.FilterGRNN):
        log_init, log_trans, log_emit, *_ = net.apply(variables, x, u,
                                                      method=model_lib.FilterGRNN.filter_terms)
        filt = jax.vmap(em.hmm.forward, in_axes=(None, 0, 0, 0))(log_init, log_trans, log_emit, mask)
        smooth = jax.vmap(em.hmm.forward_backward, in_axes=(None, 0, 0, 0))(
            log_init, log_trans, log_emit, mask).smoothed
        out = jnp.exp(filt.log_filtered), jnp.exp(filt.log_predicted), smooth
    else:
        g = net.apply(variables, x, u)
        filt = jnp.exp(gmm_lib.log_responsibilities(g, x))
        # A regime of the EM head explains only its own step: smoothing changes nothing.
        out = filt, gmm_lib.weights(g), filt
    return tuple(jnp.where(m, a, 0.0) for a in out)


def regime_probabilities(net, variables, seqs: Sequences, *, standardiser: Standardiser | None = None,
                         batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step regime probabilities of a model with the EM head or the filtering head.

    ``filtering[s, t, k] = p(regime k at t | x_<=t)``, ``predictive[s, t, k] = pi_tk =
    p(regime k at t | x_<t)`` (the mixing weights of step t) and ``smoothed[s, t, k] =
    p(regime k at t | the whole sequence)``. For the EM head a regime explains only its own
    step, so smoothed equals filtering; the filtering head runs the forward-backward pass.

    Args:
      net: a ``model.EMGRNN`` or ``model.FilterGRNN``.
      variables: its whole variables dict (as ``load_trained`` returns it).
      seqs: sequences, original units.
      standardiser: the map the model was trained under (None: identity).
      batch_size: sequences per batch.

    Returns:
      ``(filtering, predictive, smoothed)``, each (S, T, K), zeros at padded steps.

    Raises:
      ValueError: ``net`` has neither head.
    """
    if not isinstance(net, (model_lib.EMGRNN, model_lib.FilterGRNN)):
        raise ValueError("regime probabilities need a model trained with --head em or --head hmm "
                         f"(model.head='em' or 'hmm'); got a {type(net).__name__}")
    parts = ([], [], [])
    for b in standardised_batches(seqs, standardiser, batch_size):
        for acc, a in zip(parts, _regimes(net, variables, b.x, b.lengths, b.u)):
            acc.append(np.asarray(a))
    s = seqs.n_sequences
    return tuple(np.concatenate(acc)[:s] for acc in parts)


class RegimeComponents(NamedTuple):
    """A trained EM or filtering head's regimes in the data's original units.

    Attributes:
      means: (K, D) the regimes' means (with lags: the intercepts ``b_k``, the mean when
        every lagged observation is zero).
      covariances: (K, D, D).
      coefficients: (K, D, p*D) the slopes ``W_k`` on ``[x_{t-1}, ..., x_{t-p}]``, or None
        without lags.
    """

    means: np.ndarray
    covariances: np.ndarray
    coefficients: np.ndarray | None


def regime_components(net, variables, standardiser: Standardiser | None = None) -> RegimeComponents:
    """The global components of an EM-updated head, mapped from model units back to the data's.

    In model units ``z = (x - c) / s`` a regime reads ``z_t = W phi_z + b + e``; in original
    units that is ``x_t = S W S_p^-1 phi + (c + S b - S W S_p^-1 c_p) + S e``, with ``S =
    diag(s)`` and ``S_p``, ``c_p`` the scale and centre repeated over the lags.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax import model
      >>> from grnn_jax.data import Standardiser
      >>> net = model.FilterGRNN(n_features=1, n_components=2, hidden_size=4, lags=1)
      >>> v = net.init(jax.random.key(0), np.zeros((1, 2, 1)))
      >>> v["em"]["head"]["ar_coef"] = np.full((2, 1, 1), 0.5)
      >>> st = Standardiser(np.array([10.0]), np.array([2.0]))
      >>> c = regime_components(net, v, st)
      >>> c.coefficients[:, 0, 0].tolist()  # a slope is free of units
      [0.5, 0.5]
      >>> bool(np.allclose(c.means, 10 + 2 * np.asarray(v["em"]["head"]["means"]) - 0.5 * 10))
      True
    """
    em_vars = variables[model_lib.EM_COLLECTION]
    means, prec_chol = model_lib.em_components(em_vars)
    g = gmm_lib.as_full(gmm_lib.GMM(jnp.zeros(means.shape[0], means.dtype), means, prec_chol,
                                    net.covariance_type))
    st = standardiser or Standardiser.identity(net.n_features)
    orig = st.gmm_from(g)
    mu = np.asarray(orig.means, np.float64)
    cov = np.asarray(gmm_lib.covariances(orig), np.float64)
    coef = model_lib.em_coefficients(em_vars)
    if coef is None:
        return RegimeComponents(mu, cov, None)
    scale, center = np.asarray(st.scale, np.float64), np.asarray(st.center, np.float64)
    lags = coef.shape[-1] // net.n_features
    w = np.asarray(coef, np.float64) * scale[:, None] / np.tile(scale, lags)[None, None, :]
    return RegimeComponents(mu - w @ np.tile(center, lags), cov, w)


def collect_hidden_states(net, variables, seqs: Sequences, *,
                          standardiser: Standardiser | None = None,
                          batch_size: int = 64) -> np.ndarray:
    """(N, H) hidden states of the observed steps only (``N = seqs.n_steps``), sequence by
    sequence in step order; row ``i`` is the state that predicts the ``i``-th observed step.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax import model
      >>> from grnn_jax.data import Sequences
      >>> net = model.GRNN(n_features=1, n_components=2, hidden_size=4)
      >>> v = net.init(jax.random.key(0), np.zeros((1, 1, 1)))
      >>> s = Sequences(np.zeros((3, 5, 1)), lengths=np.array([5, 2, 1]))
      >>> collect_hidden_states(net, v, s, batch_size=2).shape
      (8, 4)
    """
    out = []
    for b in standardised_batches(seqs, standardiser, batch_size):
        h = np.asarray(model_lib.hidden_states(net, variables, b.x, b.lengths, b.u))
        mask = model_lib.mask_from_lengths(b.lengths, h.shape[1])
        out.append(h[mask])
    return np.concatenate(out)


def steps_of(values: np.ndarray, seqs: Sequences, fill=-1) -> np.ndarray:
    """Per-observed-step values (N, ...) back to (S, T, ...), ``fill`` at padded steps."""
    values = np.asarray(values)
    mask = seqs.mask
    out = np.full(mask.shape + values.shape[1:], fill, dtype=values.dtype)
    out[mask] = values
    return out


class HiddenGMMFit(NamedTuple):
    """A GMM fitted to hidden states, K by BIC.

    Attributes:
      labels: (N,) most responsible component of every observed step.
      n_components: the K chosen by BIC.
      gmm: the chosen mixture (over hidden states).
      table: one dict per candidate K: ``n_components``, ``log_likelihood`` (total),
        ``aic``, ``bic``.
    """

    labels: np.ndarray
    n_components: int
    gmm: gmm_lib.GMM
    table: list


def fit_hidden_gmm(net, variables, seqs: Sequences, *, key: jax.Array,
                   standardiser: Standardiser | None = None, candidates=(1, 2, 3, 4, 5, 6),
                   covariance_type: str = "full", n_init: int = 3,
                   reg_covar: float = HIDDEN_GMM_REG_COVAR) -> HiddenGMMFit:
    """Runs a trained model over ``seqs``, fits a GMM (``em.select_n_components``, BIC) to
    the hidden states of the observed steps and labels every observed step.

    Args:
      net, variables: the trained model (``load_trained``'s net and params).
      seqs: sequences, original units.
      key: PRNG key of the EM restarts.
      standardiser: the map the model was trained under.
      candidates: numbers of components to try.
      covariance_type: of the mixture over states.
      n_init: EM restarts per candidate.
      reg_covar: variance floor (states of tanh-bounded cells lie in [-1, 1]).

    Returns:
      :class:`HiddenGMMFit` (with the AIC/BIC table of every candidate).
    """
    h = collect_hidden_states(net, variables, seqs, standardiser=standardiser)
    best, sel = em.select_n_components(h, candidates, key=key, criterion="bic",
                                       covariance_type=covariance_type, n_init=n_init,
                                       reg_covar=reg_covar)
    hj = jnp.asarray(h)
    table = []
    for k, bic, fit in zip(sel.candidates, sel.scores, sel.fits):
        crit = em.criteria(fit.gmm, h)
        table.append({"n_components": int(k), "log_likelihood": float(crit.log_likelihood),
                      "aic": float(crit.aic), "bic": float(bic)})
    g = sel.fits[sel.candidates.index(best)].gmm
    labels = np.asarray(jnp.argmax(gmm_lib.log_responsibilities(g, hj), axis=-1))
    return HiddenGMMFit(labels, int(best), g, table)


def hidden_gmm_labels(net, variables, aux_state, seqs: Sequences, *,
                      standardiser: Standardiser | None = None) -> np.ndarray:
    """(N,) labels of the observed steps under the GMM kept during training (``--hidden-gmm``)."""
    h = jnp.asarray(collect_hidden_states(net, variables, seqs, standardiser=standardiser))
    return np.asarray(jnp.argmax(gmm_lib.log_responsibilities(hidden_gmm(aux_state), h), -1))


@jax.jit
def _occupancy(g: gmm_lib.GMM, h: jax.Array) -> jax.Array:
    """(K,) mean responsibility of each component over states ``h`` (N, H), compiled once
    (done eagerly, its few operations were tiny programs compiled anew in every process)."""
    return jnp.mean(gmm_lib.responsibilities(g, h), axis=0)


def hidden_gmm_log(net, variables, aux_state, seqs: Sequences | None,
                   standardiser: Standardiser | None) -> dict:
    """The evaluation record of a run's hidden-state GMM on ``seqs`` (``{}`` without one):
    mean log-likelihood per observed step and BIC (``em.criteria``), component
    occupancy (mean responsibility) and the last training batch's mean log-likelihood.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax import model
      >>> from grnn_jax.data import Sequences
      >>> from grnn_jax.train.em_training.em_state import HIDDEN_GMM_KEY
      >>> net = model.GRNN(n_features=1, n_components=2, hidden_size=2)
      >>> v = net.init(jax.random.key(0), np.zeros((1, 1, 1)))
      >>> g = {"logits": np.zeros(2), "means": np.array([[-0.5, 0.0], [0.5, 0.0]]),
      ...      "prec_chol": np.stack([np.eye(2)] * 2)}
      >>> aux = {HIDDEN_GMM_KEY: {"gmm": g, "batch_log_lik": np.array(-1.5)}}
      >>> log = hidden_gmm_log(net, v, aux, Sequences(np.zeros((2, 4, 1))), None)
      >>> sorted(log), len(log["hidden_gmm_occupancy"])
      (['hidden_gmm_batch_log_lik', 'hidden_gmm_bic', 'hidden_gmm_log_lik', 'hidden_gmm_occupancy'], 2)
    """
    if seqs is None or not (isinstance(aux_state, dict) and HIDDEN_GMM_KEY in aux_state):
        return {}
    g = hidden_gmm(aux_state)
    h = jnp.asarray(collect_hidden_states(net, variables, seqs, standardiser=standardiser))
    crit = em.criteria(g, h)
    occupancy = jax.device_get(_occupancy(g, h))
    return {
        "hidden_gmm_log_lik": float(crit.score),
        "hidden_gmm_bic": float(crit.bic),
        "hidden_gmm_occupancy": [round(float(o), 4) for o in occupancy],
        "hidden_gmm_batch_log_lik": float(aux_state[HIDDEN_GMM_KEY]["batch_log_lik"]),
    }
