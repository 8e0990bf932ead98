"""Resolving a run's configuration from files, ``KEY=VALUE`` overrides and the data: experiment
config files (``get_config() -> dict``), dotted overrides, defaults scaled to the training data,
and the train/validation splits a config or a data file implies.

Used by the ``grnn`` command line and by ``experiments/`` alike.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib.util
import os
from pathlib import Path

import numpy as np

from grnn_jax.data import Sequences, dataset_splits
from grnn_jax.train.config import ModelConfig, TrainConfig, default_config

# Keys of an experiment config that describe the data or the experiment rather than training.
DATA_KEYS = ("dataset", "window", "split_seed", "val_fraction")
EXPERIMENT_KEY = "experiment"
_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "model")


def load_config_file(path: str | os.PathLike) -> dict:
    """Imports a config file and returns a deep copy of its ``get_config()``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: no ``get_config``, or it does not return a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_grnn_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a config is user code: report any failure as bad input
        raise ValueError(f"config {path} failed to load: {type(err).__name__}: {err}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"config {path} defines no get_config()")
    cfg = module.get_config()
    if not isinstance(cfg, dict):
        raise ValueError(f"get_config() of {path} must return a dict; got {type(cfg).__name__}")
    return copy.deepcopy(cfg)


def parse_value(text: str):
    """Reads an override's value: a Python literal, else true/false/none, else the text.

    Example:
      >>> [parse_value(t) for t in ("3", "1e-3", "gru", "True", "null", "[1, 2]")]
      [3, 0.001, 'gru', True, None, [1, 2]]
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def _canonical_key(key: str) -> list[str]:
    parts = key.split(".")
    if len(parts) == 1 and parts[0] in _MODEL_FIELDS:
        return ["model", parts[0]]  # shorthand: hidden_size=64 means model.hidden_size
    return parts


def set_entry(cfg: dict, key: str, value) -> dict:
    """Sets a dotted ``key`` (``model.hidden_size``; a bare model field is read as one) in place.

    Example:
      >>> set_entry({}, "hidden_size", 8)
      {'model': {'hidden_size': 8}}
    """
    parts = _canonical_key(key)
    if not all(parts):
        raise ValueError(f"malformed config key {key!r}")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"config entry {p!r} is not a section; cannot set {key!r}")
    node[parts[-1]] = value
    return cfg


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Applies ``KEY=VALUE`` strings (values read as Python literals, else as strings).

    Example:
      >>> apply_overrides({"num_steps": 5}, ["num_steps=10", "model.cell=gru", "lr_note=slow"])
      {'num_steps': 10, 'model': {'cell': 'gru'}, 'lr_note': 'slow'}
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE; got {item!r}")
        set_entry(cfg, key.strip(), parse_value(text.strip()))
    return cfg


def resolve_train_config(cfg: dict, train_seqs: Sequences) -> TrainConfig:
    """``default_config(train_seqs)`` (with its schedule derived from ``cfg``'s
    ``num_steps`` when given) with the training entries of ``cfg`` laid over it.

    ``cfg`` may hold TrainConfig fields, a ``model`` section of ModelConfig fields (or bare
    model fields), data keys (``dataset``, ``window``, ``split_seed``, ``val_fraction``) and an
    ``experiment`` section; the last two are not training settings and are skipped here.

    Raises:
      ValueError: an unknown key, or a value that TrainConfig.validate refuses.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> c = resolve_train_config({"dataset": "x", "hidden_size": 8, "num_steps": 5},
      ...                          Sequences(np.zeros((4, 10, 2))))
      >>> c.model.hidden_size, c.model.n_features, c.num_steps
      (8, 2, 5)
    """
    # A budget given without a schedule gets the schedule and evaluation grid derived from it.
    steps = cfg.get("num_steps")
    budget = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1 else None
    base = default_config(train_seqs, num_steps=budget).to_dict()
    for key, value in cfg.items():
        if key in DATA_KEYS or key == EXPERIMENT_KEY:
            continue
        if key == "model":
            if not isinstance(value, dict):
                raise ValueError("config entry 'model' must be a dict of model settings")
            unknown = sorted(set(value) - set(_MODEL_FIELDS))
            if unknown:
                raise ValueError(f"unknown model settings {unknown}; known: {list(_MODEL_FIELDS)}")
            base["model"].update(value)
        elif key in _MODEL_FIELDS:
            base["model"][key] = value
        elif key in _TRAIN_FIELDS:
            base[key] = value
        else:
            raise ValueError(
                f"unknown config key {key!r}; known: {list(_TRAIN_FIELDS)}, model.*, "
                f"{list(DATA_KEYS)}, {EXPERIMENT_KEY!r}")
    if base["model"]["n_features"] != train_seqs.n_features:
        raise ValueError(f"the config's model.n_features is {base['model']['n_features']}; the data "
                         f"have {train_seqs.n_features} features")
    try:
        return TrainConfig.from_dict(base).validate()
    except TypeError as err:
        raise ValueError(f"bad config value: {err}") from None



def split_validation(seqs: Sequences, fraction: float, *, seed: int) -> tuple[Sequences, Sequences | None]:
    """(train, validation): a seeded share of the sequences, or the last part of a single one.

    ``fraction = 0`` keeps everything for training (no validation, the last parameters kept).

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> one = Sequences(np.zeros((1, 20, 2)), u=np.arange(20.0).reshape(1, 20, 1))
      >>> tr, va = split_validation(one, 0.25, seed=0)
      >>> tr.x.shape, va.x.shape, va.u[0, :, 0].tolist()  # covariates cut with their steps
      ((1, 15, 2), (1, 5, 2), [15.0, 16.0, 17.0, 18.0, 19.0])
      >>> tr, va = split_validation(Sequences(np.zeros((8, 5, 2))), 0.25, seed=0)
      >>> tr.n_sequences, va.n_sequences
      (6, 2)
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"--val-fraction must lie in [0, 1); got {fraction}")
    if fraction == 0:
        return seqs, None
    if seqs.n_sequences == 1:
        n = int(seqs.lengths[0])
        n_val = int(round(fraction * n))
        if n_val < 1 or n - n_val < 2:
            raise ValueError(f"one sequence of {n} steps is too short to hold out {fraction:.0%} "
                             "for validation; pass --val-fraction 0 or more data")
        x = seqs.x[0, :n]
        u = None if seqs.u is None else seqs.u[0, :n]
        cut = n - n_val
        return (Sequences(x[None, :cut], u=None if u is None else u[None, :cut]),
                Sequences(x[None, cut:], u=None if u is None else u[None, cut:]))
    n_val = max(1, int(round(fraction * seqs.n_sequences)))
    if n_val >= seqs.n_sequences:
        raise ValueError(f"{seqs.n_sequences} sequences cannot be split with --val-fraction {fraction}; "
                         "pass --val-fraction 0 or more sequences")
    perm = np.random.default_rng(seed).permutation(seqs.n_sequences)
    return seqs.select(np.sort(perm[n_val:])), seqs.select(np.sort(perm[:n_val]))


def config_splits(cfg: dict, *, seed: int = 0):
    """Train/validation/test splits of the dataset a config names (``dataset``, ``window``,
    ``split_seed``)."""
    name = cfg.get("dataset")
    if name is None:
        raise ValueError("the config names no 'dataset'; pass --data")
    return dataset_splits(str(name), seed=int(cfg.get("split_seed", seed)), window=cfg.get("window"))
