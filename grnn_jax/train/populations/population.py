"""Population training: P models trained at once as one compiled program.

A population is one :class:`~grnn_jax.train.TrainState` whose every leaf has a leading
member axis of size P; the train step is ``vmap``-ed over it. Each member has its own
initialisation key and batch stream (its seed), its own learning rate and weight decay
(arrays in the optimiser state through ``optax.inject_hyperparams``, not Python floats
closed into the program, so one compiled step serves any values), its own early-stopping
record and its own best parameters. A member that stops early is frozen: the step still
computes it (the program is one), but its state no longer changes.

Member ``i`` of a population follows exactly the run ``train(config.replace(seed=s_i,
learning_rate=lr_i, weight_decay=wd_i), ...)`` would (up to float rounding): same initial
parameters, same batches, same updates. That holds for the non-gradient state too (an EM
head's components, a hidden-state GMM: ``TrainState.aux_state``, stacked like the
parameters): each member's is seeded on its own first batch, updated by stepwise EM on its
own batches only, frozen with the member, and saved with its best parameters.
"""

from __future__ import annotations

import functools
import math
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from grnn_jax.data import Sequences
from grnn_jax.train.checkpoint import RunCheckpoints
from grnn_jax._util.atomic import interrupts_deferred, write_json_atomic
from grnn_jax.train.config import TrainConfig
from grnn_jax.train.em_training.em_init import initial_variables
from grnn_jax.train.em_training.em_state import (
    HIDDEN_GMM_KEY,
    aux_settings,
    make_aux_update,
    model_variables,
    uses_aux,
)
from grnn_jax.train.populations.ensemble import ENSEMBLE_DIR, POPULATION_FILE, evaluate_ensemble
from grnn_jax.train.run_state import prepare_run  # one set of data and config checks
from grnn_jax.train.distributed import sharding
from grnn_jax.train.early_stopping import StoppingRule
from grnn_jax.train.progress import RunProgress, progress_bar
from grnn_jax.train.em_training.hidden_regimes import hidden_gmm_log
from grnn_jax.train.rundir import (
    METRICS_FILE,
    append_metrics,
    write_run_config,
)
from grnn_jax.train.populations.population_step import (  # re-exported: the public names live here
    Members,
    check_members,
    check_population,
    default_members,
    evaluate_population,
    init_population,
    make_population_optimizer,
    make_population_step,
    population_batch,
    where_members,
)
from grnn_jax.train.step import TrainState, noise_key
from grnn_jax._util.dtypes import default_float

__all__ = [
    "Members",
    "PopulationResult",
    "check_population",
    "default_members",
    "evaluate_population",
    "init_population",
    "make_population_optimizer",
    "make_population_step",
    "population_batch",
    "population_program",
    "train_population",
]


class PopulationResult(NamedTuple):
    """What :func:`train_population` returns.

    Attributes:
      state: the final stacked state.
      best_params: each member's parameters at its best validation NLL (its last ones
        without validation data), leading axis P.
      members: the members' seeds and hyper-parameters.
      rows: one dict per member: ``member``, ``seed``, ``learning_rate``, ``weight_decay``,
        ``best_val_nll``, ``best_step``, ``steps``, ``stopped_early``, ``n_skipped``.
      best: index of the member with the lowest validation NLL (0 without validation data).
      best_aux_state: each member's non-gradient state at that same step (``{}`` without
        any); ``model_variables(best_params, best_aux_state)`` are the models to evaluate.
    """

    state: TrainState
    best_params: Any
    members: Members
    rows: list
    best: int
    best_aux_state: Any = None


def _member(tree, i: int):
    return jax.tree.map(lambda a: a[i], tree)


def _initial_members(cfg, net, tx, train_z, members, first_batch) -> TrainState:
    """The stacked step-0 state. With EM state or ``--em-init``, member ``i`` starts from
    :func:`initial_variables` of its own single-run config, seeded on its own first batch
    (as ``train(members.config(cfg, i), ...)`` starts); otherwise the parameters are drawn
    in one vmapped program."""
    if not (uses_aux(cfg) or cfg.em_init):
        return init_population(net, tx, first_batch, members)
    em_data = train_z if cfg.em_init else None
    pairs = [initial_variables(members.config(cfg, i), net, _member(first_batch, i),
                               em_data=em_data) for i in range(members.size)]
    params, aux = jax.tree.map(lambda *a: jnp.stack(a), *pairs)
    return init_population(net, tx, first_batch, members, params=params, aux_state=aux)


def train_population(
    config: TrainConfig,
    train_seqs: Sequences,
    val_seqs: Sequences | None,
    workdir: str | Path | None = None,
    *,
    members: Members,
    ensemble: int = 0,
    progress: bool = True,
    mesh=None,
) -> PopulationResult:
    """Trains a population in one compiled program; writes the best member as a run.

    Every member uses ``config`` but for its seed, learning rate and weight decay
    (``members``). Each is evaluated on ``val_seqs`` every ``config.eval_every`` steps, keeps
    its best parameters, and stops (is frozen) after ``config.patience`` evaluations without
    improvement; the program ends when every member has stopped or at ``config.num_steps``.

    Args:
      config: the shared settings (``config.seed``, ``learning_rate`` and ``weight_decay``
        are replaced by the members').
      train_seqs: training sequences, original units.
      val_seqs: validation sequences, original units; None: no evaluation, last parameters.
      workdir: None writes nothing. Otherwise it becomes the run directory of the best member
        (``config.json``, ``metrics.jsonl`` and ``checkpoints/``, readable by
        :func:`~grnn_jax.train.load_trained` and ``grnn evaluate``/``sample``), with
        ``population.json`` (one row per member, the ensemble's validation NLL) beside it;
        a run already there is replaced once training has finished.
      members: seeds and hyper-parameters, e.g. from :func:`default_members`.
      ensemble: M > 0 also scores the equal-weight mixture of the M members best on
        validation (:func:`~grnn_jax.train.populations.ensemble.ensemble_gmm`) and saves their parameters in
        ``ensemble/`` (read back by :func:`~grnn_jax.train.populations.ensemble.load_ensemble`).
      progress: a tqdm bar on a terminal, one line per evaluation elsewhere.
      mesh: a ``("members", "data")`` mesh (e.g. :func:`~grnn_jax.train.distributed.sharding.population_mesh`):
        members split over ``members``, each member's batch rows over ``data`` (the population
        a multiple of the first, ``batch_size`` of the second); None: one device.

    Returns:
      PopulationResult.

    Raises:
      ValueError: bad settings, data or members (before anything is computed or written).

    Example:
      >>> from grnn_jax import data
      >>> from grnn_jax.train import ModelConfig, TrainConfig
      >>> proc = data.default_switching_ar(1)
      >>> tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=8, length=5)
      >>> va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=4, length=5)
      >>> cfg = TrainConfig(ModelConfig(n_features=1, n_components=1, hidden_size=4),
      ...                   num_steps=4, batch_size=4, eval_every=2)
      >>> res = train_population(cfg, tr, va, members=default_members(cfg, 3), progress=False)
      >>> len(res.rows), res.rows[res.best]["best_val_nll"] == min(
      ...     r["best_val_nll"] for r in res.rows)
      (3, True)
    """
    members = check_members(members)
    if int(ensemble) != ensemble or ensemble < 0 or ensemble > members.size:
        raise ValueError(f"--ensemble must lie in [0, population = {members.size}]; got {ensemble}")
    if ensemble and val_seqs is None:
        raise ValueError("--ensemble needs validation data to rank the members")
    cfg, standardiser, _ = prepare_run(config, train_seqs, val_seqs, Path(workdir or "."),
                                    False, None)
    if mesh is not None:
        sharding.check_population_mesh(mesh, members.size, cfg.batch_size)
    train_z = standardiser.transform(train_seqs)
    net, tx, step_fn = population_program(cfg)
    first = population_batch(train_z, 0, members.seeds, batch_size=cfg.batch_size,
                             dtype=default_float())
    state = _initial_members(cfg, net, tx, train_z, members, first)
    if mesh is not None:
        state = jax.device_put(state, NamedSharding(mesh, PartitionSpec("members")))
        step_fn = sharding.make_population_parallel_step(step_fn, mesh)
    state, rec = _train_members(cfg, net, step_fn, state, train_z, val_seqs, standardiser,
                                members, progress)
    best_params, best_aux = rec.best
    rows = _member_rows(members, rec.progs, state)
    scores = [r["best_val_nll"] if r["best_val_nll"] is not None else math.inf for r in rows]
    best = int(np.argmin(scores)) if val_seqs is not None else 0
    ens = top_params = None
    if ensemble:
        top = [int(i) for i in np.argsort(scores, kind="stable")[:ensemble]]
        top_params = jax.tree.map(lambda a: a[jnp.asarray(top)],
                                  model_variables(best_params, best_aux))
        ens = {"members": top, "val_nll": evaluate_ensemble(net, top_params, val_seqs,
                                                            standardiser=standardiser)}
    result = PopulationResult(state, best_params, members, rows, best, best_aux)
    if workdir is not None:
        # The previous run there is replaced: Ctrl-C waits until the new one is whole.
        with interrupts_deferred():
            _write_population_run(Path(workdir), cfg, members, result, rec.history[best],
                                  standardiser, train_seqs, ens, top_params)
    return result


class _Records:
    """What the population loop keeps per member besides its state: its early-stopping
    progress, whether it still trains, its evaluation records, and its best variables
    ``(params, aux_state)`` (stacked over members)."""

    def __init__(self, state: TrainState, size: int):
        self.progs = [RunProgress() for _ in range(size)]
        self.active = np.ones(size, bool)
        self.history: list[list[dict]] = [[] for _ in range(size)]
        self.best = (state.params, state.aux_state)


def _train_members(cfg, net, step_fn, state, train_z, val_seqs, standardiser, members,
                   progress) -> tuple[TrainState, _Records]:
    """The steps: every member trains until it stops by the rule a single run follows
    (:class:`~grnn_jax.train.early_stopping.StoppingRule`): it diverged, or ran out of
    patience; the loop ends when none is left or at ``num_steps``."""
    rule, rec, dtype = StoppingRule.of(cfg), _Records(state, members.size), default_float()
    bar = progress_bar(cfg.num_steps, enabled=progress, desc=f"train x{members.size}")
    # Member i draws the training noise a single run with its seed draws.
    keys = jnp.stack([noise_key(s) for s in members.seeds])
    try:
        if val_seqs is not None and cfg.em_init:  # each member's EM start is scored, as in a run
            _evaluate_members(net, state, val_seqs, standardiser, rule, 0, rec)
        for step in range(cfg.num_steps):
            batch = population_batch(train_z, step, members.seeds, batch_size=cfg.batch_size,
                                     dtype=dtype)
            state, _ = step_fn(state, batch, jnp.asarray(rec.active), keys)
            done = step + 1
            bar.update(1)
            if rule.reads_metrics_at(done, cfg.num_steps):
                # A diverged member stops; the others go on.
                rec.active &= ~rule.diverged(state.n_consecutive_skipped)
            if val_seqs is not None and rule.evaluates_at(done):
                nll = _evaluate_members(net, state, val_seqs, standardiser, rule, done, rec)
                bar.evaluated(best_val_nll=f"{np.nanmin(nll):.4f}", active=int(rec.active.sum()))
            if not rec.active.any():
                break
    finally:
        bar.close()
    if val_seqs is None:
        rec.best = (state.params, state.aux_state)
    return state, rec


def _evaluate_members(net, state, val_seqs, standardiser, rule, done, rec: _Records):
    """Scores every member on the validation data and updates the active members' records
    (a member out of patience stops); returns the (P,) validation NLLs."""
    variables = model_variables(state.params, state.aux_state)
    nll = evaluate_population(net, variables, val_seqs, standardiser=standardiser)
    scored = np.flatnonzero(rec.active)
    rec.progs, improved, stop = rule.after_evals(rec.progs, done, nll, rec.active)
    for i in scored:
        prog = rec.progs[i]
        rec.history[i].append({"step": done, "kind": "eval", "val_nll": float(nll[i]),
                               "best_val_nll": prog.best_val_nll, "best_step": prog.best_step,
                               **_hidden_gmm_log(net, variables, state.aux_state, i, val_seqs,
                                                 standardiser)})
    for i in np.flatnonzero(stop):
        rec.progs[i] = rec.progs[i].replace(stopped_early=True)
    rec.active &= ~stop
    if improved.any():
        rec.best = where_members(jnp.asarray(improved), (state.params, state.aux_state), rec.best)
    return nll


def _member_rows(members: Members, progs, state: TrainState) -> list[dict]:
    """One summary row per member (:attr:`PopulationResult.rows`)."""
    steps, skipped = np.asarray(state.step), np.asarray(state.n_skipped)
    return [{
        "member": i, "seed": int(members.seeds[i]),
        "learning_rate": float(members.learning_rates[i]),
        "weight_decay": float(members.weight_decays[i]),
        "best_val_nll": progs[i].best_val_nll, "best_step": progs[i].best_step,
        "steps": int(steps[i]), "stopped_early": bool(progs[i].stopped_early),
        "n_skipped": int(skipped[i]),
    } for i in range(members.size)]


def population_program(config: TrainConfig):
    """``(net, tx, step)`` of a population trained with ``config``: the network, the
    optimiser of :func:`make_population_optimizer` and :func:`make_population_step` (with
    the run's stepwise-EM ``aux_update`` when it has EM state), cached on what they depend
    on (not on seeds, learning rate or weight decay, which are data), so that populations of
    any members in one process compile the step once."""
    c = config
    return _population_program(c.model, c.num_steps, c.warmup_steps, c.clip_norm,
                               c.end_lr_fraction, c.optimizer, c.momentum, c.objective,
                               aux_settings(c), c.regulariser,
                               bool(default_float() == jnp.float64))


@functools.lru_cache(maxsize=8)
def _population_program(model_cfg, num_steps, warmup_steps, clip_norm, end_lr_fraction,
                        optimizer, momentum, objective, aux, regulariser, x64):
    del x64  # only a cache key: every dtype follows it
    net = model_cfg.build()
    tx = make_population_optimizer(num_steps=num_steps, warmup_steps=warmup_steps,
                                   clip_norm=clip_norm, end_lr_fraction=end_lr_fraction,
                                   optimizer=optimizer, momentum=momentum)
    return net, tx, make_population_step(net, tx, objective=objective, regulariser=regulariser,
                                         aux_update=make_aux_update(*aux))


def _hidden_gmm_log(net, variables, aux_state, i, val_seqs, standardiser) -> dict:
    """Member ``i``'s hidden-state GMM record, as a single run logs it at each evaluation
    (``{}`` without one)."""
    if not (isinstance(aux_state, dict) and HIDDEN_GMM_KEY in aux_state):
        return {}
    return hidden_gmm_log(net, _member(variables, i), _member(aux_state, i), val_seqs,
                          standardiser)


def _write_population_run(workdir: Path, cfg, members, result, history, standardiser,
                          train_seqs, ens, ens_params) -> None:
    b = result.best
    member_cfg = members.config(cfg, b)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    shutil.rmtree(workdir / ENSEMBLE_DIR, ignore_errors=True)
    (workdir / METRICS_FILE).unlink(missing_ok=True)
    write_run_config(workdir, member_cfg, standardiser, train_seqs)
    # The member's state in the form a single run saves: its optimiser state is the injected
    # optimiser's inner state, which has make_optimizer's structure.
    last = _member(result.state, b)
    last = last.replace(opt_state=last.opt_state.inner_state)
    prog = RunProgress(step=int(last.step), stopped_early=True)
    if history:
        h = history[-1]
        prog = prog.replace(best_val_nll=h["best_val_nll"], best_step=h["best_step"])
    with RunCheckpoints(workdir) as ckpts:
        ckpts.save("last", last, prog.to_dict())
        if history:
            ckpts.save("best", last.replace(params=_member(result.best_params, b),
                                            aux_state=_member(result.best_aux_state, b)),
                       prog.to_dict())
    append_metrics(workdir / METRICS_FILE, history)
    if ens_params is not None:
        with ocp.StandardCheckpointer() as ckptr:
            # Host arrays, as RunCheckpoints writes them: no device layout is recorded.
            ckptr.save((workdir / ENSEMBLE_DIR).resolve(), jax.device_get(ens_params))
    write_json_atomic(workdir / POPULATION_FILE, {
        "population": members.size, "best_member": b, "members": result.rows,
        "ensemble": ens, "train_config": cfg.to_dict(),
    })

