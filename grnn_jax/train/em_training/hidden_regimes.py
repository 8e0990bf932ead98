"""Regimes of a trained model: the EM head's filtering probabilities, and Gaussian mixtures
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
    g = net.apply(variables, x, u)
    filt = jnp.exp(gmm_lib.log_responsibilities(g, x))
    pred = gmm_lib.weights(g)
    m = mask[..., None]
    return jnp.where(m, filt, 0.0), jnp.where(m, pred, 0.0)


def regime_probabilities(net, variables, seqs: Sequences, *, standardiser: Standardiser | None = None,
                         batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-step regime probabilities of a model with the EM head.

    ``filtering[s, t, k] = p(regime k at t | x_<=t)``
    ``= pi_tk N(x_t | mu_k, Sigma_k) / sum_j pi_tj N(x_t | mu_j, Sigma_j)``, and
    ``predictive[s, t, k] = pi_tk = p(regime k at t | x_<t)``, the head's mixing weights.

    Args:
      net: a ``model.EMGRNN``.
      variables: its whole variables dict (as ``load_trained`` returns it).
      seqs: sequences, original units.
      standardiser: the map the model was trained under (None: identity).
      batch_size: sequences per batch.

    Returns:
      ``(filtering, predictive)``, each (S, T, K), zeros at padded steps.

    Raises:
      ValueError: ``net`` has no EM head.
    """
    if not isinstance(net, model_lib.EMGRNN):
        raise ValueError("regime probabilities need a model trained with --head em "
                         f"(model.head='em'); got a {type(net).__name__}")
    filt, pred = [], []
    for b in standardised_batches(seqs, standardiser, batch_size):
        f, p = _regimes(net, variables, b.x, b.lengths, b.u)
        filt.append(np.asarray(f)), pred.append(np.asarray(p))
    s = seqs.n_sequences
    return np.concatenate(filt)[:s], np.concatenate(pred)[:s]


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
