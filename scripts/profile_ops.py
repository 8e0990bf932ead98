"""Where a compiled GRNN program spends its time on a CPU: XLA's ops from a ``jax.profiler`` trace.

Runs the program a few times under ``jax.profiler`` (a Perfetto trace), adds up the
time of each XLA:CPU op (thunk) by name and prints the ops that took the longest, per
call of the program, with their share of its wall time. Matmuls are the ops named
``dot*`` or ``ynn_fusion*`` (XLA's YNNPACK fusions are dots); ``while`` loops are
containers whose ops are listed on their own. The programs:

* ``lstm``: the gradient of ``sum(hs * r)`` with respect to every weight of an LSTM
  (``grnn_jax.model.lstm_scan.lstm_sequence``), as ``scripts/bench_lstm.py`` times it;
* ``step``: the whole train step of ``scripts/bench_train.py`` (LSTM, mixture head, Adam).

Usage:
  python scripts/profile_ops.py --what lstm --input 256          # a second layer's LSTM
  taskset -c 0 python scripts/profile_ops.py --what step --keep-freed-memory --top 15
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import sys
import tempfile
import time

from machine import cpu_line, load_average

CONTAINERS = ("ThunkExecutor", "while", "$", "PjitFunction", "CommonPjRt", "PjRt")


def is_matmul(name: str) -> bool:
    return name.startswith(("dot", "ynn_fusion")) or "dot_general" in name


def op_times(program, n_calls: int) -> dict[str, tuple[float, int]]:
    """name -> (seconds per call of ``program``, launches per call), from a profiler trace."""
    import jax

    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        for _ in range(n_calls):
            program()
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(CONTAINERS):
            total[e["name"]] += e["dur"] * 1e-6
            count[e["name"]] += 1
    return {k: (total[k] / n_calls, count[k] // n_calls) for k in total}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=["lstm", "step"], default="step")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--input", type=int, default=3, help="input width of the first layer (lstm only)")
    p.add_argument("--calls", type=int, default=3, help="traced calls (after 3 untraced)")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--keep-freed-memory", action="store_true", help="grnn_jax.runtime, as bench_train's")
    args = p.parse_args(argv)
    for name in ("layers", "hidden", "batch", "seq_len", "input", "calls", "top"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    from grnn_jax.runtime import keep_freed_memory
    from grnn_jax.runtime import available_cores

    memory_kept = args.keep_freed_memory and keep_freed_memory()
    import jax

    if args.what == "lstm":
        from bench_lstm import jax_fn

        program = jax_fn(layers=args.layers, hidden=args.hidden, batch=args.batch,
                         seq_len=args.seq_len, n_in=args.input)
    else:
        from bench_train import jax_step_fn

        program = jax_step_fn(n_layers=args.layers, hidden=args.hidden, n_components=20, n_features=3,
                              batch=args.batch, seq_len=args.seq_len, pen=False)
    for _ in range(3):
        program()
    t0 = time.perf_counter()
    for _ in range(args.calls):
        program()
    wall = (time.perf_counter() - t0) / args.calls
    ops = op_times(program, args.calls)

    print("\ncommand: python scripts/profile_ops.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"CPU: {cpu_line()}, {available_cores()} cores available; load average {load_average()}; "
          f"jax {jax.__version__} ({jax.default_backend()}); freed memory kept: {'yes' if memory_kept else 'no'}")
    mm = sum(t for k, (t, _) in ops.items() if is_matmul(k))
    print(f"{args.what}: {wall * 1e3:.1f} ms per call (wall, untraced); ops {sum(t for t, _ in ops.values()) * 1e3:.1f} "
          f"ms, of which matmuls {mm * 1e3:.1f} ms ({mm / wall:.0%} of the wall time)\n")
    print("| op | ms per call | launches per call | % of wall | matmul |")
    print("|---|---:|---:|---:|---|")
    for name, (t, n) in sorted(ops.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"| {name} | {t * 1e3:.2f} | {n} | {t / wall:.1%} | {'yes' if is_matmul(name) else ''} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
