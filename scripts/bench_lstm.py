"""The LSTM alone, forward and backward: grnn_jax's ``lax.scan`` LSTM against PyTorch's ``nn.LSTM``.

Times a gradient of ``sum(hs * r)`` (r fixed random) with respect to every LSTM weight,
at hidden 256, T = 100, 3-D input by default, over the batch sizes and layer counts given:
grnn_jax's ``lstm_sequence`` (``lax.scan`` with the hand-written backward pass, jitted)
against torch's fused LSTM (cuDNN on a GPU, where JAX's default backend is a GPU too).
Without the mixture head, Adam and eager torch's per-op dispatch, this is the recurrence
itself. Rounds are interleaved and each side keeps its fastest; the ratio is grnn_jax
over torch.

Usage:
  python scripts/bench_lstm.py --batch 64 1024 --layers 1 2
  taskset -c 0 python scripts/bench_lstm.py --batch 64 --layers 1 2 --keep-freed-memory   # one core
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bench_train import interleaved_rates
from machine import cpu_line


def jax_fn(*, layers, hidden, batch, seq_len, n_in, seed=0):
    import jax
    import jax.numpy as jnp

    from grnn_jax.model.lstm_scan import lstm_sequence

    rng = np.random.default_rng(seed)
    ws = [(jnp.asarray(rng.normal(0, 0.1, ((n_in if i == 0 else hidden) + hidden, 4 * hidden)), jnp.float32),
           jnp.zeros(4 * hidden)) for i in range(layers)]
    xs = jnp.asarray(rng.standard_normal((seq_len, batch, n_in)), jnp.float32)
    r = jnp.asarray(rng.standard_normal((seq_len, batch, hidden)), jnp.float32)
    z = jnp.zeros((batch, hidden))

    def loss(ws):
        h = xs
        for w, b in ws:
            _, h = lstm_sequence(w, b, z, z, h)
        return jnp.sum(h * r)

    grad = jax.jit(jax.grad(loss))

    def step():
        jax.block_until_ready(grad(ws))

    return step


def torch_fn(*, layers, hidden, batch, seq_len, n_in, seed=0):
    import torch

    from grnn_jax.runtime import available_cores

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(available_cores())  # the cores this process may run on (taskset)
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(n_in, hidden, layers).to(device)
    xs = torch.randn(seq_len, batch, n_in, device=device)
    r = torch.randn(seq_len, batch, hidden, device=device)

    def step():
        lstm.zero_grad(set_to_none=True)
        (lstm(xs)[0] * r).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[64, 1024])
    p.add_argument("--layers", type=int, nargs="+", default=[1])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc keeps freed memory for reuse (grnn_jax.runtime), for both sides")
    args = p.parse_args(argv)
    for name in ("batch", "layers"):
        if any(v < 1 for v in getattr(args, name)):
            p.error(f"--{name} values must be >= 1")
    from grnn_jax.runtime import keep_freed_memory

    memory_kept = args.keep_freed_memory and keep_freed_memory()  # before JAX and torch start
    import jax

    rows = []
    for batch in args.batch:
        for layers in args.layers:
            kw = dict(layers=layers, hidden=args.hidden, batch=batch, seq_len=args.seq_len, n_in=3)
            sides = {"jax": jax_fn(**kw)}
            if not args.no_torch:
                sides["torch"] = torch_fn(**kw)
            rows.append((batch, layers, interleaved_rates(sides, args.steps, args.repeats, warmup=2)))
    print("\ncommand: python scripts/bench_lstm.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    device = jax.devices()[0].device_kind if jax.default_backend() == "gpu" else cpu_line()
    print(f"device: {device}; jax {jax.__version__}; hidden {args.hidden}, T={args.seq_len}; forward + "
          f"backward of every weight; best of {args.repeats} interleaved rounds of {args.steps}; "
          f"freed memory kept: {'yes' if memory_kept else 'no'}\n")
    print("| batch | layers | grnn_jax grads/s | torch grads/s | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for batch, layers, rates in rows:
        t = rates.get("torch")
        ratio = f"{rates['jax'] / t:.2f}x" if t else "n/a"
        print(f"| {batch} | {layers} | {rates['jax']:.1f} | {t or float('nan'):.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
