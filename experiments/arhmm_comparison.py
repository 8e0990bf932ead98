"""AR-HMMs against the GRNN's heads on every shipped data set and synthetic process.

Per data set: a static GMM, dynamax's Gaussian HMM and AR-HMM (K and lags chosen on the
validation split, the best of a few EM restarts each), the generating process's exact
density where there is one, and GRNN variants (``grnn_jax.train.train`` with a list of model
settings, each at one modest budget), all scored once on the test split in nats per observed
step, original units (lower is better). On the synthetic processes, every model's filtered
regime posteriors are compared with the true regimes (adjusted Rand index of the most
probable component) and drawn against them. Writes ``table.md``, ``results.json`` and
``regimes_<set>.png`` into ``--out`` and prints the table, the command, the CPU and the
fit times.

Usage:
  python -m experiments.arhmm_comparison --out runs/arhmm_comparison
  python -m experiments.arhmm_comparison --datasets geyser duration --steps 500 \\
      --variants head=mdn,lags=1 head=hmm,lags=1,constant_transitions=true
  python -m experiments.arhmm_comparison --tiny --out /tmp/arhmm_tiny   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import baselines
from grnn_jax import data, gmm
from grnn_jax.data import duration_process as dp
from grnn_jax.runtime import default_float
from grnn_jax.train import (
    ModelConfig,
    default_config,
    evaluate,
    load_trained,
    race,
    read_metrics,
    train,
    write_json_atomic,
)

REAL = ("geyser", "eustock", "storms", "weather", "elecdemand")
SYNTHETIC = ("switching_ar", "duration")
SYNTHETIC_SIZES = {"switching_ar": (200, 50), "duration": (300, 100)}  # sequences, length
DEFAULT_VARIANTS = ("head=mdn,lags=0", "head=mdn,lags=1", "head=em,lags=1",
                    "head=hmm,lags=1,constant_transitions=true", "head=hmm,lags=1")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one comparison run does (``--tiny`` shrinks every entry)."""

    datasets: tuple = REAL + SYNTHETIC
    variants: tuple = DEFAULT_VARIANTS
    steps: int = 1000
    static_ks: tuple = baselines.COMPONENTS_GRID
    hmm_ks: tuple = baselines.ARHMM_COMPONENTS_GRID
    lags: tuple = baselines.ARHMM_LAGS
    restarts: int = 3
    em_iter: int = 100
    # Synthetic sets: sequences of each length drawn, split 70/15/15 by sequence. None: the
    # registered set's size where there is one (switching_ar: 200 x 50), else 300 x 100.
    synthetic_sequences: int | None = None
    synthetic_length: int | None = None
    model_overrides: tuple = ()  # (field, value) pairs laid over every variant (tiny: small nets)
    seed: int = 0


TINY = Settings(datasets=("geyser", "duration"), steps=2, static_ks=(2,), hmm_ks=(2,), lags=(1,),
                restarts=1, em_iter=5, synthetic_sequences=16, synthetic_length=24,
                model_overrides=(("hidden_size", 4), ("n_components", 2)))


def parse_variant(text: str) -> dict:
    """``"head=hmm,lags=1,constant_transitions=true"`` -> ModelConfig fields (ints, bools),
    ``em_init=true`` (a training setting: start the head from its EM fit) and ``race=true``
    (``grnn train --race``: the model chosen on validation, :func:`grnn_jax.train.race`)."""
    fields = {f.name: f.type for f in dataclasses.fields(ModelConfig)} | {"em_init": bool, "race": bool}
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"variant entry {item!r}: want FIELD=VALUE with FIELD one of {list(fields)}")
        low = value.strip().lower()
        out[key] = (low == "true") if low in ("true", "false") else int(value) if value.isdigit() else value
    return out


def variant_label(fields: dict) -> str:
    """A short column name: "hmm lags 1 const" for head=hmm, lags=1, constant transitions."""
    if fields.get("race"):
        return "race"
    if not fields:
        return "defaults"
    text = f"{fields.get('head', 'mdn')} lags {fields.get('lags', 0)}"
    if fields.get("head") == "hmm":
        text += " const" if fields.get("constant_transitions") else " net"
    extra = {k: v for k, v in fields.items() if k not in ("head", "lags", "constant_transitions")}
    return text + "".join(f" {k}={v}" for k, v in extra.items())


# ----------------------------------------------------------------------------- data


def synthetic_splits(name: str, s: Settings):  # name in SYNTHETIC
    """``(splits, exact step log-density fn, true regimes of the test split)`` of a process: all
    sequences drawn with seed 0, then split by sequence as ``data.dataset_splits`` does (so
    ``switching_ar`` is the registered data set, and its true regimes are known)."""
    n, t = SYNTHETIC_SIZES[name]
    n, t = s.synthetic_sequences or n, s.synthetic_length or t
    if name == "switching_ar":
        proc = data.default_switching_ar(2)
        seqs, regimes = data.sample_switching_ar(proc, seed=0, n_sequences=n, length=t)
        oracle = functools.partial(data.synthetic.step_log_probs, proc)
    elif name == "duration":
        proc = dp.default_duration_process()
        seqs, regimes, _ = dp.sample_duration_process(proc, seed=0, n_sequences=n, length=t)
        oracle = functools.partial(dp.step_log_probs, proc)
    parts = [np.sort(i) for i in data.split_indices(n, seed=0)]
    return data.Splits(*(seqs.select(i) for i in parts)), oracle, regimes[parts[2]]


def load_splits(name: str, s: Settings):
    if name in SYNTHETIC:
        return synthetic_splits(name, s)
    if name not in data.DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(data.DATASETS)} and {list(SYNTHETIC)}")
    spec = data.DATASETS[name]
    return data.dataset_splits(name), spec.oracle, None


# ----------------------------------------------------------------------------- models


def fit_baselines(splits, s: Settings):
    """``({label: test NLL}, {label: record}, standardised test split)`` of the static GMM,
    dynamax's Gaussian HMM and its AR-HMM, each chosen on validation."""
    st = data.Standardiser.fit(splits.train)
    log_jac = float(st.log_det)
    tr, va, te = (st.transform(x) for x in splits)
    fits = {
        "static GMM": lambda: baselines.static_gmm_baseline(tr, va, log_jacobian=log_jac, seed=s.seed,
                                                            ks=s.static_ks),
        "Gaussian HMM": lambda: baselines.arhmm_baseline(
            tr, va, log_jacobian=log_jac, seed=s.seed, ks=s.hmm_ks, lags=(0,), n_restarts=s.restarts,
            n_iter=s.em_iter, name="Gaussian HMM", verbose=True),
        "AR-HMM": lambda: baselines.arhmm_baseline(
            tr, va, log_jacobian=log_jac, seed=s.seed, ks=s.hmm_ks, lags=s.lags,
            n_restarts=s.restarts, n_iter=s.em_iter, verbose=True),
    }
    nll, records = {}, {}
    for label, fit in fits.items():
        t = time.perf_counter()
        res = fit()
        nll[label] = res.nll(te, log_jac)
        records[label] = {"K": res.n_components, "lags": res.lags, "val_nll": res.chosen_val_nll,
                          "seconds": time.perf_counter() - t, "result": res}
        lags = "" if label == "static GMM" else f" lags={res.lags}"
        print(f"  {label}: K={res.n_components}{lags}, test {nll[label]:.4f} nats/step "
              f"({records[label]['seconds']:.0f} s)", flush=True)
    return nll, records, te


def train_variant(fields: dict, splits, s: Settings, workdir: Path) -> dict:
    """One GRNN run: ``default_config`` at the budget (``s.steps``; 0: the data-scaled one)
    with ``fields`` laid over its model."""
    cfg = default_config(splits.train, num_steps=s.steps or None)  # 0: the default's own budget
    model = {k: v for k, v in fields.items() if k not in ("em_init", "race")}
    cfg = cfg.replace(model=dict(dict(s.model_overrides), **model), seed=s.seed,
                      em_init=bool(fields.get("em_init", False)))
    t = time.perf_counter()
    if fields.get("race"):
        won = race(splits.train, splits.val, workdir, base=cfg).winner
        print(f"  race: {won} won", flush=True)
    else:
        train(cfg, splits.train, splits.val, workdir, resume=False, progress=False)
    net, params, st, _ = load_trained(workdir)
    res = evaluate(net, params, splits.test, standardiser=st)
    best = min((m for m in read_metrics(workdir) if m.get("kind") == "eval"), key=lambda m: m["val_nll"])
    return {"net": net, "params": params, "st": st, "test_nll": res.nll, "val_nll": best["val_nll"],
            "seconds": time.perf_counter() - t}


@functools.partial(jax.jit, static_argnums=0)
def _responsibilities(net, params, x):
    g = net.apply(params, x)
    return jnp.exp(gmm.log_responsibilities(g, x))


def grnn_regimes(run: dict, seqs: data.Sequences) -> np.ndarray:
    """(S, T, K) the head's filtered regime posteriors p(component k | x_<=t) on ``seqs``."""
    z = run["st"].transform(seqs)
    return np.asarray(_responsibilities(run["net"], run["params"], jnp.asarray(z.x, default_float())))


def adjusted_rand(posteriors: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """ARI between the most probable component and the true regime over the observed steps."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(truth[mask], posteriors.argmax(-1)[mask]))


# ----------------------------------------------------------------------------- figures, table


def _mapped(post: np.ndarray, truth: np.ndarray, mask: np.ndarray, n_regimes: int) -> np.ndarray:
    """(S, T, R) posterior mass per true regime: each component counts for the regime it
    overlaps most on the observed steps (many components may serve one regime)."""
    onehot = np.eye(n_regimes)[truth] * mask[..., None]
    overlap = np.einsum("stk,str->kr", post, onehot)
    return np.einsum("stk,kr->str", post, np.eye(n_regimes)[overlap.argmax(1)])


def regime_figure(path: Path, title: str, truth, mask, rows: dict, n_regimes: int, n_steps: int = 100):
    """The first test sequence's true regimes over each model's filtered posterior (mass mapped
    to true regimes, one colour per regime), each row titled with its ARI on all test steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = min(n_steps, int(mask[0].sum()))
    colours = plt.get_cmap("tab10")(np.arange(n_regimes))
    fig, axes = plt.subplots(len(rows) + 1, 1, figsize=(10, 1.0 + 0.9 * (len(rows) + 1)), sharex=True)
    axes[0].imshow(colours[truth[0, :t]][None], aspect="auto", extent=(-0.5, t - 0.5, 0, 1))
    axes[0].set_title("true regimes", fontsize=9, loc="left")
    for ax, (label, (post, ari)) in zip(axes[1:], rows.items()):
        mass = _mapped(post, truth, mask, n_regimes)[0, :t]
        # One bar per step, edges at half steps, as the true-regime strip is drawn.
        ax.stackplot(np.arange(t + 1) - 0.5, np.vstack([mass, mass[-1:]]).T, colors=colours, step="post")
        ax.set_ylim(0, 1)
        ax.set_title(f"{label}: ARI {ari:.3f}", fontsize=9, loc="left")
    for ax in axes:
        ax.set_yticks([])
        ax.set_xlim(-0.5, t - 0.5)
    axes[-1].set_xlabel("step of the first test sequence")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(results: dict, columns: list[str]) -> str:
    """The Markdown table of test NLLs (nats per observed step, original units; lower is better)."""
    head = ["set", "train/val/test steps", *columns]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(columns)]
    for name, r in results.items():
        cells = []
        scores = {c: r["test_nll"].get(c) for c in columns}
        finite = [v for c, v in scores.items() if v is not None and np.isfinite(v) and c != "exact"]
        for c in columns:
            v = scores[c]
            if v is None:
                cells.append(r.get("errors", {}).get(c, "") and "failed")
                continue
            text = f"{v:.3f}"
            if c in r.get("chosen", {}):
                text += " ({})".format(r["chosen"][c])
            cells.append(f"**{text}**" if finite and v == min(finite) else text)
        lines.append(f"| {name} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ari_table(results: dict, columns: list[str]) -> str:
    rows = {n: r["ari"] for n, r in results.items() if r.get("ari")}
    if not rows:
        return ""
    cols = [c for c in columns if any(c in a for a in rows.values())]
    lines = ["| set | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, a in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{a[c]:.3f}" if c in a else "" for c in cols) + " |")
    return "\n".join(lines)


def cpu_line() -> str:
    """The CPU as ``scripts/machine.py`` describes it (its model name and AVX-512 flag)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "machine.py"
    try:
        spec = importlib.util.spec_from_file_location("machine", path)
        machine = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(machine)
        return f"{machine.cpu_line()}, load average {machine.load_average()}"
    except (OSError, AttributeError):
        return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- the run


def compare_one(name: str, s: Settings, out: Path) -> dict:
    """Every model on one data set: test NLLs, choices, times, regime ARIs and figure."""
    print(f"== {name}", flush=True)
    splits, oracle, truth = load_splits(name, s)
    nll, records, te_z = fit_baselines(splits, s)
    r = {"steps": "/".join(str(x.n_steps) for x in splits), "test_nll": dict(nll), "errors": {},
         "chosen": {k: f"K={v['K']}" + (f", p={v['lags']}" if k != "static GMM" else "")
                    for k, v in records.items()},
         "baselines": {k: {kk: vv for kk, vv in v.items() if kk != "result"} for k, v in records.items()},
         "val_nll_grid": {k: {baselines.candidate_text(key): v for key, v in rec["result"].val_nll.items()}
                          for k, rec in records.items()},
         "fit_seconds": {k: {baselines.candidate_text(key): v for key, v in rec["result"].fit_seconds.items()}
                         for k, rec in records.items()},
         "grnn": {}}
    if oracle is not None:
        r["test_nll"]["exact"] = -float(np.sum(oracle(splits.test))) / splits.test.n_steps
        r["exact_val_nll"] = -float(np.sum(oracle(splits.val))) / splits.val.n_steps
    posts = {}
    if truth is not None:
        arhmm = records["AR-HMM"]["result"]
        posts["AR-HMM"] = baselines.hmm_fit_regimes(arhmm.model, te_z)[0]
        if name == "duration":
            posts["exact"] = dp.regime_posteriors(dp.default_duration_process(), splits.test)
    for text in s.variants:
        fields = parse_variant(text)
        label = variant_label(fields)
        try:
            run = train_variant(fields, splits, s, out / "runs" / name / label.replace(" ", "_"))
        except Exception as e:  # a variant that fails is reported, the rest still run
            r["errors"][label] = f"{type(e).__name__}: {e}"
            print(f"  GRNN {label}: FAILED {r['errors'][label]}", flush=True)
            continue
        r["test_nll"][label] = run["test_nll"]
        r["grnn"][label] = {k: run[k] for k in ("test_nll", "val_nll", "seconds")}
        print(f"  GRNN {label}: test {run['test_nll']:.4f} nats/step ({run['seconds']:.0f} s)", flush=True)
        if truth is not None:
            posts[label] = grnn_regimes(run, splits.test)
    if truth is not None:
        mask = splits.test.mask
        r["ari"] = {k: adjusted_rand(p, truth, mask) for k, p in posts.items()}
        n_reg = int(truth.max()) + 1
        regime_figure(out / f"regimes_{name}.png", f"{name}: filtered regime posteriors (test)",
                      truth, mask, {k: (p, r["ari"][k]) for k, p in posts.items()}, n_reg)
        r["figure"] = f"regimes_{name}.png"
    return r


def run(s: Settings, out: str | Path, command: str) -> dict:
    """Compares every model on every data set of ``s``; writes ``table.md`` and ``results.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header = [f"command: {command}", f"CPU: {cpu_line()}",
              f"JAX {jax.__version__} on {jax.devices()[0].platform}"]
    print("\n".join(header), flush=True)
    t0 = time.perf_counter()
    results = {name: compare_one(name, s, out) for name in s.datasets}
    labels = [variant_label(parse_variant(v)) for v in s.variants]
    columns = ["static GMM", "Gaussian HMM", "AR-HMM"]
    columns += ["exact"] * any("exact" in r["test_nll"] for r in results.values()) + labels
    text = "\n\n".join([
        "\n".join(header),
        "Test NLL, nats per observed step in the data's original units (lower is better; bold: "
        "the best model). K and lags p of the HMMs chosen on the validation split.",
        table(results, columns), ari_table(results, ["AR-HMM", "exact"] + labels),
        f"Wall time {time.perf_counter() - t0:.0f} s.",
    ])
    (out / "table.md").write_text(text + "\n")
    write_json_atomic(out / "results.json", {"settings": dataclasses.asdict(s), "command": command,
                                             "cpu": cpu_line(), "results": results})
    print(text, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/arhmm_comparison")
    p.add_argument("--tiny", action="store_true", help="a smoke run: tiny grids, budgets and sets")
    p.add_argument("--datasets", nargs="+", help=f"of {list(REAL + SYNTHETIC)}")
    p.add_argument("--variants", nargs="*",
                   help="GRNN model settings, e.g. head=hmm,lags=1 (none given: baselines only)")
    p.add_argument("--steps", type=int, help="optimiser steps of every GRNN run (default 1000; 0: the "
                                             "data-scaled budget of `grnn train --data X`)")
    p.add_argument("--ks", type=int, nargs="+", help="K grid of the HMMs")
    p.add_argument("--lags", type=int, nargs="+", help="lag grid of the AR-HMM")
    p.add_argument("--restarts", type=int, help="EM restarts per (K, lags)")
    p.add_argument("--em-iter", type=int, help="EM iterations per restart")
    a = p.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    s = TINY if a.tiny else Settings()
    given = {"datasets": a.datasets, "variants": a.variants, "steps": a.steps, "hmm_ks": a.ks,
             "lags": a.lags, "restarts": a.restarts, "em_iter": a.em_iter}
    s = dataclasses.replace(s, **{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in given.items() if v is not None})
    for v in s.variants:
        parse_variant(v)  # a bad variant fails before any fit
    command = "python -m experiments.arhmm_comparison " + shlex.join(sys.argv[1:] if argv is None else argv)
    run(s, a.out, command)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
