"""Training: configuration and its resolution, objectives, optimiser, jitted train step,
evaluation, checkpoints, fit loop."""

from grnn_jax.training.checkpoint import RunCheckpoints
from grnn_jax.training.config import (
    ModelConfig,
    TrainConfig,
    config_diff,
    default_config,
    write_json_atomic,
)
from grnn_jax.training.loop import (
    NonFiniteTrainingError,
    RunConfigMismatch,
    TrainingInterrupted,
    load_trained,
    train,
)
from grnn_jax.training.objectives import OBJECTIVES, Objective, batch_loss, get_objective
from grnn_jax.training.progress import RunProgress
from grnn_jax.training.resolve import (
    DATA_KEYS,
    apply_overrides,
    config_splits,
    load_config_file,
    resolve_train_config,
    set_entry,
    split_validation,
)
from grnn_jax.training.rundir import CONFIG_FILE, METRICS_FILE, read_metrics, read_run_config
from grnn_jax.training.step import (
    EvalResult,
    TrainState,
    evaluate,
    init_state,
    make_optimizer,
    make_schedule,
    make_train_step,
)

__all__ = [
    "CONFIG_FILE",
    "DATA_KEYS",
    "EvalResult",
    "METRICS_FILE",
    "ModelConfig",
    "NonFiniteTrainingError",
    "OBJECTIVES",
    "Objective",
    "RunCheckpoints",
    "RunConfigMismatch",
    "RunProgress",
    "TrainConfig",
    "TrainState",
    "TrainingInterrupted",
    "apply_overrides",
    "batch_loss",
    "config_diff",
    "config_splits",
    "default_config",
    "evaluate",
    "get_objective",
    "init_state",
    "load_config_file",
    "load_trained",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "read_metrics",
    "read_run_config",
    "resolve_train_config",
    "set_entry",
    "split_validation",
    "train",
    "write_json_atomic",
]
