"""EM inside training: objectives nll / gem / ngem x default / EM initialisation of the head,
at the same budget, on the synthetic switching process and on real data sets.

For every data set, method and seed: a run of ``num_steps`` optimiser steps (same network,
optimiser, schedule and batches for every method), validation NLL every ``eval_every``
steps, the parameters of the best validation NLL kept and scored on the test split. Reported
per method: test NLL (mean ± std over seeds), steps to reach a validation target (the best
mean-over-seeds validation NLL any method reached, plus ``target_margin`` nats/step), steps
per second of training (evaluation excluded), and diagnostics of the mixing weights (mean
|logit|, the smallest mean weight of a component on validation steps: collapse shows there).
Writes ``results.json``, ``report.md`` and ``val_nll.png`` into the output directory.

Usage:
  python -m experiments.em_training --config experiments/configs/em_training.py --out runs/em
  python -m experiments.em_training --config ... --datasets storms   # one data set of the config
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from grnn_jax import gmm
from grnn_jax.data import (
    Sequences,
    Standardiser,
    batch_at,
    dataset_splits,
    default_switching_ar,
    iterate_batches,
    sample_switching_ar,
)
from grnn_jax.train import (
    ModelConfig,
    TrainConfig,
    apply_overrides,
    aux_settings,
    em_init_params,
    em_init_params_and_aux,
    evaluate,
    init_state,
    initial_params_and_aux,
    load_config_file,
    make_aux_update,
    make_optimizer,
    make_train_step,
    model_variables,
)
from grnn_jax.runtime import default_float

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "em_training.py"


def load_data(spec: dict):
    """(train, val, test) Sequences in original units for one data set entry."""
    if spec["dataset"] == "switching":
        proc = default_switching_ar(int(spec.get("n_features", 2)))
        n, t = int(spec["n_sequences"]), int(spec["length"])
        tr, _ = sample_switching_ar(proc, seed=100, n_sequences=n, length=t)
        va, _ = sample_switching_ar(proc, seed=101, n_sequences=max(2, n // 4), length=t)
        te, _ = sample_switching_ar(proc, seed=102, n_sequences=max(2, n // 4), length=t)
        return tr, va, te
    sp = dataset_splits(spec["dataset"], window=spec.get("window"))
    return sp.train, sp.val, sp.test


def _mixing_diagnostics(net, params, z: Sequences) -> dict:
    """Mean |logit| (centred) and the smallest per-component mean weight over valid steps."""
    logit_abs, w_sum, n = 0.0, 0.0, 0
    for b in iterate_batches(z, batch_size=min(64, z.n_sequences), dtype=default_float()):
        g = net.apply(params, b.x, b.u)
        mask = np.asarray(jnp.arange(b.x.shape[1])[None, :] < b.lengths[:, None])
        lw = np.asarray(gmm.log_weights(g))[mask]
        logit_abs += float(np.abs(lw - lw.mean(-1, keepdims=True)).sum() / lw.shape[-1])
        w_sum = w_sum + np.exp(lw).sum(0)
        n += lw.shape[0]
    return {"mean_abs_logit": logit_abs / n, "min_mean_weight": float(np.min(w_sum / n))}


def run_one(cfg: TrainConfig, step_fn, tx, data, *, eval_every: int) -> dict:
    """One training run; returns its validation curve, test NLL and timings."""
    tr_z, va, te, st = data
    net = cfg.model.build()
    dtype = default_float()
    key = jax.random.key(cfg.seed)
    example = batch_at(tr_z, 0, batch_size=cfg.batch_size, seed=cfg.seed, dtype=dtype)
    em_head = cfg.model.head == "em"
    if em_head:
        params, aux = initial_params_and_aux(cfg, net, example, key=key)
    else:
        params, aux = net.init(key, example.x[:1, :1]), {}
    t_init = time.perf_counter()
    if cfg.em_init and em_head:
        params, aux = em_init_params_and_aux(net, params, aux, tr_z, key=jax.random.fold_in(key, 1))
    elif cfg.em_init:
        params = em_init_params(net, params, tr_z, key=jax.random.fold_in(key, 1))
    init_s = time.perf_counter() - t_init
    state = init_state(net, tx, example, key=key, params=params, aux_state=aux)

    def variables(s):
        return model_variables(s.params, s.aux_state)

    curve = [(0, evaluate(net, variables(state), va, standardiser=st).nll)]
    best, best_params = curve[0][1], variables(state)
    train_s, timed_steps = 0.0, 0
    for start in range(0, cfg.num_steps, eval_every):
        stop = min(cfg.num_steps, start + eval_every)
        t0 = time.perf_counter()
        for step in range(start, stop):
            state, m = step_fn(state, batch_at(tr_z, step, batch_size=cfg.batch_size,
                                               seed=cfg.seed, dtype=dtype))
        jax.block_until_ready(state.params)
        if start > 0:  # the first block includes compilation
            train_s += time.perf_counter() - t0
            timed_steps += stop - start
        v = evaluate(net, variables(state), va, standardiser=st).nll
        curve.append((stop, v))
        if v < best:
            best, best_params = v, variables(state)
    test = evaluate(net, best_params, te, standardiser=st).nll
    diag = _mixing_diagnostics(net, variables(state), st.transform(va))
    return {
        "curve": curve, "best_val": best, "test_nll": test,
        "steps_per_s": timed_steps / train_s if train_s > 0 else math.nan,
        "em_init_s": init_s, "n_skipped": int(state.n_skipped), **diag,
    }


def steps_to(curve, target: float):
    """First evaluated step whose validation NLL is at most ``target``; None if never."""
    for step, v in curve:
        if v <= target:
            return step
    return None


def run(cfg: dict, out: str | Path, *, progress: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    methods = [(o, i, h) for h in cfg.get("heads", ["mdn"]) for o in cfg["objectives"]
               for i in cfg["inits"]]
    results = {}
    for name, spec in cfg["datasets"].items():
        tr, va, te = load_data(spec)
        st = Standardiser.fit(tr)
        data = (st.transform(tr), va, te, st)
        runs, compiled = {}, {}
        for obj, init, head in methods:
            model = ModelConfig(n_features=tr.n_features, n_covariates=tr.n_covariates,
                                **{**spec["model"], "head": head})
            lr = spec.get("learning_rate", {}).get(obj, 3e-3) if isinstance(
                spec.get("learning_rate"), dict) else spec.get("learning_rate", 3e-3)
            base = TrainConfig(model, num_steps=spec["num_steps"], batch_size=spec["batch_size"],
                               learning_rate=lr, warmup_steps=spec.get("warmup_steps", 10),
                               objective=obj, em_init=(init == "em"), patience=0,
                               optimizer=spec.get("optimizer", "adamw"),
                               momentum=spec.get("momentum", 0.9)).validate()
            tx = make_optimizer(learning_rate=lr, num_steps=base.num_steps,
                                warmup_steps=base.warmup_steps, weight_decay=base.weight_decay,
                                clip_norm=base.clip_norm, end_lr_fraction=base.end_lr_fraction,
                                optimizer=base.optimizer, momentum=base.momentum)
            key = (obj, lr, head)
            if key not in compiled:  # default and EM init share the compiled step
                compiled[key] = (tx, make_train_step(
                    model.build(), tx, objective=obj,
                    aux_update=make_aux_update(*aux_settings(base))))
            tx, step_fn = compiled[key]
            per_seed = []
            for seed in cfg["seeds"]:
                r = run_one(base.replace(seed=seed), step_fn, tx, data,
                            eval_every=spec["eval_every"])
                per_seed.append(r)
                if progress:
                    print(f"{name:10s} {head:3s} {obj:5s} {init:7s} seed {seed}: best val "
                          f"{r['best_val']:.4f} test {r['test_nll']:.4f} "
                          f"({r['steps_per_s']:.0f} steps/s)", flush=True)
            label = f"{obj}/{init}" if head == "mdn" else f"{obj}/{init}/em-head"
            runs[label] = per_seed
        results[name] = summarise(runs, cfg["target_margin"], spec)
    results_all = {"config": cfg, "datasets": results,
                   "wall_time_s": time.perf_counter() - t_start}
    (out / "results.json").write_text(json.dumps(results_all, indent=1, default=float))
    plot_curves(results, out / "val_nll.png")
    (out / "report.md").write_text(render_report(results_all))
    return results_all


def summarise(runs: dict, margin: float, spec: dict) -> dict:
    mean_best = {m: float(np.mean([r["best_val"] for r in rs])) for m, rs in runs.items()}
    target = min(mean_best.values()) + margin
    rows = {}
    for m, rs in runs.items():
        hits = [steps_to(r["curve"], target) for r in rs]
        reached = [h for h in hits if h is not None]
        curves = np.array([[v for _, v in r["curve"]] for r in rs])
        rows[m] = {
            "test_nll_mean": float(np.mean([r["test_nll"] for r in rs])),
            "test_nll_std": float(np.std([r["test_nll"] for r in rs])),
            "best_val_mean": mean_best[m],
            "steps_to_target": hits,
            "steps_to_target_median": float(np.median(reached)) if len(reached) == len(rs) else None,
            "n_reached": len(reached),
            "steps_per_s": float(np.median([r["steps_per_s"] for r in rs])),
            "mean_abs_logit": float(np.mean([r["mean_abs_logit"] for r in rs])),
            "min_mean_weight": float(np.mean([r["min_mean_weight"] for r in rs])),
            "n_skipped": int(sum(r["n_skipped"] for r in rs)),
            "curve_steps": [s for s, _ in rs[0]["curve"]],
            "curve_mean": curves.mean(0).tolist(),
            "em_init_s": float(np.mean([r["em_init_s"] for r in rs])),
        }
    return {"target": target, "methods": rows, "num_steps": spec["num_steps"],
            "model": spec["model"]}


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        for m, row in res["methods"].items():
            ls = "--" if m.split("/")[1] == "em" else "-"
            ax.plot(row["curve_steps"], row["curve_mean"], ls, lw=1.5, label=m)
        ax.axhline(res["target"], color="k", lw=0.8, alpha=0.5)
        lo = min(min(r["curve_mean"]) for r in res["methods"].values())
        hi = max(r["curve_mean"][min(2, len(r["curve_mean"]) - 1)] for r in res["methods"].values())
        if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
            ax.set_ylim(lo - 0.05 * (hi - lo + 0.1), hi + 0.1)
        ax.set_title(name)
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation NLL (mean over seeds)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_report(res: dict) -> str:
    lines = ["| data | method | test NLL (mean ± std) | best val NLL | steps to target "
             "(median; reached) | speed-up vs nll/default | steps/s | mean abs logit | "
             "min mean weight |", "|" + "---|" * 9]
    for name, r in res["datasets"].items():
        base = r["methods"].get("nll/default", {}).get("steps_to_target_median")
        for m, row in r["methods"].items():
            med = row["steps_to_target_median"]
            hits = f"{med:.0f}" if med is not None else "not all"
            speed = (f"{base / med:.2f}x" if (base and med) else "—")
            lines.append(
                f"| {name} | {m} | {row['test_nll_mean']:.3f} ± {row['test_nll_std']:.3f} | "
                f"{row['best_val_mean']:.3f} | {hits} ({row['n_reached']}/"
                f"{len(row['steps_to_target'])}) | {speed} | {row['steps_per_s']:.0f} | "
                f"{row['mean_abs_logit']:.2f} | {row['min_mean_weight']:.3f} |")
    targets = "; ".join(f"{n}: {r['target']:.3f}" for n, r in res["datasets"].items())
    lines += ["", f"Validation targets (best mean-over-seeds validation NLL + margin): {targets}.",
              f"Wall time {res['wall_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment config (.py)")
    parser.add_argument("--out", default="runs/em_training", help="output directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides", help="override a config entry (repeatable)")
    parser.add_argument("--datasets", metavar="NAME[,NAME...]",
                        help="run only these data sets of the config (comma-separated)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    cfg = apply_overrides(load_config_file(args.config), args.overrides)
    if args.datasets is not None:
        names = [n.strip() for n in args.datasets.split(",")]
        unknown = [n for n in names if n not in cfg["datasets"]]
        if unknown or not all(names):
            parser.error(f"--datasets {args.datasets!r}: the config has "
                         f"{', '.join(cfg['datasets'])}")
        cfg["datasets"] = {n: cfg["datasets"][n] for n in names}
    res = run(cfg, args.out, progress=not args.quiet)
    print(render_report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
