"""A run's pieces around the fit loop: every check before anything is written, the compiled
train step (cached), the step-0 state, and rebuilding a trained run from its work dir alone."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp

from grnn_jax._util.dtypes import default_float
from grnn_jax.data import Batch, Sequences, Standardiser
from grnn_jax.train.checkpoint import RunCheckpoints
from grnn_jax.train.config import TrainConfig, check_lags, config_diff, default_config
from grnn_jax.train.em_training.em_init import check_em_init, initial_variables
from grnn_jax.train.em_training.em_state import (
    aux_settings,
    make_aux_update,
    model_variables,
    uses_aux,
)
from grnn_jax.train.optimizer import make_optimizer, make_schedule
from grnn_jax.train.rundir import CONFIG_FILE, fingerprint, read_run_config
from grnn_jax.train.step import TrainState, init_state, make_train_step


class RunConfigMismatch(ValueError):
    """The work dir holds a run whose settings differ from the ones given.

    Attributes:
      diff: ``{dotted key: (saved value, given value)}``.
    """

    def __init__(self, workdir, diff: dict):
        self.workdir, self.diff = workdir, diff
        changes = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
        super().__init__(
            f"{workdir} holds a run with different settings ({changes}); pass the same config "
            "(or None) to resume it, or resume=False to start over"
        )


def check_seqs(seqs, name: str) -> Sequences:
    if not isinstance(seqs, Sequences):
        raise ValueError(f"{name} must be a grnn_jax.data.Sequences; got {type(seqs).__name__}")
    return seqs


def optimizer_settings(cfg: TrainConfig) -> dict:
    return dict(
        learning_rate=cfg.learning_rate, num_steps=cfg.num_steps, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm, end_lr_fraction=cfg.end_lr_fraction,
        optimizer=cfg.optimizer, momentum=cfg.momentum,
    )


def compiled(cfg: TrainConfig, x64: bool):
    """(net, tx, jitted train step, jitted schedule) for a config, cached on what they depend
    on, so that resuming, re-running or early-stopping variants in one process do not compile
    the step again (``x64`` is part of the key because every dtype follows it)."""
    return compiled_cached(
        cfg.model, tuple(sorted(optimizer_settings(cfg).items())), cfg.objective,
        aux_settings(cfg), cfg.regulariser, x64,
    )


@functools.lru_cache(maxsize=8)
def compiled_cached(model_cfg, opt_items: tuple, objective: str, aux: tuple, regulariser,
                     x64: bool):
    del x64  # only a cache key
    opt = dict(opt_items)
    net = model_cfg.build()
    tx = make_optimizer(**opt)
    for name in ("weight_decay", "clip_norm", "optimizer", "momentum"):
        opt.pop(name)
    schedule = jax.jit(make_schedule(**opt))
    step = make_train_step(net, tx, objective=objective, aux_update=make_aux_update(*aux),
                           regulariser=regulariser)
    return net, tx, step, schedule


def initial_state(cfg: TrainConfig, net, tx, example: Batch,
                   em_data: Sequences | None = None) -> TrainState:
    """The step-0 state; runs with EM state (EM head, hidden-state GMM) get their
    ``aux_state`` seeded on ``example`` (:mod:`grnn_jax.train.em_training.em_state`); with
    ``em_data`` (model units) the head starts from a GMM fitted by EM to its observed steps
    (:func:`~grnn_jax.train.em_training.em_init.initial_variables`)."""
    key = jax.random.key(cfg.seed)
    if not uses_aux(cfg) and em_data is None:
        return init_state(net, tx, example, key=key)
    params, aux = initial_variables(cfg, net, example, em_data=em_data)
    return init_state(net, tx, example, key=key, params=params, aux_state=aux)


def prepare_run(config, train_seqs, val_seqs, workdir, resume, until_step):
    """Every check, with nothing written: returns (config, standardiser, resuming)."""
    train_seqs = check_seqs(train_seqs, "train data")
    if until_step is not None and int(until_step) < 0:
        raise ValueError(f"until_step must be >= 0; got {until_step}")
    if val_seqs is not None:
        check_seqs(val_seqs, "validation data")
        if val_seqs.n_features != train_seqs.n_features:
            raise ValueError(
                f"validation data have {val_seqs.n_features} features; training data have "
                f"{train_seqs.n_features}"
            )
        if val_seqs.n_covariates != train_seqs.n_covariates:
            raise ValueError("validation and training data have different numbers of covariates")
    d = train_seqs.n_features
    saved = None
    if resume and (Path(workdir) / CONFIG_FILE).exists():
        saved = read_run_config(workdir)
        if int(saved["n_features"]) != d:
            raise ValueError(
                f"{workdir} holds a model of {saved['n_features']} features; the data have {d}"
            )
        if saved.get("train_data_sha256") not in (None, fingerprint(train_seqs)):
            raise ValueError(
                f"the training data differ from those of the run in {workdir}; resuming needs "
                "the same data (or resume=False to start over)"
            )
        saved_cfg = TrainConfig.from_dict(saved["train_config"])
        if config is not None and config != saved_cfg:
            raise RunConfigMismatch(workdir, config_diff(saved_cfg, config))
        config = saved_cfg
    if config is None:
        config = default_config(train_seqs)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    config.validate()
    if config.model.n_features != d:
        raise ValueError(f"the model expects {config.model.n_features} features; the data have {d}")
    if config.model.n_covariates != train_seqs.n_covariates:
        raise ValueError(
            f"the model expects {config.model.n_covariates} covariates; the data have "
            f"{train_seqs.n_covariates}"
        )
    check_lags(config.model.lags, train_seqs)
    if config.em_init:
        check_em_init(train_seqs, config.model.n_components)
    if saved is not None:
        standardiser = Standardiser.from_dict(saved["standardiser"])
    elif config.standardise:
        standardiser = Standardiser.fit(train_seqs)
    else:
        standardiser = Standardiser.identity(d)
    return config, standardiser, saved is not None


def load_trained(workdir: str | Path, *, which: str = "best"):
    """Rebuilds a trained model from its work dir alone.

    Args:
      workdir: a directory written by :func:`grnn_jax.train.train`.
      which: "best" (lowest validation NLL; falls back to "last" when the run had no
        validation data) or "last".

    Returns:
      (net, params, standardiser, config); see the example of :func:`grnn_jax.train.train`. ``params`` is
      the network's whole variables dict (for the EM head, its components included), what
      every function of ``grnn_jax.model`` and :func:`evaluate` take.

    Raises:
      FileNotFoundError: no run or no checkpoint there.
      ValueError: unknown ``which``.
    """
    net, state, standardiser, config = load_train_state(workdir, which=which)
    return net, model_variables(state.params, state.aux_state), standardiser, config


def load_train_state(workdir: str | Path, *, which: str = "best"):
    """Like :func:`load_trained`, but returns the whole checkpointed :class:`TrainState`
    (``aux_state`` included, e.g. the hidden-state GMM of a ``hidden_gmm`` run) in place of
    the variables: ``(net, state, standardiser, config)``."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last'; got {which!r}")
    saved = read_run_config(workdir)
    config = TrainConfig.from_dict(saved["train_config"])
    standardiser = Standardiser.from_dict(saved["standardiser"])
    net = config.model.build()
    tx = make_optimizer(**optimizer_settings(config))
    d, c = config.model.n_features, config.model.n_covariates
    dtype = default_float()
    x = jnp.zeros((1, 2, d), dtype)
    u = jnp.zeros((1, 2, c), dtype) if c else None

    example = Batch(x=x, lengths=jnp.full((1,), 2, jnp.int32), u=u)
    abstract = jax.eval_shape(lambda: initial_state(config, net, tx, example))
    with RunCheckpoints(workdir, read_only=True) as ckpts:
        kind = which if ckpts.latest_step(which) is not None else "last"
        state, _ = ckpts.restore(kind, abstract)
    return net, state, standardiser, config
