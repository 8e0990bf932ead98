"""Training: configuration and its resolution, objectives, optimiser, jitted train step,
evaluation, checkpoints, fit loop (this package); EM inside training (``em_training``),
populations, sweeps and the model race (``populations``), devices and hosts
(``distributed``)."""

from grnn_jax._util.atomic import write_json_atomic
from grnn_jax.train.checkpoint import RunCheckpoints
from grnn_jax.train.config import (
    HEADS,
    ModelConfig,
    TrainConfig,
    check_head,
    config_diff,
    default_config,
)
from grnn_jax.train.em_training.em_init import (
    check_em_init,
    em_init_params,
    em_init_params_and_aux,
    fit_observation_gmm,
    head_params_from_gmm,
    initial_variables,
)
from grnn_jax.train.em_training.em_objectives import (
    gem_loss,
    make_ngem_loss,
    natural_steps,
    ngem_loss,
    ngem_surrogate,
)
from grnn_jax.train.em_training.em_state import (
    aux_settings,
    hidden_gmm,
    initial_params_and_aux,
    make_aux_update,
    model_variables,
)
from grnn_jax.train.loop import NonFiniteTrainingError, TrainingInterrupted, train
from grnn_jax.train.run_state import RunConfigMismatch, load_train_state, load_trained
from grnn_jax.train.convergence import budget_warning, run_warning, still_improving, sweep_warning
from grnn_jax.train.objectives import OBJECTIVES, Objective, batch_loss, get_objective
from grnn_jax.train.progress import RunProgress
from grnn_jax.train.resolve import (
    DATA_KEYS,
    apply_overrides,
    config_splits,
    load_config_file,
    resolve_train_config,
    set_entry,
    split_validation,
)
from grnn_jax.train.em_training.hidden_regimes import (
    HiddenGMMFit,
    RegimeComponents,
    collect_hidden_states,
    fit_hidden_gmm,
    hidden_gmm_labels,
    regime_components,
    regime_probabilities,
    steps_of,
)
from grnn_jax.train.populations.ensemble import ensemble_gmm, evaluate_ensemble, load_ensemble
from grnn_jax.train.populations.model_race import RaceResult, race
from grnn_jax.train.rundir import CONFIG_FILE, METRICS_FILE, read_metrics, read_run_config
from grnn_jax.train.step import (
    EvalResult,
    TrainState,
    evaluate,
    init_state,
    make_train_step,
    noise_key,
)
from grnn_jax.train.optimizer import (
    OPTIMIZERS,
    check_optimizer,
    make_optimizer,
    make_schedule,
    optimizer_chain,
)
from grnn_jax.model.regularise import Regulariser

__all__ = [
    "apply_overrides",
    "aux_settings",
    "batch_loss",
    "budget_warning",
    "check_em_init",
    "check_head",
    "check_optimizer",
    "collect_hidden_states",
    "config_diff",
    "CONFIG_FILE",
    "config_splits",
    "DATA_KEYS",
    "default_config",
    "em_init_params",
    "em_init_params_and_aux",
    "ensemble_gmm",
    "EvalResult",
    "evaluate",
    "evaluate_ensemble",
    "fit_hidden_gmm",
    "fit_observation_gmm",
    "gem_loss",
    "get_objective",
    "head_params_from_gmm",
    "HEADS",
    "hidden_gmm",
    "hidden_gmm_labels",
    "HiddenGMMFit",
    "init_state",
    "initial_params_and_aux",
    "initial_variables",
    "load_config_file",
    "load_ensemble",
    "load_train_state",
    "load_trained",
    "make_aux_update",
    "make_ngem_loss",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "METRICS_FILE",
    "model_variables",
    "ModelConfig",
    "natural_steps",
    "ngem_loss",
    "ngem_surrogate",
    "noise_key",
    "NonFiniteTrainingError",
    "Objective",
    "OBJECTIVES",
    "optimizer_chain",
    "OPTIMIZERS",
    "race",
    "RaceResult",
    "read_metrics",
    "read_run_config",
    "regime_components",
    "regime_probabilities",
    "RegimeComponents",
    "Regulariser",
    "resolve_train_config",
    "run_warning",
    "RunCheckpoints",
    "RunConfigMismatch",
    "RunProgress",
    "set_entry",
    "split_validation",
    "steps_of",
    "still_improving",
    "sweep_warning",
    "train",
    "TrainConfig",
    "TrainingInterrupted",
    "TrainState",
    "write_json_atomic",
]
