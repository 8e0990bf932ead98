"""``grnn sweep``: a grid of populations over static settings, judged on validation only.

The ``--data`` sequences are split into training and validation parts as ``grnn train``
splits them; nothing else is read, so no test data can enter a choice.
"""

from __future__ import annotations

from pathlib import Path

from grnn_jax.cli.device_flags import add_host_devices_flag
from grnn_jax.cli.train_cmd import _quiet_checkpoint_logs, load_sequences
from grnn_jax.train import apply_overrides, split_validation
from grnn_jax.train.convergence import sweep_warning
from grnn_jax.train.distributed.member_devices import host_members_mesh, request_host_devices
from grnn_jax.train.populations.population import check_population
from grnn_jax.train.populations.sweep_grid import PLOT_FILE, RESULTS_CSV, RESULTS_JSONL, parse_grid, plot_sweep, run_sweep
from grnn_jax._util import jsonio


def add_parser(subparsers) -> None:
    """Registers ``sweep`` on the ``grnn`` dispatcher."""
    p = subparsers.add_parser(
        "sweep", help="train a population at every point of a grid of settings",
        description="Trains a population (--population members: seeds and learning rates) at "
        "every combination of the --grid values, on the training part of --data, ranked on its "
        "validation part. Writes results.jsonl and results.csv (one row per member) and "
        "val_nll.png into --workdir; run again to resume, finished points are not redone. "
        "Warns when the best validation NLL came at the last step (the budget may be too short).")
    p.add_argument("--data", required=True, help=".npz holding x (S, T, D) and optionally lengths (S,)")
    p.add_argument("--workdir", required=True, help="sweep directory")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a swept setting by its short name, as --set takes it, e.g. "
                        "hidden_size=32,64 or n_components=3,5 (model.hidden_size also works; "
                        "repeatable; the grid is the product)")
    p.add_argument("--population", type=int, default=1, metavar="P",
                   help="members per grid point (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="a setting shared by every point, e.g. num_steps=500 (repeatable)")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of the sequences held out for validation (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split (default 0)")
    add_host_devices_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    p.set_defaults(func=run_sweep_command)


def run_sweep_command(args) -> int:
    """``grnn sweep``: every check first (flags, grid, data, the sweep dir), then the grid."""
    _quiet_checkpoint_logs()
    check_population(args.population)
    host = request_host_devices(args.population, args.host_devices)  # before JAX starts
    grid = parse_grid(args.grid)
    base = apply_overrides({}, args.overrides)
    workdir = Path(args.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} exists and is not a directory")
    if args.val_fraction <= 0:
        raise ValueError(f"--val-fraction must be > 0 for a sweep; got {args.val_fraction}")
    seqs = load_sequences(args.data, "--data")
    train_seqs, val_seqs = split_validation(seqs, args.val_fraction, seed=args.seed)
    quiet = args.quiet or args.json
    rows = run_sweep(train_seqs, val_seqs, workdir, grid, base=base, population=args.population,
                     progress=not quiet, log=None if quiet else print,
                     mesh=host_members_mesh(host, args.population))
    plot = plot_sweep(rows, workdir / PLOT_FILE)
    warning = sweep_warning(rows)
    if args.json:
        print(jsonio.dumps({"workdir": str(workdir), "rows": rows,
                            "plot": None if plot is None else str(plot), "warning": warning}))
        return 0
    best = min((r for r in rows if r["is_best"] and r["best_val_nll"] is not None),
               key=lambda r: r["best_val_nll"], default=None)
    if best is not None:
        print(f"best point {best['point']}: validation NLL {best['best_val_nll']:.4f} nats/step "
              f"(run in {workdir / 'points' / best['point']})")
    print(f"rows: {workdir / RESULTS_JSONL}, {workdir / RESULTS_CSV}")
    print(f"plot: {plot}" if plot is not None
          else "plot skipped: matplotlib is not installed (pip install 'grnn_jax[experiments]')")
    if warning is not None:
        print(warning)
    return 0
