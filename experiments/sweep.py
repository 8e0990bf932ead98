"""Sweeps the GRNN over a grid of settings on a config's dataset, judged on validation only.

A thin wrapper of ``grnn_jax.train.populations.sweep_grid.run_sweep`` (what ``grnn sweep``
runs) on the train and validation splits a config names; the test split is never loaded
into a choice. Every grid point is a population of --population members (seeds seed,
seed + 1, ...; learning rates spread by --lr-spread, 1 keeps the config's). Results go to
results.jsonl, results.csv, val_nll.png and sweep.md (best member per point) in --workdir;
a repeated sweep resumes, finished points are not redone. Grid keys are the settings' short
names, as ``grnn sweep --grid`` and ``--set`` take them (hidden_size, n_components,
learning_rate, ...; model.hidden_size is accepted too). A warning is printed, and written
into sweep.md, when points had their best validation NLL at their last step.

example:
  python -m experiments.sweep --config experiments/configs/geyser.py \\
      --grid hidden_size=8,16,32 --grid n_components=2,3,4 --population 3
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from grnn_jax.train import apply_overrides, config_splits, load_config_file
from grnn_jax.train.convergence import sweep_warning
from grnn_jax.train.distributed.member_devices import host_members_mesh, request_host_devices
from grnn_jax.train.populations.sweep_grid import PLOT_FILE, parse_grid, plot_sweep, run_sweep

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "geyser.py"


def render_table(rows: list[dict], dataset: str) -> str:
    """A Markdown table of each point's best member, best validation NLL first, and the
    warning of points whose best came at their last step."""
    best = sorted((r for r in rows if r["is_best"]), key=lambda r: r["best_val_nll"])
    lines = [f"# Sweep on `{dataset}` (validation NLL, nats/step, original units)", "",
             "| point | best val NLL | step | of | member (seed, lr) | members' val NLL |",
             "|---|---:|---:|---:|---|---|"]
    for r in best:
        others = ", ".join(f"{m['best_val_nll']:.3f}" for m in rows if m["point"] == r["point"])
        lines.append(f"| {r['point']} | {r['best_val_nll']:.3f} | {r['best_step']} | "
                     f"{r['steps']} | {r['member']} ({r['seed']}, {r['learning_rate']:.2g}) | "
                     f"{others} |")
    warning = sweep_warning(rows)
    if warning is not None:
        lines += ["", f"**{warning}**"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment config (.py)")
    parser.add_argument("--workdir", default="runs/sweep", help="output directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config entry for every run (repeatable)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a swept setting by its short name, e.g. hidden_size=8,16 "
                             "(repeatable; the grid is their product; default hidden_size=8,16,32 "
                             "and n_components=2,3,4)")
    parser.add_argument("--population", type=int, default=3, help="members per point (default 3)")
    parser.add_argument("--lr-spread", type=float, default=1.0,
                        help="members' learning rates span this factor (default 1: seeds only)")
    args = parser.parse_args(argv)
    # First, before anything starts JAX: each point's members over the CPU's cores, as
    # ``grnn sweep`` splits them (nothing changes where JAX has started already).
    host = request_host_devices(args.population if args.population >= 1 else None)
    logging.getLogger("absl").setLevel(logging.ERROR)
    cfg = apply_overrides(load_config_file(args.config), args.overrides)
    grid = parse_grid(args.grid or ["hidden_size=8,16,32", "n_components=2,3,4"])
    splits = config_splits(cfg)
    # The config's data keys ride along in the sweep's record; training ignores them.
    rows = run_sweep(splits.train, splits.val, args.workdir, grid, base=cfg,
                     population=args.population, lr_spread=args.lr_spread, log=print,
                     mesh=host_members_mesh(host, args.population))
    out = Path(args.workdir)
    (out / "sweep.md").write_text(render_table(rows, str(cfg.get("dataset"))))
    plot_sweep(rows, out / PLOT_FILE)
    print(f"table: {out / 'sweep.md'}")
    warning = sweep_warning(rows)
    if warning is not None:
        print(warning)
    return 0


if __name__ == "__main__":
    sys.exit(main())
