"""The mixture head's covariance types compared on the shipped data sets.

For every experiment config given, the GRNN is trained with each covariance type (nothing
else changed: the config's network, budget, early stopping and seeds), one run per seed.
Reported per data set and type: the head's output width, the test NLL of every seed
(mean ± std over seeds), the test NLL of the seed best on validation, and that seed's
per-step paired difference against the best full-covariance seed (mean ± standard error
over the test steps; positive: the type gave the test steps more density than full).

Usage:
  python -m experiments.covariance_types --out runs/covariance_types
  python -m experiments.covariance_types --configs experiments/configs/weather.py --types full tied
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from experiments.main import paired_difference, train_seeds
from grnn_jax import model
from grnn_jax.model.heads import HEAD_COVARIANCE_TYPES, n_head_outputs
from grnn_jax.train import (
    apply_overrides,
    config_splits,
    load_config_file,
    resolve_train_config,
)

CONFIGS = Path(__file__).parent / "configs"
DEFAULT_CONFIGS = ("geyser.py", "weather.py", "elecdemand.py")
DEFAULT_TYPES = ("full", "diag", "tied")


def _test_step_log_probs(run: dict, test) -> np.ndarray:
    """Log-densities of the observed test steps, original units (flattened in mask order)."""
    z = run["st"].transform(test)
    lp = model.step_log_probs(run["net"], run["params"], jnp.asarray(z.x, jnp.float32),
                              jnp.asarray(z.lengths))
    return np.asarray(lp, np.float64)[np.asarray(test.mask)] - run["st"].log_det


def compare(config_path: Path, types, out: Path, progress: bool) -> dict:
    cfg = load_config_file(config_path)
    seeds = [int(s) for s in cfg.get("experiment", {}).get("seeds", [0])]
    train_seqs, val_seqs, test_seqs = config_splits(cfg)
    rows, step_lp = {}, {}
    for ctype in types:
        typed = apply_overrides(cfg, [f"model.covariance_type={ctype}"])
        config = resolve_train_config(typed, train_seqs)
        runs = train_seeds(config, seeds, train_seqs, val_seqs, out / ctype, "grnn", progress)
        lps = [_test_step_log_probs(r, test_seqs) for r in runs]  # each run scored once
        best = min(range(len(runs)), key=lambda i: runs[i]["val_nll"])
        step_lp[ctype] = lps[best]
        m = config.model
        rows[ctype] = {
            "head_outputs": n_head_outputs(m.n_components, m.n_features, ctype),
            "test_nll": [float(-lp.mean()) for lp in lps], "best_seed": runs[best]["seed"],
            "best_test_nll": float(-lps[best].mean()),
        }
    for ctype in types:
        if "full" in step_lp and ctype != "full":
            rows[ctype]["vs_full"] = paired_difference(step_lp[ctype], step_lp["full"])
    return {"dataset": cfg.get("dataset"), "config": str(config_path), "seeds": seeds,
            "n_test_steps": int(test_seqs.n_steps), "rows": rows}


def render(results: list[dict]) -> str:
    lines = ["| data | type | head outputs | test NLL, seeds (mean ± std) | best-on-validation "
             "seed | vs full, per step (± s.e.) |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        for ctype, row in r["rows"].items():
            t = np.asarray(row["test_nll"])
            vs = row.get("vs_full")
            vs_text = f"{vs[0]:+.3f} ± {vs[1]:.3f}" if vs else "—"
            lines.append(f"| {r['dataset']} | {ctype} | {row['head_outputs']} | "
                         f"{t.mean():.3f} ± {t.std():.3f} | {row['best_test_nll']:.3f} | "
                         f"{vs_text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=[str(CONFIGS / c) for c in DEFAULT_CONFIGS],
                   help="experiment configs (.py)")
    p.add_argument("--types", nargs="+", default=list(DEFAULT_TYPES),
                   choices=HEAD_COVARIANCE_TYPES, help="covariance types to train")
    p.add_argument("--out", default="runs/covariance_types", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    missing = [c for c in a.configs if not Path(c).is_file()]
    if missing:
        p.error(f"no such config: {', '.join(missing)}")
    out = Path(a.out)
    t0 = time.perf_counter()
    results = [compare(Path(c), a.types, out / Path(c).stem, not a.quiet) for c in a.configs]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"results": results, "wall_time_s": time.perf_counter() - t0}, indent=1, default=float))
    table = render(results)
    (out / "report.md").write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
