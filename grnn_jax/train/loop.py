"""The fit loop: the run's JSON config, checkpoints, resume, early stopping, metrics (the
checks before it and the rebuilding of a trained run live in :mod:`grnn_jax.train.run_state`)."""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from grnn_jax.data import Sequences, Standardiser, batch_at
from grnn_jax.train.checkpoint import RunCheckpoints
from grnn_jax.train.config import TrainConfig
from grnn_jax.train.em_training.em_state import (
    model_variables,
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
from grnn_jax.train.early_stopping import StoppingRule
from grnn_jax.train.progress import RunProgress, progress_bar
from grnn_jax.train.run_state import (
    compiled,
    initial_state,
    prepare_run,
)
from grnn_jax.train.em_training.hidden_regimes import hidden_gmm_log
from grnn_jax.train.rundir import (
    METRICS_FILE,
    append_metrics,
    fingerprint,
    read_metrics,
    truncate_metrics,
    write_run_config,
)
from grnn_jax.train.distributed.sharding import make_data_parallel_step
from grnn_jax.train.step import (
    TrainState,
    evaluate,
    noise_key,
)
from grnn_jax._util.dtypes import default_float



class NonFiniteTrainingError(RuntimeError):
    """Training met too many consecutive non-finite steps and stopped."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the state at ``step`` was checkpointed as "last",
    so calling :func:`train` again with the same arguments resumes exactly there."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at step {step}")
        self.step = step


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
      progress: show the training loss and validation NLL: a tqdm bar on a terminal, one
        line per evaluation elsewhere (a log file).
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
        lambda: prepare_run(config, train_seqs, val_seqs, workdir, resume, until_step),
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
    net, tx, step_fn, schedule = compiled(config, dtype == np.float64)
    if mesh is not None:
        step_fn = make_data_parallel_step(step_fn, mesh)
    example = batch_at(train_z, 0, batch_size=config.batch_size, seed=config.seed, dtype=dtype)
    ckpts = RunCheckpoints(workdir, this_process_only=True) if writer else None
    restoring = share_json(resuming and writer and ckpts.latest_step("last") is not None)
    # EM initialisation fits the data only when the state does not come from a checkpoint.
    state = initial_state(config, net, tx, example,
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


class _Throughput:
    """Training steps (and observed time steps) per second of one call of the loop, counting
    training only: not the call's first step (compilation), not evaluations or checkpoints.
    It also holds the steps' metrics until the host reads them (:meth:`read`), so that the
    device runs ahead in between."""

    def __init__(self):
        self.pending, self.first, self.mark = [], None, None
        self.seconds, self.steps, self.obs = 0.0, 0, 0

    def add(self, metrics) -> None:
        if self.mark is None:
            jax.block_until_ready(metrics)
            self.mark = time.perf_counter()
            self.first = metrics
        else:
            self.pending.append(metrics)

    def read(self) -> tuple[list[dict], float, float]:
        """(the metrics of the steps since the last read, steps per second, observed steps
        per second)."""
        fetched = jax.device_get(self.pending)
        now = time.perf_counter()
        self.seconds, self.mark = self.seconds + now - self.mark, now
        self.steps += len(fetched)
        self.obs += int(sum(int(f["n_obs"]) for f in fetched))
        if self.first is not None:
            fetched, self.first = [jax.device_get(self.first)] + fetched, None
        self.pending = []
        if self.seconds <= 0:
            return fetched, math.nan, math.nan
        return fetched, self.steps / self.seconds, self.obs / self.seconds

    def resume(self) -> None:
        """Starts the clock again after an evaluation."""
        self.mark = time.perf_counter()


def _loop(run: _Run, state: TrainState, prog: RunProgress, end: int):
    cfg, rule = run.cfg, StoppingRule.of(run.cfg)
    start = int(state.step)
    if prog.stopped_early:
        end = start
    bar = progress_bar(cfg.num_steps, initial=start, enabled=run.progress, desc="train")
    meter, train_nll = _Throughput(), math.nan
    key = noise_key(cfg.seed)
    try:
        if start == 0 and cfg.em_init and run.val_seqs is not None and prog.best_val_nll is None:
            # A start fitted by EM is a model already: scored (once), it may stay the best.
            prog, val_nll, _ = _evaluate(run, state, prog, rule, 0)
            bar.evaluated(nll="-", val_nll=_fmt(val_nll))
        for step in range(start, end):
            batch = batch_at(run.train_z, step, batch_size=cfg.batch_size, seed=cfg.seed,
                             dtype=run.dtype, rows=run.rows)
            state, m = run.step_fn(state, batch, key)
            meter.add(m)
            done = step + 1
            is_eval = run.val_seqs is not None and rule.evaluates_at(done)
            # An evaluation reads the metrics too: its record follows its step's train record.
            if is_eval or rule.reads_metrics_at(done, end):
                train_nll = _log_train(run, state, meter, done)["nll"]
                bar.set_postfix(nll=f"{train_nll:.4f}", val_nll=_fmt(prog.best_val_nll))
                _check_skips(run, state, rule, done)
            bar.update(1)
            if is_eval:
                prog, val_nll, stop = _evaluate(run, state, prog, rule, done)
                bar.evaluated(nll=f"{train_nll:.4f}", val_nll=_fmt(val_nll))
                # Recorded in the checkpoint, so that resuming a stopped run does not go on.
                prog = prog.replace(stopped_early=stop)
                run.save("last", state, prog)
                if stop:
                    if run.progress:
                        bar.write(
                            f"early stop at step {done}: no better validation NLL in "
                            f"{cfg.patience} evaluations (best {prog.best_val_nll:.4f} at "
                            f"step {prog.best_step})"
                        )
                    break
                meter.resume()
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


def _log_train(run: _Run, state: TrainState, meter: _Throughput, done: int) -> dict:
    """Writes the train record of the steps since the last one, and returns it: the mean
    loss and NLL (original units) of the steps not skipped, throughput, learning rate."""
    fetched, rate, obs_rate = meter.read()
    kept = [f for f in fetched if not f["skipped"]]
    loss = float(np.mean([float(f["loss"]) for f in kept])) if kept else math.nan
    # An objective other than the NLL reports the NLL as a metric of its own.
    nll = float(np.mean([float(f.get("nll", f["loss"])) for f in kept])) if kept else math.nan
    rec = {
        "step": done, "kind": "train", "loss": loss, "nll": nll + run.standardiser.log_det,
        "grad_norm": float(fetched[-1]["grad_norm"]), "n_skipped": int(state.n_skipped),
        "lr": float(run.schedule(done - int(state.n_skipped))),
        "steps_per_s": rate, "obs_steps_per_s": obs_rate,
    }
    run.write([rec])
    return rec


def _check_skips(run: _Run, state: TrainState, rule: StoppingRule, done: int) -> None:
    """Raises :class:`NonFiniteTrainingError` once the skip limit is reached."""
    n = int(state.n_consecutive_skipped)
    if not rule.diverged(n):
        return
    last = run.last_saved()
    raise NonFiniteTrainingError(
        f"training stopped at step {done}: {n} consecutive steps had a non-finite loss or "
        "gradient and were skipped; "
        + (f"the last good checkpoint (step {last}) is intact"
           if last is not None else "no checkpoint had been written yet")
        + "; try a lower learning_rate or check the data"
    )


def _evaluate(run: _Run, state: TrainState, prog: RunProgress, rule: StoppingRule,
              done: int) -> tuple[RunProgress, float, bool]:
    """Scores the validation data, saves the best checkpoint when it improved and writes the
    eval record: ``(progress, validation NLL, stop)`` (:meth:`StoppingRule.after_eval`)."""
    variables = model_variables(state.params, state.aux_state)
    if run.mesh is None:
        val_nll = evaluate(run.net, variables, run.val_seqs, standardiser=run.standardiser).nll
    else:
        val_nll = evaluate_nll(run.net, variables, run.val_seqs, run.standardiser)
    prog, improved, stop = rule.after_eval(prog, done, val_nll)
    if improved:
        run.save("best", state, prog)
    if run.writer:
        here = (variables, state.aux_state)
        here = here if run.mesh is None else local_copy(here)
        hidden = hidden_gmm_log(run.net, *here, run.val_seqs, run.standardiser)
        run.write([{
            "step": done, "kind": "eval", "val_nll": val_nll,
            "best_val_nll": prog.best_val_nll, "best_step": prog.best_step, **hidden,
        }])
    return prog, val_nll, stop


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"
