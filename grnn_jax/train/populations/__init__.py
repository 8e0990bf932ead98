"""Many models in one program or one command: populations (a leading member axis, one
compiled program), ensembles of their members, sweeps over static settings, and the race that
chooses a run's head and lags on validation data."""

from grnn_jax.train.populations.model_race import (
    DEFAULT_CANDIDATES,
    HALVING,
    WIDE_CANDIDATES,
    Candidate,
    RaceResult,
    paired_z,
    race,
    rank_candidates,
    validation_blocks,
)
from grnn_jax.train.populations.population import (
    PopulationResult,
    default_members,
    train_population,
)
from grnn_jax.train.populations.sweep_grid import run_sweep

__all__ = [
    "Candidate",
    "DEFAULT_CANDIDATES",
    "HALVING",
    "WIDE_CANDIDATES",
    "PopulationResult",
    "RaceResult",
    "default_members",
    "paired_z",
    "race",
    "rank_candidates",
    "run_sweep",
    "train_population",
    "validation_blocks",
]
