"""The main experiment: a GRNN on a real dataset against baselines, with a report.

Trains a GRNN (and the same network with one Gaussian per step) on the training
split of a dataset, keeps the parameters with the best validation NLL, fits a
static GMM and a Gaussian HMM (K chosen on validation), and scores all four on
the held-out test split in nats per observed step, original units. Writes
``report.md``, ``results.json`` and figures into the work dir.

    python -m experiments.main --config experiments/configs/geyser.py --workdir runs/main
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import baselines, plots
from grnn_jax import calibration, gmm, model
from grnn_jax.data import Sequences
from grnn_jax.training import (
    TrainConfig,
    apply_overrides,
    config_splits,
    load_config_file,
    resolve_train_config,
    load_trained,
    read_metrics,
    read_run_config,
    train,
    write_json_atomic,
)
from grnn_jax.dtypes import default_float

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "geyser.py"
FEATURE_NAMES = {
    "geyser": ("waiting (min)", "duration (min)"),
    "storms": ("lat", "long", "wind (kn)", "pressure (mb)"),
    "eustock": ("DAX", "SMI", "CAC", "FTSE"),
}
EXPERIMENT_DEFAULTS = {
    "baseline_components": list(baselines.COMPONENTS_GRID),
    "hmm_iter": 200,
    "n_samples": 3,
    "sample_steps": 45,
    "density_steps": [1, 5, 10, 20],
    "density_dims": [0, 1],
    "levels": [0.5, 0.8, 0.95],
    "max_train_sequences": None,
    "sample_seed": 0,
    "seeds": [0],
    "pit_bins": None,
}
GRNN, SINGLE, STATIC, HMM = "GRNN", "single-Gaussian RNN (K=1)", "static GMM", "Gaussian HMM"
BASELINES = (SINGLE, STATIC, HMM)
_K_AXIS = {"full": -3, "diag": -2, "spherical": -1}  # the component axis of prec_chol


def _train_or_resume(config: TrainConfig, train_seqs, val_seqs, workdir: Path, progress: bool):
    """Resumes a finished or interrupted run with the same settings; starts over otherwise."""
    resume = False
    try:
        saved = read_run_config(workdir)
        resume = TrainConfig.from_dict(saved["train_config"]) == config
    except (FileNotFoundError, ValueError, KeyError):
        pass
    train(config, train_seqs, val_seqs, workdir, resume=resume, progress=progress)
    return load_trained(workdir)


@functools.partial(jax.jit, static_argnums=0)
def _apply(net, params, x):
    return net.apply(params, x)


def _train_seeds(config: TrainConfig, seeds, train_seqs, val_seqs, workdir: Path, prefix: str,
                 progress: bool) -> list[dict]:
    """One run per seed in ``workdir/{prefix}_seed{s}``, each with its best-validation parameters."""
    runs = []
    for seed in seeds:
        run_dir = workdir / f"{prefix}_seed{seed}"
        net, params, st, _ = _train_or_resume(config.replace(seed=seed), train_seqs, val_seqs,
                                              run_dir, progress)
        runs.append({"seed": seed, "dir": run_dir, "net": net, "params": params, "st": st,
                     "val_nll": _best_eval(run_dir)["val_nll"]})
    return runs


def _predict(run: dict, seqs: Sequences):
    """Per-step predictive mixtures (S, T) in standardised units, the standardised data and
    the (S, T) mask."""
    z = run["st"].transform(seqs)
    return _apply(run["net"], run["params"], jnp.asarray(z.x, default_float())), z


def _nll(g, z: Sequences, log_jacobian: float) -> float:
    # What training.evaluate computes, from the mixtures already at hand (no second compile).
    total = float(jnp.sum(_masked_log_prob(g, jnp.asarray(z.x, jnp.float32), jnp.asarray(z.mask))))
    return baselines.nll_per_step(total, z.n_steps, log_jacobian)


def _score(run: dict, seqs: Sequences):
    """(predictive GMM in standardised units, NLL per step in original units) on ``seqs``."""
    g, z = _predict(run, seqs)
    return g, _nll(g, z, run["st"].log_jacobian)


def _score_ensemble(runs: list[dict], seqs: Sequences):
    """The equal-weight mixture of the runs' predictive mixtures (one GMM with N*K components);
    every run shares the standardiser of the common training split."""
    parts = [_predict(r, seqs) for r in runs]
    gs = [p[0] for p in parts]
    log_n = np.log(len(gs))
    g = gmm.GMM(jnp.concatenate([jax.nn.log_softmax(x.logits, axis=-1) - log_n for x in gs], -1),
                jnp.concatenate([x.means for x in gs], -2),
                jnp.concatenate([x.prec_chol for x in gs], _K_AXIS[gs[0].covariance_type]),
                gs[0].covariance_type)
    return g, _nll(g, parts[0][1], runs[0]["st"].log_jacobian)


@functools.partial(jax.jit, static_argnames=("levels", "n_bins"))
def _calibration(g, z, mask, levels, n_bins):
    g = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), g)
    return calibration.summary(g, z, mask, levels=levels, n_bins=n_bins)


@jax.jit
def _masked_log_prob(g, z, mask):
    g = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), g)
    return jnp.where(mask, gmm.log_prob(g, z), 0.0)


def run(cfg: dict, workdir: str | Path, *, progress: bool = True) -> dict:
    """Runs the experiment described by ``cfg`` (see ``experiments/configs``) into ``workdir``.

    Returns:
      the results written to ``results.json``.
    """
    t_start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    exp = dict(EXPERIMENT_DEFAULTS, **cfg.get("experiment", {}))
    name = str(cfg.get("dataset", "geyser"))
    splits = config_splits(cfg)
    train_seqs, val_seqs, test_seqs = splits
    if exp["max_train_sequences"]:
        train_seqs = train_seqs.select(slice(0, int(exp["max_train_sequences"])))
    config = resolve_train_config(cfg, train_seqs)
    timings = {}

    seeds = [int(v) for v in exp["seeds"]] or [config.seed]
    t = time.perf_counter()
    grnn_runs = _train_seeds(config, seeds, train_seqs, val_seqs, workdir, "grnn", progress)
    timings["grnn"] = time.perf_counter() - t
    t = time.perf_counter()
    k1_runs = _train_seeds(config.replace(model={"n_components": 1}), seeds, train_seqs, val_seqs,
                           workdir, "grnn_k1", progress)
    timings["single_gaussian_rnn"] = time.perf_counter() - t
    best, best1 = (min(r, key=lambda run: run["val_nll"]) for r in (grnn_runs, k1_runs))
    net, params, st = best["net"], best["params"], best["st"]

    # Baselines see the same standardised data as the networks; K is picked on validation.
    log_jac = st.log_jacobian
    tr_z, va_z, te_z = (st.transform(s) for s in (train_seqs, val_seqs, test_seqs))
    ks = [int(k) for k in exp["baseline_components"]]
    t = time.perf_counter()
    static = baselines.static_gmm_baseline(tr_z, va_z, log_jacobian=log_jac, seed=config.seed, ks=ks)
    timings["static_gmm"] = time.perf_counter() - t
    t = time.perf_counter()
    hmm = baselines.hmm_baseline(tr_z, va_z, log_jacobian=log_jac, seed=config.seed, ks=ks,
                                 n_iter=int(exp["hmm_iter"]))
    timings["hmm"] = time.perf_counter() - t

    levels = tuple(float(v) for v in exp["levels"])
    mask = jnp.asarray(test_seqs.mask)
    predictive, rows = {}, {}
    for label, run in {GRNN: best, SINGLE: best1}.items():
        g, nll = _score(run, test_seqs)
        predictive[label] = g
        rows[label] = {"n_components": run["net"].n_components, "val_nll": run["val_nll"],
                       "test_nll": nll, "seed": run["seed"],
                       "val_nll_by_seed": {str(r["seed"]): r["val_nll"] for r in
                                           (grnn_runs if label == GRNN else k1_runs)}}
    if len(grnn_runs) > 1:
        label = f"GRNN ensemble of {len(grnn_runs)} seeds"
        g, nll = _score_ensemble(grnn_runs, test_seqs)
        predictive[label] = g
        rows[label] = {"n_components": g.n_components, "val_nll": _score_ensemble(grnn_runs, val_seqs)[1],
                       "test_nll": nll}
    for label, b in {STATIC: static, HMM: hmm}.items():
        predictive[label] = b.predictive(te_z)
        rows[label] = {
            "n_components": b.n_components,
            "val_nll": b.val_nll[b.n_components],
            "test_nll": b.nll(te_z, log_jac),
            "val_nll_by_k": {str(k): v for k, v in b.val_nll.items()},
        }
    z_test = jnp.asarray(te_z.x, jnp.float32)
    # Paired comparison on the same test steps: every model's predictive mixtures are in
    # the units of the one standardiser fitted on the common training split.
    valid = np.asarray(test_seqs.mask)
    step_lp = {label: np.asarray(_masked_log_prob(g, z_test, mask))[valid]
               for label, g in predictive.items()}
    n_bins = int(exp["pit_bins"] or np.clip(test_seqs.n_steps // 10, 4, 10))
    hists = {}
    for label, g in predictive.items():
        diff = step_lp[GRNN] - step_lp[label]  # > 0 where the GRNN gave the step more density
        rows[label]["test_nll_minus_grnn"] = float(diff.mean())
        rows[label]["paired_se"] = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        # PIT values do not change under the increasing affine map of standardisation.
        s = _calibration(g, z_test, mask, levels, n_bins)
        rows[label]["coverage"] = np.asarray(s["coverage"]).mean(axis=1).tolist()
        rows[label]["coverage_by_dim"] = np.asarray(s["coverage"]).tolist()
        rows[label]["calibration_max_abs_error"] = float(s["max_abs_error"])
        hists[label] = np.asarray(s["histogram"])

    features = FEATURE_NAMES.get(name, tuple(f"x{d}" for d in range(test_seqs.n_features)))
    figures = _figures(workdir, exp, features, test_seqs, predictive, hists, best, best1)

    results = {
        "dataset": name,
        "n_train_sequences": train_seqs.n_sequences, "n_train_steps": train_seqs.n_steps,
        "n_val_steps": val_seqs.n_steps, "n_test_steps": test_seqs.n_steps,
        "n_test_sequences": test_seqs.n_sequences,
        "levels": list(levels),
        "models": rows,
        "train_config": config.to_dict(),
        "best_step": _best_eval(best["dir"])["step"],
        "figures": figures,
        "timings_s": timings,
        "wall_time_s": time.perf_counter() - t_start,
    }
    write_json_atomic(workdir / "results.json", results)
    (workdir / "report.md").write_text(render_report(results))
    return results


def _best_eval(run_dir: Path) -> dict:
    """The metrics record of the best validation NLL: the kept parameters were scored there."""
    evals = [m for m in read_metrics(run_dir) if m.get("kind") == "eval"]
    return min(evals, key=lambda m: m["val_nll"])


def _figures(workdir, exp, features, test_seqs, predictive, hists, best, best1) -> dict:
    figs = {
        "learning_curves": "learning_curves.png",
        "next_step_density": "next_step_density.png",
        "samples": "samples.png",
        "pit": "pit_histograms.png",
    }
    st, net, params = best["st"], best["net"], best["params"]
    plots.learning_curves({GRNN: read_metrics(best["dir"]), SINGLE: read_metrics(best1["dir"])},
                          workdir / figs["learning_curves"], log_jacobian=st.log_jacobian)
    seq0 = test_seqs.x[0, : int(test_seqs.lengths[0])]
    steps = [int(t) for t in exp["density_steps"] if int(t) < len(seq0)] or [0]
    dims = tuple(int(d) for d in exp["density_dims"])
    if test_seqs.n_features >= 2:
        shown = {k: predictive[k] for k in (GRNN, HMM, STATIC)}
        orig = {k: plots.to_original_units(_first(g), st.mean, st.std) for k, g in shown.items()}
        plots.next_step_densities(seq0, orig, steps, workdir / figs["next_step_density"],
                                  feature_names=features, dims=dims)
    else:
        del figs["next_step_density"]
    z = model.generate(jax.random.key(int(exp["sample_seed"])), net, params, int(exp["sample_steps"]),
                       n_samples=int(exp["n_samples"]))
    sampled = st.inverse(np.asarray(z, np.float64))
    real = [test_seqs.x[i, : int(n)] for i, n in enumerate(test_seqs.lengths)]
    plots.samples_vs_real(real, sampled, workdir / figs["samples"], feature_names=features)
    plots.pit_histograms(hists, workdir / figs["pit"], feature_names=features)
    return figs


def _first(g):
    return jax.tree_util.tree_map(lambda a: a[0], g)


def render_report(r: dict) -> str:
    """The Markdown report of a results dict."""
    rows = r["models"]
    lv = r["levels"]
    cov_head = " | ".join(f"{int(round(100 * p))}% cov." for p in lv)
    lines = [
        f"# GRNN on `{r['dataset']}`",
        "",
        f"Train {r['n_train_steps']} steps in {r['n_train_sequences']} sequences; validation "
        f"{r['n_val_steps']} steps; test {r['n_test_steps']} steps in {r['n_test_sequences']} "
        "sequence(s). Test steps were used for nothing but the numbers below.",
        "",
        "Held-out negative log-likelihood of the one-step predictive density "
        "p(x_t | x_<t), nats per observed step in the data's original units (lower is better). "
        "K for the baselines was chosen on validation; the networks keep the parameters of "
        "their best validation step. Coverage: share of test observations inside the central "
        "predictive interval of each dimension's marginal, averaged over dimensions "
        "(nominal in the header). \"minus GRNN\": the model's test NLL minus the GRNN's, with "
        "the standard error of the mean of the per-step differences (positive: the GRNN is "
        "better).",
        "",
        f"| model | K | val NLL | **test NLL** | minus GRNN (± paired s.e.) | {cov_head} |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(lv),
    ]
    order = [GRNN] + [k for k in rows if k.startswith("GRNN ensemble")] + list(BASELINES)
    for name in [k for k in order if k in rows]:
        row = rows[name]
        cov = " | ".join(f"{c:.2f}" for c in row["coverage"])
        delta = ("" if name == GRNN else
                 f"{row['test_nll_minus_grnn']:+.3f} ± {row['paired_se']:.3f}")
        lines.append(f"| {name} | {row['n_components']} | {row['val_nll']:.3f} | "
                     f"**{row['test_nll']:.3f}** | {delta} | {cov} |")
    g = rows[GRNN]["test_nll"]
    others = {k: rows[k]["test_nll"] for k in BASELINES if k in rows}
    best_other = min(others, key=others.get)
    margin = rows[best_other]["test_nll_minus_grnn"]
    se = rows[best_other]["paired_se"]
    verdict = ("beats every baseline" if g < others[best_other]
               else f"does not beat the {best_other}")
    caveat = ""
    if abs(margin) < 2 * se:
        caveat = (f" The margin to the {best_other} ({margin:+.3f} ± {se:.3f}) is within two "
                  f"paired standard errors on {r['n_test_steps']} test steps: not a clear win.")
    lines += [
        "",
        f"The GRNN {verdict} on held-out steps: {g:.3f} vs {others[best_other]:.3f} nats/step "
        f"for the best baseline ({best_other}); "
        + ", ".join(f"{k} {v - g:+.3f}" for k, v in others.items()) + " relative to the GRNN."
        + caveat,
        "",
        "GRNN: the seed with the best validation NLL among "
        + ", ".join(f"seed {k} ({v:.3f})" for k, v in rows[GRNN].get("val_nll_by_seed", {}).items())
        + "; an ensemble row, when present, is the equal-weight mixture of every seed's "
        "predictive mixture.",
        "",
        "Validation NLL of the baselines by K: "
        + "; ".join(f"{k}: " + ", ".join(f"K={kk} {vv:.3f}" for kk, vv in rows[k]["val_nll_by_k"].items())
                    for k in (STATIC, HMM)) + ".",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(r["train_config"], indent=1, sort_keys=True),
        "```",
        "",
        f"Best validation step of the GRNN: {r['best_step']}. Wall time {r['wall_time_s']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in r["timings_s"].items()) + ").",
        "",
        "## Figures",
        "",
    ]
    captions = {
        "learning_curves": "Learning curves: training loss and validation NLL per step.",
        "next_step_density": "Predicted density of the next observation at a few steps of the "
                             "held-out sequence (star: what happened; square: the previous step).",
        "samples": "Held-out sequences beside sequences sampled from the GRNN.",
        "pit": "PIT histograms of the one-step predictions (flat when calibrated; U-shaped when "
               "over-confident).",
    }
    for key, fname in r["figures"].items():
        lines += [f"![{key}]({fname})", "", captions[key], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment config (.py)")
    parser.add_argument("--workdir", default="runs/main", help="output directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config entry, e.g. experiment.hmm_iter=50 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    cfg = apply_overrides(load_config_file(args.config), args.overrides)
    res = run(cfg, args.workdir, progress=not args.quiet)
    print(f"report: {Path(args.workdir) / 'report.md'}  (wall time {res['wall_time_s']:.0f} s)")
    for name, row in res["models"].items():
        print(f"  {name:28s} K={row['n_components']}  test NLL {row['test_nll']:.4f} nats/step  "
              f"coverage {', '.join(f'{c:.2f}' for c in row['coverage'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
