"""Non-gradient training state estimated by stepwise EM: the EM head's global components and
a Gaussian mixture over the network's hidden states.

Both live in ``TrainState.aux_state`` (so Optax, clipping and weight decay never see them,
and checkpoints hold them) under :data:`EM_HEAD_KEY` and :data:`HIDDEN_GMM_KEY`, and are
updated by the train step's ``aux_update`` (:func:`make_aux_update`) on every finite step,
from the same batch and the parameters the gradient was taken at.

**EM head** (``ModelConfig.head == "em"``). The network emits mixing logits ``pi_t``; the
components ``(mu_k, Sigma_k)`` are global. The E-step on a batch gives
``gamma_tk = pi_tk N(x_t | mu_k, Sigma_k) / sum_j pi_tj N(x_t | mu_j, Sigma_j)``
(``gmm.log_responsibilities`` of the model's own per-step mixture), its statistics
(``em.stats_from_responsibilities``) are blended into running per-observation statistics
with ``rho_n = (n + n0)^(-alpha)`` (``em.blend``, ``em.step_size``; Cappé & Moulines 2009,
see :mod:`grnn_jax.em.stepwise` for why it converges), and the closed-form M-step
(``em.m_step_from_stats``) gives the new components. The gradient step on the logits is a
generalised M-step for ``pi``: by Fisher's identity the NLL gradient with respect to the
logits is that of the expected complete-data log-likelihood, and the components are
constants to it. The seed components are k-means++ on the first batch's observed steps
(``em.initialize``), with statistics from one exact E-step (``em.e_step``).

**Autoregressive and filtered components** (``lags = p > 0``, or ``head == "hmm"``). The
components are linear regressions ``N(x_t | W_k phi_t + b_k, Sigma_k)`` on the last p
observations; the same stepwise EM runs on the regression statistics of
:mod:`grnn_jax.em.regression_em` (weighted least squares in the M-step). The filtering head's
E-step weights are the regime posteriors smoothed over each whole training sequence: the
gradient of the sequence log-likelihood with respect to the log emission densities
(Fisher's identity, :func:`grnn_jax.em.hmm.smoothed_posteriors`), because there a step's
regime also explains the steps after it. Its initial and transition probabilities (or the
network that emits them) are trained by the gradient of the same likelihood.

**Hidden-state GMM** (``TrainConfig.hidden_gmm = K``). A K-component full-covariance GMM over
the top-layer hidden states ``h_t`` of each batch's observed steps, updated by the same
stepwise EM with ``em.e_step`` on the states of the parameters before the step. With
``hidden_gmm_weight = lam > 0`` the objective adds ``-lam * mean_t log p_GMM(h_t)``
(:func:`hidden_gmm_penalty`), the mixture held constant.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from grnn_jax import em
from grnn_jax import gmm as gmm_lib
from grnn_jax import model as model_lib
from grnn_jax.data import Batch
from grnn_jax.data.lags import lagged
from grnn_jax.em import hmm
from grnn_jax.em.regression_em import RegressionStats, regression_m_step_from_stats, regression_stats

EM_HEAD_KEY = "em_head"
HIDDEN_GMM_KEY = "hidden_gmm"
# Variance floors in standardised units (data) and hidden-state units (tanh-bounded):
# a component that collapses onto a few points keeps a standard deviation of at least 0.01.
EM_HEAD_REG_COVAR = 1e-4
# Ridge on the regressions' slopes, in per-observation statistics of standardised data.
EM_HEAD_RIDGE = 1e-4
HIDDEN_GMM_REG_COVAR = 1e-4
HIDDEN_GMM_COVARIANCE_TYPE = "full"


def model_variables(params, aux_state):
    """The network's whole variables dict: ``params`` plus, for the EM head, its components.

    Use it wherever the model is applied (objectives, evaluation, sampling); ``params``
    alone is what the optimiser sees.

    Example:
      >>> model_variables({"params": 1}, {})
      {'params': 1}
    """
    if isinstance(aux_state, dict) and EM_HEAD_KEY in aux_state:
        return {**params, model_lib.EM_COLLECTION: aux_state[EM_HEAD_KEY]["components"]}
    return params


def _masked(batch: Batch):
    x = jnp.asarray(batch.x)
    mask = model_lib.mask_from_lengths(batch.lengths, x.shape[1])
    x = jnp.where(mask[..., None], x, 0)
    u = None if batch.u is None else jnp.where(mask[..., None], jnp.asarray(batch.u), 0)
    return x, u, mask


def _stats_dict(s) -> dict:
    return s._asdict()


def _stats(d: dict):
    """The statistics NamedTuple a stored dict holds: GMM or regression statistics."""
    return RegressionStats(**d) if "spp" in d else em.SufficientStats(**d)


def _m_step(s, ctype: str, reg):
    if isinstance(s, RegressionStats):
        return regression_m_step_from_stats(s, covariance_type=ctype, reg_covar=reg,
                                            ridge=EM_HEAD_RIDGE)
    return em.m_step_from_stats(s, covariance_type=ctype, reg_covar=reg)


def _stepwise(state: dict, batch_stats, n_obs, ctype: str, reg, schedule):
    """One stepwise-EM update of ``{"stats", "count"}``: (new statistics, new mixture)."""
    exponent, offset = schedule
    rho = em.step_size(state["count"], exponent=exponent, offset=offset)
    s = em.blend(_stats(state["stats"]), batch_stats, n_obs, rho)
    return s, _m_step(s, ctype, reg)


def _seed(x_flat, w, n_components: int, ctype: str, reg, key):
    """k-means++ seed on the weighted rows and its exact per-observation E-step statistics."""
    g = em.initialize(x_flat, n_components, key=key, covariance_type=ctype, reg_covar=reg, weights=w)
    s, _ = em.e_step(g, x_flat, w)
    n = jnp.maximum(jnp.sum(w), 1.0)
    return g, jax.tree.map(lambda a: a / n, s)


# ----------------------------------------------------------------------------- EM head


def regression_components(net) -> bool:
    """Whether the head's components are regressions (lags, or the filtering head)."""
    return net.lags > 0 or isinstance(net, model_lib.FilterGRNN)


def _components(new, dtype) -> dict:
    """The ``"em"`` collection of a new GMM or regression mixture."""
    if isinstance(new, gmm_lib.GMM):
        return model_lib.em_collection(new.means.astype(dtype), new.prec_chol.astype(dtype))
    coef = new.coef.astype(dtype) if new.coef.shape[-1] else None
    return model_lib.em_collection(new.intercept.astype(dtype), new.prec_chol.astype(dtype), coef)


def _flat(a):
    return a.reshape(a.shape[0] * a.shape[1], a.shape[-1])


def init_em_head(net, variables, example: Batch, *, key: jax.Array) -> dict:
    """The EM head's aux state, seeded on ``example``'s observed steps (model units).

    Gaussian components: k-means++ and one exact E-step. Regression components: the
    responsibilities of that k-means++ seed, turned into regressions by one M-step."""
    x, _, mask = _masked(example)
    d, k, ctype = net.n_features, net.n_components, net.covariance_type
    w = mask.reshape(-1).astype(x.dtype)
    g, s = _seed(x.reshape(-1, d), w, k, ctype, EM_HEAD_REG_COVAR, key)
    del variables  # the seed replaces the module's N(0, I) initial components
    new = g
    if regression_components(net):
        resp = jnp.exp(gmm_lib.log_responsibilities(g, x.reshape(-1, d)))
        phi = _flat(lagged(x, int(net.lags), check=False))
        s = jax.tree.map(lambda a: a / jnp.maximum(jnp.sum(w), 1.0),
                         regression_stats(x.reshape(-1, d), phi, resp, covariance_type=ctype,
                                          weights=w))
        new = _m_step(s, ctype, EM_HEAD_REG_COVAR)
    return {"components": _components(new, x.dtype), "stats": _stats_dict(s),
            "count": jnp.zeros((), jnp.int32)}


def _responsibilities(net, variables, x, u, mask):
    """(B, T, K) E-step weights: the filtering head's smoothed regime posteriors, or the
    per-step mixture's responsibilities (exact there: a regime explains only its step)."""
    if isinstance(net, model_lib.FilterGRNN):
        log_init, log_trans, log_emit, *_ = net.apply(variables, x, u,
                                                      method=model_lib.FilterGRNN.filter_terms)
        smooth = jax.vmap(hmm.smoothed_posteriors, in_axes=(None, 0, 0, 0))
        return smooth(log_init, log_trans, log_emit, mask).smoothed
    return jnp.exp(gmm_lib.log_responsibilities(net.apply(variables, x, u), x))


def em_head_update(net, params, aux_state: dict, batch: Batch, *, schedule) -> dict:
    """One stepwise-EM update of the EM head's components from ``batch``."""
    st = aux_state[EM_HEAD_KEY]
    x, u, mask = _masked(batch)
    resp = _responsibilities(net, model_variables(params, aux_state), x, u, mask)
    resp = jax.lax.stop_gradient(resp)
    d, k, ctype = net.n_features, net.n_components, net.covariance_type
    w = mask.reshape(-1).astype(x.dtype)
    if regression_components(net):
        phi = _flat(lagged(x, int(net.lags), check=False))
        stats = regression_stats(x.reshape(-1, d), phi, resp.reshape(-1, k),
                                 covariance_type=ctype, weights=w)
    else:
        stats = em.stats_from_responsibilities(x.reshape(-1, d), resp.reshape(-1, k),
                                               covariance_type=ctype, weights=w)
    s, new = _stepwise(st, stats, jnp.sum(w), ctype, EM_HEAD_REG_COVAR, schedule)
    return {"components": _components(new, x.dtype), "stats": _stats_dict(s),
            "count": st["count"] + 1}


# ----------------------------------------------------------------------------- hidden GMM


def hidden_gmm(aux_state: dict) -> gmm_lib.GMM:
    """The current hidden-state mixture of a run with ``hidden_gmm > 0``."""
    p = aux_state[HIDDEN_GMM_KEY]["gmm"]
    return gmm_lib.GMM(p["logits"], p["means"], p["prec_chol"], HIDDEN_GMM_COVARIANCE_TYPE)


def _gmm_dict(g: gmm_lib.GMM) -> dict:
    return {"logits": g.logits, "means": g.means, "prec_chol": g.prec_chol}


def _batch_states(net, variables, batch: Batch):
    x, u, mask = _masked(batch)
    h = net.apply(variables, x, u, method=model_lib.GRNN.hidden)
    w = mask.reshape(-1).astype(h.dtype)
    return h.reshape(-1, h.shape[-1]), w


def init_hidden_gmm(net, variables, example: Batch, n_components: int, weight: float, *,
                    key: jax.Array) -> dict:
    """The hidden-state GMM's aux state, seeded on ``example``'s states."""
    h, w = _batch_states(net, variables, example)
    g, s = _seed(h, w, n_components, HIDDEN_GMM_COVARIANCE_TYPE, HIDDEN_GMM_REG_COVAR, key)
    out = {"gmm": _gmm_dict(g), "stats": _stats_dict(s), "count": jnp.zeros((), jnp.int32),
           "batch_log_lik": jnp.zeros((), h.dtype)}
    if weight > 0:
        # Present only when used, so that the objective's program has no dead branch.
        out["weight"] = jnp.asarray(weight, h.dtype)
    return out


def hidden_gmm_update(net, params, aux_state: dict, batch: Batch, *, schedule) -> dict:
    """One stepwise-EM update of the hidden-state GMM from ``batch``'s states."""
    st = aux_state[HIDDEN_GMM_KEY]
    h, w = _batch_states(net, model_variables(params, aux_state), batch)
    stats, ll_sum = em.e_step(hidden_gmm(aux_state), h, w)
    n_obs = jnp.sum(w)
    s, new = _stepwise(st, stats, n_obs, HIDDEN_GMM_COVARIANCE_TYPE, HIDDEN_GMM_REG_COVAR, schedule)
    return dict(st, gmm=_gmm_dict(new), stats=_stats_dict(s), count=st["count"] + 1,
                batch_log_lik=ll_sum / jnp.maximum(n_obs, 1.0))


def hidden_gmm_penalty(net, params, aux_state, batch: Batch):
    """``-lam * mean log p_GMM(h_t)`` over observed steps, or None when the run has no
    hidden-state regulariser. The mixture is a constant; the states carry the gradient."""
    if not (isinstance(aux_state, dict) and "weight" in aux_state.get(HIDDEN_GMM_KEY, {})):
        return None
    h, w = _batch_states(net, model_variables(params, aux_state), batch)
    lp = gmm_lib.log_prob(jax.lax.stop_gradient(hidden_gmm(aux_state)), h)
    mean_lp = jnp.sum(jnp.where(w > 0, lp, 0.0)) / jnp.maximum(jnp.sum(w), 1.0)
    return -aux_state[HIDDEN_GMM_KEY]["weight"] * mean_lp


# ----------------------------------------------------------------------------- wiring


def uses_aux(cfg) -> bool:
    """Whether a run (``TrainConfig``) has non-gradient EM state."""
    return cfg.model.em_updated or cfg.hidden_gmm > 0


def initial_params_and_aux(cfg, net, example: Batch, *, key: jax.Array) -> tuple[Any, dict]:
    """``(params, aux_state)`` at step 0 of a run with EM state (see :func:`uses_aux`).

    ``params`` are drawn exactly as ``init_state`` draws them; the EM head's components are
    moved out of them into ``aux_state``.
    """
    x = jnp.asarray(example.x)[:1, :1]
    u = None if example.u is None else jnp.asarray(example.u)[:1, :1]
    return _initial_params_and_aux_jit(net, cfg.model.em_updated, int(cfg.hidden_gmm),
                                       float(cfg.hidden_gmm_weight), key, x, u, example)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _initial_params_and_aux_jit(net, em_head: bool, hidden_k: int, hidden_weight: float, key,
                                x, u, example: Batch):
    # One program: op by op, the k-means++ seeds and E-steps compile about a hundred small
    # programs (seconds per run, and per member of a population).
    variables = net.init(key, x, u=u)
    aux: dict = {}
    k_head, k_hidden = jax.random.split(jax.random.fold_in(key, 1))
    if em_head:
        aux[EM_HEAD_KEY] = init_em_head(net, variables, example, key=k_head)
        variables = {c: v for c, v in variables.items() if c != model_lib.EM_COLLECTION}
    if hidden_k > 0:
        aux[HIDDEN_GMM_KEY] = init_hidden_gmm(
            net, model_variables(variables, aux), example, hidden_k, hidden_weight, key=k_hidden,
        )
    return variables, aux


def aux_settings(cfg) -> tuple:
    """What the aux update depends on (a hashable cache key)."""
    return (cfg.model.head, cfg.hidden_gmm, cfg.em_step_exponent, cfg.em_step_offset)


def make_aux_update(head: str, hidden_gmm_k: int, exponent: float, offset: float):
    """``aux_update(net, params, aux_state, batch) -> aux_state`` for the train step, or None
    when there is nothing to update (the arguments are :func:`aux_settings`)."""
    if head not in ("em", "hmm") and hidden_gmm_k <= 0:
        return None
    schedule = (float(exponent), float(offset))

    def aux_update(net, params, aux_state, batch):
        new = dict(aux_state)
        if head in ("em", "hmm"):
            new[EM_HEAD_KEY] = em_head_update(net, params, aux_state, batch, schedule=schedule)
        if hidden_gmm_k > 0:
            new[HIDDEN_GMM_KEY] = hidden_gmm_update(net, params, aux_state, batch,
                                                    schedule=schedule)
        return new

    return aux_update
