"""Defaults chosen on the user's own validation split: a race of candidate models.

Rules fitted to a few data sets do not carry over to the next one, so instead of guessing the
head from statistics of the data, :func:`race` trains a small set of candidate structures (the
per-step head with and without lags, the EM head with lags, the filtering head) from the same
data-scaled settings (:func:`grnn_jax.train.default_config`) and keeps the one with the best
validation NLL, by successive halving: every candidate runs the first quarter of the budget,
the better half goes on to half of it, the best one to the end. Each candidate's schedule is
that of the whole budget, so a candidate that survives ends exactly as its single run would
(the pieces resume bit for bit). Test data never enter.

Cost: with four candidates, budget S and rounds (1/4, 1/2, 1), the race trains 4·S/4 + 2·S/4 +
S/2 = 2 S steps, plus a compile per candidate (the filtering head's steps cost about twice a
plain step); ``scripts/bench_defaults.py --race`` measures it against one default run.

The race's folders are ``workdir/race/<candidate>/``; the winner's run is copied to
``workdir`` itself, so ``grnn evaluate``, ``sample`` and a later resume use it as any run, and
``workdir/race.json`` records every candidate's scores.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import NamedTuple

from grnn_jax._util.atomic import write_json_atomic
from grnn_jax.data import Sequences
from grnn_jax.train.config import TrainConfig, default_config
from grnn_jax.train.loop import train

RACE_DIR = "race"
RACE_FILE = "race.json"


class Candidate(NamedTuple):
    """One structure in the race: a name and the model settings it changes."""

    name: str
    model: dict


DEFAULT_CANDIDATES = (
    Candidate("mdn", {"head": "mdn", "lags": 0}),
    Candidate("mdn-lag1", {"head": "mdn", "lags": 1}),
    Candidate("em-lag1", {"head": "em", "lags": 1}),
    Candidate("hmm-lag1", {"head": "hmm", "lags": 1}),
)
ROUNDS = (0.25, 0.5, 1.0)


class RaceResult(NamedTuple):
    """What :func:`race` found.

    Attributes:
      winner: the chosen candidate's name.
      config: its settings (the run copied to the work dir).
      table: one dict per candidate: ``name``, ``val_nll`` (best validation NLL per round it
        ran, ``None`` for rounds it was out), ``rounds`` survived, ``steps`` trained.
    """

    winner: str
    config: TrainConfig
    table: list


def candidate_config(base: TrainConfig, cand: Candidate, train_seqs: Sequences) -> TrainConfig:
    """``base`` with the candidate's model settings; lags that the data cannot support (a
    sequence no longer than them) fall back to 0."""
    model = dict(cand.model)
    if model.get("lags", 0) >= int(train_seqs.lengths.min()):
        model["lags"] = 0
    return base.replace(model=model)


def _best_val(history: list) -> float:
    vals = [r["best_val_nll"] for r in history if r.get("kind") == "eval"]
    return float(vals[-1]) if vals else math.inf


def race(train_seqs: Sequences, val_seqs: Sequences, workdir: str | Path, *,
         base: TrainConfig | None = None, candidates=DEFAULT_CANDIDATES, rounds=ROUNDS,
         progress: bool = False) -> RaceResult:
    """Trains the candidates by successive halving on ``val_seqs`` and keeps the best.

    Args:
      train_seqs, val_seqs: training and validation sequences, original units.
      workdir: an empty (or new) folder; the winner's run ends up in it.
      base: the shared settings (default: ``default_config(train_seqs)``); every candidate
        changes only its model's head and lags.
      candidates: :class:`Candidate` s.
      rounds: increasing fractions of ``base.num_steps`` ending at 1; after each round but the
        last, the better half (rounded up) goes on.
      progress: show each run's progress bar.

    Returns:
      :class:`RaceResult`.

    Example:
      >>> import tempfile, numpy as np
      >>> from grnn_jax.data import Sequences
      >>> from grnn_jax.train import ModelConfig, TrainConfig
      >>> rng = np.random.default_rng(0)
      >>> tr, va = (Sequences(rng.normal(size=(6, 8, 1))) for _ in range(2))
      >>> base = TrainConfig(ModelConfig(n_features=1, n_components=2, hidden_size=4),
      ...                    num_steps=4, batch_size=3, eval_every=1, warmup_steps=0)
      >>> res = race(tr, va, tempfile.mkdtemp(), base=base, candidates=DEFAULT_CANDIDATES[:2])
      >>> res.winner in ("mdn", "mdn-lag1"), sorted(row["rounds"] for row in res.table)
      (True, [1, 3])
    """
    if not candidates or sorted(rounds) != list(rounds) or rounds[-1] != 1:
        raise ValueError(f"need candidates and increasing rounds ending at 1; got {rounds!r}")
    workdir = Path(workdir)
    base = default_config(train_seqs) if base is None else base
    configs = {c.name: candidate_config(base, c, train_seqs) for c in candidates}
    for cfg in configs.values():
        cfg.validate()
    scores = {name: [None] * len(rounds) for name in configs}
    alive = list(configs)
    for r, frac in enumerate(rounds):
        until = max(1, round(frac * base.num_steps))
        for name in alive:
            _, history = train(configs[name], train_seqs, val_seqs, workdir / RACE_DIR / name,
                               progress=progress, until_step=until)
            scores[name][r] = _best_val(history)
        alive.sort(key=lambda n: scores[n][r])
        if r < len(rounds) - 1:
            alive = alive[: math.ceil(len(alive) / 2)]
    winner = alive[0]
    table = [{"name": n, "head": configs[n].model.head, "lags": configs[n].model.lags,
              "val_nll": scores[n], "rounds": sum(v is not None for v in scores[n])}
             for n in configs]
    _adopt(workdir / RACE_DIR / winner, workdir)
    write_json_atomic(workdir / RACE_FILE, {"winner": winner, "rounds": list(rounds),
                                            "num_steps": base.num_steps, "candidates": table})
    return RaceResult(winner, configs[winner], table)


def _adopt(run: Path, workdir: Path) -> None:
    """Copies the winning run's files into ``workdir`` (next to the race folder)."""
    for item in run.iterdir():
        target = workdir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
