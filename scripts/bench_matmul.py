"""Matmul rates of the GRNN train step's shapes in JAX and torch, on one core and on all.

The benchmark model of ``bench_train.py`` (LSTM hidden H, batch B, T steps, 3-D input,
K-component full-covariance head) multiplies, per layer, a (B, F+H) @ (F+H, 4H) product
at every step forward, a (B, 4H) @ (4H, F+H) product at every step backward, and one
(F+H, T*B) @ (T*B, 4H) weight gradient; the head multiplies (T*B, H) @ (H, K(1+D+D(D+1)/2)).
Those matmul FLOPs divided by these rates bound the step's time from below: the table
ends with that bound in ms per step for each column. The one-core columns run in a
child process pinned to one core (``os.sched_setaffinity``) before JAX or torch start.

Usage:
  .venv/bin/python scripts/bench_matmul.py
  .venv/bin/python scripts/bench_matmul.py --hidden 32 --batch 32 --seq-len 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from machine import cpu_line, load_average

from grnn_jax.runtime import available_cores


def shapes(hidden: int, batch: int, seq_len: int, n_features: int = 3, n_components: int = 20):
    """(name, m, k, n, times per step) of the step's matmuls at 1 layer."""
    f = n_features + hidden
    head = n_components * (1 + n_features + n_features * (n_features + 1) // 2)
    return [
        ("LSTM forward, per step", batch, f, 4 * hidden, seq_len),
        ("LSTM backward, per step", batch, 4 * hidden, f, seq_len),
        ("LSTM weight gradient", f, seq_len * batch, 4 * hidden, 1),
        ("head, forward and 2 backward", seq_len * batch, hidden, head, 3),
    ]


def _rates(lib: str, dims, repeats: int = 5, n: int = 20) -> list[float]:
    """GFLOP/s of ``a @ b`` for each (m, k, n), best of ``repeats`` rounds of ``n``."""
    if lib == "jax":
        import jax
        import jax.numpy as jnp

        mm = jax.jit(lambda a, b: a @ b)

        def make(m, k, nn):
            a, b = jnp.ones((m, k)), jnp.ones((k, nn))
            return lambda: mm(a, b).block_until_ready()
    else:
        import torch

        torch.set_num_threads(available_cores())

        def make(m, k, nn):
            a, b = torch.ones(m, k), torch.ones(k, nn)
            return lambda: a @ b
    out = []
    for m, k, nn in dims:
        f = make(m, k, nn)
        f()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            best = min(best, (time.perf_counter() - t0) / n)
        out.append(2 * m * k * nn / best / 1e9)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--child", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    rows = shapes(args.hidden, args.batch, args.seq_len)
    dims = [(m, k, n) for _, m, k, n, _ in rows]
    if args.child:  # one core, then measure
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps(_rates(args.child, dims)))
        return 0
    cols = {}
    for lib in ("jax", "torch"):
        try:
            out = subprocess.run([sys.executable, __file__, "--child", lib, "--hidden", str(args.hidden),
                                  "--batch", str(args.batch), "--seq-len", str(args.seq_len)],
                                 capture_output=True, text=True, check=True)
            cols[f"{lib}, 1 core"] = json.loads(out.stdout.strip().splitlines()[-1])
            cols[f"{lib}, all cores"] = _rates(lib, dims)
        except (subprocess.CalledProcessError, ImportError):
            continue  # torch is optional
    cores = available_cores()
    print(f"\ncommand: python scripts/bench_matmul.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"CPU: {cpu_line()}, {cores} cores; load average "
          f"{load_average()}; GFLOP/s of a @ b, best of 5 rounds of 20\n")
    print("| matmul | shape | per step | " + " | ".join(cols) + " |")
    print("|---|---|---:|" + "---:|" * len(cols))
    for i, (name, m, k, n, times) in enumerate(rows):
        print(f"| {name} | ({m}, {k}) @ ({k}, {n}) | {times} | "
              + " | ".join(f"{c[i]:.0f}" for c in cols.values()) + " |")
    bound = {c: sum(2 * m * k * n * t / (r * 1e9) for (_, m, k, n, t), r in zip(rows, v)) * 1e3
             for c, v in cols.items()}
    print("| matmul time per step, ms | | | " + " | ".join(f"{b:.0f}" for b in bound.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
