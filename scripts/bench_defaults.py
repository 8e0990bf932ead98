"""How good is ``grnn train --data X.npz`` with nothing else given? Trains with
``default_config`` (via ``train(None, ...)``) and compares held-out NLL with

* the exact oracle of the synthetic switching autoregression, at several training sizes;
* a Gaussian HMM (hmmlearn, full covariance, K chosen on validation, Baum-Welch run to
  convergence or 1,000 iterations) and a static GMM on every real data set that ships.

Only validation data choose anything (K of the baselines; the GRNN's best checkpoint); test
data are scored once. Prints one markdown table; ``--out`` also writes it with the command.

``--compare-heads`` instead trains the defaults once with each mixture head (``mdn``, the
per-step head, and ``em``, global components updated by stepwise EM) and prints their
best VALIDATION NLL beside the training data's one-step linear predictability
(``data.linear_predictability``), the table the default head's rule was chosen from; no
test data are read.

``--race`` times ``grnn train --race`` (the model chosen on validation,
:func:`grnn_jax.train.race`) against one default run on the same data, each in a
fresh process (so each compiles everything, as a user's command does), and scores both on
the test split.

Usage:
  python scripts/bench_defaults.py                        # everything (long on 2 cores)
  python scripts/bench_defaults.py --race --sizes 100 --datasets geyser,eustock --seeds 0
  python scripts/bench_defaults.py --sizes 100 --datasets geyser --seeds 0
  python scripts/bench_defaults.py --compare-heads --sizes 100 --datasets eustock
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import baselines  # noqa: E402
from grnn_jax import data  # noqa: E402
from grnn_jax.data import Sequences, Standardiser  # noqa: E402
from grnn_jax.train import default_config, evaluate, load_trained, race, train  # noqa: E402
from machine import cpu_line  # noqa: E402  (scripts/, the directory of this file)

LENGTH = 60


def _grnn(train_s: Sequences, val_s: Sequences, test_s: Sequences | None, seed: int,
          head: str | None = None) -> dict:
    """One run of the defaults (``head`` overrides the default head); scores ``test_s``, or
    the validation data when it is None."""
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()

        cfg = default_config(train_s).replace(seed=seed)
        if head is not None:
            cfg = cfg.replace(model={"head": head})
        _, hist = train(cfg, train_s, val_s, wd, resume=False, progress=False)
        net, params, st, cfg = load_trained(wd)
        res = evaluate(net, params, val_s if test_s is None else test_s, standardiser=st)
        steps = max(r["step"] for r in hist)
    return {"nll": res.nll, "steps": steps, "budget": cfg.num_steps, "seconds": time.perf_counter() - t0,
            "hidden": cfg.model.hidden_size, "k": cfg.model.n_components, "head": cfg.model.head}


def _baselines(train_s, val_s, test_s) -> dict:
    st = Standardiser.fit(train_s)
    tr, va, te = (st.transform(s) for s in (train_s, val_s, test_s))
    out = {}
    hmm = baselines.hmm_baseline(tr, va, log_jacobian=st.log_det, n_iter=1000)
    out["hmm"] = hmm.nll(te, st.log_det)
    out["hmm_k"] = hmm.n_components
    out["hmm_converged"] = bool(hmm.model.monitor_.converged)
    g = baselines.static_gmm_baseline(tr, va, log_jacobian=st.log_det)
    out["gmm"] = g.nll(te, st.log_det)
    return out


RACE_HEADER = [
    "| data | default head | default test NLL | race winner | race test NLL | race − default "
    "| s default | s race | race / default time |",
    "|---|---|---|---|---|---|---|---|---|",
]


def race_sets(sizes, names) -> list:
    """``(label, train, val, test)`` of the switching autoregression at each size, then of
    each shipped data set."""
    proc = data.default_switching_ar(2)
    sets = []
    for s in sizes:
        tr, _ = data.sample_switching_ar(proc, seed=1, n_sequences=s, length=LENGTH)
        va, _ = data.sample_switching_ar(proc, seed=2, n_sequences=max(20, s // 4), length=LENGTH)
        te, _ = data.sample_switching_ar(proc, seed=10_000, n_sequences=400, length=LENGTH)
        sets.append((f"switching AR, {s} x {LENGTH}", tr, va, te))
    for name in names:
        sp = data.dataset_splits(name)
        sets.append((name, sp.train, sp.val, sp.test))
    return sets


def race_child(kind: str, train_s: Sequences, val_s: Sequences, test_s: Sequences, seed: int) -> dict:
    """One default run (``kind`` "default") or one race ("race"), timed from the start to
    the kept model's test NLL."""
    if kind == "default":
        r = _grnn(train_s, val_s, test_s, seed)
        return {"nll": r["nll"], "seconds": r["seconds"], "head": r["head"]}
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        res = race(train_s, val_s, wd, base=default_config(train_s).replace(seed=seed))
        net, params, st, _ = load_trained(wd)
        nll = evaluate(net, params, test_s, standardiser=st).nll
        return {"nll": nll, "seconds": time.perf_counter() - t0, "winner": res.winner}


def _in_fresh_process(kind: str, size: int | None, name: str | None, seed: int) -> dict:
    """:func:`race_child` in a new Python process: every program compiles from scratch, as
    in a user's ``grnn train``."""
    argv = [sys.executable, __file__, "--race-child", kind, "--seeds", str(seed),
            "--sizes", "" if size is None else str(size), "--datasets", name or ""]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def race_rows(sizes, names, seeds) -> list[str]:
    rows = []
    for size, name in [(s, None) for s in sizes] + [(None, n) for n in names]:
        label = name or f"switching AR, {size} x {LENGTH}"  # race_sets' label, without the data
        for seed in seeds:
            d, r = (_in_fresh_process(k, size, name, seed) for k in ("default", "race"))
            rows.append(
                f"| {label} | {d['head']} | {d['nll']:.3f} | {r['winner']} | {r['nll']:.3f} | "
                f"{r['nll'] - d['nll']:+.3f} | {d['seconds']:.1f} | {r['seconds']:.1f} | "
                f"{r['seconds'] / d['seconds']:.2f} |")
            print(rows[-1], flush=True)
    return rows


HEADS_HEADER = [
    "| data | linear predictability (nats/step) | default head | val NLL, mdn head | "
    "val NLL, em head | em − mdn | better on validation | s per run (mdn/em) |",
    "|---|---|---|---|---|---|---|---|",
]


def head_row(name: str, train_s: Sequences, val_s: Sequences, seeds) -> str:
    """Validation NLL of the defaults with each head (mean ± std over seeds)."""
    runs = {h: [_grnn(train_s, val_s, None, seed, head=h) for seed in seeds] for h in ("mdn", "em")}
    nll = {h: np.array([r["nll"] for r in rs]) for h, rs in runs.items()}
    diff = nll["em"] - nll["mdn"]
    row = (f"| {name} | {data.linear_predictability(train_s):.3f} | "
           f"{default_config(train_s).model.head} | "
           + " | ".join(f"{nll[h].mean():.3f} ± {nll[h].std():.3f}" for h in ("mdn", "em"))
           + f" | {diff.mean():+.3f} | {'em' if diff.mean() < 0 else 'mdn'} | "
           + "/".join(f"{np.mean([r['seconds'] for r in runs[h]]):.0f}" for h in ("mdn", "em"))
           + " |")
    print(row, flush=True)
    return row


def synthetic_rows(sizes, seeds, compare_heads: bool = False) -> list[str]:
    proc = data.default_switching_ar(2)
    test, _ = data.sample_switching_ar(proc, seed=10_000, n_sequences=400, length=LENGTH)
    oracle = -float(data.synthetic.log_prob(proc, test).sum()) / test.n_steps
    rows = []
    for s in sizes:
        tr, _ = data.sample_switching_ar(proc, seed=1, n_sequences=s, length=LENGTH)
        va, _ = data.sample_switching_ar(proc, seed=2, n_sequences=max(20, s // 4), length=LENGTH)
        if compare_heads:
            rows.append(head_row(f"switching AR, {s} x {LENGTH}", tr, va, seeds))
            continue
        runs = [_grnn(tr, va, test, seed) for seed in seeds]
        nll = np.array([r["nll"] for r in runs])
        gap = nll - oracle
        rows.append(
            f"| switching AR, {s} x {LENGTH} | {oracle:.3f} | {nll.mean():.3f} ± {nll.std():.3f} | "
            f"**{gap.mean():+.3f}** (max {gap.max():+.3f}) | — | — | "
            f"{runs[0]['hidden']}/{runs[0]['k']}/{runs[0]['head']} | "
            f"{np.mean([r['steps'] for r in runs]):.0f}/{runs[0]['budget']} | "
            f"{np.mean([r['seconds'] for r in runs]):.0f} |")
        print(rows[-1], flush=True)
    return rows


def real_rows(names, seeds, compare_heads: bool = False) -> list[str]:
    rows = []
    for name in names:
        sp = data.dataset_splits(name)
        if compare_heads:
            rows.append(head_row(name, sp.train, sp.val, seeds))
            continue
        runs = [_grnn(sp.train, sp.val, sp.test, seed) for seed in seeds]
        nll = np.array([r["nll"] for r in runs])
        b = _baselines(sp.train, sp.val, sp.test)
        conv = "" if b["hmm_converged"] else " (not converged)"
        rows.append(
            f"| {name} | — | {nll.mean():.3f} ± {nll.std():.3f} | — | "
            f"{b['hmm']:.3f} (K={b['hmm_k']}{conv}); GRNN {nll.mean() - b['hmm']:+.3f} | "
            f"{b['gmm']:.3f} | {runs[0]['hidden']}/{runs[0]['k']}/{runs[0]['head']} | "
            f"{np.mean([r['steps'] for r in runs]):.0f}/{runs[0]['budget']} | "
            f"{np.mean([r['seconds'] for r in runs]):.0f} |")
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="100,400,1600", help="training sequences of the synthetic set")
    p.add_argument("--datasets", default="geyser,storms,eustock,weather,elecdemand,classic",
                   help="real data sets (grnn_jax.data.DATASETS); empty for none")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", help="also write the table (markdown) here")
    p.add_argument("--compare-heads", action="store_true",
                   help="validation NLL of the defaults with each mixture head, no test data")
    p.add_argument("--race", action="store_true",
                   help="time and score the validation race against one default run")
    p.add_argument("--race-child", choices=("default", "race"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    names = [s for s in a.datasets.split(",") if s]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    if a.race_child:
        _, tr, va, te = race_sets(sizes, names)[0]
        print(json.dumps(race_child(a.race_child, tr, va, te, seeds[0])))
        return 0
    if a.race:
        header = [f"CPU: {cpu_line()}; seeds {seeds}; held-out nats per observed step "
                  "(original units), one row per seed", ""] + RACE_HEADER
        print("\n".join(header), flush=True)
        rows = race_rows(sizes, names, seeds)
        if a.out:
            Path(a.out).write_text("\n".join([f"`python {' '.join(sys.argv)}`", ""] + header + rows) + "\n")
        return 0
    if a.compare_heads:
        header = [f"CPU: {cpu_line()}; seeds {seeds}; best validation nats per observed step "
                  "(original units)", ""] + HEADS_HEADER
    else:
        header = [
            f"CPU: {cpu_line()}; seeds {seeds}; held-out nats per observed step (original units)",
            "",
            "| data | oracle | GRNN defaults (mean ± std) | GRNN − oracle | Gaussian HMM | static GMM "
            "| hidden/K/head | steps run/budget | s per run |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    print("\n".join(header), flush=True)
    rows = (synthetic_rows(sizes, seeds, a.compare_heads)
            + real_rows(names, seeds, a.compare_heads))
    if a.out:
        Path(a.out).write_text("\n".join([f"`python {' '.join(sys.argv)}`", ""] + header + rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
