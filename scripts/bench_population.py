"""Population training throughput: P members in one compiled program against one member.

Each row times ``--steps`` end-to-end training steps of a population of P members (the
members' batches gathered on the host, one vmapped train step, the result awaited), as
``grnn train --population P`` runs them. The sizes are measured interleaved, round after
round, in one process, and each row keeps its fastest round: on a shared machine the
minimum is the least disturbed measurement. "cost vs P=1" is the time of one population
step over that of a population of one; at most P means the population beats training the
members one after another.

Usage:
  .venv/bin/python scripts/bench_population.py                  # hidden 32, P = 1, 2, 4, 8
  .venv/bin/python scripts/bench_population.py --sizes 1,8 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def _cpu() -> tuple[str, bool]:
    model, avx512 = platform.processor() or "unknown", False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    avx512 = "avx512f" in line.split()
    except OSError:
        pass
    return model, avx512


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,2,4,8", help="population sizes (default 1,2,4,8)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--components", type=int, default=3)
    p.add_argument("--features", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=60)
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    import jax
    import jax.numpy as jnp

    from grnn_jax.data import Sequences
    from grnn_jax.training import ModelConfig, TrainConfig
    from grnn_jax.training.population import (
        Members,
        init_population,
        population_batch,
        population_program,
    )

    cfg = TrainConfig(ModelConfig(n_features=args.features, n_components=args.components,
                                  hidden_size=args.hidden), num_steps=10_000,
                      batch_size=args.batch)
    rng = np.random.default_rng(0)
    seqs = Sequences(rng.normal(size=(8 * args.batch, args.length, args.features)))
    net, tx, step = population_program(cfg)
    runs = {}
    for n in sizes:
        members = Members(tuple(range(n)), (cfg.learning_rate,) * n, (cfg.weight_decay,) * n)
        b = population_batch(seqs, 0, members.seeds, batch_size=cfg.batch_size)
        state = init_population(net, tx, b, members)
        active = jnp.ones(n, bool)
        t0 = time.perf_counter()
        state, m = step(state, b, active)
        jax.block_until_ready(m)
        runs[n] = {"state": state, "members": members, "active": active,
                   "compile_s": time.perf_counter() - t0, "times": []}
    position = 1
    for _ in range(args.rounds):
        for n in sizes:
            r = runs[n]
            state = r["state"]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                b = population_batch(seqs, position, r["members"].seeds, batch_size=cfg.batch_size)
                state, m = step(state, b, r["active"])
                position += 1
            jax.block_until_ready(m)
            r["times"].append((time.perf_counter() - t0) / args.steps)
            r["state"] = state

    model, avx512 = _cpu()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"CPU: {model}; AVX-512: {'yes' if avx512 else 'no'}; {os.cpu_count()} cores; "
          f"load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}; jax {jax.__version__}, "
          f"backend {jax.default_backend()}")
    print(f"LSTM hidden {args.hidden}, K={args.components} full, D={args.features}, batch "
          f"{args.batch} x {args.length} steps; {args.steps} steps x {args.rounds} interleaved "
          "rounds, fastest round per size")
    print()
    print("| P | steps/s | member-steps/s | cost vs P=1 | vs one after another | compile s |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = min(runs[sizes[0]]["times"]) / sizes[0] if sizes[0] == 1 else None
    for n in sizes:
        t = min(runs[n]["times"])
        cost = t / base if base else float("nan")
        print(f"| {n} | {1 / t:.1f} | {n / t:.1f} | {cost:.2f}x | {n / cost:.2f}x faster "
              f"| {runs[n]['compile_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
