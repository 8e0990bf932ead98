"""``grnn train``, ``grnn evaluate`` and ``grnn sample``: a GRNN from the command line.

Data files are ``.npz`` holding ``x`` (S, T, D) and optionally ``lengths`` (S,);
a 2-D ``x`` is refused with a hint (only ``--prime`` reads a (T, D) array as one
sequence). Every check of the files, the flags and the work dir runs before
anything is computed or written, so bad input leaves the work dir as it was.
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
import os
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

import jax

from grnn_jax._util.atomic import save_npz_atomic
from grnn_jax.cli.device_flags import add_host_devices_flag
from grnn_jax.cli.process_flags import add_process_flags, check_process_flags, join
from grnn_jax.data import Sequences
from grnn_jax.model.heads import HEAD_COVARIANCE_TYPES
from grnn_jax._util.validation import check_positive
from grnn_jax.train import (
    CONFIG_FILE,
    HEADS,
    OBJECTIVES,
    OPTIMIZERS,
    NonFiniteTrainingError,
    RunConfigMismatch,
    TrainingInterrupted,
    apply_overrides,
    config_splits,
    evaluate,
    load_config_file,
    load_trained,
    read_run_config,
    resolve_train_config,
    set_entry,
    split_validation,
    train,
)
from grnn_jax.train.config import EM_HEAD_MAX_PREDICTABILITY
from grnn_jax.train.distributed.member_devices import host_members_mesh, request_host_devices
from grnn_jax.train.distributed.data_parallel import is_writer
from grnn_jax.train.populations.population import check_population, default_members, train_population
from grnn_jax.train.distributed.sharding import make_mesh, population_mesh
from grnn_jax._util import jsonio

# Flags of ``grnn train`` that set a training field (flag dest -> dotted config key).
_FLAG_KEYS = {
    "components": "model.n_components",
    "covariance_type": "model.covariance_type",
    "cell": "model.cell",
    "hidden": "model.hidden_size",
    "layers": "model.n_layers",
    "steps": "num_steps",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "optimizer": "optimizer",
    "seed": "seed",
    "val_fraction": "val_fraction",
    "objective": "objective",
    "em_init": "em_init",
    "head": "model.head",
    "hidden_gmm": "hidden_gmm",
    "hidden_gmm_weight": "hidden_gmm_weight",
    "input_noise": "input_noise",
    "input_dropout": "input_dropout",
    "output_dropout": "output_dropout",
    "recurrent_dropout": "recurrent_dropout",
}


# ----------------------------------------------------------------------------- parsers


def add_parser(subparsers) -> None:
    """Registers ``train``, ``evaluate`` and ``sample`` on the ``grnn`` dispatcher."""
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_sample(subparsers)


def _add_train(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a GRNN on sequences in a .npz file or on an experiment config's data",
        description="Trains a GRNN; keeps the parameters with the best validation NLL. With only "
        "--data and --workdir the settings are chosen from the size of the data.")
    src = p.add_argument_group("data (one of --data or --config is required)")
    src.add_argument("--data", help=".npz holding x (S, T, D) and optionally lengths (S,)")
    src.add_argument("--config", help="experiment config, a .py file with get_config() -> dict")
    p.add_argument("--workdir", required=True, help="run directory (config.json, metrics.jsonl, checkpoints/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config entry, e.g. num_steps=200 or model.hidden_size=64 (repeatable)")
    p.add_argument("--components", "-k", type=int, help="mixture components per step")
    p.add_argument("--covariance-type", choices=HEAD_COVARIANCE_TYPES,
                   help="covariance of each component; tied: one per step shared by the "
                        "components (default full up to 8 features, else diag)")
    p.add_argument("--cell", choices=("lstm", "gru", "ln_lstm"), help="recurrent cell (default lstm)")
    p.add_argument("--hidden", type=int, help="hidden units per layer")
    p.add_argument("--layers", type=int, help="recurrent layers")
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--batch-size", type=int, help="sequences per batch")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="adamw (default) or sgd with momentum (--set momentum=0.9; weight decay "
                        "decoupled in both)")
    p.add_argument("--seed", type=int, help="seed of initialisation, shuffling and the validation split")
    p.add_argument("--objective", choices=tuple(OBJECTIVES),
                   help="training objective: " + "; ".join(
                       f"{o.name}: {o.description}" for o in OBJECTIVES.values())
                   + " (default nll; evaluation always reports the held-out NLL)")
    p.add_argument("--em-init", action="store_true", default=None,
                   help="start the mixture head from a GMM fitted by EM to the training "
                        "observations (the untrained model predicts that GMM at every step)")
    p.add_argument("--head", choices=HEADS,
                   help="mixture head: mdn (every parameter per step, trained by gradient) "
                        "or em (global components updated by stepwise EM, the network emits the "
                        "mixing weights; any covariance type); default: em when "
                        f"the last step linearly predicts the next one by less than "
                        f"{EM_HEAD_MAX_PREDICTABILITY} nats (returns-like series), else mdn")
    p.add_argument("--hidden-gmm", type=int, metavar="K",
                   help="keep a K-component GMM over the hidden states, updated by stepwise EM on "
                        "every batch, logged at every evaluation and checkpointed")
    p.add_argument("--hidden-gmm-weight", type=float, metavar="LAMBDA",
                   help="add -LAMBDA * mean log p_GMM(h_t) to the loss (needs --hidden-gmm)")
    p.add_argument("--input-noise", type=float, metavar="SIGMA",
                   help="std of Gaussian noise added in training to the observations the network "
                        "reads (standardised units; default 0)")
    p.add_argument("--input-dropout", type=float, metavar="RATE",
                   help="variational dropout on the network's inputs in training, in [0, 1) "
                        "(one mask per sequence for all steps; default 0)")
    p.add_argument("--output-dropout", type=float, metavar="RATE",
                   help="variational dropout on each recurrent layer's outputs in training, "
                        "in [0, 1) (default 0)")
    p.add_argument("--recurrent-dropout", type=float, metavar="RATE",
                   help="variational dropout on the state each layer's recurrent matmul reads, "
                        "in training, in [0, 1) (default: 0.45 to 0.15 by data size on noisy "
                        "series, 0 on smooth ones)")
    p.add_argument("--val-fraction", type=float,
                   help="share of the --data sequences held out for validation (default 0.15; a "
                        "single sequence gives its last part)")
    p.add_argument("--restart", action="store_true",
                   help="start over instead of resuming the run found in --workdir (a run is "
                        "resumed only with the settings it was started with)")
    p.add_argument("--population", type=int, metavar="P",
                   help="train P members in one program (seeds seed..seed+P-1, learning rates "
                        "spread over a factor 4 around --lr) and keep the one best on validation; "
                        "always starts over")
    p.add_argument("--ensemble", type=int, default=0, metavar="M",
                   help="with --population: also save and score the equal-weight mixture of the "
                        "M members best on validation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    par = p.add_argument_group("several devices and hosts (docs/scaling.md)")
    par.add_argument("--data-parallel", action="store_true",
                     help="shard the rows of every batch over all devices (--batch-size a multiple of "
                          "their number), parameters replicated: one device's training up to float "
                          "rounding; implied by --coordinator. With --population P: gcd(P, devices) "
                          "groups of members, each member's rows over the rest")
    add_host_devices_flag(par)
    add_process_flags(par)
    p.set_defaults(func=run_train)
    return p


def _add_evaluate(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="held-out NLL of a trained GRNN on a .npz file",
                              description="Prints nll_per_step (nats per observed step, original "
                              "units), log_likelihood and n_steps.")
    p.add_argument("--workdir", required=True, help="a run directory written by grnn train")
    p.add_argument("--data", required=True, help=".npz holding x (S, T, D) and optionally lengths (S,)")
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


# ----------------------------------------------------------------------------- data


def load_sequences(path: str | os.PathLike, what: str = "data", *, one_sequence_ok: bool = False) -> Sequences:
    """Reads and checks a ``.npz`` of sequences; errors name the file and the problem.

    Args:
      path: the file.
      what: how errors name it (the flag).
      one_sequence_ok: read a 2-D ``x`` (T, D) as one sequence; otherwise a 2-D ``x`` is
        refused, because (S, T) univariate sequences and (T, D) one sequence look alike.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an .npz, no ``x``, wrong rank, NaN/inf in an observed step, lengths
        outside [1, T] or of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what} file {path} is not a readable .npz (not a zip archive)")
    try:
        if not one_sequence_ok:
            with np.load(path, allow_pickle=False) as f:
                shape = f["x"].shape if "x" in f.files else None
            if shape is not None and len(shape) == 2:
                raise ValueError(
                    f"x has shape {shape}, but sequences are (S, T, D); save x[None] for one "
                    f"sequence of {shape[0]} steps and {shape[1]} features, or x[..., None] for "
                    f"{shape[0]} univariate sequences of {shape[1]} steps")
        seqs = Sequences.load(path)
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{what} file {path} is not a readable .npz: {err}") from None
    except ValueError as err:
        raise ValueError(f"{what} file {path}: {err}") from None
    if seqs.u is not None:
        raise ValueError(f"{what} file {path} holds covariates 'u', which the command line does not take")
    return seqs


def _check_workdir_model(workdir: Path, n_features: int, what: str) -> dict:
    saved = read_run_config(workdir)  # FileNotFoundError when there is no run
    if int(saved["n_features"]) != n_features:
        raise ValueError(f"{what} has {n_features} features; the model in {workdir} was trained "
                         f"on {saved['n_features']}")
    return saved


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _in_flag_words(message: str, given: dict[str, str]) -> str:
    """Names the flags the user typed where a message names their config keys
    (``num_steps`` -> ``--steps (num_steps)``)."""
    for key, flag in sorted(given.items(), key=lambda kv: -len(kv[0])):
        short = key.split(".")[-1]
        for name in (key, short):
            if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w])", message):
                return re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w])", f"{flag} ({key})",
                              message, count=1)
    return message


def _check_components(config, n_steps: int) -> None:
    k = config.model.n_components
    if k > max(10, n_steps // 20):
        print(f"grnn train: warning: {k} components for {n_steps} observed training steps; more "
              "than about one per 20 steps rarely helps held-out NLL, and every step's head "
              "grows with K (pass fewer --components)", file=sys.stderr)


# ----------------------------------------------------------------------------- commands


def _quiet_checkpoint_logs() -> None:
    # Orbax logs an absl WARNING for every checkpoint directory opened read-only; on the
    # command line they read like problems when nothing is wrong.
    logging.getLogger("absl").setLevel(logging.ERROR)


def run_train(args) -> int:
    """``grnn train``: every check first, then :func:`grnn_jax.train.train`."""
    _quiet_checkpoint_logs()
    if args.data is None and args.config is None:
        raise ValueError("pass --data TRAIN.npz or --config CONFIG.py")
    multi = check_process_flags(args)
    if args.population is not None and multi:
        raise ValueError("--population runs in one process (on all its devices with --data-parallel); "
                         "drop --coordinator")
    if args.population is not None:
        check_population(args.population)
    host = request_host_devices(args.population, args.host_devices)  # before JAX starts
    if args.ensemble and (args.population is None or not 0 < args.ensemble <= args.population):
        raise ValueError(f"--ensemble must lie in [1, --population]; got {args.ensemble}")
    cfg = load_config_file(args.config) if args.config else {}
    apply_overrides(cfg, args.overrides)
    given = {}  # config key -> the flag that set it
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            set_entry(cfg, key, value)
            given[key] = "--" + dest.replace("_", "-")
    workdir = Path(args.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} exists and is not a directory")
    seed = int(cfg.get("seed", 0))
    resuming = args.population is None and not args.restart and (workdir / CONFIG_FILE).exists()
    if args.data is not None:
        seqs = load_sequences(args.data, "--data")
        if resuming:
            _check_workdir_model(workdir, seqs.n_features, f"--data {args.data}")
        train_seqs, val_seqs = split_validation(seqs, float(cfg.get("val_fraction", 0.15)), seed=seed)
    else:
        splits = config_splits(cfg, seed=seed)
        train_seqs, val_seqs = splits.train, splits.val
        if resuming:
            _check_workdir_model(workdir, train_seqs.n_features, f"dataset {cfg['dataset']!r}")
    try:
        config = resolve_train_config(cfg, train_seqs)
    except ValueError as err:
        raise ValueError(_in_flag_words(str(err), given)) from None
    _check_components(config, train_seqs.n_steps)
    if args.population is not None:
        return _run_population(args, config, train_seqs, val_seqs, workdir, host)
    mesh = None
    if multi:
        join(args)
    if multi or args.data_parallel:
        mesh = make_mesh()
        n = mesh.shape["data"]
        if config.batch_size % n:
            raise ValueError(f"--batch-size (batch_size) {config.batch_size} must be a multiple of the "
                             f"{_plural(n, 'device')} that share every batch")
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
        return 1
    except TrainingInterrupted as err:
        print(f"grnn train: interrupted at step {err.step} (saved); run the same command to "
              "resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("grnn train: interrupted before the first step; nothing was saved past the last "
              "checkpoint; run the same command to resume", file=sys.stderr)
        return 130
    if not is_writer():
        return 0  # process 0 reports
    evals = [m for m in metrics if m.get("kind") == "eval"]
    best = min(evals, key=lambda m: m["val_nll"]) if evals else None
    report = {
        "workdir": str(workdir),
        "devices": 1 if mesh is None else mesh.size,
        "num_processes": jax.process_count(),
        "n_train_sequences": train_seqs.n_sequences,
        "n_train_steps": train_seqs.n_steps,
        "n_val_steps": 0 if val_seqs is None else val_seqs.n_steps,
        "steps": max((m["step"] for m in metrics), default=0),
        "best_val_nll": None if best is None else best["val_nll"],
        "best_step": None if best is None else best["step"],
        "config": config.to_dict(),
    }
    if args.json:
        print(jsonio.dumps(report))
    else:
        m = config.model
        head = " (EM-updated head)" if m.head == "em" else ""
        print(f"trained a {m.n_components}-component {m.covariance_type} GRNN{head} ({m.cell}, "
              f"{m.n_layers}x{m.hidden_size}) for {report['steps']} steps on "
              f"{report['n_train_steps']} steps of {_plural(report['n_train_sequences'], 'sequence')}")
        if best is not None:
            print(f"best validation NLL {best['val_nll']:.4f} nats/step (original units) at step "
                  f"{best['step']}; those parameters are kept as 'best'")
        print(f"run saved in {workdir}")
    return 0


def _run_population(args, config, train_seqs, val_seqs, workdir: Path, host) -> int:
    mesh = host_members_mesh(host, args.population)
    if args.data_parallel:
        mesh = population_mesh(args.population)
        n = mesh.shape["data"]
        if config.batch_size % n:
            raise ValueError(f"--batch-size (batch_size) {config.batch_size} must be a multiple of the "
                             f"{_plural(n, 'device')} that share every member's batch ({mesh.size} "
                             f"devices, {mesh.shape['members']} groups of members)")
    try:
        res = train_population(config, train_seqs, val_seqs, workdir,
                               members=default_members(config, args.population), ensemble=args.ensemble,
                               progress=not (args.quiet or args.json), mesh=mesh)
    except KeyboardInterrupt:
        print("grnn train: interrupted; a population run writes its work dir only once all its "
              "members have finished (run the command again to start over)", file=sys.stderr)
        return 130
    best = res.rows[res.best]
    record = json.loads((workdir / "population.json").read_text())
    report = {"workdir": str(workdir), "population": args.population,
              "devices": 1 if mesh is None else mesh.size, "best_member": res.best,
              "best_val_nll": best["best_val_nll"], "best_step": best["best_step"],
              "members": res.rows, "ensemble": record["ensemble"],
              "config": res.members.config(config, res.best).to_dict()}
    if args.json:
        print(jsonio.dumps(report))
        return 0
    for r in res.rows:
        print(f"member {r['member']}: seed {r['seed']} lr {r['learning_rate']:.3g} "
              f"wd {r['weight_decay']:.3g}  best validation NLL "
              + ("-" if r["best_val_nll"] is None else f"{r['best_val_nll']:.4f}")
              + f" at step {r['best_step']}")
    where = "" if mesh is None else f" (trained on {_plural(mesh.size, 'device')})"
    print(f"kept member {res.best} as the run in {workdir}{where}")
    if record["ensemble"]:
        e = record["ensemble"]
        print(f"ensemble of members {e['members']}: validation NLL {e['val_nll']:.4f} nats/step")
    return 0


def run_evaluate(args) -> int:
    """``grnn evaluate``: held-out NLL per observed step in original units."""
    _quiet_checkpoint_logs()
    workdir = Path(args.workdir)
    seqs = load_sequences(args.data, "--data")
    _check_workdir_model(workdir, seqs.n_features, f"--data {args.data}")
    net, params, standardiser, _ = load_trained(workdir, which=args.which)
    res = evaluate(net, params, seqs, standardiser=standardiser)
    report = {"nll_per_step": res.nll, "log_likelihood": res.log_likelihood, "n_steps": res.n_steps,
              "n_sequences": seqs.n_sequences, "workdir": str(workdir), "data": str(args.data)}
    if args.json:
        print(jsonio.dumps(report))
    else:
        print(f"nll_per_step {res.nll:.6f}  (nats per observed step, original units)")
        print(f"log_likelihood {res.log_likelihood:.6f}")
        print(f"n_steps {res.n_steps}")
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
    print(f"wrote {_plural(args.num, 'sequence')} of {args.steps} steps to {out}")
    return 0
