"""Training objectives by name: what ``value_and_grad`` differentiates in the train step.

Every objective has one signature,
``loss(net, params, aux_state, batch, *, noise=None) -> (loss, metrics)``:

* ``net``: the network (a ``model.GRNN``), static;
* ``params``: the gradient-trained variables (what Optax sees);
* ``aux_state``: non-gradient state (EM statistics and components; ``{}`` when unused),
  read but never differentiated;
* ``batch``: a ``data.Batch`` in model (standardised) units;
* ``noise``: the step's training-time noise (``nets.regularise.Noise``: input noise,
  variational dropout) of what the network reads, or None;
* ``loss``: a scalar, per observed step; ``metrics``: a dict of scalars that holds at least
  ``n_obs`` (the number of observed steps in the batch).

Evaluation never uses the objective: it always reports the held-out negative
log-likelihood, whatever trained the model.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from grnn_jax import model as model_lib
from grnn_jax.data import Batch
from grnn_jax.train.em_training.em_state import hidden_gmm_penalty, model_variables
from grnn_jax.train.em_training import em_objectives

LossFn = Callable[..., "tuple[jax.Array, dict]"]


def batch_loss(net, params, batch: Batch, *, noise=None) -> tuple[jax.Array, jax.Array]:
    """Mean negative log-likelihood per observed step of ``batch`` (model units), and the
    number of observed steps.

    Args:
      net: the network.
      params: its variables.
      batch: ``x`` (B, T, D), ``lengths`` (B,), optional covariates ``u`` (B, T, C).
      noise: training-time noise of what the network reads (``model.step_log_probs``).

    Returns:
      (loss (), n_obs ()).

    Example:
      >>> import jax, numpy as np
      >>> from grnn_jax.data import Sequences, batch_at
      >>> from grnn_jax.train import ModelConfig, batch_loss
      >>> net = ModelConfig(n_features=1, n_components=2, hidden_size=4).build()
      >>> b = batch_at(Sequences(np.zeros((2, 3, 1))), 0, batch_size=2, seed=0)
      >>> loss, n = batch_loss(net, net.init(jax.random.key(0), b.x), b)
      >>> int(n), bool(np.isfinite(loss))
      (6, True)
    """
    lp = model_lib.step_log_probs(net, params, batch.x, batch.lengths, batch.u, noise=noise)
    mask = model_lib.mask_from_lengths(batch.lengths, batch.x.shape[1])
    n = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask, lp, 0.0))
    return -total / jnp.maximum(n, 1).astype(total.dtype), n


def nll_loss(net, params, aux_state, batch: Batch, *, noise=None) -> tuple[jax.Array, dict]:
    """The mixture negative log-likelihood per observed step.

    ``aux_state`` supplies the EM head's components (constants here) and, when the run
    has one, the hidden-state GMM regulariser (``metrics["hidden_gmm_penalty"]``).
    """
    loss, n = batch_loss(net, model_variables(params, aux_state), batch, noise=noise)
    metrics = {"n_obs": n}
    penalty = hidden_gmm_penalty(net, params, aux_state, batch)
    if penalty is not None:
        metrics["nll"] = loss
        metrics["hidden_gmm_penalty"] = penalty
        loss = loss + penalty
    return loss, metrics


class Objective(NamedTuple):
    """A named training objective.

    Attributes:
      name: the name ``TrainConfig.objective`` and ``grnn train --objective`` use.
      loss: ``loss(net, params, aux_state, batch, *, noise=None) -> (loss, metrics)``.
      description: one line for ``--help``.
    """

    name: str
    loss: LossFn
    description: str


OBJECTIVES: dict[str, Objective] = {
    "nll": Objective("nll", nll_loss, "negative log-likelihood of the next observation"),
    "gem": Objective(
        "gem", em_objectives.gem_loss,
        "generalised EM: expected complete-data NLL, responsibilities held fixed",
    ),
    "ngem": Objective(
        "ngem", em_objectives.ngem_loss,
        "natural-gradient EM: each component's step preconditioned by its Gaussian Fisher",
    ),
}


def get_objective(name: str) -> Objective:
    """The objective called ``name``.

    Raises:
      ValueError: an unknown name (the message lists the known ones).

    Example:
      >>> from grnn_jax.train import get_objective
      >>> get_objective("nll").name
      'nll'
    """
    try:
        return OBJECTIVES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown objective {name!r}; known: {', '.join(sorted(OBJECTIVES))}"
        ) from None
