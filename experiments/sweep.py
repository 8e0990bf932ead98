"""Hyper-parameter and seed sweep of the GRNN on a config's dataset, judged on validation only.

Every point of the grid is trained once per seed (each in its own run directory, so
a repeated sweep resumes finished runs instantly); the table gives the best
validation NLL (nats per observed step, original units) per run, its mean and
standard deviation over seeds, and the step it was reached at. The test split is
never touched: choose settings here, then score them once with ``experiments.main``.

    python -m experiments.sweep --config experiments/configs/geyser.py \\
        --grid model.hidden_size=8,16,32 --grid model.n_components=2,3,4 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from grnn_jax.training import (
    apply_overrides,
    config_splits,
    load_config_file,
    read_metrics,
    resolve_train_config,
    set_entry,
    train,
    write_json_atomic,
)
from grnn_jax.training.resolve import parse_value

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "geyser.py"


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["model.hidden_size=8,16", "learning_rate=1e-3,3e-3"]`` -> {key: [values]}."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(f"--grid expects KEY=V1,V2,...; got {item!r}")
        grid[key.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    return grid


def run_sweep(cfg: dict, grid: dict[str, list], seeds: list[int], workdir: str | Path, *,
              progress: bool = False) -> list[dict]:
    """Trains every grid point for every seed; returns one row per grid point."""
    workdir = Path(workdir)
    splits = config_splits(cfg)
    keys = list(grid)
    rows = []
    for i, values in enumerate(itertools.product(*grid.values())):
        point = dict(zip(keys, values))
        per_seed = []
        for seed in seeds:
            c = json.loads(json.dumps(cfg))
            for k, v in point.items():
                set_entry(c, k, v)
            c["seed"] = int(seed)
            config = resolve_train_config(c, splits.train)
            run_dir = workdir / f"point{i:03d}_seed{seed}"
            t = time.perf_counter()
            try:
                train(config, splits.train, splits.val, run_dir, resume=True, progress=progress)
            except ValueError:  # a different config left there by an older sweep
                train(config, splits.train, splits.val, run_dir, resume=False, progress=progress)
            evals = [m for m in read_metrics(run_dir) if m["kind"] == "eval"]
            best = min(evals, key=lambda m: m["val_nll"])
            per_seed.append({"seed": int(seed), "best_val_nll": best["val_nll"],
                             "best_step": best["step"], "seconds": time.perf_counter() - t})
        vals = np.array([r["best_val_nll"] for r in per_seed])
        rows.append({"point": point, "runs": per_seed, "mean_val_nll": float(vals.mean()),
                     "std_val_nll": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0})
        print(f"{point}: val NLL {vals.mean():.4f} ± {rows[-1]['std_val_nll']:.4f} "
              f"({', '.join(f'{v:.3f}' for v in vals)})", flush=True)
    return rows


def render_table(rows: list[dict], dataset: str) -> str:
    """A Markdown table, best mean validation NLL first."""
    keys = list(rows[0]["point"]) if rows else []
    seeds = [r["seed"] for r in rows[0]["runs"]] if rows else []
    head = "| " + " | ".join(keys) + " | mean val NLL | sd | " + " | ".join(
        f"seed {s}" for s in seeds) + " |"
    lines = [f"# Sweep on `{dataset}` (validation NLL, nats/step, original units)", "", head,
             "|" + "---|" * len(keys) + "---:|---:|" + "---:|" * len(seeds)]
    for r in sorted(rows, key=lambda r: r["mean_val_nll"]):
        runs = " | ".join(f"{x['best_val_nll']:.3f} (step {x['best_step']})" for x in r["runs"])
        lines.append("| " + " | ".join(str(r["point"][k]) for k in keys)
                     + f" | {r['mean_val_nll']:.3f} | {r['std_val_nll']:.3f} | {runs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment config (.py)")
    parser.add_argument("--workdir", default="runs/sweep", help="output directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config entry for every run (repeatable)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a swept config entry (repeatable; the grid is their product)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    args = parser.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    cfg = apply_overrides(load_config_file(args.config), args.overrides)
    grid = parse_grid(args.grid or ["model.hidden_size=8,16,32", "model.n_components=2,3,4"])
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        raise ValueError("--seeds names no seed")
    rows = run_sweep(cfg, grid, seeds, args.workdir)
    out = Path(args.workdir)
    write_json_atomic(out / "sweep.json", {"dataset": cfg.get("dataset"), "grid": grid,
                                           "seeds": seeds, "rows": rows})
    (out / "sweep.md").write_text(render_table(rows, str(cfg.get("dataset"))))
    print(f"table: {out / 'sweep.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
