"""Ensembles of population members: the equal-weight mixture of M members' predictive
mixtures, written as one GMM per step (the M * K components concatenated, log-weights
minus log M), its held-out NLL, and reading back the ensemble a population run saved."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from grnn_jax import gmm as gmm_lib
from grnn_jax import model as model_lib
from grnn_jax.data import Sequences, Standardiser
from grnn_jax.train.config import TrainConfig
from grnn_jax.train.rundir import read_run_config
from grnn_jax.train.step import heldout_sum
from grnn_jax._util.dtypes import default_float

POPULATION_FILE = "population.json"
ENSEMBLE_DIR = "ensemble"


def ensemble_gmm(net, params, x, u=None) -> gmm_lib.GMM:
    """The equal-weight mixture of M members' step mixtures as one GMM per step.

    Each step's GMM has the M * K components of the members, concatenated, with log-weights
    ``log_softmax(member logits) - log M``. Members with a tied covariance differ in the
    covariance they share, so their ensemble is a full-covariance mixture.

    Args:
      net: the network (all members share it).
      params: stacked variables of the M members (leading axis M).
      x: (B, T, D) observations in model units.
      u: optional (B, T, C) covariates.

    Returns:
      GMM with batch shape (B, T) and M * K components.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from grnn_jax import gmm
      >>> from grnn_jax.train import ModelConfig
      >>> net = ModelConfig(n_features=1, n_components=2, hidden_size=4).build()
      >>> x = jnp.zeros((1, 3, 1))
      >>> ps = jax.vmap(lambda k: net.init(k, x))(jax.random.split(jax.random.key(0), 2))
      >>> g = ensemble_gmm(net, ps, x)
      >>> g.logits.shape
      (1, 3, 4)
    """
    gs = jax.vmap(lambda p: net.apply(p, x, u))(params)
    if gs.covariance_type == "tied":
        gs = gmm_lib.as_full(gs)
    m = jax.tree.leaves(params)[0].shape[0]
    logw = jax.nn.log_softmax(gs.logits, axis=-1) - jnp.log(m)

    def cat(a):  # (M, B, T, K, ...) -> (B, T, M * K, ...)
        a = jnp.moveaxis(a, 0, 2)
        return a.reshape(a.shape[:2] + (-1,) + a.shape[4:])

    return gmm_lib.GMM(cat(logw), cat(gs.means), cat(gs.prec_chol), gs.covariance_type)


@functools.partial(jax.jit, static_argnums=0)
def _ensemble_log_lik(net, params, x, lengths, u):
    mask = model_lib.mask_from_lengths(lengths, x.shape[1])
    x = jnp.where(mask[..., None], x, 0)
    lp = gmm_lib.log_prob(ensemble_gmm(net, params, x, u), x)
    return jnp.sum(jnp.where(mask, lp, 0.0))


def evaluate_ensemble(net, params, seqs: Sequences, *, standardiser: Standardiser | None = None,
                      batch_size: int = 64) -> float:
    """Held-out NLL per observed step (original units) of :func:`ensemble_gmm`."""
    total, n, log_det = heldout_sum(lambda b: _ensemble_log_lik(net, params, *b), seqs,
                                    standardiser, batch_size)
    return -float(total) / n + log_det


def load_ensemble(workdir: str | Path):
    """The ensemble a population run saved (``train_population(..., ensemble=M)``).

    Returns:
      (net, stacked params of the M members, standardiser, the population record).

    Raises:
      FileNotFoundError: the work dir holds no saved ensemble.
    """
    workdir = Path(workdir)
    path = workdir / POPULATION_FILE
    if not path.exists() or not (workdir / ENSEMBLE_DIR).exists():
        raise FileNotFoundError(f"{workdir} holds no population ensemble")
    record = json.loads(path.read_text())
    saved = read_run_config(workdir)
    cfg = TrainConfig.from_dict(record["train_config"])
    net = cfg.model.build()
    m = len(record["ensemble"]["members"])
    dtype = default_float()
    x = jnp.zeros((1, 1, cfg.model.n_features), dtype)
    u = jnp.zeros((1, 1, cfg.model.n_covariates), dtype) if cfg.model.n_covariates else None
    abstract = jax.eval_shape(
        lambda: jax.vmap(lambda k: net.init(k, x, u=u))(jax.random.split(jax.random.key(0), m)))
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore((workdir / ENSEMBLE_DIR).resolve(), abstract)
    return net, params, Standardiser.from_dict(saved["standardiser"]), record
