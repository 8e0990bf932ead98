"""Run configuration: model sizes and optimisation settings, JSON round trip, and defaults
chosen from the size and dimension of the training data."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from grnn_jax.data import Sequences
from grnn_jax.training.objectives import get_objective


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Arguments of ``grnn_jax.model.GRNN`` (everything needed to rebuild the network)."""

    n_features: int
    n_components: int = 3
    covariance_type: str = "full"
    cell: str = "lstm"
    hidden_size: int = 64
    n_layers: int = 1
    n_covariates: int = 0

    def build(self):
        """The Flax module these settings describe."""
        import jax.numpy as jnp

        from grnn_jax import model

        # float64 parameters when jax_enable_x64 is on, float32 otherwise.
        return model.GRNN(**dataclasses.asdict(self), dtype=jnp.zeros(()).dtype)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run besides the data.

    Attributes:
      model: network sizes.
      num_steps: optimiser steps in the whole run (the schedule's length).
      batch_size: sequences per batch.
      learning_rate: peak learning rate of the warm-up + cosine schedule.
      warmup_steps: linear warm-up from 0 to ``learning_rate``.
      end_lr_fraction: the cosine decays to ``learning_rate * end_lr_fraction``.
      weight_decay: AdamW decoupled weight decay.
      clip_norm: global gradient-norm clip.
      eval_every: steps between validation evaluations (and "last" checkpoints).
      patience: stop after this many evaluations without a better validation NLL
        (0: never stop early; the best checkpoint is kept either way).
      max_consecutive_skips: stop after this many consecutive non-finite steps.
      log_every: steps between reads of the training metrics on the host.
      seed: seeds parameter initialisation and batch shuffling.
      standardise: fit a per-feature standardisation on the training split.
      objective: what the optimiser minimises, by name (``training.OBJECTIVES``); evaluation
        always reports the held-out NLL.
    """

    model: ModelConfig
    num_steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    end_lr_fraction: float = 0.01
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    eval_every: int = 50
    patience: int = 0
    max_consecutive_skips: int = 20
    log_every: int = 10
    seed: int = 0
    standardise: bool = True
    objective: str = "nll"

    def validate(self) -> "TrainConfig":
        """Raises ValueError on a setting outside its legal range; returns self."""
        m = self.model
        ints = {
            "model.n_features": m.n_features, "model.n_components": m.n_components,
            "model.hidden_size": m.hidden_size, "model.n_layers": m.n_layers,
            "num_steps": self.num_steps, "batch_size": self.batch_size,
            "eval_every": self.eval_every, "max_consecutive_skips": self.max_consecutive_skips,
            "log_every": self.log_every,
        }
        for name, v in ints.items():
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if m.n_covariates < 0 or self.warmup_steps < 0 or self.patience < 0:
            raise ValueError("n_covariates, warmup_steps and patience must be >= 0")
        for name in ("learning_rate", "clip_norm"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be positive; got {v!r}")
        if not (0 <= self.end_lr_fraction <= 1) or not (self.weight_decay >= 0):
            raise ValueError("end_lr_fraction must lie in [0, 1] and weight_decay be >= 0")
        get_objective(self.objective)  # raises on an unknown name, listing the known ones
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        model = ModelConfig(**d.pop("model"))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(model=model, **d)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed; ``model=`` may be a dict of model changes."""
        if isinstance(changes.get("model"), dict):
            changes["model"] = dataclasses.replace(self.model, **changes["model"])
        return dataclasses.replace(self, **changes)


def default_config(train: Sequences) -> TrainConfig:
    """Settings scaled to the training data, so that a run with nothing else given is a
    reasonable baseline (it should beat a static GMM on held-out steps of sequential data).

    Bigger data get a wider network and more components; the budget is about 150 epochs,
    clipped to [400, 3000] steps; validation every 4% of the run (at least 20 steps), early
    stopping after 8 evaluations without improvement, and the best checkpoint kept: small
    sets overfit within a few hundred steps, so selection on validation does the regularising.

    Example:
      >>> import numpy as np
      >>> from grnn_jax.data import Sequences
      >>> from grnn_jax.training import default_config
      >>> c = default_config(Sequences(np.zeros((10, 50, 2))))
      >>> c.model.hidden_size, c.model.n_components, c.batch_size, c.num_steps
      (32, 3, 10, 400)
    """
    n, d, s = train.n_steps, train.n_features, train.n_sequences
    hidden = 32 if n <= 5_000 else 64 if n <= 100_000 else 128
    k = 3 if n <= 5_000 else 5
    ctype = "full" if d <= 8 else "diag"
    batch = int(min(32, s))
    per_epoch = max(1, s // batch)
    steps = int(min(3000, max(400, 150 * per_epoch)))
    return TrainConfig(
        model=ModelConfig(
            n_features=d, n_components=k, covariance_type=ctype, cell="lstm",
            hidden_size=hidden, n_layers=1, n_covariates=train.n_covariates,
        ),
        num_steps=steps,
        batch_size=batch,
        learning_rate=3e-3,
        warmup_steps=max(10, steps // 20),
        eval_every=max(20, steps // 25),
        patience=8,
    )


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Writes JSON to a temporary file beside ``path`` and renames it over ``path``, so a
    crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
