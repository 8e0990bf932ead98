"""Training: configuration, optimiser, jitted train step, evaluation, checkpoints, fit loop."""

from grnn_jax.training.checkpoint import RunCheckpoints
from grnn_jax.training.config import ModelConfig, TrainConfig, default_config, write_json_atomic
from grnn_jax.training.loop import NonFiniteTrainingError, load_trained, train
from grnn_jax.training.rundir import CONFIG_FILE, METRICS_FILE, read_metrics, read_run_config
from grnn_jax.training.step import (
    EvalResult,
    TrainState,
    batch_loss,
    evaluate,
    init_state,
    make_optimizer,
    make_schedule,
    make_train_step,
)

__all__ = [
    "CONFIG_FILE",
    "EvalResult",
    "METRICS_FILE",
    "ModelConfig",
    "NonFiniteTrainingError",
    "RunCheckpoints",
    "TrainConfig",
    "TrainState",
    "batch_loss",
    "default_config",
    "evaluate",
    "init_state",
    "load_trained",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "read_metrics",
    "read_run_config",
    "train",
    "write_json_atomic",
]
