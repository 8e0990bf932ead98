"""Population training throughput: P members in one compiled program against one member.

Each row times ``--steps`` end-to-end training steps of a population of P members (the
members' batches gathered on the host, one vmapped train step, the result awaited), as
``grnn train --population P`` runs them. The sizes are measured interleaved, round after
round, in one process, and each row keeps its fastest round: on a shared machine the
minimum is the least disturbed measurement. "cost vs P=1" is the time of one population
step over that of a population of one; at most P means the population beats training the
members one after another.

Every P > 1 is also timed with its members split over gcd(P, N) host devices (N =
``--devices``, by default the cores: what ``grnn train --population P`` does by itself,
``grnn_jax.runtime``; the ``members`` axis of ``training.sharding.population_mesh``):
each host device executes on its own thread, so a population can use cores that one small
member cannot. "cost vs P=1" stays relative to one member on one device.

Usage:
  .venv/bin/python scripts/bench_population.py                  # hidden 32, P = 1, 2, 4, 8
  .venv/bin/python scripts/bench_population.py --sizes 1,8 --rounds 3
  .venv/bin/python scripts/bench_population.py --devices 1      # one device only
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from machine import cpu_line, load_average


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,2,4,8", help="population sizes (default 1,2,4,8)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--components", type=int, default=3)
    p.add_argument("--features", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=60)
    p.add_argument("--steps", type=int, default=20, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--devices", type=int, default=None,
                   help="also time every P with its members over gcd(P, N) host devices "
                        "(default: the cores)")
    return p


def _compile(cfg, seqs, variants) -> dict:
    """Each variant ``(P, devices)``'s state and step, compiled by one first step."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from grnn_jax.train.distributed.sharding import make_population_parallel_step, population_mesh
    from grnn_jax.train.populations.population import Members, init_population, population_batch, population_program

    net, tx, step = population_program(cfg)
    runs = {}
    for n, n_dev in variants:
        members = Members(tuple(range(n)), (cfg.learning_rate,) * n, (cfg.weight_decay,) * n)
        b = population_batch(seqs, 0, members.seeds, batch_size=cfg.batch_size)
        state = init_population(net, tx, b, members)
        active = jnp.ones(n, bool)
        run_step = step
        if n_dev > 1:
            mesh = population_mesh(n, jax.devices()[:n_dev])
            state = jax.device_put(state, NamedSharding(mesh, PartitionSpec("members")))
            run_step = make_population_parallel_step(step, mesh)
        t0 = time.perf_counter()
        state, m = run_step(state, b, active)
        jax.block_until_ready(m)
        runs[n, n_dev] = {"state": state, "members": members, "active": active, "step": run_step,
                          "compile_s": time.perf_counter() - t0, "times": []}
    return runs


def _time_rounds(runs: dict, variants, seqs, cfg, steps: int, rounds: int) -> None:
    """Appends each variant's seconds per step, round after round, interleaved."""
    import jax

    from grnn_jax.train.populations.population import population_batch

    position = 1
    for _ in range(rounds):
        for key in variants:
            r = runs[key]
            state = r["state"]
            t0 = time.perf_counter()
            for _ in range(steps):
                b = population_batch(seqs, position, r["members"].seeds, batch_size=cfg.batch_size)
                state, m = r["step"](state, b, r["active"])
                position += 1
            jax.block_until_ready(m)
            r["times"].append((time.perf_counter() - t0) / steps)
            r["state"] = state


def _report(runs: dict, variants, sizes, args) -> None:
    import jax

    from grnn_jax.runtime import available_cores

    print(f"CPU: {cpu_line()}; {available_cores()} cores; "
          f"load average {load_average()}; jax {jax.__version__}, "
          f"backend {jax.default_backend()}")
    print(f"LSTM hidden {args.hidden}, K={args.components} full, D={args.features}, batch "
          f"{args.batch} x {args.length} steps; {args.steps} steps x {args.rounds} interleaved "
          "rounds, fastest round per size")
    print()
    print("| P | devices | steps/s | member-steps/s | cost vs P=1 | vs one after another "
          "| compile s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    base = min(runs[sizes[0], 1]["times"]) / sizes[0] if sizes[0] == 1 else None
    for n, n_dev in variants:
        r = runs[n, n_dev]
        t = min(r["times"])
        cost = t / base if base else float("nan")
        print(f"| {n} | {n_dev} | {1 / t:.1f} | {n / t:.1f} | {cost:.2f}x | {n / cost:.2f}x faster "
              f"| {r['compile_s']:.1f} |")


def main(argv=None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    from grnn_jax.runtime import available_cores, request_cpu_devices

    n_devices = available_cores() if args.devices is None else args.devices
    if n_devices < 1:
        p.error(f"--devices must be >= 1; got {n_devices}")
    if n_devices > 1:  # before jax starts: the host platform's device count is fixed then
        request_cpu_devices(n_devices)

    import jax

    from grnn_jax.data import Sequences
    from grnn_jax.train import ModelConfig, TrainConfig

    cfg = TrainConfig(ModelConfig(n_features=args.features, n_components=args.components,
                                  hidden_size=args.hidden), num_steps=10_000,
                      batch_size=args.batch)
    rng = np.random.default_rng(0)
    seqs = Sequences(rng.normal(size=(8 * args.batch, args.length, args.features)))
    variants = [(n, 1) for n in sizes]
    n_devices = min(n_devices, len(jax.devices()))
    variants += [(n, math.gcd(n, n_devices)) for n in sizes if math.gcd(n, n_devices) > 1]
    runs = _compile(cfg, seqs, variants)
    _time_rounds(runs, variants, seqs, cfg, args.steps, args.rounds)
    _report(runs, variants, sizes, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
