"""The fit loop: validation of inputs, the run's JSON config, checkpoints, resume, early
stopping, metrics, and rebuilding a trained model from its work dir alone."""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from grnn_jax.data import Batch, Sequences, Standardiser, batch_at
from grnn_jax.train.checkpoint import RunCheckpoints
from grnn_jax.train.config import TrainConfig, config_diff, default_config
from grnn_jax.train.em_training.em_init import check_em_init, initial_variables
from grnn_jax.train.em_training.em_state import (
    aux_settings,
    make_aux_update,
    model_variables,
    uses_aux,
)
from grnn_jax.train.distributed.data_parallel import (
    agree,
    barrier,
    decided_by_writer,
    evaluate_nll,
    is_writer,
    local_copy,
    run_mesh,
    saved_form,
    share_json,
    share_state,
)
from grnn_jax.train.progress import RunProgress
from grnn_jax.train.em_training.hidden_regimes import hidden_gmm_log
from grnn_jax.train.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    append_metrics,
    fingerprint,
    read_metrics,
    read_run_config,
    truncate_metrics,
    write_run_config,
)
from grnn_jax.train.distributed.sharding import make_data_parallel_step
from grnn_jax.train.step import (
    TrainState,
    evaluate,
    init_state,
    make_train_step,
    noise_key,
)
from grnn_jax.train.optimizer import make_optimizer, make_schedule
from grnn_jax._util.dtypes import default_float



class NonFiniteTrainingError(RuntimeError):
    """Training met too many consecutive non-finite steps and stopped."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the state at ``step`` was checkpointed as "last",
    so calling :func:`train` again with the same arguments resumes exactly there."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at step {step}")
        self.step = step


class RunConfigMismatch(ValueError):
    """The work dir holds a run whose settings differ from the ones given.

    Attributes:
      diff: ``{dotted key: (saved value, given value)}``.
    """

    def __init__(self, workdir, diff: dict):
        self.workdir, self.diff = workdir, diff
        changes = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
        super().__init__(
            f"{workdir} holds a run with different settings ({changes}); pass the same config "
            "(or None) to resume it, or resume=False to start over"
        )


def _check_seqs(seqs, name: str) -> Sequences:
    if not isinstance(seqs, Sequences):
        raise ValueError(f"{name} must be a grnn_jax.data.Sequences; got {type(seqs).__name__}")
    return seqs


def _optimizer_settings(cfg: TrainConfig) -> dict:
    return dict(
        learning_rate=cfg.learning_rate, num_steps=cfg.num_steps, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm, end_lr_fraction=cfg.end_lr_fraction,
        optimizer=cfg.optimizer, momentum=cfg.momentum,
    )


def _compiled(cfg: TrainConfig, x64: bool):
    """(net, tx, jitted train step, jitted schedule) for a config, cached on what they depend
    on, so that resuming, re-running or early-stopping variants in one process do not compile
    the step again (``x64`` is part of the key because every dtype follows it)."""
    return _compiled_cached(
        cfg.model, tuple(sorted(_optimizer_settings(cfg).items())), cfg.objective,
        aux_settings(cfg), cfg.regulariser, x64,
    )


@functools.lru_cache(maxsize=8)
def _compiled_cached(model_cfg, opt_items: tuple, objective: str, aux: tuple, regulariser,
                     x64: bool):
    del x64  # only a cache key
    opt = dict(opt_items)
    net = model_cfg.build()
    tx = make_optimizer(**opt)
    for name in ("weight_decay", "clip_norm", "optimizer", "momentum"):
        opt.pop(name)
    schedule = jax.jit(make_schedule(**opt))
    step = make_train_step(net, tx, objective=objective, aux_update=make_aux_update(*aux),
                           regulariser=regulariser)
    return net, tx, step, schedule


def _initial_state(cfg: TrainConfig, net, tx, example: Batch,
                   em_data: Sequences | None = None) -> TrainState:
    """The step-0 state; runs with EM state (EM head, hidden-state GMM) get their
    ``aux_state`` seeded on ``example`` (:mod:`grnn_jax.train.em_training.em_state`); with
    ``em_data`` (model units) the head starts from a GMM fitted by EM to its observed steps
    (:func:`~grnn_jax.train.em_training.em_init.initial_variables`)."""
    key = jax.random.key(cfg.seed)
    if not uses_aux(cfg) and em_data is None:
        return init_state(net, tx, example, key=key)
    params, aux = initial_variables(cfg, net, example, em_data=em_data)
    return init_state(net, tx, example, key=key, params=params, aux_state=aux)


@dataclasses.dataclass(frozen=True)
class _Run:
    """What the loop reads and never changes: the config, the compiled pieces, the data and
    where results go."""

    cfg: TrainConfig
    net: Any
    step_fn: Callable
    schedule: Callable
    train_z: Sequences
    val_seqs: Sequences | None
    standardiser: Standardiser
    ckpts: RunCheckpoints
    metrics_path: Path
    dtype: Any
    progress: bool
    mesh: Any = None  # None: one device
    rows: slice | None = None  # this process's rows of every batch (None: all)
    writer: bool = True  # this process writes metrics and checkpoints

    def write(self, records: list[dict]) -> None:
        if self.writer:
            append_metrics(self.metrics_path, records)

    def save(self, kind: str, state: TrainState, prog: RunProgress) -> None:
        if self.writer:
            self.ckpts.save(kind, state if self.mesh is None else saved_form(state), prog.to_dict())

    def last_saved(self) -> int | None:
        return self.ckpts.latest_step("last") if self.writer else None


def _prepare(config, train_seqs, val_seqs, workdir, resume, until_step):
    """Every check, with nothing written: returns (config, standardiser, resuming)."""
    train_seqs = _check_seqs(train_seqs, "train data")
    if until_step is not None and int(until_step) < 0:
        raise ValueError(f"until_step must be >= 0; got {until_step}")
    if val_seqs is not None:
        _check_seqs(val_seqs, "validation data")
        if val_seqs.n_features != train_seqs.n_features:
            raise ValueError(
                f"validation data have {val_seqs.n_features} features; training data have "
                f"{train_seqs.n_features}"
            )
        if val_seqs.n_covariates != train_seqs.n_covariates:
            raise ValueError("validation and training data have different numbers of covariates")
    d = train_seqs.n_features
    saved = None
    if resume and (Path(workdir) / CONFIG_FILE).exists():
        saved = read_run_config(workdir)
        if int(saved["n_features"]) != d:
            raise ValueError(
                f"{workdir} holds a model of {saved['n_features']} features; the data have {d}"
            )
        if saved.get("train_data_sha256") not in (None, fingerprint(train_seqs)):
            raise ValueError(
                f"the training data differ from those of the run in {workdir}; resuming needs "
                "the same data (or resume=False to start over)"
            )
        saved_cfg = TrainConfig.from_dict(saved["train_config"])
        if config is not None and config != saved_cfg:
            raise RunConfigMismatch(workdir, config_diff(saved_cfg, config))
        config = saved_cfg
    if config is None:
        config = default_config(train_seqs)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
    config.validate()
    if config.model.n_features != d:
        raise ValueError(f"the model expects {config.model.n_features} features; the data have {d}")
    if config.model.n_covariates != train_seqs.n_covariates:
        raise ValueError(
            f"the model expects {config.model.n_covariates} covariates; the data have "
            f"{train_seqs.n_covariates}"
        )
    if config.em_init:
        check_em_init(train_seqs, config.model.n_components)
    if saved is not None:
        standardiser = Standardiser.from_dict(saved["standardiser"])
    elif config.standardise:
        standardiser = Standardiser.fit(train_seqs)
    else:
        standardiser = Standardiser.identity(d)
    return config, standardiser, saved is not None


def train(
    config: TrainConfig | None,
    train_seqs: Sequences,
    val_seqs: Sequences | None,
    workdir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    until_step: int | None = None,
    mesh=None,
) -> tuple[TrainState, list[dict]]:
    """Trains a GRNN, checkpointing into ``workdir``; resumes a run found there.

    Args:
      config: the run's settings; None takes the saved one when resuming, else
        ``default_config(train_seqs)``.
      train_seqs: training sequences, original units.
      val_seqs: validation sequences (original units) for the best checkpoint and early
        stopping; None evaluates nothing and keeps only the last checkpoint.
      workdir: the run's directory: ``config.json``, ``metrics.jsonl``, ``checkpoints/``.
      resume: continue from ``checkpoints/last`` when the work dir holds a run (same
        parameters as an uninterrupted run); False starts over, replacing what is there.
      progress: show a tqdm bar with the training loss and validation NLL.
      until_step: stop (with a checkpoint) after this global step, to run a budget in pieces.
      mesh: train data-parallel on this ``("members", "data")`` mesh
        (:func:`grnn_jax.train.distributed.sharding.make_mesh`, one member): the state replicated,
        every batch's rows sharded over ``data`` (``batch_size`` must be a multiple of its
        size); the same trajectory as one device up to float rounding, and a run may be
        resumed on another number of devices. None trains on the default device (in a
        multi-process run: on a mesh over every process's devices, see
        :mod:`grnn_jax.train.distributed.data_parallel`; process 0 alone writes ``workdir``).

    Returns:
      (final state, the run's metric records as in ``metrics.jsonl``).

    Raises:
      ValueError: bad data or settings, or a run in ``workdir`` that does not match;
        raised before anything in ``workdir`` is written.
      RunConfigMismatch: (a ValueError) ``workdir`` holds a run with other settings.
      NonFiniteTrainingError: ``max_consecutive_skips`` non-finite steps in a row; the
        last good checkpoint stays as it was.
      TrainingInterrupted: (a KeyboardInterrupt) Ctrl-C; the state at the interruption is
        saved as the "last" checkpoint first, so the same call resumes there.

    Example:
      >>> import tempfile
      >>> from grnn_jax import data
      >>> from grnn_jax.train import ModelConfig, TrainConfig, evaluate, load_trained, train
      >>> proc = data.default_switching_ar(1)
      >>> tr, _ = data.sample_switching_ar(proc, seed=0, n_sequences=8, length=5)
      >>> va, _ = data.sample_switching_ar(proc, seed=1, n_sequences=4, length=5)
      >>> cfg = TrainConfig(ModelConfig(n_features=1, n_components=1, hidden_size=4),
      ...                   num_steps=4, batch_size=4, eval_every=2)
      >>> with tempfile.TemporaryDirectory() as wd:
      ...     state, history = train(cfg, tr, va, wd, progress=False)
      ...     net, params, standardiser, config = load_trained(wd)
      ...     res = evaluate(net, params, va, standardiser=standardiser)
      >>> int(state.step), res.n_steps, [r["step"] for r in history if r["kind"] == "eval"]
      (4, 20, [2, 4])
    """
    workdir = Path(workdir)
    config, standardiser, resuming = decided_by_writer(
        lambda: _prepare(config, train_seqs, val_seqs, workdir, resume, until_step),
        lambda out: [out[0].to_dict(), out[1].to_dict(), out[2]],
        lambda v: (TrainConfig.from_dict(v[0]), Standardiser.from_dict(v[1]), v[2]),
    )
    mesh, rows = run_mesh(mesh, config.batch_size)
    if jax.process_count() > 1:
        mine = fingerprint(train_seqs)
        agree(share_json(mine) == mine,
              "the training data of process(es) {processes} differ from process 0's; every "
              "process needs the same data")
    writer = is_writer()

    # From here on the work dir changes (on process 0 alone).
    metrics_path = workdir / METRICS_FILE
    if writer:
        workdir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
            metrics_path.unlink(missing_ok=True)
            write_run_config(workdir, config, standardiser, train_seqs)

    dtype = default_float()
    train_z = standardiser.transform(train_seqs)
    net, tx, step_fn, schedule = _compiled(config, dtype == np.float64)
    if mesh is not None:
        step_fn = make_data_parallel_step(step_fn, mesh)
    example = batch_at(train_z, 0, batch_size=config.batch_size, seed=config.seed, dtype=dtype)
    ckpts = RunCheckpoints(workdir, this_process_only=True) if writer else None
    restoring = share_json(resuming and writer and ckpts.latest_step("last") is not None)
    # EM initialisation fits the data only when the state does not come from a checkpoint.
    state = _initial_state(config, net, tx, example,
                           em_data=train_z if config.em_init and not restoring else None)
    prog = RunProgress()
    try:
        if restoring and writer:
            state, saved_prog = ckpts.restore("last", state if mesh is None else saved_form(state))
            prog = RunProgress.from_dict(saved_prog)
        if mesh is not None:
            state = share_state(state, mesh)
            prog = RunProgress.from_dict(share_json(prog.to_dict()))
        if writer:
            truncate_metrics(metrics_path, prog.step)
        end = config.num_steps if until_step is None else min(config.num_steps, int(until_step))
        run = _Run(config, net, step_fn, schedule, train_z, val_seqs, standardiser, ckpts,
                   metrics_path, dtype, progress and writer, mesh, rows, writer)
        state, prog = _loop(run, state, prog, end)
    finally:
        if ckpts is not None:
            ckpts.close()
    # The others wait until process 0 has written everything.
    barrier("grnn_jax.train: done")
    return state, share_json(read_metrics(workdir) if writer else None)


def _loop(run: _Run, state: TrainState, prog: RunProgress, end: int):
    cfg, standardiser, progress = run.cfg, run.standardiser, run.progress
    start = int(state.step)
    if prog.stopped_early:
        end = start
    bar = tqdm(total=cfg.num_steps, initial=start, disable=not progress, desc="train", leave=False)
    pending, first = [], None
    log_jac = standardiser.log_det
    # Throughput counts training only: not the first step of a call (compilation), not
    # evaluations or checkpoints.
    train_time, steps_done, obs_done, mark = 0.0, 0, 0, None
    last_loss = last_nll = math.nan
    key = noise_key(cfg.seed)
    try:
        for step in range(start, end):
            batch = batch_at(run.train_z, step, batch_size=cfg.batch_size, seed=cfg.seed,
                             dtype=run.dtype, rows=run.rows)
            state, m = run.step_fn(state, batch, key)
            if mark is None:
                jax.block_until_ready(m)
                mark = time.perf_counter()
                first = m
            else:
                pending.append(m)
            done = step + 1
            is_eval = run.val_seqs is not None and (done % cfg.eval_every == 0 or done == cfg.num_steps)
            if done % cfg.log_every == 0 or is_eval or done == end:
                fetched = jax.device_get(pending)
                now = time.perf_counter()
                train_time, mark = train_time + now - mark, now
                steps_done += len(fetched)
                obs_done += int(sum(int(f["n_obs"]) for f in fetched))
                if first is not None:
                    fetched, first = [jax.device_get(first)] + fetched, None
                pending = []
                losses = [float(f["loss"]) for f in fetched if not f["skipped"]]
                last_loss = float(np.mean(losses)) if losses else math.nan
                # An objective other than the NLL reports the NLL as a metric of its own.
                nlls = [float(f.get("nll", f["loss"])) for f in fetched if not f["skipped"]]
                last_nll = float(np.mean(nlls)) if nlls else math.nan
                rate = steps_done / train_time if train_time > 0 else math.nan
                obs_rate = obs_done / train_time if train_time > 0 else math.nan
                rec = {
                    "step": done, "kind": "train", "loss": last_loss,
                    "nll": last_nll + standardiser.log_det,
                    "grad_norm": float(fetched[-1]["grad_norm"]),
                    "n_skipped": int(state.n_skipped),
                    "lr": float(run.schedule(done - int(state.n_skipped))),
                    "steps_per_s": rate, "obs_steps_per_s": obs_rate,
                }
                run.write([rec])
                bar.set_postfix(nll=f"{last_nll + log_jac:.4f}", val_nll=_fmt(prog.best_val_nll))
                if int(state.n_consecutive_skipped) >= cfg.max_consecutive_skips:
                    last = run.last_saved()
                    raise NonFiniteTrainingError(
                        f"training stopped at step {done}: {int(state.n_consecutive_skipped)} "
                        "consecutive steps had a non-finite loss or gradient and were skipped; "
                        + (f"the last good checkpoint (step {last}) is intact"
                           if last is not None else "no checkpoint had been written yet")
                        + "; try a lower learning_rate or check the data"
                    )
            bar.update(1)
            if is_eval:
                variables = model_variables(state.params, state.aux_state)
                if run.mesh is None:
                    val_nll = evaluate(run.net, variables, run.val_seqs, standardiser=standardiser).nll
                else:
                    val_nll = evaluate_nll(run.net, variables, run.val_seqs, standardiser)
                prog = prog.after_eval(done, val_nll, cfg.val_smoothing)
                if prog.best_step == done:
                    run.save("best", state, prog)
                if run.writer:
                    here = (variables, state.aux_state)
                    here = here if run.mesh is None else local_copy(here)
                    hidden = hidden_gmm_log(run.net, *here, run.val_seqs, standardiser)
                    run.write([{
                        "step": done, "kind": "eval", "val_nll": val_nll,
                        "best_val_nll": prog.best_val_nll, "best_step": prog.best_step, **hidden,
                    }])
                bar.set_postfix(nll=f"{last_nll + log_jac:.4f}", val_nll=_fmt(val_nll))
                stop = (bool(cfg.patience) and prog.evals_since_best >= cfg.patience
                        and done >= cfg.stop_from_fraction * cfg.num_steps)
                # Recorded in the checkpoint, so that resuming a stopped run does not go on.
                prog = prog.replace(stopped_early=stop)
                run.save("last", state, prog)
                if stop:
                    if progress:
                        tqdm.write(
                            f"early stop at step {done}: no better validation NLL in "
                            f"{cfg.patience} evaluations (best {prog.best_val_nll:.4f} at "
                            f"step {prog.best_step})"
                        )
                    break
                mark = time.perf_counter()
        prog = prog.replace(step=int(state.step))
        run.save("last", state, prog)
    except KeyboardInterrupt:
        # ``state`` is always a whole step's result (it is rebound only when a step returns);
        # the metrics written past it are dropped on resume.
        at = int(state.step)
        run.save("last", state, prog.replace(step=at))
        raise TrainingInterrupted(at) from None
    finally:
        bar.close()
    return state, prog


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def load_trained(workdir: str | Path, *, which: str = "best"):
    """Rebuilds a trained model from its work dir alone.

    Args:
      workdir: a directory written by :func:`train`.
      which: "best" (lowest validation NLL; falls back to "last" when the run had no
        validation data) or "last".

    Returns:
      (net, params, standardiser, config); see the example of :func:`train`. ``params`` is
      the network's whole variables dict (for the EM head, its components included), what
      every function of ``grnn_jax.model`` and :func:`evaluate` take.

    Raises:
      FileNotFoundError: no run or no checkpoint there.
      ValueError: unknown ``which``.
    """
    net, state, standardiser, config = load_train_state(workdir, which=which)
    return net, model_variables(state.params, state.aux_state), standardiser, config


def load_train_state(workdir: str | Path, *, which: str = "best"):
    """Like :func:`load_trained`, but returns the whole checkpointed :class:`TrainState`
    (``aux_state`` included, e.g. the hidden-state GMM of a ``hidden_gmm`` run) in place of
    the variables: ``(net, state, standardiser, config)``."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last'; got {which!r}")
    saved = read_run_config(workdir)
    config = TrainConfig.from_dict(saved["train_config"])
    standardiser = Standardiser.from_dict(saved["standardiser"])
    net = config.model.build()
    tx = make_optimizer(**_optimizer_settings(config))
    d, c = config.model.n_features, config.model.n_covariates
    dtype = default_float()
    x = jnp.zeros((1, 2, d), dtype)
    u = jnp.zeros((1, 2, c), dtype) if c else None

    example = Batch(x=x, lengths=jnp.full((1,), 2, jnp.int32), u=u)
    abstract = jax.eval_shape(lambda: _initial_state(config, net, tx, example))
    with RunCheckpoints(workdir, read_only=True) as ckpts:
        kind = which if ckpts.latest_step(which) is not None else "last"
        state, _ = ckpts.restore(kind, abstract)
    return net, state, standardiser, config
