"""``grnn train``, ``grnn evaluate`` and ``grnn sample``: a GRNN from the command line.

``--data`` is an ``.npz`` holding ``x`` (S, T, D), optional ``lengths`` (S,) and covariates
``u``, or a ``.csv`` with one row per step read by the table flags (``--sequence-column``,
``--time-column``, ``--columns``, ``--covariate-columns``); both formats are described in
``docs/guide/data_format.md``. A 2-D ``x`` is refused with a hint (only ``--prime`` reads a
(T, D) array as one sequence). Every check of the files, the flags and the work dir runs
before anything is computed or written, so bad input leaves the work dir as it was.
``--data-parallel`` shards every batch over all devices; ``--coordinator`` joins a
multi-process run in which each process feeds its rows of every batch and process 0
alone writes the work dir and prints. ``--population P`` on a CPU splits its members over
``gcd(P, cores)`` host devices that it asks JAX for first thing (``--host-devices``).
Ctrl-C checkpoints the step reached and exits with status 130; the same command
resumes there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

import jax

from grnn_jax._util.atomic import save_npz_atomic
from grnn_jax._util.validation import check_positive
from grnn_jax.cli.data_flags import (
    DATA_HELP,
    add_table_flags,
    announce_data,
    check_table_flags,
    check_workdir_model,
    load_data,
    load_sequences,  # also grnn sweep's reader of --data
    table_report,
)
from grnn_jax.cli.process_flags import check_process_flags, join
from grnn_jax.cli.train_flags import add_train_flags, in_flag_words, train_settings
from grnn_jax.cli.train_report import (
    emit,
    evaluate_lines,
    plural,
    population_lines,
    population_report,
    train_lines,
    train_report,
)
from grnn_jax.train import (
    CONFIG_FILE,
    NonFiniteTrainingError,
    RunConfigMismatch,
    TrainingInterrupted,
    config_splits,
    evaluate,
    load_trained,
    race,
    read_metrics,
    read_run_config,
    resolve_train_config,
    split_validation,
    train,
)
from grnn_jax.train.distributed.data_parallel import is_writer
from grnn_jax.train.distributed.member_devices import host_members_mesh, request_host_devices
from grnn_jax.train.distributed.sharding import make_mesh, population_mesh
from grnn_jax.train.populations.population import check_population, default_members, train_population


# ----------------------------------------------------------------------------- parsers


def add_parser(subparsers) -> None:
    """Registers ``train``, ``evaluate`` and ``sample`` on the ``grnn`` dispatcher."""
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_sample(subparsers)


def _add_train(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a GRNN on sequences in a .npz or .csv file or on an experiment "
                      "config's data",
        description="Trains a GRNN; keeps the parameters with the best validation NLL. With only "
        "--data and --workdir the settings are chosen from the size of the data.")
    add_train_flags(p)
    p.set_defaults(func=run_train)
    return p


def _add_evaluate(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="held-out NLL of a trained GRNN on a .npz or .csv file",
                              description="Prints nll_per_step (nats per observed step, original "
                              "units), log_likelihood and n_steps.")
    p.add_argument("--workdir", required=True, help="a run directory written by grnn train")
    p.add_argument("--data", required=True, help=DATA_HELP)
    add_table_flags(p.add_argument_group("CSV columns (as given to grnn train)"))
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint (default best)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_evaluate)
    return p


def _add_sample(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sample", help="sample sequences from a trained GRNN",
                              description="Writes x (N, T, D) in original units to --out.")
    p.add_argument("--workdir", required=True, help="a run directory written by grnn train")
    p.add_argument("--num", type=int, required=True, help="number of sequences N")
    p.add_argument("--steps", type=int, required=True, help="steps per sequence T")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="> 0; below 1 sharpens, above 1 flattens every step's mixture (default 1)")
    p.add_argument("--prime", help=".npz whose x (one sequence, or N of equal length) is fed first")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint (default best)")
    p.add_argument("--out", required=True, help="output .npz (an existing file is kept unless --force)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run_sample)
    return p


# ----------------------------------------------------------------------------- checks


def _quiet_checkpoint_logs() -> None:
    # Orbax logs an absl WARNING for every checkpoint directory opened read-only; on the
    # command line they read like problems when nothing is wrong.
    logging.getLogger("absl").setLevel(logging.ERROR)


def _check_run_flags(args) -> bool:
    """The flags that need no file; True for a multi-process run."""
    if args.data is None and args.config is None:
        raise ValueError("pass --data TRAIN.npz (or .csv) or --config CONFIG.py")
    multi = check_process_flags(args)
    if args.population is not None and multi:
        raise ValueError("--population runs in one process (on all its devices with --data-parallel); "
                         "drop --coordinator")
    if args.population is not None:
        check_population(args.population)
    if args.ensemble and (args.population is None or not 0 < args.ensemble <= args.population):
        raise ValueError(f"--ensemble must lie in [1, --population]; got {args.ensemble}")
    return multi


def _check_workdir(path: str) -> Path:
    workdir = Path(path)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} exists and is not a directory")
    return workdir


def _training_data(args, cfg: dict, workdir: Path, resuming: bool):
    """``(train, validation, table info)`` from ``--data`` or the config's dataset, checked
    against the run being resumed."""
    seed = int(cfg.get("seed", 0))
    if args.data is None:
        check_table_flags(args, None)
        splits = config_splits(cfg, seed=seed)
        if resuming:
            check_workdir_model(workdir, splits.train, f"dataset {cfg['dataset']!r}")
        return splits.train, splits.val, None
    seqs, info = load_data(args)
    if resuming:
        check_workdir_model(workdir, seqs, f"--data {args.data}")
    train_seqs, val_seqs = split_validation(seqs, float(cfg.get("val_fraction", 0.15)), seed=seed)
    return train_seqs, val_seqs, info


def _check_components(config, n_steps: int) -> None:
    k = config.model.n_components
    if k > max(10, n_steps // 20):
        print(f"grnn train: warning: {k} components for {n_steps} observed training steps; more "
              "than about one per 20 steps rarely helps held-out NLL, and every step's head "
              "grows with K (pass fewer --components)", file=sys.stderr)


def _check_batch(config, mesh, what: str) -> None:
    n = mesh.shape["data"]
    if config.batch_size % n:
        raise ValueError(f"--batch-size (batch_size) {config.batch_size} must be a multiple of the "
                         f"{plural(n, 'device')} {what}")


# ----------------------------------------------------------------------------- commands


def run_train(args) -> int:
    """``grnn train``: every check first, then :func:`grnn_jax.train.train`."""
    _quiet_checkpoint_logs()
    multi = _check_run_flags(args)
    host = request_host_devices(args.population, args.host_devices)  # before JAX starts
    cfg, given = train_settings(args)
    workdir = _check_workdir(args.workdir)
    resuming = args.population is None and not args.restart and (workdir / CONFIG_FILE).exists()
    train_seqs, val_seqs, info = _training_data(args, cfg, workdir, resuming)
    try:
        config = resolve_train_config(cfg, train_seqs)
    except ValueError as err:
        raise ValueError(in_flag_words(str(err), given)) from None
    _check_components(config, train_seqs.n_steps)
    if args.race:
        _check_race(args, given, val_seqs)
    announce_data(info, "train", quiet=args.json or args.process_id not in (None, 0))
    if args.population is not None:
        return _run_population(args, config, train_seqs, val_seqs, workdir, host)
    mesh = None
    if multi:
        join(args)
    if multi or args.data_parallel:
        mesh = make_mesh()
        _check_batch(config, mesh, "that share every batch")
    if args.race and not resuming:
        config, metrics, race_table = _race(args, config, train_seqs, val_seqs, workdir, given)
        status = 0
    else:
        status, metrics = _train(args, config, train_seqs, val_seqs, workdir, mesh, given)
        race_table = None
    if status or not is_writer():
        return status  # process 0 reports
    report = train_report(config, metrics, train_seqs, val_seqs, workdir, mesh, table_report(info))
    if race_table is not None:
        report["race"] = race_table
    emit(report, args.json, train_lines)
    return 0


def _train(args, config, train_seqs, val_seqs, workdir: Path, mesh, given: dict):
    """``(status, metrics)`` of :func:`grnn_jax.train.train`; each way it can stop early is
    one line on stderr and an exit status."""
    try:
        _, metrics = train(config, train_seqs, val_seqs, workdir, resume=not args.restart,
                           progress=not (args.quiet or args.json), mesh=mesh)
    except RunConfigMismatch as err:
        changes = ", ".join(
            f"{given.get(k, k)} {a!r} -> {b!r}" for k, (a, b) in err.diff.items())
        raise ValueError(
            f"--workdir {workdir} holds a run started with other settings ({changes}); a run "
            "resumes only with the settings it was started with: pass --restart to start over "
            "there, or give a new --workdir") from None
    except NonFiniteTrainingError as err:
        print(f"grnn train: {err}", file=sys.stderr)
        return 1, []
    except TrainingInterrupted as err:
        print(f"grnn train: interrupted at step {err.step} (saved); run the same command to "
              "resume", file=sys.stderr)
        return 130, []
    except KeyboardInterrupt:
        print("grnn train: interrupted before the first step; nothing was saved past the last "
              "checkpoint; run the same command to resume", file=sys.stderr)
        return 130, []
    return 0, metrics


def _check_race(args, given: dict, val_seqs) -> None:
    chosen = [k for k in ("model.head", "model.lags", "model.constant_transitions") if k in given]
    if chosen or args.population is not None or args.data_parallel or val_seqs is None:
        raise ValueError("--race chooses the head and lags on a validation split itself; give it "
                         "neither --head, --lags, --constant-transitions, --population nor "
                         "--data-parallel, and keep --val-fraction above 0")


def _race(args, config, train_seqs, val_seqs, workdir: Path, given: dict):
    """:func:`grnn_jax.train.race` from the resolved settings: ``(winner's config, its
    metrics, the race table)``."""
    res = race(train_seqs, val_seqs, workdir, base=config, progress=not (args.quiet or args.json))
    return res.config, read_metrics(workdir), res.table


def _run_population(args, config, train_seqs, val_seqs, workdir: Path, host) -> int:
    mesh = host_members_mesh(host, args.population)
    if args.data_parallel:
        mesh = population_mesh(args.population)
        _check_batch(config, mesh, f"that share every member's batch ({mesh.size} devices, "
                                   f"{mesh.shape['members']} groups of members)")
    try:
        res = train_population(config, train_seqs, val_seqs, workdir,
                               members=default_members(config, args.population), ensemble=args.ensemble,
                               progress=not (args.quiet or args.json), mesh=mesh)
    except KeyboardInterrupt:
        print("grnn train: interrupted; a population run writes its work dir only once all its "
              "members have finished (run the command again to start over)", file=sys.stderr)
        return 130
    record = json.loads((workdir / "population.json").read_text())
    emit(population_report(args, res, record, config, workdir, mesh), args.json, population_lines)
    return 0


def run_evaluate(args) -> int:
    """``grnn evaluate``: held-out NLL per observed step in original units."""
    _quiet_checkpoint_logs()
    workdir = Path(args.workdir)
    seqs, info = load_data(args)
    check_workdir_model(workdir, seqs, f"--data {args.data}")
    announce_data(info, "evaluate", quiet=args.json)
    net, params, standardiser, _ = load_trained(workdir, which=args.which)
    res = evaluate(net, params, seqs, standardiser=standardiser)
    report = {"nll_per_step": res.nll, "log_likelihood": res.log_likelihood, "n_steps": res.n_steps,
              "n_sequences": seqs.n_sequences, "workdir": str(workdir), "data": str(args.data),
              "data_columns": table_report(info)}
    emit(report, args.json, evaluate_lines)
    return 0


def _load_prime(path: str, n_samples: int, n_features: int) -> np.ndarray:
    seqs = load_sequences(path, "--prime", one_sequence_ok=True)
    if seqs.n_features != n_features:
        raise ValueError(f"--prime {path} has {seqs.n_features} features; the model has {n_features}")
    if seqs.n_sequences == 1:
        return seqs.x[0, : int(seqs.lengths[0])]
    if seqs.n_sequences != n_samples:
        raise ValueError(f"--prime {path} holds {seqs.n_sequences} sequences; give one, or --num "
                         f"({n_samples}) of them")
    if np.any(seqs.lengths != seqs.lengths[0]):
        raise ValueError(f"--prime {path}: the sequences must have equal lengths")
    return seqs.x[:, : int(seqs.lengths[0])]


def run_sample(args) -> int:
    """``grnn sample``: sequences in original units, written to ``--out``."""
    _quiet_checkpoint_logs()

    from grnn_jax import model

    for flag, v in (("--num", args.num), ("--steps", args.steps)):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1; got {v}")
    check_positive(args.temperature, "--temperature")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out} must end in .npz")
    if not out.parent.is_dir():
        raise ValueError(f"--out folder {out.parent} does not exist")
    if out.exists() and not args.force:
        raise ValueError(f"--out {out} exists; pass --force to overwrite it")
    workdir = Path(args.workdir)
    saved = read_run_config(workdir)
    prime = None
    if args.prime is not None:
        prime = _load_prime(args.prime, args.num, int(saved["n_features"]))
    if int(saved.get("n_covariates", 0)):
        raise ValueError(f"the model in {workdir} takes covariates; the command line cannot supply them")
    net, params, standardiser, _ = load_trained(workdir, which=args.which)
    z_prime = None if prime is None else standardiser.apply(prime)
    z = model.generate(jax.random.key(args.seed), net, params, args.steps, n_samples=args.num,
                       prime=z_prime, temperature=args.temperature)
    x = standardiser.inverse(np.asarray(z, np.float64))
    save_npz_atomic(out, x=x, lengths=np.full(args.num, args.steps, np.int64))
    print(f"wrote {plural(args.num, 'sequence')} of {args.steps} steps to {out}")
    return 0
