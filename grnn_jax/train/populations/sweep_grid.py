"""Sweeps: a grid over static settings (K, hidden size, cell, covariance type, layers...),
each point a population (:mod:`grnn_jax.train.populations.population`), judged on validation only.

A sweep directory holds ``sweep.json`` (the grid, the shared settings, the population and
fingerprints of the data: what makes it this sweep), ``points/<name>/`` (one population run
per grid point, its best member readable by ``grnn evaluate``), ``results.jsonl`` and
``results.csv`` (one row per trained member, rewritten atomically after every point) and
``val_nll.png`` (best validation NLL per point against K and hidden size). A member whose
best validation NLL came at its last step is marked ``still_improving`` (its training budget
was probably too short; :mod:`grnn_jax.train.convergence`). A point whose
``population.json`` exists is finished: running the sweep again skips it, so an
interrupted sweep resumes where it stopped. Test data never enter: the functions take a
training and a validation split only.

Grid keys are the settings' short names, as ``grnn train --set`` takes them
(``hidden_size``, ``n_components``, ``learning_rate``...); the dotted form of a model setting
(``model.hidden_size``) is accepted as an alias and stored in its short form.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import time
from pathlib import Path

from grnn_jax.data import Sequences
from grnn_jax._util.atomic import atomic_open, write_json_atomic
from grnn_jax.train.convergence import still_improving
from grnn_jax.train.populations.population import (
    POPULATION_FILE,
    check_population,
    default_members,
    train_population,
)
from grnn_jax.train.resolve import (
    _MODEL_FIELDS,
    _TRAIN_FIELDS,
    parse_value,
    resolve_train_config,
    set_entry,
)
from grnn_jax.train.rundir import fingerprint
from grnn_jax._util import jsonio

SWEEP_FILE = "sweep.json"
RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
PLOT_FILE = "val_nll.png"
SWEEP_FORMAT = 1


def grid_key(key: str) -> str:
    """The short name of a swept setting: ``"model.hidden_size"`` and ``"hidden_size"`` both
    give ``"hidden_size"`` (model and training settings share one namespace).

    Raises:
      ValueError: a key that is not a setting (one line naming the known ones).

    Example:
      >>> grid_key("model.cell"), grid_key(" learning_rate ")
      ('cell', 'learning_rate')
    """
    key = key.strip()
    name = key.removeprefix("model.")
    if name in _MODEL_FIELDS or (name == key and name in _TRAIN_FIELDS):
        return name
    raise ValueError(
        f"--grid key {key!r} is not a setting; known: {', '.join(_MODEL_FIELDS[1:])} and "
        f"{', '.join(_TRAIN_FIELDS)} (a model setting may also be written model.NAME)")


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["hidden_size=32,64", "n_components=3,5"]`` -> ``{"hidden_size": [32, 64], ...}``.

    Raises:
      ValueError: a malformed item, a key that is not a setting, an empty value, a key
        given twice, or no item at all (one line each).

    Example:
      >>> parse_grid(["hidden_size=32,64", "model.cell=lstm,gru"])
      {'hidden_size': [32, 64], 'cell': ['lstm', 'gru']}
    """
    if not items:
        raise ValueError("--grid is required: give at least one KEY=V1,V2,...")
    grid: dict[str, list] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--grid expects KEY=V1,V2,...; got {item!r}")
        name = grid_key(key)
        if name == "n_features":
            raise ValueError("--grid key 'n_features' is not a setting: the data fix it")
        parts = [t.strip() for t in text.split(",")]
        if any(not t for t in parts):
            raise ValueError(f"--grid {item!r} has an empty value")
        if name in grid:
            raise ValueError(f"--grid key {key.strip()!r} is given twice")
        grid[name] = [parse_value(t) for t in parts]
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in order (the last key varies fastest)."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def point_name(point: dict) -> str:
    """A directory name for a grid point, e.g. ``hidden_size=32,n_components=3``."""
    text = ",".join(f"{grid_key(k)}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9=,._-]", "_", text)


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def _write_results(workdir: Path, rows: list[dict]) -> None:
    _write_text_atomic(workdir / RESULTS_JSONL, "".join(jsonio.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    if rows:
        fields = list(rows[0])
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    _write_text_atomic(workdir / RESULTS_CSV, buf.getvalue())


def _short_keys(record: dict) -> dict:
    """A saved sweep record with its grid keys in the short form (older sweeps stored
    ``model.hidden_size``), so that such a sweep still resumes."""
    grid = record.get("grid")
    if isinstance(grid, dict):
        try:
            record = {**record, "grid": {grid_key(k): v for k, v in grid.items()}}
        except ValueError:
            pass  # not a grid this version knows: the comparison reports the difference
    return record


def run_sweep(
    train_seqs: Sequences,
    val_seqs: Sequences,
    workdir: str | Path,
    grid: dict[str, list],
    *,
    base: dict | None = None,
    population: int = 1,
    lr_spread: float = 4.0,
    progress: bool = False,
    log=None,
    mesh=None,
) -> list[dict]:
    """Trains a population at every grid point (skipping finished ones) and writes the results.

    Args:
      train_seqs: training split, original units.
      val_seqs: validation split (what ranks members and points).
      workdir: the sweep directory (see the module doc).
      grid: from :func:`parse_grid`.
      base: settings shared by every point (keys as in ``grnn train --set``); the grid's
        values are laid over them, and both over the defaults for the data.
      population: members per point (:func:`~grnn_jax.train.populations.population.default_members`).
      lr_spread: the members' learning rates span this factor around the point's.
      progress: tqdm bars.
      log: called with one line per finished point (e.g. ``print``).
      mesh: every point's members split over this mesh's ``members`` axis
        (:func:`~grnn_jax.train.distributed.sharding.population_mesh`; its ``data`` axis of size 1,
        since the points' batch sizes may differ); None: one device.

    Returns:
      One row per trained member: the point's settings, ``point``, ``member``, ``seed``,
      ``learning_rate``, ``weight_decay``, ``best_val_nll``, ``best_step``, ``steps``,
      ``stopped_early``, ``is_best`` (the point's kept member), ``still_improving`` (its best
      validation NLL came at its last step: probably not converged), ``seconds`` (the
      point's training time, 0 when it was found finished).
      :func:`~grnn_jax.train.convergence.sweep_warning` words a warning from them.

    Raises:
      ValueError: bad settings or data, or ``workdir`` holding another sweep; raised before
        anything is trained or written.

    Example:
      >>> import tempfile
      >>> from grnn_jax import data
      >>> proc = data.default_switching_ar(1)
      >>> tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=8, length=5)
      >>> va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=4, length=5)
      >>> grid = parse_grid(["n_components=1"])
      >>> base = {"hidden_size": 4, "num_steps": 4, "warmup_steps": 50, "eval_every": 2,
      ...         "batch_size": 4}
      >>> with tempfile.TemporaryDirectory() as wd:
      ...     rows = run_sweep(tr, va, wd, grid, base=base, population=3)
      ...     again = run_sweep(tr, va, wd, grid, base=base, population=3)  # all finished
      >>> [r["member"] for r in rows], [r["seconds"] for r in again]
      ([0, 1, 2], [0.0, 0.0, 0.0])
    """
    workdir = Path(workdir)
    population = check_population(population)
    if val_seqs is None:
        raise ValueError("a sweep needs validation data (--val-fraction > 0)")
    base = dict(base or {})
    # Every point's config is resolved first: a bad value fails before any training.
    points = grid_points(grid)
    configs = []
    for point in points:
        cfg = json.loads(jsonio.dumps(base))
        for k, v in point.items():
            set_entry(cfg, k, v)
        configs.append(resolve_train_config(cfg, train_seqs))
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ValueError("two grid points map to the same directory name; use distinct values")
    record = {
        "format": SWEEP_FORMAT, "grid": grid, "base": base, "population": population,
        "lr_spread": float(lr_spread), "train_data_sha256": fingerprint(train_seqs),
        "val_data_sha256": fingerprint(val_seqs),
    }
    record = json.loads(jsonio.dumps(record))
    sweep_file = workdir / SWEEP_FILE
    if sweep_file.exists():
        saved = _short_keys(json.loads(sweep_file.read_text()))
        if saved != record:
            diff = sorted(k for k in set(saved) | set(record) if saved.get(k) != record.get(k))
            raise ValueError(f"{workdir} holds another sweep (it differs in {', '.join(diff)}); "
                             "pass another --workdir")
    elif workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"--workdir {workdir} is not empty and holds no sweep; pass another")

    workdir.mkdir(parents=True, exist_ok=True)
    if not sweep_file.exists():
        write_json_atomic(sweep_file, record)
    rows: list[dict] = []
    for point, name, config in zip(points, names, configs):
        pdir = workdir / "points" / name
        t0 = time.perf_counter()
        if (pdir / POPULATION_FILE).exists():
            pop = json.loads((pdir / POPULATION_FILE).read_text())
            members, best, seconds = pop["members"], pop["best_member"], 0.0
        else:
            res = train_population(config, train_seqs, val_seqs, pdir, progress=progress,
                                   members=default_members(config, population, lr_spread=lr_spread),
                                   mesh=mesh)
            members, best, seconds = res.rows, res.best, time.perf_counter() - t0
        for m in members:
            rows.append({**point, "point": name, **m, "is_best": m["member"] == best,
                         "still_improving": still_improving(m["best_step"], m["steps"]),
                         "seconds": round(seconds, 3)})
        _write_results(workdir, rows)
        if log is not None:
            b = members[best]
            late = still_improving(b["best_step"], b["steps"])
            log(f"{name}: best validation NLL {b['best_val_nll']:.4f} at step {b['best_step']} "
                f"(member {best} of {len(members)})" + (" [still improving]" if late else "")
                + ("" if seconds else " [finished before]"))
    return rows


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def sweep_figure(rows: list[dict]):
    """The figure :func:`plot_sweep` saves (a matplotlib Figure; close it when done), or None
    when no point has a validation score.

    Best validation NLL per point against K (else the first swept setting), one line per
    value of the other swept settings. An integer axis (K, a width) gets a tick at each value
    and no fractional ticks; points whose kept member was still improving at its last step
    are ringed.

    Example:
      >>> rows = [{"n_components": k, "point": f"n_components={k}", "best_val_nll": 1.0 / k,
      ...          "best_step": 10, "steps": 10, "is_best": True} for k in (1, 2, 4)]
      >>> fig = sweep_figure(rows)
      >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
      ['1', '2', '4']
      >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    best = [r for r in rows if r["is_best"] and r["best_val_nll"] is not None]
    if not best:
        return None
    fields = list(best[0])
    keys = fields[:fields.index("point")]  # the swept settings come first in every row
    short = {k: k.removeprefix("model.") for k in keys}  # rows of sweeps that stored model.*
    x_key = next((k for k in keys if short[k] == "n_components"), keys[0])
    others = [k for k in keys if k != x_key]
    lines: dict[tuple, list] = {}
    for r in best:
        late = still_improving(r.get("best_step"), r.get("steps"))
        lines.setdefault(tuple(r[k] for k in others), []).append((r[x_key], r["best_val_nll"], late))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in lines.items():
        pts.sort(key=lambda p: p[0])
        text = ", ".join(f"{short[k]}={v}" for k, v in zip(others, label))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=text or None)
    late = [p for pts in lines.values() for p in pts if p[2]]
    if late:
        ax.scatter([p[0] for p in late], [p[1] for p in late], s=160, facecolors="none",
                   edgecolors="tab:red", zorder=3, label="best at the last step (still improving)")
    xs = sorted({r[x_key] for r in best})
    if all(_is_int(v) for v in xs):
        if len(xs) <= 20:
            ax.set_xticks(xs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(short[x_key] + (" (K)" if short[x_key] == "n_components" else ""))
    ax.set_ylabel("best validation NLL (nats/step)")
    ax.set_title("sweep: lowest validation NLL of each point's population")
    if others or late:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_sweep(rows: list[dict], path: str | Path) -> Path | None:
    """Saves :func:`sweep_figure` to ``path``. Returns the path, or None when no point has a
    validation score or matplotlib is missing (it comes with the ``experiments`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig = sweep_figure(rows)
    if fig is None:
        return None
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
