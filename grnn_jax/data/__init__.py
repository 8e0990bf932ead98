"""Data: padded-sequence container, standardisation, splits, batching, a synthetic process
with exact log-density, and real datasets that ship with the package."""

from grnn_jax.data import duration_process, synthetic
from grnn_jax.data.duration_process import (
    DurationProcess,
    default_duration_process,
    sample_duration_process,
    uniform_durations,
)
from grnn_jax.data.batching import (
    Batch,
    batch_at,
    batches_per_epoch,
    iterate_batches,
    train_batches,
)
from grnn_jax.data.real import (
    DATASETS,
    DatasetSpec,
    dataset_splits,
    load_dataset,
    load_eustock,
    load_geyser,
    load_storms,
)
from grnn_jax.data.masks import mask_from_lengths
from grnn_jax.data.lags import lagged, regressors
from grnn_jax.data.sequences import Sequences
from grnn_jax.data.tables import TableInfo, read_csv_rows, read_csv_sequences
from grnn_jax.data.splits import Splits, chunk_series, split_indices, split_sequences, split_series
from grnn_jax.data.smoothness import linear_predictability, step_change_ratio
from grnn_jax.gmm.standardise import Standardiser
from grnn_jax.data.synthetic import SwitchingAR, default_switching_ar, sample_switching_ar

__all__ = [
    "Batch",
    "batch_at",
    "batches_per_epoch",
    "chunk_series",
    "dataset_splits",
    "DATASETS",
    "DatasetSpec",
    "default_duration_process",
    "default_switching_ar",
    "duration_process",
    "DurationProcess",
    "iterate_batches",
    "lagged",
    "linear_predictability",
    "load_dataset",
    "load_eustock",
    "load_geyser",
    "load_storms",
    "mask_from_lengths",
    "read_csv_rows",
    "read_csv_sequences",
    "regressors",
    "sample_duration_process",
    "sample_switching_ar",
    "Sequences",
    "split_indices",
    "split_sequences",
    "split_series",
    "Splits",
    "Standardiser",
    "step_change_ratio",
    "SwitchingAR",
    "synthetic",
    "TableInfo",
    "train_batches",
    "uniform_durations",
]
