"""Defaults chosen on the user's own validation split: a race of candidate models.

Rules fitted to a few data sets do not carry over to the next one, so instead of guessing the
model from statistics of the data, :func:`race` trains a small set of candidate structures from
the same data-scaled settings (:func:`grnn_jax.train.default_config`) and keeps the one with
the best validation log-likelihood. The default candidates are two: the data-scaled default
itself, and the filtering head (``--head hmm``, transitions from the network) sized and started
by Baum-Welch, whose K and lags are those of the AR-HMM that scores the validation split best
(:func:`~grnn_jax.train.em_training.arhmm_choice.choose_arhmm`, one compiled program for the
whole grid) and whose start is scored at step 0, so its best checkpoint is never worse on
validation than that AR-HMM. Both run the whole budget. With more candidates
(:data:`WIDE_CANDIDATES`) the race can run by successive halving (:data:`HALVING`: every
candidate runs the first quarter of the budget, the better half goes on to half of it, the
best one to the end). Each candidate's schedule is that of the whole budget, so a candidate
that survives ends exactly as its single run would (the pieces resume bit for bit). Test data
never enter.

A validation split of a few hundred steps is noisy evidence, so a lower validation NLL alone
does not win: candidates are ranked by :func:`rank_candidates`, which keeps an earlier (simpler)
candidate ahead of a later one unless the later one's validation log-likelihood is higher by
more than ``z`` standard errors of the paired difference (batch means over contiguous blocks
of validation steps, which keeps the steps' autocorrelation inside a block). The first
candidate is the data-scaled default itself (its head from the data rule, no lags), so the race
leaves the default alone unless the validation split shows a clear gain.

Cost: the default race trains 2 S steps for budget S, plus the Baum-Welch grid and a compile
per candidate (the filtering head's compile takes about twice a plain one); with five
candidates and :data:`HALVING`, 5·S/4 + 3·S/4 + S/2 = 2.5 S.
``scripts/bench_defaults.py --race`` measures it against one default run.

The race's folders are ``workdir/race/<candidate>/``; the winner's run is copied to
``workdir`` itself, so ``grnn evaluate``, ``sample`` and a later resume use it as any run, and
``workdir/race.json`` records every candidate's scores.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from grnn_jax._util.atomic import write_json_atomic
from grnn_jax.data import Sequences
from grnn_jax.train.config import TrainConfig, default_config
from grnn_jax.train.em_training.arhmm_choice import ARHMMChoice, choose_arhmm
from grnn_jax.train.loop import train
from grnn_jax.train.run_state import load_trained
from grnn_jax.train.step import batch_step_log_probs, standardised_batches

RACE_DIR = "race"
RACE_FILE = "race.json"


class Candidate(NamedTuple):
    """One structure in the race: a name and the model settings it changes (an empty dict or
    ``{"lags": 0}`` keeps the base's head: the data-scaled default). With ``arhmm`` the
    candidate is the filtering head (``head="hmm"``) whose K and lags
    :func:`~grnn_jax.train.em_training.arhmm_choice.choose_arhmm` picks on the validation split
    by Baum-Welch fits, started at that AR-HMM (``em_init``); ``model`` may change the rest."""

    name: str
    model: dict
    arhmm: bool = False


# Simplest first: rank_candidates keeps an earlier candidate unless a later one is clearly better.
DEFAULT_CANDIDATES = (
    Candidate("default", {"lags": 0}),
    Candidate("arhmm", {}, arhmm=True),
)
# More structures for a longer race (``race(..., candidates=WIDE_CANDIDATES, rounds=HALVING)``).
WIDE_CANDIDATES = (
    Candidate("default", {"lags": 0}),
    Candidate("mdn-lag1", {"head": "mdn", "lags": 1}),
    Candidate("em-lag1", {"head": "em", "lags": 1}),
    Candidate("hmm-lag1", {"head": "hmm", "lags": 1}),
    Candidate("arhmm", {}, arhmm=True),
)
# Two candidates both run the whole budget (a quarter of it flatters the one EM starts near
# its optimum); successive halving pays where there are more.
ROUNDS = (1.0,)
HALVING = (0.25, 0.5, 1.0)
# A later candidate must beat an earlier one by this many standard errors of the paired
# validation log-likelihood difference to rank ahead of it.
MARGIN_Z = 2.0
MAX_BLOCKS = 20
MIN_BLOCK_STEPS = 10
EVAL_BATCH = 64  # evaluate's default, so the evaluation program compiled in training is reused


class RaceResult(NamedTuple):
    """What :func:`race` found.

    Attributes:
      winner: the chosen candidate's name.
      config: its settings (the run copied to the work dir).
      table: one dict per candidate: ``name``, ``head``, ``lags``, ``val_nll`` (best
        validation NLL per round it ran, ``None`` for rounds it was out), ``z`` (per round, the
        paired z-score by which that round's lowest-NLL candidate beat it on validation;
        ``None`` for the best itself and for rounds it was out), ``rounds`` survived and
        ``won``.
      arhmm: the :class:`~grnn_jax.train.em_training.arhmm_choice.ARHMMChoice` behind an
        ``arhmm`` candidate (every (K, p) fitted and its validation NLL), else None.
    """

    winner: str
    config: TrainConfig
    table: list
    arhmm: ARHMMChoice | None = None


def candidate_config(base: TrainConfig, cand: Candidate, train_seqs: Sequences,
                     arhmm: ARHMMChoice | None = None) -> TrainConfig:
    """``base`` with the candidate's model settings; lags that the data cannot support (a
    sequence no longer than them) fall back to 0. An ``arhmm`` candidate takes K and lags from
    ``arhmm`` (:func:`~grnn_jax.train.em_training.arhmm_choice.choose_arhmm`)."""
    model = dict(cand.model)
    if cand.arhmm:
        model = {"head": "hmm", "n_components": arhmm.n_components, "lags": arhmm.lags, **model}
    if model.get("lags", 0) >= int(train_seqs.lengths.min()):
        model["lags"] = 0
    return base.replace(model=model, em_init=base.em_init or cand.arhmm)


def _distinct_configs(base: TrainConfig, candidates, train_seqs: Sequences, arhmm) -> dict:
    """{name: config} in the candidates' order, a candidate whose settings equal an earlier
    one's left out (lags the data cannot support fall back to 0, which may repeat the default)."""
    configs = {}
    for c in candidates:
        cfg = candidate_config(base, c, train_seqs, arhmm)
        if all(cfg != other for other in configs.values()):
            configs[c.name] = cfg
    return configs


def validation_blocks(run_dir: str | Path, val_seqs: Sequences, n_blocks: int) -> np.ndarray:
    """The best checkpoint's validation log-likelihood in ``n_blocks`` contiguous blocks of
    the observed steps (sequence after sequence, in order), original units: ``(n_blocks,)``
    float64, summing to the validation log-likelihood."""
    net, params, standardiser, _ = load_trained(run_dir)
    steps = []
    for b in standardised_batches(val_seqs, standardiser, EVAL_BATCH):
        lp = np.asarray(batch_step_log_probs(net, params, *b), np.float64)
        steps.extend(row[:n] for row, n in zip(lp, np.asarray(b.lengths)))
    lp = np.concatenate(steps) - float(standardiser.log_det)
    return np.array([blk.sum() for blk in np.array_split(lp, n_blocks)])


def paired_z(better: np.ndarray, worse: np.ndarray) -> float:
    """How many standard errors ``better``'s total log-likelihood exceeds ``worse``'s, from
    their paired block sums (batch means); ``inf`` when every block differs by the same
    positive amount, 0 when they are equal."""
    better, worse = np.asarray(better, np.float64), np.asarray(worse, np.float64)
    if not (np.isfinite(better).all() and np.isfinite(worse).all()):  # a diverged candidate
        return math.inf if np.isfinite(better).all() else -math.inf
    d = better - worse
    se = np.std(d, ddof=1) * math.sqrt(d.size)
    if se == 0:  # every block differs by the same amount (0 for identical models)
        return 0.0 if d.sum() == 0 else math.copysign(math.inf, d.sum())
    return float(d.sum() / se)


def _best_of(names, blocks: dict):
    """The name with the highest total validation log-likelihood (a NaN total counts as -inf)."""
    return max(names, key=lambda n: np.nan_to_num(blocks[n].sum(), nan=-np.inf))


def rank_candidates(names: list, blocks: dict, *, z: float = MARGIN_Z) -> list:
    """Orders ``names`` (simplest first) by validation evidence, preferring the simpler.

    Repeatedly takes, among the names left, the earliest one that the best of them (highest
    total log-likelihood) does not beat by more than ``z`` paired standard errors.

    Args:
      names: candidate names, simplest first.
      blocks: {name: (n_blocks,) validation log-likelihood per block}, the same blocks for all.
      z: the margin.

    Returns:
      the names, best first.

    Example:
      >>> import numpy as np
      >>> a = np.array([1.0, 2.0, 1.5, 2.5]); b = a + np.array([0.3, -0.2, 0.4, -0.1])
      >>> rank_candidates(["a", "b"], {"a": a, "b": b})  # b a little better: not enough
      ['a', 'b']
      >>> rank_candidates(["a", "b"], {"a": a, "b": a + 1.0 + 0.1 * np.arange(4)})
      ['b', 'a']
    """
    left, ranked = list(names), []
    while left:
        best = _best_of(left, blocks)
        pick = next(n for n in left if n == best or paired_z(blocks[best], blocks[n]) <= z)
        ranked.append(pick)
        left.remove(pick)
    return ranked


def race(train_seqs: Sequences, val_seqs: Sequences, workdir: str | Path, *,
         base: TrainConfig | None = None, candidates=DEFAULT_CANDIDATES, rounds=ROUNDS,
         progress: bool = False) -> RaceResult:
    """Trains the candidates by successive halving on ``val_seqs`` and keeps the best.

    Args:
      train_seqs, val_seqs: training and validation sequences, original units.
      workdir: an empty (or new) folder; the winner's run ends up in it.
      base: the shared settings (default: ``default_config(train_seqs)``); every candidate
        changes only its model's head and lags.
      candidates: :class:`Candidate` s, simplest first (see :func:`rank_candidates`); one
        whose model equals an earlier one's is left out.
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
      >>> res = race(tr, va, tempfile.mkdtemp(), base=base, candidates=WIDE_CANDIDATES[:2],
      ...            rounds=HALVING)
      >>> res.winner in ("default", "mdn-lag1"), sorted(row["rounds"] for row in res.table)
      (True, [1, 3])
    """
    if not candidates or sorted(rounds) != list(rounds) or rounds[-1] != 1:
        raise ValueError(f"need candidates and increasing rounds ending at 1; got {rounds!r}")
    workdir = Path(workdir)
    base = default_config(train_seqs) if base is None else base
    arhmm = None
    if any(c.arhmm for c in candidates):
        arhmm = choose_arhmm(train_seqs, val_seqs, covariance_type=base.model.covariance_type,
                             seed=base.seed)
    configs = _distinct_configs(base, candidates, train_seqs, arhmm)
    for cfg in configs.values():
        cfg.validate()
    n_blocks = int(min(MAX_BLOCKS, max(2, val_seqs.n_steps // MIN_BLOCK_STEPS)))
    scores = {name: [None] * len(rounds) for name in configs}
    zs = {name: [None] * len(rounds) for name in configs}
    alive, ranking = list(configs), []
    for r, frac in enumerate(rounds):
        until = max(1, round(frac * base.num_steps))
        blocks = {}
        for name in alive:
            train(configs[name], train_seqs, val_seqs, workdir / RACE_DIR / name,
                  progress=progress, until_step=until)
            blocks[name] = validation_blocks(workdir / RACE_DIR / name, val_seqs, n_blocks)
            scores[name][r] = -float(blocks[name].sum()) / val_seqs.n_steps  # the best checkpoint's NLL
        best = _best_of(alive, blocks)
        for name in alive:
            zs[name][r] = None if name == best else paired_z(blocks[best], blocks[name])
        alive = rank_candidates(alive, blocks)
        ranking.append(list(alive))
        if r < len(rounds) - 1:
            alive = alive[: math.ceil(len(alive) / 2)]
    winner = alive[0]
    table = [{"name": n, "head": configs[n].model.head, "lags": configs[n].model.lags,
              "n_components": configs[n].model.n_components, "em_init": configs[n].em_init,
              "val_nll": scores[n], "z": zs[n], "rounds": sum(v is not None for v in scores[n]),
              "won": n == winner}
             for n in configs]
    _adopt(workdir / RACE_DIR / winner, workdir)
    record = {"winner": winner, "rounds": list(rounds), "num_steps": base.num_steps,
              "margin_z": MARGIN_Z, "n_blocks": n_blocks, "ranking": ranking, "candidates": table}
    if arhmm is not None:
        record["arhmm_choice"] = arhmm._asdict()
    write_json_atomic(workdir / RACE_FILE, record)
    return RaceResult(winner, configs[winner], table, arhmm)


def _adopt(run: Path, workdir: Path) -> None:
    """Copies the winning run's files into ``workdir`` (next to the race folder)."""
    for item in run.iterdir():
        target = workdir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
