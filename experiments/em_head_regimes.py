"""Regimes from the EM head and from mixtures over hidden states, against known regimes.

For each synthetic process (fixed Gaussian regimes switched by a recurrent rule,
``data.regimes``; the switching AR process, ``data.synthetic``) and seed, trains

* ``mdn``: the per-step mixture head, with a K-component GMM over the hidden states kept by
  stepwise EM during training (``hidden_gmm=K``);
* ``mdn+reg``: the same with the regulariser ``hidden_gmm_weight=lam``;
* ``em``: the EM-updated head (global components, stepwise EM), also with ``hidden_gmm=K``;

and reports on a test split: held-out NLL (best checkpoint) against the process's exact NLL,
and the adjusted Rand index against the true regimes of (a) the GMM kept during training,
(b) a GMM fitted after training with K chosen by BIC, and, for the EM head, (c) the most
probable regime under the head's filtering probabilities. Hidden-state labels are scored
against the regime of the last observation the state has read (``h`` after ``x_t``
against ``z_t``): a state cannot know the regime of an observation it has not seen.

Usage: ``python -m experiments.em_head_regimes --out runs/em_head_regimes`` (writes
``results.json``, ``table.md`` and figures).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from grnn_jax.data import default_switching_ar, sample_switching_ar, synthetic  # noqa: E402
from grnn_jax.data import regime_process as gauss  # noqa: E402
from grnn_jax.train import (  # noqa: E402
    ModelConfig,
    TrainConfig,
    evaluate,
    fit_hidden_gmm,
    hidden_gmm_labels,
    load_trained,
    regime_probabilities,
    steps_of,
    train,
)

METHODS = {"mdn": ("mdn", 0.0), "mdn+reg": ("mdn", None), "em": ("em", 0.0)}


def _process(name: str, seed: int, n_train: int, length: int):
    if name == "regimes":
        proc = gauss.default_gaussian_regimes()
        draw = lambda s, n: gauss.sample_gaussian_regimes(proc, seed=s, n_sequences=n, length=length)  # noqa: E731
        exact = lambda seqs: gauss.step_log_probs(proc, seqs)  # noqa: E731
        k = proc.means.shape[0]
    else:
        proc = default_switching_ar(2)
        draw = lambda s, n: sample_switching_ar(proc, seed=s, n_sequences=n, length=length)  # noqa: E731
        exact = lambda seqs: synthetic.step_log_probs(proc, seqs)  # noqa: E731
        k = proc.n_regimes
    base = 1000 * seed
    (tr, _), (va, _), (te, zte) = draw(base, n_train), draw(base + 1, n_train // 2), draw(base + 2, n_train // 2)
    oracle = float(-exact(te).sum() / te.n_steps)
    return tr, va, te, zte, k, oracle


def _ari_after(labels: np.ndarray, z: np.ndarray) -> float:
    return float(adjusted_rand_score(z[:, :-1].ravel(), labels[:, 1:].ravel()))


def run_one(process: str, method: str, seed: int, args, out: Path) -> dict:
    tr, va, te, zte, k, oracle = _process(process, seed, args.n_train, args.length)
    head, lam = METHODS[method]
    lam = args.weight if lam is None else lam
    cfg = TrainConfig(
        ModelConfig(n_features=tr.n_features, n_components=k, hidden_size=args.hidden, head=head),
        num_steps=args.steps, batch_size=16, learning_rate=1e-2, warmup_steps=20,
        eval_every=max(args.steps // 8, 1), seed=seed, hidden_gmm=k, hidden_gmm_weight=lam,
    )
    wd = out / "work" / f"{process}-{method}-{seed}"
    t0 = time.time()
    state, _ = train(cfg, tr, va, wd, resume=False, progress=False)
    seconds = time.time() - t0
    net, best, st, _ = load_trained(wd)
    rec = {"process": process, "method": method, "seed": seed, "K": k, "lambda": lam,
           "test_nll": evaluate(net, best, te, standardiser=st).nll, "oracle_nll": oracle,
           "train_seconds": seconds}
    net, last, st, _ = load_trained(wd, which="last")
    during = steps_of(hidden_gmm_labels(net, last, state.aux_state, te, standardiser=st), te)
    post = fit_hidden_gmm(net, last, te, key=jax.random.key(seed), standardiser=st,
                          candidates=tuple(range(2, 7)), n_init=2)
    rec.update(ari_during=_ari_after(during, zte),
               ari_post_hoc=_ari_after(steps_of(post.labels, te), zte),
               post_hoc_k=post.n_components, bic_table=post.table)
    if head == "em":
        filt, pred, _ = regime_probabilities(net, best, te, standardiser=st)
        rec["ari_filtering"] = float(adjusted_rand_score(zte.ravel(), filt.argmax(-1).ravel()))
        if seed == 0:
            _plot(out / f"{process}-em-regimes.png", te, zte, filt, pred, during,
                  steps_of(post.labels, te))
    return rec


def _plot(path: Path, te, z, filt, pred, during, post, s: int = 0) -> None:
    """One test sequence: the observations, the true regime, the EM head's filtering and
    predictive probabilities, and the hidden-state labels (during training, post hoc)."""
    t = np.arange(te.lengths[s])
    fig, ax = plt.subplots(5, 1, figsize=(9, 9), sharex=True)
    ax[0].plot(t, te.x[s, t], lw=1)
    ax[0].set_ylabel("x")
    ax[1].step(t, z[s, t], where="mid", color="k")
    ax[1].set_ylabel("true regime")
    for j in range(filt.shape[-1]):
        ax[2].plot(t, filt[s, t, j], lw=1, label=f"k={j}")
        ax[3].plot(t, pred[s, t, j], lw=1)
    ax[2].set_ylabel("p(k | x<=t)")
    ax[2].legend(loc="upper right", fontsize=7, ncol=3)
    ax[3].set_ylabel("pi_t = p(k | x<t)")
    # The state at t+1 has read x_t: shift so that each label sits at the step it summarises.
    ax[4].step(t[:-1], during[s, t[1:]], where="mid", label="hidden GMM (training)")
    ax[4].step(t[:-1], post[s, t[1:]] + 0.1, where="mid", label="hidden GMM (post hoc, BIC)")
    ax[4].set_ylabel("state label")
    ax[4].set_xlabel("t")
    ax[4].legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(records: list[dict]) -> str:
    rows = ["| process | method | test NLL - oracle (nats/step) | ARI hidden GMM, training | "
            "ARI hidden GMM, post hoc (K by BIC) | ARI EM-head filtering |",
            "|---|---|---|---|---|---|"]
    keys = sorted({(r["process"], r["method"]) for r in records},
                  key=lambda pm: (pm[0], list(METHODS).index(pm[1])))

    def ms(vals):
        vals = np.asarray(vals, float)
        return f"{vals.mean():.3f} ± {vals.std():.3f}"

    for p, m in keys:
        rs = [r for r in records if r["process"] == p and r["method"] == m]
        ks = ",".join(str(r["post_hoc_k"]) for r in rs)
        filt = ms([r["ari_filtering"] for r in rs]) if "ari_filtering" in rs[0] else "–"
        rows.append(f"| {p} | {m} | {ms([r['test_nll'] - r['oracle_nll'] for r in rs])} | "
                    f"{ms([r['ari_during'] for r in rs])} | {ms([r['ari_post_hoc'] for r in rs])} "
                    f"(K={ks}) | {filt} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/em_head_regimes")
    p.add_argument("--processes", default="regimes,switching_ar")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--n-train", type=int, default=64)
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--weight", type=float, default=0.1, help="lambda of mdn+reg")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for process in args.processes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for method in args.methods.split(","):
                rec = run_one(process, method, seed, args, out)
                records.append(rec)
                print(json.dumps({k: v for k, v in rec.items() if k != "bic_table"}), flush=True)
                (out / "results.json").write_text(json.dumps(records, indent=1))
    (out / "table.md").write_text(_table(records))
    print(_table(records))


if __name__ == "__main__":
    main()
