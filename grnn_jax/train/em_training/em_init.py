"""EM initialisation of the mixture head: before any training, the network's predictive
density equals a Gaussian mixture fitted by EM to the (standardised) training observations,
at every step of every sequence (with ``lags``: a mixture of linear autoregressions fitted by
EM, :func:`grnn_jax.em.fit_regression`, whose slopes ``W_k`` start the head's as well). The
filtering head (``--head hmm``) goes one step further: its regimes and chain start at an
AR-HMM fitted by Baum-Welch from k-means starts
(:func:`grnn_jax.train.em_training.arhmm_choice.arhmm_start`), so before any training the
model is that AR-HMM.

The head is one linear layer; with its kernel zero its output is its bias whatever the
hidden state, and :func:`grnn_jax.model.heads.head_bias_from_gmm` gives the bias whose mixture is
a given GMM. The recurrent cells keep their random initialisation, so gradients still
reach them through the (zero) kernel from the first step on.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from grnn_jax import em
from grnn_jax import gmm as gmm_lib
from grnn_jax import model as model_lib
from grnn_jax.data import Batch, Sequences, lagged
from grnn_jax.model.heads import head_bias_from_gmm
from grnn_jax.train.em_training.arhmm_choice import arhmm_start
from grnn_jax.train.em_training.em_state import (
    EM_HEAD_KEY,
    EM_HEAD_RIDGE,
    initial_params_and_aux,
    regression_components,
    uses_aux,
)
from grnn_jax._util.dtypes import default_float


def check_em_init(seqs: Sequences, n_components: int) -> None:
    """Raises a one-line ValueError when ``seqs`` has fewer observed steps than components
    (EM cannot place K components on fewer points)."""
    if seqs.n_steps < n_components:
        raise ValueError(
            f"--em-init (em_init) needs at least as many observed training steps as mixture "
            f"components: the training data have {seqs.n_steps}, the model has {n_components}"
        )


def fit_observation_gmm(
    seqs: Sequences, n_components: int, covariance_type: str, *, key: jax.Array,
    n_init: int = 5, max_iter: int = 200,
) -> gmm_lib.GMM:
    """A GMM fitted by EM (k-means++ starts, ``n_init`` restarts) to every observed step.

    Args:
      seqs: sequences in the units the model sees (standardised).
      n_components: K.
      covariance_type: "full", "diag", "spherical" or "tied".
      key: PRNG key of the EM initialisation.
      n_init: EM restarts; the best log-likelihood is kept.
      max_iter: EM iterations per restart.

    Returns:
      the fitted mixture (no batch dimensions), in the default float dtype.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax.data import Sequences
      >>> x = np.concatenate([np.zeros((1, 20, 1)), np.full((1, 20, 1), 4.0)], axis=1)
      >>> x = x + np.random.default_rng(0).normal(scale=0.1, size=x.shape)
      >>> g = fit_observation_gmm(Sequences(x), 2, "diag", key=jax.random.key(0))
      >>> sorted(abs(round(float(m), 1)) for m in g.means[:, 0])
      [0.0, 4.0]
    """
    check_em_init(seqs, n_components)
    dtype = default_float()
    obs = jnp.asarray(seqs.observed(), dtype)
    res = em.fit(obs, n_components, key=key, covariance_type=covariance_type,
                 n_init=n_init, max_iter=max_iter)
    return res.gmm


def fit_observation_regression(seqs: Sequences, n_components: int, covariance_type: str,
                               lags: int, *, key: jax.Array, n_init: int = 5,
                               max_iter: int = 200) -> gmm_lib.RegressionMixture:
    """A mixture of linear autoregressions on the last ``lags`` steps, fitted by EM to every
    observed step of ``seqs`` (model units; zeros before each sequence's start, as the model
    reads them).

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax.data import Sequences
      >>> x = np.zeros((4, 30, 1))
      >>> noise = np.random.default_rng(0).normal(scale=0.1, size=x.shape)
      >>> for t in range(1, 30):
      ...     x[:, t] = 0.8 * x[:, t - 1] + noise[:, t]
      >>> rm = fit_observation_regression(Sequences(x), 1, "full", 1, key=jax.random.key(0))
      >>> round(float(rm.coef[0, 0, 0]), 1)
      0.8
    """
    check_em_init(seqs, n_components)
    x, phi = _observed_regressors(seqs, lags, default_float())
    res = em.fit_regression(x, phi, n_components, key=key, covariance_type=covariance_type,
                            n_init=n_init, max_iter=max_iter, ridge=EM_HEAD_RIDGE)
    return res.mixture


def _observed_regressors(seqs: Sequences, lags: int, dtype):
    phi = lagged(seqs.x, int(lags), lengths=seqs.lengths, check=False)[seqs.mask]
    return jnp.asarray(seqs.observed(), dtype), jnp.asarray(phi, dtype)


def head_params_from_gmm(params: Any, g: gmm_lib.GMM, *, min_scale: float = 1e-3,
                         max_scale: float = 1e3) -> Any:
    """``params`` with the mixture head's kernel zero and its bias giving ``g`` at every step.

    Args:
      params: variables of a ``model.GRNN`` (``params["params"]["head"]["out"]``).
      g: a mixture of the network's K, D and covariance type, no batch dimensions.
      min_scale, max_scale: the head's scale bounds (``net.min_scale``, ``net.max_scale``).

    Returns:
      a new variables dict (the input is not changed).
    """
    out = params["params"]["head"]["out"]
    bias = head_bias_from_gmm(g, min_scale=min_scale, max_scale=max_scale)
    if bias.shape != out["bias"].shape:
        raise ValueError(
            f"the mixture gives a head bias of shape {bias.shape}; the network's is "
            f"{out['bias'].shape} (different K, D or covariance type)"
        )
    new_out = {"kernel": jnp.zeros_like(out["kernel"]), "bias": bias.astype(out["bias"].dtype)}
    head = dict(params["params"]["head"], out=new_out)
    return dict(params, params=dict(params["params"], head=head))


def em_init_params(net, params: Any, seqs: Sequences, *, key: jax.Array, n_init: int = 5) -> Any:
    """``params`` whose head is initialised from EM on the observed steps of ``seqs``.

    Args:
      net: the ``model.GRNN`` (its K, covariance type and scale bounds are used).
      params: its variables, e.g. from ``net.init``; everything but the head's output
        layer is kept.
      seqs: training sequences in model (standardised) units.
      key: PRNG key of the EM initialisation.
      n_init: EM restarts.

    Returns:
      the new variables; see :func:`head_params_from_gmm`.

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax import gmm
      >>> from grnn_jax.data import Sequences
      >>> from grnn_jax.train import ModelConfig
      >>> seqs = Sequences(np.random.default_rng(0).normal(size=(4, 10, 2)))
      >>> net = ModelConfig(n_features=2, n_components=2, hidden_size=4).build()
      >>> p = em_init_params(net, net.init(jax.random.key(0), seqs.x[:1]), seqs,
      ...                    key=jax.random.key(1))
      >>> out = net.apply(p, seqs.x[:2])
      >>> bool(np.allclose(out.means[0, 0], out.means[1, -1]))  # the same mixture at every step
      True
    """
    if not net.lags:
        g = fit_observation_gmm(seqs, net.n_components, net.covariance_type, key=key, n_init=n_init)
        return head_params_from_gmm(params, g, min_scale=net.min_scale, max_scale=net.max_scale)
    rm = fit_observation_regression(seqs, net.n_components, net.covariance_type, net.lags,
                                    key=key, n_init=n_init)
    g = gmm_lib.GMM(rm.logits, rm.intercept, rm.prec_chol, rm.covariance_type)
    params = head_params_from_gmm(params, g, min_scale=net.min_scale, max_scale=net.max_scale)
    head = dict(params["params"]["head"], ar_coef=rm.coef.astype(
        params["params"]["head"]["ar_coef"].dtype))
    return dict(params, params=dict(params["params"], head=head))


def em_init_params_and_aux(net, params: Any, aux_state: dict, seqs: Sequences, *,
                           key: jax.Array, n_init: int = 5) -> tuple[Any, dict]:
    """EM initialisation of a run with non-gradient state (``--head em``).

    For the EM head (``aux_state`` holds its components) the global components become the
    fitted GMM's, its stepwise-EM statistics the GMM's exact per-observation statistics on
    ``seqs`` (as after a full-data E-step), and the logit layer gives the GMM's weights at
    every step (kernel zero, bias the log-weights). For the per-step head, as
    :func:`em_init_params`; other aux state is kept.

    Returns:
      (params, aux_state).
    """
    if EM_HEAD_KEY not in aux_state:
        return em_init_params(net, params, seqs, key=key, n_init=n_init), aux_state
    if regression_components(net):
        return _regression_init(net, params, aux_state, seqs, key=key, n_init=n_init)
    g = fit_observation_gmm(seqs, net.n_components, net.covariance_type, key=key, n_init=n_init)
    obs = jnp.asarray(seqs.observed(), g.means.dtype)
    stats, _ = em.e_step(g, obs)
    n = jnp.asarray(obs.shape[0], g.means.dtype)
    head = params["params"]["head"]["logits"]
    new_head = {"kernel": jnp.zeros_like(head["kernel"]),
                "bias": jax.nn.log_softmax(g.logits).astype(head["bias"].dtype)}
    params = dict(params, params=dict(params["params"], head={
        **params["params"]["head"], "logits": new_head}))
    old = aux_state[EM_HEAD_KEY]
    dt = old["stats"]["sx"].dtype
    aux = dict(aux_state)
    aux[EM_HEAD_KEY] = {
        "components": model_lib.em_collection(g.means.astype(dt), g.prec_chol.astype(dt)),
        "stats": {"n": (stats.n / n).astype(dt), "sx": (stats.sx / n).astype(dt),
                  "sxx": (stats.sxx / n).astype(dt)},
        "count": old["count"],
    }
    return params, aux


def _regression_init(net, params, aux_state, seqs, *, key, n_init):
    """:func:`em_init_params_and_aux` for regression components (lags, or the filtering head):
    components, exact per-observation statistics, and the fitted weights as the initial mixing
    (EM head) or initial regime (filtering head) logits."""
    dt = aux_state[EM_HEAD_KEY]["stats"]["sxx"].dtype
    head = dict(params["params"]["head"])
    if isinstance(net, model_lib.FilterGRNN):
        rm, stats, head = _arhmm_init(net, head, seqs, key=key)
    else:
        rm = fit_observation_regression(seqs, net.n_components, net.covariance_type, net.lags,
                                        key=key, n_init=n_init)
        stats, _ = em.regression_e_step(rm, *_observed_regressors(seqs, net.lags, rm.intercept.dtype))
        head["logits"] = {"kernel": jnp.zeros_like(head["logits"]["kernel"]),
                          "bias": jax.nn.log_softmax(rm.logits).astype(head["logits"]["bias"].dtype)}
    coef = rm.coef.astype(dt) if net.lags else None
    aux = dict(aux_state)
    aux[EM_HEAD_KEY] = {
        "components": model_lib.em_collection(rm.intercept.astype(dt), rm.prec_chol.astype(dt), coef),
        "stats": {k: (v / seqs.n_steps).astype(dt) for k, v in stats._asdict().items()},
        "count": aux_state[EM_HEAD_KEY]["count"],
    }
    return dict(params, params=dict(params["params"], head=head)), aux


def _arhmm_init(net, head: dict, seqs: Sequences, *, key):
    """The filtering head started at the Baum-Welch AR-HMM of its K and lags
    (:func:`~grnn_jax.train.em_training.arhmm_choice.arhmm_start`, the fit
    :func:`~grnn_jax.train.em_training.arhmm_choice.choose_arhmm` scores for them) on the whole
    training sequences. The transition layer's kernel becomes zero and its bias the fitted
    log-transitions (or the constant logits become them), so the model's first predictions are
    the AR-HMM's. Returns ``(regimes, their E-step statistics, the head's new parameters)``."""
    check_em_init(seqs, net.n_components)
    fit = arhmm_start(seqs, net.n_components, net.lags, covariance_type=net.covariance_type, key=key)
    k = net.n_components
    head["init_logits"] = fit.log_init.astype(head["init_logits"].dtype)
    flat = fit.log_trans.reshape(k * k)
    if net.constant_transitions:
        head["trans_logits"] = flat.astype(head["trans_logits"].dtype)
    else:
        head["trans"] = {"kernel": jnp.zeros_like(head["trans"]["kernel"]),
                         "bias": flat.astype(head["trans"]["bias"].dtype)}
    return fit.mixture, fit.stats, head


def initial_variables(cfg, net, example: Batch, *,
                      em_data: Sequences | None = None) -> tuple[Any, dict]:
    """``(params, aux_state)`` at step 0 of the run ``cfg`` (a ``TrainConfig``), as
    :func:`~grnn_jax.train.train` starts it: parameters drawn from
    ``jax.random.key(cfg.seed)``; the EM state of :func:`initial_params_and_aux` seeded on
    ``example`` (the run's first batch) when the run has one (``{}`` otherwise); with
    ``em_data`` (training sequences, model units) the head started from EM
    (:func:`em_init_params_and_aux`, key ``fold_in(key, 1)``).

    Populations call it once per member, so that each member starts exactly as its single
    run.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences, batch_at
      >>> from grnn_jax.train import ModelConfig, TrainConfig
      >>> cfg = TrainConfig(ModelConfig(n_features=1, n_components=2, hidden_size=4, head="em"))
      >>> b = batch_at(Sequences(np.random.default_rng(0).normal(size=(4, 6, 1))), 0,
      ...              batch_size=4, seed=0)
      >>> params, aux = initial_variables(cfg, cfg.model.build(), b)
      >>> sorted(aux), aux["em_head"]["count"].tolist()
      (['em_head'], 0)
    """
    key = jax.random.key(cfg.seed)
    em_key = jax.random.fold_in(key, 1)
    if uses_aux(cfg):
        params, aux = initial_params_and_aux(cfg, net, example, key=key)
        if em_data is not None:
            params, aux = em_init_params_and_aux(net, params, aux, em_data, key=em_key)
        return params, aux
    u0 = None if example.u is None else jnp.asarray(example.u)[:1, :1]
    params = net.init(key, jnp.asarray(example.x)[:1, :1], u=u0)
    if em_data is not None:
        params = em_init_params(net, params, em_data, key=em_key)
    return params, {}
