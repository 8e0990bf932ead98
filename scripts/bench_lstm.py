"""The LSTM alone, forward and backward: grnn_jax's implementations against PyTorch's ``nn.LSTM``.

Times a gradient of ``sum(hs * r)`` (r fixed random) with respect to every LSTM weight,
at hidden 256, T = 100, 3-D input by default, over the batch sizes and layer counts given:
grnn_jax's ``lstm_sequence`` with each implementation (``scan``: ``lax.scan`` with the
hand-written backward pass; ``fused``: the Pallas kernel, GPU only; variants of it with
``fused:warps8`` and ``fused:guard``) against torch's fused LSTM (cuDNN on a GPU). Rounds
are interleaved and each side keeps its fastest; the ratio is grnn_jax over torch.

Usage:
  python scripts/bench_lstm.py --batch 64 1024 --layers 1 2
  python scripts/bench_lstm.py --impl scan fused fused:warps8 --batch 64
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from bench_train import interleaved_rates
from machine import cpu_line


def jax_fn(impl, *, layers, hidden, batch, seq_len, n_in, seed=0):
    import jax
    import jax.numpy as jnp

    from grnn_jax.nets import lstm_fused
    from grnn_jax.nets.lstm_scan import lstm_sequence

    name, _, variant = impl.partition(":")
    lstm_fused.NUM_WARPS = 8 if variant == "warps8" else 4
    lstm_fused.RELOAD_GUARD = variant == "guard"
    rng = np.random.default_rng(seed)
    ws = [(jnp.asarray(rng.normal(0, 0.1, ((n_in if i == 0 else hidden) + hidden, 4 * hidden)), jnp.float32),
           jnp.zeros(4 * hidden)) for i in range(layers)]
    xs = jnp.asarray(rng.standard_normal((seq_len, batch, n_in)), jnp.float32)
    r = jnp.asarray(rng.standard_normal((seq_len, batch, hidden)), jnp.float32)
    z = jnp.zeros((batch, hidden))

    def loss(ws):
        h = xs
        for w, b in ws:
            _, h = lstm_sequence(w, b, z, z, h, impl=name)
        return jnp.sum(h * r)

    grad = jax.jit(jax.grad(loss))
    jax.block_until_ready(grad(ws))  # compiled under this variant's settings

    def step():
        jax.block_until_ready(grad(ws))

    return step


def torch_fn(*, layers, hidden, batch, seq_len, n_in, seed=0):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
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
    p.add_argument("--impl", nargs="+", default=["scan", "fused"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    import jax

    if "fused" in " ".join(args.impl) and jax.default_backend() != "gpu":
        print("note: off a GPU the fused kernel runs interpreted; its rows say nothing of its speed")
    rows = []
    for batch in args.batch:
        for layers in args.layers:
            kw = dict(layers=layers, hidden=args.hidden, batch=batch, seq_len=args.seq_len, n_in=3)
            sides = {}
            for impl in args.impl:
                try:
                    sides[impl] = jax_fn(impl, **kw)
                except Exception as e:  # noqa: BLE001 - a variant that does not compile is reported
                    print(f"batch {batch}, layers {layers}, {impl}: failed: {type(e).__name__}: {str(e)[:1500]}")
            if not args.no_torch:
                sides["torch"] = torch_fn(**kw)
            rows.append((batch, layers, interleaved_rates(sides, args.steps, args.repeats, warmup=2)))
    print("\ncommand: python scripts/bench_lstm.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    device = jax.devices()[0].device_kind if jax.default_backend() == "gpu" else cpu_line()
    print(f"device: {device}; jax {jax.__version__}; hidden {args.hidden}, T={args.seq_len}; forward + "
          f"backward of every weight; best of {args.repeats} interleaved rounds of {args.steps}\n")
    print("| batch | layers | LSTM | grad/s | torch grad/s | vs torch |")
    print("|---:|---:|---|---:|---:|---:|")
    for batch, layers, rates in rows:
        t = rates.get("torch")
        for impl in (i for i in args.impl if i in rates):
            vs = f"{rates[impl] / t:.2f}x" if t else "n/a"
            print(f"| {batch} | {layers} | {impl} | {rates[impl]:.1f} | {t or float('nan'):.1f} | {vs} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
