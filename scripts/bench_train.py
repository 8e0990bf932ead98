"""Training throughput of a GRNN in grnn_jax against an eager PyTorch reference.

Both sides train the same model: an LSTM (hidden 256 by default) over
sequences of 3-D observations, a linear mixture head with K full-covariance
components (precision-Cholesky parametrisation, the same constraints as
``grnn_jax.model.heads.MixtureHead``) and the mixture negative log-likelihood, with
Adam and global-norm gradient clipping. The two sides are timed in
interleaved rounds (JAX, then torch at each thread count, then JAX again...),
so a machine whose load changes during the run slows all of them alike; steps
per second are those of the fastest round of each, and the ratios compare
those. PyTorch runs at threads = cores and at one thread; JAX uses its
default (all cores). Where JAX's default backend is a GPU, both sides run on
it: torch on CUDA, its LSTM through cuDNN. The JAX compile time is the first call minus one
steady-state step. The header names the CPU and whether it has AVX-512, and
the load average before and after: on a loaded machine, re-run.

PyTorch is optional: without it the torch columns read "n/a".

Usage:
  .venv/bin/python scripts/bench_train.py                 # 1 and 2 layers
  .venv/bin/python scripts/bench_train.py --layers 1 --repeats 3 --steps 5
  .venv/bin/python scripts/bench_train.py --pen            # + 2-D mixture with a Bernoulli pen
  .venv/bin/python scripts/bench_train.py --cpu-time --torch-threads 1   # CPU work, loaded machine
  .venv/bin/python scripts/bench_train.py --keep-freed-memory     # grnn_jax.runtime on
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time

import numpy as np

from machine import cpu_line, load_average


def _time_round(step, n_steps: int, clock=time.perf_counter) -> float:
    """Seconds (of ``clock``) per step over ``n_steps`` back-to-back steps."""
    t0 = clock()
    for _ in range(n_steps):
        step()
    return (clock() - t0) / n_steps


def interleaved_rates(sides: dict, n_steps: int, repeats: int, warmup: int, before=None,
                      clock=time.perf_counter) -> dict:
    """Best steps per second (of ``clock``) of each side over ``repeats`` interleaved rounds.

    Args:
      sides: name -> no-argument step callable (already compiled).
      n_steps: steps per round.
      repeats: rounds; each runs every side once, in order.
      warmup: untimed steps of each side first.
      before: name -> callable run before that side's round (e.g. setting torch's threads).
      clock: ``time.perf_counter`` (wall clock) or ``time.process_time`` (the process's CPU
        time, all threads summed: steadier on a loaded machine).
    """
    before = before or {}
    for name, step in sides.items():
        before.get(name, lambda: None)()
        for _ in range(warmup):
            step()
    best = {name: math.inf for name in sides}
    for _ in range(repeats):
        for name, step in sides.items():
            before.get(name, lambda: None)()
            best[name] = min(best[name], _time_round(step, n_steps, clock))
    return {name: 1.0 / t for name, t in best.items()}


# ----------------------------------------------------------------------------- JAX


def jax_step_fn(*, n_layers, hidden, n_components, n_features, batch, seq_len, pen, seed=0):
    """Returns a no-argument callable running one jitted train step (blocking)."""
    import jax
    import jax.numpy as jnp
    import optax

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, seq_len, n_features)).astype(np.float32)
    if pen:
        x[..., -1] = rng.random((batch, seq_len)) < 0.2
    x = jnp.asarray(x)
    params, loss_fn = _jax_loss(x, jax.random.key(seed), n_layers=n_layers, hidden=hidden,
                                n_components=n_components, pen=pen)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    opt_state = tx.init(params)

    @jax.jit
    def train_step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    state = {"p": params, "s": opt_state}

    def step():
        state["p"], state["s"], loss = train_step(state["p"], state["s"])
        loss.block_until_ready()
        return loss

    return step


def _jax_loss(x, key, *, n_layers, hidden, n_components, pen):
    """(initial parameters, loss(params)) of the GRNN on ``x`` (B, T, D); with ``pen`` the last
    feature is a pen bit: a covariate of the mixture, and Bernoulli-scored itself."""
    import jax.numpy as jnp
    import optax

    from grnn_jax import model

    n_features, seq_len = x.shape[-1], x.shape[1]
    n_mix = n_features - 1 if pen else n_features
    if not pen:
        net = model.GRNN(n_features=n_mix, n_components=n_components, covariance_type="full",
                         cell="lstm", hidden_size=hidden, n_layers=n_layers)
        return net.init(key, x), lambda p: -jnp.mean(model.sequence_log_prob(net, p, x)) / seq_len
    import flax.linen as nn

    from grnn_jax import gmm

    class Pen(nn.Module):
        # The previous pen bit is a covariate; a Bernoulli logit for the next one
        # comes off the same hidden state that the mixture head reads.
        @nn.compact
        def __call__(self, x):
            core = model.GRNN(n_features=n_mix, n_components=n_components,
                              covariance_type="full", cell="lstm", hidden_size=hidden,
                              n_layers=n_layers, n_covariates=1, name="core")
            prev = model.shift_right(x)
            _, h = core.encode(prev)
            lp = gmm.log_prob(core.head(h), x[..., :n_mix])
            pen_logit = nn.Dense(1, name="pen")(h)[..., 0]
            lp_pen = -optax.sigmoid_binary_cross_entropy(pen_logit, x[..., -1])
            return jnp.mean(lp + lp_pen)

    pen_model = Pen()
    return pen_model.init(key, x), lambda p: -pen_model.apply(p, x)


# --------------------------------------------------------------------------- torch


def torch_step_fn(*, n_layers, hidden, n_components, n_features, batch, seq_len, pen, seed=0,
                  min_scale=1e-3, max_scale=1e3, device="cpu"):
    """The same model, loss and optimiser in eager PyTorch (fused ``nn.LSTM``; cuDNN on CUDA)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    k = n_components
    d = n_features - 1 if pen else n_features
    n_tri = d * (d + 1) // 2
    iu = torch.triu_indices(d, d, offset=1)
    embed = torch.zeros(n_tri, d * d)
    rows = [i * d + i for i in range(d)] + [int(i) * d + int(j) for i, j in zip(iu[0], iu[1])]
    embed[torch.arange(n_tri), torch.tensor(rows)] = 1.0

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(n_features, hidden, n_layers, batch_first=True)
            self.head = nn.Linear(hidden, k * (1 + d + n_tri))
            self.pen = nn.Linear(hidden, 1) if pen else None

        def forward(self, x):
            inputs = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
            h, _ = self.lstm(inputs)
            out = self.head(h)
            b, t = out.shape[:2]
            logits = out[..., :k]
            means = out[..., k : k + k * d].reshape(b, t, k, d)
            raw = out[..., k + k * d :].reshape(b, t, k, n_tri)
            diag = 1.0 / (min_scale + nn.functional.softplus(raw[..., :d])) + 1.0 / max_scale
            prec_chol = (torch.cat([diag, raw[..., d:]], -1) @ embed).reshape(b, t, k, d, d)
            diff = x[..., None, :d] - means
            y = torch.einsum("btkd,btkde->btke", diff, prec_chol)
            comp = -0.5 * (d * math.log(2 * math.pi) + (y * y).sum(-1)) + torch.log(diag).sum(-1)
            lp = torch.logsumexp(torch.log_softmax(logits, -1) + comp, -1)
            if self.pen is not None:
                lp = lp - nn.functional.binary_cross_entropy_with_logits(
                    self.pen(h)[..., 0], x[..., -1], reduction="none")
            return -lp.mean()

    net = Net().to(device)
    embed = embed.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, seq_len, n_features)).astype(np.float32)
    if pen:
        x[..., -1] = rng.random((batch, seq_len)) < 0.2
    x = torch.from_numpy(x).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = net(x)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    return step


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--components", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5, help="train steps per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pen", action="store_true", help="also the 2-D mixture + Bernoulli pen model")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc keeps freed memory for reuse (grnn_jax.runtime), for both "
                             "sides, as GRNN_KEEP_FREED_MEMORY=1 makes the grnn command do")
    parser.add_argument("--cpu-time", action="store_true",
                        help="rate steps per second of process CPU time (all threads summed) "
                             "instead of wall clock: steadier on a loaded machine")
    parser.add_argument("--torch-threads", type=int, nargs="+", default=None,
                        help="torch intra-op thread counts to compare with (default: the cores, and 1)")
    return parser


def _torch_sides(args, cores: int, on_gpu: bool):
    """(the torch module or None, its version line, the torch variants: thread counts, or
    ["cuda"] on a GPU)."""
    torch, torch_version = None, "not run"
    if not args.no_torch:
        try:
            import torch

            torch_version = torch.__version__
            if on_gpu and not torch.cuda.is_available():
                torch, torch_version = None, f"{torch_version} without CUDA (not run)"
        except ImportError:
            torch_version = "not installed"
    # On a GPU torch runs on it (cuDNN's LSTM); on a CPU at each thread count.
    threads = [] if torch is None else (["cuda"] if on_gpu else
                                        list(dict.fromkeys(args.torch_threads or [cores, 1])))
    return torch, torch_version, threads


def _measure(args, torch, threads) -> list[tuple]:
    """``(layers, pen, steps per second of each side, jax compile seconds)`` per model."""
    variants = [(layers, False) for layers in args.layers]
    if args.pen:
        variants += [(layers, True) for layers in args.layers]
    rows = []
    for layers, pen in variants:
        kw = dict(n_layers=layers, hidden=args.hidden, n_components=args.components,
                  n_features=3, batch=args.batch, seq_len=args.seq_len, pen=pen)
        sides = {"jax": jax_step_fn(**kw)}
        first = _time_round(sides["jax"], 1)
        compile_s = first - _time_round(sides["jax"], 1)  # the first call less one step (wall)
        before = {}
        for n in threads:
            if n == "cuda":
                sides["torchcuda"] = torch_step_fn(**kw, device="cuda")
            else:
                sides[f"torch{n}"] = torch_step_fn(**kw)
                before[f"torch{n}"] = functools.partial(torch.set_num_threads, n)
        clock = time.process_time if args.cpu_time else time.perf_counter
        rates = interleaved_rates(sides, args.steps, args.repeats, args.warmup, before, clock)
        rows.append((layers, pen, rates, compile_s))
    return rows


def _report(args, argv, rows, threads, torch, torch_version, cores, load_before, memory_kept):
    import jax

    on_gpu = jax.default_backend() == "gpu"
    print("\ncommand: python scripts/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"CPU: {cpu_line()}, {cores} cores; "
          f"load average {load_before} before, {load_average()} after; freed memory kept for reuse "
          f"(grnn_jax.runtime): {'yes' if memory_kept else 'no'}")
    if on_gpu:
        print(f"GPU: {jax.devices()[0].device_kind}" + (
            f"; torch on CUDA, cuDNN {torch.backends.cudnn.version()}" if torch is not None else ""))
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch_version}; LSTM hidden {args.hidden}, "
          f"T={args.seq_len}, batch {args.batch}, K={args.components} full covariance; best of "
          f"{args.repeats} interleaved rounds of {args.steps} steps"
          + ("; steps per second of process CPU time (all threads summed)\n" if args.cpu_time
             else "\n"))
    label = {"cuda": "torch steps/s (CUDA)"}
    cols = "".join(f" {label.get(n, f'torch steps/s ({n} thr)')} | ratio |" for n in threads)
    print(f"| model | layers | grnn_jax steps/s |{cols} jax compile s |")
    print("|---|---|---|" + "---|---|" * len(threads) + "---|")
    for layers, pen, rates, compile_s in rows:
        name = "2-D mixture + pen" if pen else "3-D mixture"
        jr = rates["jax"]
        cells = "".join(f" {rates[f'torch{n}']:.2f} | {jr / rates[f'torch{n}']:.2f}x |" for n in threads)
        print(f"| {name} | {layers} | {jr:.2f} |{cells} {compile_s:.2f} |")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("layers", "torch_threads"):
        if any(v < 1 for v in getattr(args, name) or []):
            parser.error(f"--{name.replace('_', '-')} values must be >= 1")
    for name in ("hidden", "seq_len", "batch", "components", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    # Before JAX or torch start their threads; it applies to both sides.
    from grnn_jax.runtime import keep_freed_memory
    from grnn_jax.runtime import available_cores

    memory_kept = args.keep_freed_memory and keep_freed_memory()
    cores = available_cores()
    import jax

    torch, torch_version, threads = _torch_sides(args, cores, jax.default_backend() == "gpu")
    load_before = load_average()
    rows = _measure(args, torch, threads)
    _report(args, argv, rows, threads, torch, torch_version, cores, load_before, memory_kept)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
