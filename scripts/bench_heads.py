"""Train-step throughput of each mixture head against the plain per-step head, same sizes.

Every head runs the same LSTM over the same batches; what differs is the head: the per-step
head (``mdn``), with lags, the EM-updated head with lags (its stepwise-EM update runs inside
the step) and the filtering head (the forward algorithm over time inside the loss, and a
second pass of it, differentiated, for the smoothed posteriors of the EM update). The
heads are interleaved round by round, so a shared machine's load hits them alike; the table
gives steps/s and the ratio to ``mdn``, and the compile time of each step.

Usage:
  python scripts/bench_heads.py                              # hidden 64, T 100, batch 32, D 3, K 8
  python scripts/bench_heads.py --hidden 256 --batch 64 --components 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grnn_jax import data  # noqa: E402
from grnn_jax.train import (  # noqa: E402
    ModelConfig,
    TrainConfig,
    initial_variables,
    init_state,
    make_aux_update,
    make_optimizer,
    make_train_step,
)
from machine import cpu_line, load_average  # noqa: E402

HEADS = {
    "mdn": dict(head="mdn"),
    "mdn, 1 lag": dict(head="mdn", lags=1),
    "em, 1 lag": dict(head="em", lags=1),
    "hmm, 1 lag": dict(head="hmm", lags=1),
    "hmm, constant transitions": dict(head="hmm", lags=1, constant_transitions=True),
}


def _step(name: str, args, batch):
    model = ModelConfig(n_features=args.features, n_components=args.components,
                        hidden_size=args.hidden, cell="lstm", **HEADS[name])
    cfg = TrainConfig(model, num_steps=10_000, batch_size=args.batch)
    net = model.build()
    tx = make_optimizer(learning_rate=1e-3, num_steps=10_000, warmup_steps=0, weight_decay=0.0,
                        clip_norm=1.0)
    params, aux = initial_variables(cfg, net, batch)
    state = init_state(net, tx, batch, key=jax.random.key(0), params=params, aux_state=aux)
    aux_update = make_aux_update(model.head, 0, cfg.em_step_exponent, cfg.em_step_offset)
    step = make_train_step(net, tx, aux_update=aux_update)
    t0 = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    return step, state, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--features", type=int, default=3)
    p.add_argument("--components", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="steps per head per round")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    x = np.random.default_rng(0).normal(size=(a.batch, a.seq_len, a.features)).astype(np.float32)
    batch = data.batch_at(data.Sequences(x), 0, batch_size=a.batch, seed=0)
    runs = {name: list(_step(name, a, batch)) for name in HEADS}
    seconds = {name: [] for name in HEADS}
    for _ in range(a.rounds):
        for name, run in runs.items():
            step, state = run[0], run[1]
            t0 = time.perf_counter()
            for _ in range(a.steps):
                state, m = step(state, batch)
            jax.block_until_ready(m)
            seconds[name].append((time.perf_counter() - t0) / a.steps)
            run[1] = state
    base = np.median(seconds["mdn"])
    print(f"CPU: {cpu_line()}; load average {load_average()}; devices {jax.devices()[0].platform}")
    print(f"`python scripts/bench_heads.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
          f"LSTM {a.hidden}, T {a.seq_len}, batch {a.batch}, D {a.features}, K {a.components} "
          f"full; median of {a.rounds} rounds of {a.steps} steps\n")
    print("| head | steps/s | vs mdn | compile s |")
    print("|---|---|---|---|")
    for name in HEADS:
        med = np.median(seconds[name])
        print(f"| {name} | {1 / med:.1f} | {base / med:.2f}x | {runs[name][2]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
