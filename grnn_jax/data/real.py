"""Real datasets shipped with the package (see ``grnn_jax/datasets/SOURCES.md``), and a
registry that loads any dataset by name and splits it without leakage."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from grnn_jax.data.sequences import Sequences
from grnn_jax.data.splits import Splits, split_sequences, split_series
from grnn_jax.data.synthetic import default_switching_ar, sample_switching_ar

DATA_DIR = Path(__file__).resolve().parent.parent / "datasets"

# Durations of night-time eruptions were recorded only as short/medium/long and coded as
# exactly 2, 3 or 4 minutes; spread over their rounding interval they no longer pull a
# mixture component's variance towards zero.
GEYSER_ROUNDED = (2.0, 3.0, 4.0)
GEYSER_ROUNDING_WIDTH = 1.0


def _read_csv(name: str) -> tuple[list[str], list[list[str]]]:
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} is missing from the installation")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def load_geyser(*, dequantise: bool = True, seed: int = 0) -> np.ndarray:
    """Old Faithful eruptions (MASS ``geyser``), in time order.

    Args:
      dequantise: add seeded uniform noise of the rounding width (1 minute, centred) to
        the 78 durations recorded as exactly 2, 3 or 4 minutes.
      seed: seed of that noise.

    Returns:
      (299, 2) float64: waiting time before the eruption, eruption duration (minutes).

    Example:
      >>> from grnn_jax.data import load_geyser
      >>> x = load_geyser()
      >>> x.shape, int((x[:, 1] == 4.0).sum())
      ((299, 2), 0)
    """
    _, rows = _read_csv("geyser.csv")
    x = np.array(rows, dtype=np.float64)
    if dequantise:
        rounded = np.isin(x[:, 1], GEYSER_ROUNDED)
        jitter = np.random.default_rng(seed).uniform(-0.5, 0.5, size=int(rounded.sum()))
        x[rounded, 1] += GEYSER_ROUNDING_WIDTH * jitter
    return x


STORM_FEATURES = ("lat", "long", "wind", "pressure")


def load_storms() -> Sequences:
    """Atlantic storm tracks (dplyr ``storms``, NOAA HURDAT2), six-hourly, one sequence per
    storm (name + year), steps in time order.

    Returns:
      Sequences with x (655, 96, 4): latitude, longitude (degrees), maximum sustained wind
      (knots), central pressure (millibar); lengths 4..96.

    Example:
      >>> from grnn_jax.data import load_storms
      >>> s = load_storms()
      >>> s.x.shape, int(s.lengths.min()), int(s.lengths.max())
      ((655, 96, 4), 4, 96)
    """
    header, rows = _read_csv("storms.csv")
    col = {h: i for i, h in enumerate(header)}
    tracks: dict[tuple[str, str], list[list[float]]] = {}
    for r in rows:
        key = (r[col["name"]], r[col["year"]])
        tracks.setdefault(key, []).append([float(r[col[f]]) for f in STORM_FEATURES])
    # The file is ordered by time within each storm; dict order keeps storms in file order.
    return Sequences.from_list([np.array(v) for v in tracks.values()])


EUSTOCK_FEATURES = ("DAX", "SMI", "CAC", "FTSE")


def load_eustock(*, returns: bool = True) -> np.ndarray:
    """Daily closing prices of four European indices, 1991-1998 (R ``EuStockMarkets``).

    Args:
      returns: give daily log-returns ``log(p_t / p_{t-1})`` instead of prices.

    Returns:
      (1859, 4) log-returns, or (1860, 4) prices; columns DAX, SMI, CAC, FTSE.

    Example:
      >>> from grnn_jax.data import load_eustock
      >>> load_eustock().shape, load_eustock(returns=False).shape
      ((1859, 4), (1860, 4))
    """
    _, rows = _read_csv("eustock.csv")
    prices = np.array(rows, dtype=np.float64)
    return np.diff(np.log(prices), axis=0) if returns else prices


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to load and split one named dataset.

    Attributes:
      load: () -> a (T, D) series or Sequences.
      kind: "series" (split in time order, train cut into ``window``-step chunks) or
        "sequences" (split by sequence, seeded).
      window: training chunk length for a series.
      description: one line for listings.
    """

    load: Callable[[], np.ndarray | Sequences]
    kind: str
    window: int | None
    description: str


def _switching_ar_all() -> Sequences:
    seqs, _ = sample_switching_ar(default_switching_ar(2), seed=0, n_sequences=200, length=50)
    return seqs


DATASETS: dict[str, DatasetSpec] = {
    "geyser": DatasetSpec(load_geyser, "series", 50, "Old Faithful waiting/duration, 299 x 2"),
    "storms": DatasetSpec(load_storms, "sequences", None, "Atlantic storm tracks, 655 x (4..96) x 4"),
    "eustock": DatasetSpec(load_eustock, "series", 100, "EU index daily log-returns, 1859 x 4"),
    "switching_ar": DatasetSpec(
        _switching_ar_all, "sequences", None, "synthetic 2-regime switching AR, 200 x 50 x 2"
    ),
}


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str) -> Sequences:
    """The whole dataset ``name`` as Sequences (a single series is one sequence).

    Example:
      >>> from grnn_jax.data import load_dataset
      >>> load_dataset("geyser").x.shape
      (1, 299, 2)
    """
    data = _spec(name).load()
    return data if isinstance(data, Sequences) else Sequences(np.asarray(data)[None])


def dataset_splits(
    name: str, fractions=(0.7, 0.15, 0.15), *, seed: int = 0, window: int | None = None
) -> Splits:
    """Train/validation/test splits of dataset ``name``.

    A series is split in time order (test is its last part) and its training part cut into
    ``window``-step chunks (the spec's default when None); validation and test stay whole.
    A set of sequences is split by sequence with ``seed``.

    Example:
      >>> from grnn_jax.data import dataset_splits
      >>> sp = dataset_splits("geyser")
      >>> sp.train.x.shape, sp.val.x.shape, sp.test.x.shape
      ((5, 50, 2), (1, 45, 2), (1, 45, 2))
    """
    spec = _spec(name)
    data = spec.load()
    if spec.kind == "series":
        return split_series(np.asarray(data), fractions, window=window or spec.window)
    return split_sequences(data, fractions, seed=seed)
