"""The main experiment: a GRNN on a real dataset against baselines, with a report.

Trains a GRNN (and the same network with one Gaussian per step) for several seeds on
the training split of a dataset, keeps each run's parameters with the best validation
NLL, fits a static GMM, a Gaussian HMM (hmmlearn) and an AR-HMM (dynamax; K and lags chosen
on validation), and scores them all
on held-out test steps in nats per observed step, original units. A single series is
evaluated by rolling origin (``experiment.folds`` test blocks, each model refitted per
fold on the past only); a set of sequences by its held-out sequences. Every difference
to the GRNN comes with its paired standard error, the networks' scores with their
spread over seeds, calibration with a PIT ECDF and its confidence band. Writes
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
from grnn_jax import gmm, model
from grnn_jax.gmm import calibration
from grnn_jax.data import DATASETS, Sequences
from grnn_jax.data.real import rolling_origin_splits
from grnn_jax.train import (
    TrainConfig,
    apply_overrides,
    config_splits,
    ensemble_gmm,
    load_config_file,
    resolve_train_config,
    load_trained,
    read_metrics,
    read_run_config,
    train,
    write_json_atomic,
)
from grnn_jax.runtime import default_float

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "geyser.py"
FEATURE_NAMES = {
    "geyser": ("waiting (min)", "duration (min)"),
    "storms": ("lat", "long", "wind (kn)", "pressure (mb)"),
    "eustock": ("DAX", "SMI", "CAC", "FTSE"),
    "weather": ("temperature (F)", "dew point (F)", "pressure (mb)"),
    "elecdemand": ("demand (GW)", "temperature (C)"),
}
DATASET_DESCRIPTIONS = {
    "geyser": "Old Faithful geyser, Yellowstone National Park (MASS `geyser`, Azzalini & Bowman "
              "1990): 299 eruptions in time order, 1-15 August 1985; each step is one eruption, "
              "the waiting time from the previous eruption to it and its duration, both in minutes "
              "(durations recorded at night only as short, medium or long are spread over their "
              "rounding minute).",
}
EXPERIMENT_DEFAULTS = {
    "baseline_components": list(baselines.COMPONENTS_GRID),
    "hmm_iter": 200,
    # AR-HMM (dynamax): K grid (None: baseline_components), lag grid, EM restarts and iterations.
    "arhmm_components": None,
    "arhmm_lags": list(baselines.ARHMM_LAGS),
    "arhmm_restarts": 3,
    "arhmm_iter": 100,
    "n_samples": 3,
    "sample_steps": 45,
    "density_steps": [1, 5, 10, 20],
    "density_dims": [0, 1],
    "levels": [0.5, 0.8, 0.95],
    "max_train_sequences": None,
    "sample_seed": 0,
    "seeds": [0],
    "folds": 1,
    "fold_block": None,
    "alpha": 0.05,
}
GRNN, SINGLE, STATIC, HMM = "GRNN", "single-Gaussian RNN (K=1)", "static GMM", "Gaussian HMM"
ARHMM = "AR-HMM"
ORACLE = "generating process (oracle)"
BASELINES = (SINGLE, STATIC, HMM, ARHMM)
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


_ensemble = jax.jit(ensemble_gmm, static_argnums=0)


def train_seeds(config: TrainConfig, seeds, train_seqs, val_seqs, workdir: Path, prefix: str,
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


def _score_ensemble(runs: list[dict], seqs: Sequences):
    """The equal-weight mixture of the runs' predictive mixtures (``ensemble_gmm``: one GMM
    with N*K components) and its NLL; every run shares the standardiser of the common
    training split."""
    z = runs[0]["st"].transform(seqs)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[r["params"] for r in runs])
    g = _ensemble(runs[0]["net"], stacked, jnp.asarray(z.x, default_float()))
    return g, _nll(g, z, runs[0]["st"].log_det)


@jax.jit
def _pit(g, z):
    g = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), g)
    return calibration.marginal_cdf(g, z)


@jax.jit
def _masked_log_prob(g, z, mask):
    g = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), g)
    return jnp.where(mask, gmm.log_prob(g, z), 0.0)


def fold_splits(cfg: dict, exp: dict) -> list:
    """The train/validation/test splits the experiment scores: one split of ``cfg``'s dataset,
    or ``exp["folds"]`` rolling-origin folds of a series (see ``rolling_origin_splits``)."""
    n_folds = int(exp["folds"])
    if n_folds <= 1:
        return [config_splits(cfg)]
    return rolling_origin_splits(str(cfg.get("dataset")), n_folds, block=exp["fold_block"],
                                 window=cfg.get("window"))


def _fit_baselines(exp: dict, seed: int, tr_z, va_z, log_jac: float, timings: dict, progress: bool):
    """The static GMM, Gaussian HMM and AR-HMM fitted to standardised training data, each
    with K (and the AR-HMM's lags) chosen on validation; adds each one's seconds to ``timings``."""
    ks = [int(k) for k in exp["baseline_components"]]
    t = time.perf_counter()
    static = baselines.static_gmm_baseline(tr_z, va_z, log_jacobian=log_jac, seed=seed, ks=ks)
    timings["static_gmm"] = time.perf_counter() - t
    t = time.perf_counter()
    hmm = baselines.hmm_baseline(tr_z, va_z, log_jacobian=log_jac, seed=seed, ks=ks,
                                 n_iter=int(exp["hmm_iter"]))
    timings["hmm"] = time.perf_counter() - t
    t = time.perf_counter()
    arhmm = baselines.arhmm_baseline(
        tr_z, va_z, log_jacobian=log_jac, seed=seed,
        # dynamax's HMMs need two regimes at least (their Dirichlet priors have K entries).
        ks=[int(k) for k in (exp["arhmm_components"] or ks) if int(k) >= 2],
        lags=[int(p) for p in exp["arhmm_lags"]],
        n_restarts=int(exp["arhmm_restarts"]), n_iter=int(exp["arhmm_iter"]), verbose=progress)
    timings["arhmm"] = time.perf_counter() - t
    return static, hmm, arhmm


def _run_fold(cfg: dict, exp: dict, splits, workdir: Path, progress: bool) -> dict:
    """Trains and fits every model on one split; returns their per-step test log-densities
    (original units, observed steps only), PIT values and selection records."""
    train_seqs, val_seqs, test_seqs = splits
    if exp["max_train_sequences"]:
        train_seqs = train_seqs.select(slice(0, int(exp["max_train_sequences"])))
    config = resolve_train_config(cfg, train_seqs)
    timings = {}
    seeds = [int(v) for v in exp["seeds"]] or [config.seed]
    t = time.perf_counter()
    grnn_runs = train_seeds(config, seeds, train_seqs, val_seqs, workdir, "grnn", progress)
    timings["grnn"] = time.perf_counter() - t
    t = time.perf_counter()
    k1_runs = train_seeds(config.replace(model={"n_components": 1}), seeds, train_seqs, val_seqs,
                          workdir, "grnn_k1", progress)
    timings["single_gaussian_rnn"] = time.perf_counter() - t
    best, best1 = (min(r, key=lambda run: run["val_nll"]) for r in (grnn_runs, k1_runs))

    # Baselines see the same standardised data as the networks; K is picked on validation.
    st = best["st"]
    log_jac = st.log_det
    tr_z, va_z, te_z = (st.transform(s) for s in (train_seqs, val_seqs, test_seqs))
    static, hmm, arhmm = _fit_baselines(exp, config.seed, tr_z, va_z, log_jac, timings, progress)

    # Every model's predictive mixtures are in the units of the one standardiser fitted on
    # this fold's training split, so per-step log-densities pair up step by step.
    valid = np.asarray(test_seqs.mask)
    z_test = jnp.asarray(te_z.x, jnp.float32)
    mask = jnp.asarray(valid)

    def observed(g):
        lp = np.asarray(_masked_log_prob(g, z_test, mask), np.float64)[valid] - log_jac
        # PIT values do not change under the increasing affine map of standardisation.
        return lp, np.asarray(_pit(g, z_test), np.float64)[valid]

    predictive = {GRNN: _predict(best, test_seqs)[0], SINGLE: _predict(best1, test_seqs)[0]}
    val_nll = {GRNN: best["val_nll"], SINGLE: best1["val_nll"]}
    ks_used = {GRNN: best["net"].n_components, SINGLE: 1}
    if len(grnn_runs) > 1:
        label = f"GRNN ensemble of {len(grnn_runs)} seeds"
        predictive[label] = _score_ensemble(grnn_runs, test_seqs)[0]
        val_nll[label] = _score_ensemble(grnn_runs, val_seqs)[1]
        ks_used[label] = len(grnn_runs) * best["net"].n_components
    for label, b in {STATIC: static, HMM: hmm, ARHMM: arhmm}.items():
        predictive[label] = b.predictive(te_z)
        val_nll[label] = b.chosen_val_nll
        ks_used[label] = b.n_components
    models = {label: dict(zip(("lp", "pit"), observed(g))) for label, g in predictive.items()}
    seed_lp = {}
    for label, runs in ((GRNN, grnn_runs), (SINGLE, k1_runs)):
        seed_lp[label] = {r["seed"]: observed(_predict(r, test_seqs)[0])[0] for r in runs}
    oracle = DATASETS[str(cfg.get("dataset"))].oracle if cfg.get("dataset") in DATASETS else None
    if oracle is not None:
        models[ORACLE] = {"lp": np.asarray(oracle(test_seqs), np.float64)[valid], "pit": None}
    return {
        "splits": (train_seqs, val_seqs, test_seqs), "config": config, "best": best, "best1": best1,
        "predictive": predictive, "models": models, "seed_lp": seed_lp, "val_nll": val_nll,
        "n_components": ks_used, "timings": timings,
        "val_nll_by_k": {STATIC: {str(k): v for k, v in static.val_nll.items()},
                         HMM: {str(k): v for k, v in hmm.val_nll.items()},
                         ARHMM: {baselines.candidate_text(k): v for k, v in arhmm.val_nll.items()}},
        "arhmm_lags": arhmm.lags,
        "val_nll_by_seed": {GRNN: {str(r["seed"]): r["val_nll"] for r in grnn_runs},
                            SINGLE: {str(r["seed"]): r["val_nll"] for r in k1_runs}},
        # hmmlearn's monitor_.converged is also True when Baum-Welch merely ran out of
        # iterations; convergence here means the last gain fell below the tolerance.
        "hmm_converged": baselines.hmm_converged(hmm.model),
        "hmm_iterations": int(hmm.model.monitor_.iter),
        "best_step": _best_eval(best["dir"])["step"],
    }


def paired_difference(lp_grnn: np.ndarray, lp_other: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of ``lp_grnn - lp_other`` over the same test steps: the other
    model's NLL minus the GRNN's (positive: the GRNN gave the steps more density)."""
    diff = np.asarray(lp_grnn, np.float64) - np.asarray(lp_other, np.float64)
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return float(diff.mean()), se


def summarise_folds(folds: list[dict], *, levels, alpha: float) -> dict:
    """One table row per model from the folds' per-step records, pooled over all test steps."""
    rows = {}
    lp_grnn = np.concatenate([f["models"][GRNN]["lp"] for f in folds])
    n_val = [f["splits"][1].n_steps for f in folds]
    for label in folds[0]["models"]:
        lp = np.concatenate([f["models"][label]["lp"] for f in folds])
        row = {"test_nll": float(-lp.mean()),
               "test_nll_by_fold": [float(-f["models"][label]["lp"].mean()) for f in folds]}
        if label != GRNN:
            row["test_nll_minus_grnn"], row["paired_se"] = paired_difference(lp_grnn, lp)
        if label in folds[0]["val_nll"]:
            row["val_nll"] = float(np.average([f["val_nll"][label] for f in folds], weights=n_val))
            row["n_components"] = [int(f["n_components"][label]) for f in folds]
        if folds[0]["models"][label]["pit"] is not None:
            pit = np.concatenate([f["models"][label]["pit"] for f in folds])
            cov = np.asarray(calibration.interval_coverage(jnp.asarray(pit), levels))
            row["coverage"] = cov.mean(axis=1).tolist()
            row["coverage_by_dim"] = cov.tolist()
            row["pit_ks"] = np.asarray(calibration.pit_ks_distance(jnp.asarray(pit))).tolist()
            row["pit_band"] = calibration.ecdf_band(pit.shape[0], alpha)
        if label in folds[0]["seed_lp"]:
            seeds = folds[0]["seed_lp"][label]
            by_seed = {str(s): float(-np.concatenate([f["seed_lp"][label][s] for f in folds]).mean())
                       for s in seeds}
            vals = np.array(list(by_seed.values()))
            row["test_nll_by_seed"] = by_seed
            row["test_nll_seed_mean"] = float(vals.mean())
            row["test_nll_seed_std"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
            row["val_nll_by_seed"] = [f["val_nll_by_seed"][label] for f in folds]
        if label in (STATIC, HMM, ARHMM):
            row["val_nll_by_k"] = [f["val_nll_by_k"][label] for f in folds]
        if label == ARHMM:
            row["lags"] = [int(f["arhmm_lags"]) for f in folds]
        rows[label] = row
    rows[HMM]["converged"] = [f["hmm_converged"] for f in folds]
    rows[HMM]["iterations"] = [f["hmm_iterations"] for f in folds]
    return rows


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
    levels = tuple(float(v) for v in exp["levels"])
    calibration.ecdf_band(1, float(exp["alpha"]))  # a bad alpha fails before any training
    all_splits = fold_splits(cfg, exp)
    folds = []
    for i, splits in enumerate(all_splits):
        fold_dir = workdir / f"fold{i}" if len(all_splits) > 1 else workdir
        folds.append(_run_fold(cfg, exp, splits, fold_dir, progress))
    rows = summarise_folds(folds, levels=levels, alpha=float(exp["alpha"]))

    last = folds[-1]  # the fold trained on the most data draws the figures
    test_seqs = last["splits"][2]
    features = FEATURE_NAMES.get(name, tuple(f"x{d}" for d in range(test_seqs.n_features)))
    pits = {label: np.concatenate([f["models"][label]["pit"] for f in folds])
            for label in last["predictive"]}
    figures = _figures(workdir, exp, features, last, pits)
    timings = {k: sum(f["timings"][k] for f in folds) for k in last["timings"]}
    results = {
        "dataset": name,
        "n_folds": len(folds),
        "n_train_sequences": [f["splits"][0].n_sequences for f in folds],
        "n_train_steps": [f["splits"][0].n_steps for f in folds],
        "n_val_steps": [f["splits"][1].n_steps for f in folds],
        "n_test_steps": int(sum(f["splits"][2].n_steps for f in folds)),
        "n_test_sequences": int(sum(f["splits"][2].n_sequences for f in folds)),
        "seeds": [int(s) for s in folds[0]["seed_lp"][GRNN]],
        "levels": list(levels),
        "alpha": float(exp["alpha"]),
        "models": rows,
        "train_config": last["config"].to_dict(),
        "best_step": [f["best_step"] for f in folds],
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


def _figures(workdir, exp, features, fold, pits) -> dict:
    figs = {
        "learning_curves": "learning_curves.png",
        "next_step_density": "next_step_density.png",
        "samples": "samples.png",
        "pit": "pit_ecdf.png",
    }
    best, best1, test_seqs = fold["best"], fold["best1"], fold["splits"][2]
    predictive = fold["predictive"]
    st, net, params = best["st"], best["net"], best["params"]
    plots.learning_curves({GRNN: read_metrics(best["dir"]), SINGLE: read_metrics(best1["dir"])},
                          workdir / figs["learning_curves"], log_jacobian=st.log_det)
    seq0 = test_seqs.x[0, : int(test_seqs.lengths[0])]
    steps = [int(t) for t in exp["density_steps"] if int(t) < len(seq0)] or [0]
    dims = tuple(int(d) for d in exp["density_dims"])
    if test_seqs.n_features >= 2:
        shown = {k: predictive[k] for k in (GRNN, HMM, STATIC)}
        orig = {k: plots.to_original_units(_first(g), st) for k, g in shown.items()}
        plots.next_step_densities(seq0, orig, steps, workdir / figs["next_step_density"],
                                  feature_names=features, dims=dims)
    else:
        del figs["next_step_density"]
    real = [test_seqs.x[i, : int(n)] for i, n in enumerate(test_seqs.lengths)]
    # As long as the test sequences shown (at most sample_steps), so the two sides line up.
    n_steps = min(int(exp["sample_steps"]), max(len(s) for s in real[: int(exp["n_samples"])]))
    z = model.generate(jax.random.key(int(exp["sample_seed"])), net, params, n_steps,
                       n_samples=int(exp["n_samples"]))
    sampled = st.inverse(np.asarray(z, np.float64))
    plots.samples_vs_real(real, sampled, workdir / figs["samples"], feature_names=features,
                          n_show=int(exp["n_samples"]))
    plots.pit_ecdfs(pits, workdir / figs["pit"], feature_names=features, alpha=float(exp["alpha"]))
    return figs


def _first(g):
    return jax.tree_util.tree_map(lambda a: a[0], g)


def _k_text(ks) -> str:
    return str(ks[0]) if len(set(ks)) == 1 else "/".join(str(k) for k in ks)


def _diff_text(row: dict) -> str:
    return f"{row['test_nll_minus_grnn']:+.3f} ± {row['paired_se']:.3f}"


def verdict(rows: dict, n_steps: int) -> str:
    """What the table says about the GRNN against each baseline, in words that follow from
    the numbers: a difference counts only beyond two paired standard errors."""
    better, tied, worse = [], [], []
    for name in [k for k in BASELINES if k in rows]:
        row = rows[name]
        m, se = row["test_nll_minus_grnn"], row["paired_se"]
        text = f"the {name} ({_diff_text(row)})"
        (better if m > 2 * se else worse if m < -2 * se else tied).append(text)
    parts = [f"On {n_steps} held-out steps the GRNN scores {rows[GRNN]['test_nll']:.3f} nats/step."]
    if better:
        parts.append("It is better, by more than two paired standard errors, than "
                     + ", ".join(better) + ".")
    if tied:
        parts.append("It cannot be told apart from " + ", ".join(tied)
                     + ": the difference is within two paired standard errors.")
    if worse:
        parts.append("It is worse, by more than two paired standard errors, than "
                     + ", ".join(worse) + ".")
    if not tied and not worse:
        parts.append("It beats every baseline.")
    ens = [k for k in rows if k.startswith("GRNN ensemble")]
    for name in ens:
        m, se = rows[name]["test_nll_minus_grnn"], rows[name]["paired_se"]
        how = ("better than" if m < -2 * se else "worse than" if m > 2 * se
               else "not distinguishable from")
        parts.append(f"The {name} is {how} the single GRNN picked on validation ({_diff_text(rows[name])}).")
    if ORACLE in rows:
        m, se = rows[ORACLE]["test_nll_minus_grnn"], rows[ORACLE]["paired_se"]
        parts.append(f"Gap to the generating process's own density: the GRNN is {-m:.3f} ± {se:.3f} "
                     f"nats/step above the oracle's {rows[ORACLE]['test_nll']:.3f}.")
    return " ".join(parts)


def calibration_text(rows: dict, features, alpha: float) -> str:
    """Which models' PIT ECDFs leave the (1 - alpha) band, per feature."""
    out = []
    for name, row in rows.items():
        if "pit_ks" not in row:
            continue
        off = [f"{features[d]} ({v:.3f})" for d, v in enumerate(row["pit_ks"]) if v > row["pit_band"]]
        out.append(f"{name}: " + ("inside the band in every dimension" if not off
                                  else "outside it for " + ", ".join(off)))
    band = next(r["pit_band"] for r in rows.values() if "pit_band" in r)
    return (f"PIT ECDF against the uniform CDF, largest distance per dimension, and the "
            f"{int(round(100 * (1 - alpha)))}% simultaneous band (± {band:.3f}): "
            + "; ".join(out) + ".")


def selection_text(rows: dict) -> str:
    """The baselines' validation NLL for every K (and lags) tried, the AR-HMM's chosen lags and
    whether Baum-Welch converged."""
    def fold_text(name, by_k):  # the AR-HMM's keys already read "K=2 lags=1"
        return ", ".join(f"{k if name == ARHMM else 'K=' + k} {v:.3f}" for k, v in by_k.items())

    names = [n for n in (STATIC, HMM, ARHMM) if n in rows]
    parts = [f"{name}: " + " | ".join(fold_text(name, f) for f in rows[name]["val_nll_by_k"])
             for name in names]
    text = "Validation NLL of the baselines by K (per fold): " + "; ".join(parts) + ". "
    if ARHMM in rows:
        text += (f"The AR-HMM (dynamax, EM from k-means starts, the best of its restarts) kept "
                 f"lags {_k_text(rows[ARHMM]['lags'])}. ")
    hmm = rows[HMM]
    return text + (f"Baum-Welch of the chosen HMM converged in every fold: "
                   f"{'yes' if all(hmm['converged']) else 'NO'} (iterations "
                   f"{', '.join(map(str, hmm['iterations']))}).")


FIGURE_CAPTIONS = {
    "learning_curves": "Learning curves ({last}training run): training loss and validation "
                       "NLL per optimiser step; dots mark the kept parameters.",
    "next_step_density": "Predicted density of the next observation at a few steps of {last}"
                         "first test sequence (colour scale: density per unit area). Grey dots: "
                         "the sequence's earlier steps; square: the previous step x[t-1]; "
                         "star: what happened, x[t].",
    "samples": "{Last}held-out test sequence(s) beside sequences of the same "
               "length sampled from the GRNN, on one step axis, one colour per sequence, and "
               "the lag-one scatter of both.",
    "pit": "PIT ECDF minus the uniform CDF of the one-step predictions on all test steps, per "
           "dimension, with the simultaneous confidence band (grey). Inside the band: no "
           "evidence of miscalibration; above zero then below (a falling S): over-confident, "
           "too narrow; below then above: too wide; above zero throughout: predictions too high.",
}


def _design_text(r: dict) -> str:
    """How the data were split, in one paragraph."""
    if r["n_folds"] > 1:
        return (f"Rolling origin: {r['n_folds']} consecutive test blocks ({r['n_test_steps']} "
                f"test steps in all); each fold trains on the steps before its validation block "
                f"(train {', '.join(map(str, r['n_train_steps']))} steps), validates on the "
                f"{r['n_val_steps'][0]} steps just before its test block, and every model is "
                "refitted per fold. Rows pool the test steps of all folds.")
    return (f"Train {r['n_train_steps'][0]} steps in {r['n_train_sequences'][0]} sequences; "
            f"validation {r['n_val_steps'][0]} steps; test {r['n_test_steps']} steps in "
            f"{r['n_test_sequences']} held-out sequence(s).")


def _results_table(r: dict) -> list[str]:
    """The table of every model's held-out scores, one row per model."""
    rows, lv = r["models"], r["levels"]
    cov_head = " | ".join(f"{int(round(100 * p))}% cov." for p in lv)
    lines = [
        f"| model | K | val NLL | **test NLL** | seeds: mean ± std | minus GRNN (± paired s.e.) "
        f"| {cov_head} | PIT KS (band) |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(lv) + "---:|",
    ]
    order = ([GRNN] + [k for k in rows if k.startswith("GRNN ensemble")] + list(BASELINES)
             + [ORACLE])
    for name in [k for k in order if k in rows]:
        row = rows[name]
        k = _k_text(row["n_components"]) if "n_components" in row else ""
        val = f"{row['val_nll']:.3f}" if "val_nll" in row else ""
        spread = (f"{row['test_nll_seed_mean']:.3f} ± {row['test_nll_seed_std']:.3f}"
                  if "test_nll_seed_mean" in row else "")
        delta = _diff_text(row) if name != GRNN else ""
        cov = " | ".join(f"{c:.2f}" for c in row["coverage"]) if "coverage" in row else \
            " | ".join("" for _ in lv)
        ks = f"{max(row['pit_ks']):.3f} ({row['pit_band']:.3f})" if "pit_ks" in row else ""
        lines.append(f"| {name} | {k} | {val} | **{row['test_nll']:.3f}** | {spread} | {delta} "
                     f"| {cov} | {ks} |")
    return lines


def _by_seed_text(rows: dict) -> str:
    """Validation and test NLL of every seed of the two networks."""
    return ("Validation NLL by seed (per fold): "
            + "; ".join(f"{name}: " + " | ".join(", ".join(f"seed {s} {v:.3f}" for s, v in f.items())
                                                for f in rows[name]["val_nll_by_seed"])
                        for name in (GRNN, SINGLE)) + ". Test NLL by seed: "
            + "; ".join(f"{name}: " + ", ".join(f"seed {s} {v:.3f}"
                                                for s, v in rows[name]["test_nll_by_seed"].items())
                        for name in (GRNN, SINGLE)) + ".")


def render_report(r: dict) -> str:
    """The Markdown report of a results dict."""
    rows = r["models"]
    features = FEATURE_NAMES.get(r["dataset"], tuple(f"x{d}" for d in range(99)))
    about = DATASET_DESCRIPTIONS.get(r["dataset"])
    lines = [
        f"# GRNN on `{r['dataset']}`",
        "",
        *([about, ""] if about else []),
        _design_text(r) + " Test steps were used for nothing but the numbers below.",
        "",
        "Held-out negative log-likelihood of the one-step predictive density "
        "p(x_t | x_<t), nats per observed step in the data's original units (lower is better). "
        "K for the baselines (and the AR-HMM's lags) was chosen on validation (per fold: values "
        "separated by /). "
        f"The networks were trained with seeds {', '.join(map(str, r['seeds']))}; the GRNN row is the "
        "seed with the best validation NLL (per fold), \"seeds\" gives the mean ± standard "
        "deviation of the test NLL over all seeds. \"minus GRNN\": the model's test NLL minus the "
        "GRNN's, ± the standard error of the mean of the per-step differences (positive: the "
        "GRNN is better). Coverage: share of test observations inside the central predictive "
        "interval of each dimension's marginal, averaged over dimensions (nominal in the header). "
        "PIT KS: the largest distance between the PIT values' ECDF and the uniform CDF over the "
        "dimensions, beside the half-width of its "
        f"{int(round(100 * (1 - r['alpha'])))}% band.",
        "",
        *_results_table(r),
        "",
        verdict(rows, r["n_test_steps"]),
        "",
        "Consecutive steps are not independent, so the paired standard errors and the PIT band "
        "are nominal: they treat every test step as a separate draw.",
        "",
        calibration_text(rows, features, r["alpha"]),
        "",
        _by_seed_text(rows),
        "",
        selection_text(rows),
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(r["train_config"], indent=1, sort_keys=True),
        "```",
        "",
        f"Best validation step of the GRNN (per fold): {', '.join(map(str, r['best_step']))}. "
        f"Wall time {r['wall_time_s']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in r["timings_s"].items()) + ").",
        "",
        "## Figures",
        "",
    ]
    last = "the last fold's " if r["n_folds"] > 1 else "the "
    for key, fname in r["figures"].items():
        caption = FIGURE_CAPTIONS[key].format(last=last, Last=last.capitalize())
        lines += [f"![{key}]({fname})", "", caption, ""]
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
        extra = ""
        if "test_nll_minus_grnn" in row:
            extra = f"  minus GRNN {row['test_nll_minus_grnn']:+.4f} ± {row['paired_se']:.4f}"
        print(f"  {name:30s} test NLL {row['test_nll']:.4f} nats/step{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
