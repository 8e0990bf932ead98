"""Training throughput of a GRNN in grnn_jax against an eager PyTorch reference.

Both sides train the same model: an LSTM (hidden 256 by default) over
sequences of 3-D observations, a linear mixture head with K full-covariance
components (precision-Cholesky parametrisation, the same constraints as
``grnn_jax.heads.MixtureHead``) and the mixture negative log-likelihood, with
Adam and global-norm gradient clipping. Steps per second are the median over
repeats after warm-up; the ratio column compares the two in the same run,
which matters more than the absolute numbers on a shared machine. The JAX
compile time is the first call minus one steady-state step.

PyTorch is optional: without it the torch columns read "n/a".

Usage:
  .venv/bin/python scripts/bench_train.py                 # 1 and 2 layers
  .venv/bin/python scripts/bench_train.py --layers 1 --repeats 3 --steps 5
  .venv/bin/python scripts/bench_train.py --pen            # + 2-D mixture with a Bernoulli pen
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np


def _n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _time_steps(step, n_steps: int, repeats: int, warmup: int):
    """(first-call seconds, median steady steps/s, all steps/s)."""
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step()
        rates.append(n_steps / (time.perf_counter() - t0))
    return first, statistics.median(rates), rates


# ----------------------------------------------------------------------------- JAX


def jax_step_fn(*, n_layers, hidden, n_components, n_features, batch, seq_len, pen, seed=0):
    """Returns a no-argument callable running one jitted train step (blocking)."""
    import jax
    import jax.numpy as jnp
    import optax

    from grnn_jax import model

    n_mix = n_features - 1 if pen else n_features
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, seq_len, n_features)).astype(np.float32)
    if pen:
        x[..., -1] = rng.random((batch, seq_len)) < 0.2
    x = jnp.asarray(x)
    key = jax.random.key(seed)
    if pen:
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
        params = pen_model.init(key, x)

        def loss_fn(p):
            return -pen_model.apply(p, x)
    else:
        net = model.GRNN(n_features=n_mix, n_components=n_components, covariance_type="full",
                         cell="lstm", hidden_size=hidden, n_layers=n_layers)
        params = net.init(key, x)

        def loss_fn(p):
            return -jnp.mean(model.sequence_log_prob(net, p, x)) / seq_len

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


# --------------------------------------------------------------------------- torch


def torch_step_fn(*, n_layers, hidden, n_components, n_features, batch, seq_len, pen, seed=0,
                  min_scale=1e-3, max_scale=1e3):
    """The same model, loss and optimiser in eager PyTorch (fused ``nn.LSTM``)."""
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

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, seq_len, n_features)).astype(np.float32)
    if pen:
        x[..., -1] = rng.random((batch, seq_len)) < 0.2
    x = torch.from_numpy(x)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = net(x)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--components", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5, help="train steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pen", action="store_true", help="also the 2-D mixture + Bernoulli pen model")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (default: the cores JAX uses)")
    args = parser.parse_args(argv)

    cores = _n_cores()
    try:
        if args.no_torch:
            raise ImportError
        import torch

        torch.set_num_threads(args.torch_threads or cores)
        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = "not installed"
    import jax

    variants = [(layers, False) for layers in args.layers]
    if args.pen:
        variants += [(layers, True) for layers in args.layers]
    rows = []
    for layers, pen in variants:
        kw = dict(n_layers=layers, hidden=args.hidden, n_components=args.components,
                  n_features=3, batch=args.batch, seq_len=args.seq_len, pen=pen)
        first, jax_rate, _ = _time_steps(jax_step_fn(**kw), args.steps, args.repeats, args.warmup)
        compile_s = first - 1.0 / jax_rate
        torch_rate = None
        if torch is not None:
            _, torch_rate, _ = _time_steps(torch_step_fn(**kw), args.steps, args.repeats, args.warmup)
        rows.append((layers, pen, jax_rate, torch_rate, compile_s))

    print("\ncommand: python scripts/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch_version}, "
          f"{cores} cores (torch threads = {args.torch_threads or cores}); LSTM hidden {args.hidden}, T={args.seq_len}, "
          f"batch {args.batch}, K={args.components} full covariance; median of {args.repeats} x "
          f"{args.steps} steps\n")
    print("| model | layers | grnn_jax steps/s | torch steps/s | ratio (ours/torch) | jax compile s |")
    print("|---|---|---|---|---|---|")
    for layers, pen, jr, tr, cs in rows:
        name = "2-D mixture + pen" if pen else "3-D mixture"
        t = f"{tr:.2f}" if tr else "n/a"
        r = f"{jr / tr:.2f}x" if tr else "n/a"
        print(f"| {name} | {layers} | {jr:.2f} | {t} | {r} | {cs:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
