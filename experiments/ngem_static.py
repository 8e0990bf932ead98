"""ngem where its step is a natural-gradient step in the parameters: a static Gaussian
mixture, the mixture head on a constant input, so that the head's raw outputs are its
parameters (Jacobian the identity).

In a GRNN the ngem surrogate hands the network ``Jᵀ F⁻¹ ∇Q`` (a natural step in the head's
outputs, back-propagated through the shared layers), which is not a natural step in the
network's parameters. Here ``J`` is the identity, so ngem is the component-Fisher natural
gradient of the mixture's own parameters. Full-batch training on N draws of a known
mixture with components of very different scales; nll and ngem, each under AdamW and SGD
with momentum, each at several peak learning rates (same warm-up + cosine schedule and
clipping as training uses); the reference is the maximum-likelihood fit by EM (20 k-means++
restarts). Reported per optimiser and method, at its best learning rate (the most seeds
within ``tol`` nats of the EM optimum, then the fewest steps to get there): those steps and
the final gap to the optimum.

Usage:
  python -m experiments.ngem_static --out runs/ngem_static
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grnn_jax import em, gmm
from grnn_jax.model.heads import MixtureHead
from grnn_jax.train import make_schedule, ngem_surrogate, optimizer_chain

METHODS = ("nll", "ngem")
OPTIMIZERS = {"adamw": (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), "sgd": (1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)}


def true_mixture() -> gmm.GMM:
    """Three 2-D components whose scales differ by 30x: plain gradients on the means scale
    with the precisions, natural steps do not."""
    means = jnp.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]])
    covs = jnp.array([[[0.01, 0.0], [0.0, 0.04]],
                      [[1.0, 0.6], [0.6, 1.0]],
                      [[9.0, -1.0], [-1.0, 4.0]]])
    return gmm.from_covariances(jnp.log(jnp.array([0.5, 0.3, 0.2])), means, covs, "full")


def draw(n: int, seed: int) -> jax.Array:
    x = gmm.sample(jax.random.key(seed), true_mixture(), n)
    return (x - x.mean(0)) / x.std(0)  # standardised, as training standardises


def curves(x, method: str, optimizer: str, lrs, seeds: int, steps: int,
           n_components: int) -> np.ndarray:
    """(L, S, steps) NLL per step (before each update) of full-batch runs at every peak
    learning rate of ``lrs`` and initialisation seed ``0..seeds-1``: one compiled program,
    vmapped over both (the learning rate is an argument, not a constant)."""
    head = MixtureHead(n_components=n_components, n_features=x.shape[-1],
                       covariance_type="full")
    h = jnp.zeros((x.shape[0], 1), x.dtype)

    def loss(p):
        g = head.apply(p, h)
        nll = -jnp.mean(gmm.log_prob(g, x))
        if method == "nll":
            return nll, nll
        sur = jnp.mean(ngem_surrogate(g, x, min_scale=head.min_scale, max_scale=head.max_scale))
        return sur, jax.lax.stop_gradient(nll)

    # The training schedule at peak 1, scaled by the (traced) peak learning rate, as a
    # population's members scale it.
    unit = make_schedule(learning_rate=1.0, num_steps=steps, warmup_steps=steps // 20)

    def one(lr, key):
        tx = optimizer_chain(lambda count: lr * unit(count), weight_decay=0.0, clip_norm=1.0,
                             optimizer=optimizer, momentum=0.9)

        def body(carry, _):
            p, s = carry
            grads, nll = jax.grad(loss, has_aux=True)(p)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), nll

        params = head.init(key, h)
        return jax.lax.scan(body, (params, tx.init(params)), None, length=steps)[1]

    keys = jax.vmap(jax.random.key)(jnp.arange(seeds))  # seed s: jax.random.key(s)
    grid = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))
    return np.asarray(grid(jnp.asarray(lrs, x.dtype), keys))


def first_within(curve: np.ndarray, target: float) -> int | None:
    hit = np.nonzero(curve <= target)[0]
    return int(hit[0]) if hit.size else None


def _rank(r: dict) -> tuple:
    """A learning rate's rank: most seeds within ``tol``, then fewest steps (median), then
    the smallest final gap."""
    hits = [h for h in r["steps_to_tol"] if h is not None]
    return (-len(hits), np.median(hits) if hits else np.inf,
            np.mean(np.nan_to_num(r["final_gap"], nan=1e9)))


def run(out: Path, *, n: int, steps: int, seeds: int, tol: float,
        grids: dict | None = None) -> dict:
    """All runs; ``grids`` maps optimiser -> peak learning rates (default ``OPTIMIZERS``)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x = draw(n, seed=0)
    k = int(true_mixture().logits.shape[-1])
    ref = em.fit(x, k, key=jax.random.key(0), n_init=20, max_iter=500, tol=1e-7)
    opt_nll = float(-jnp.mean(gmm.log_prob(ref.gmm, x)))
    rows = []
    for opt, lrs in (grids or OPTIMIZERS).items():
        for method in METHODS:
            by_lr = []
            for lr, runs in zip(lrs, curves(x, method, opt, lrs, seeds, steps, k)):
                final = [float(np.min(c[-steps // 10:])) - opt_nll for c in runs]
                hits = [first_within(c, opt_nll + tol) for c in runs]
                by_lr.append({"lr": lr, "final_gap": final, "steps_to_tol": hits})
            best = min(by_lr, key=_rank)
            rows.append({"optimizer": opt, "method": method, "best": best, "all": by_lr})
            print(f"{opt:5s} {method:4s} best lr {best['lr']:g}: gap "
                  f"{np.mean(best['final_gap']):.4f}, steps to tol {best['steps_to_tol']}",
                  flush=True)
    res = {"n": n, "steps": steps, "seeds": seeds, "tol": tol, "em_nll": opt_nll, "rows": rows,
           "wall_time_s": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "report.md").write_text(render(res))
    return res


def render(res: dict) -> str:
    lines = [f"Static 3-component mixture, N = {res['n']}, full batch, {res['steps']} steps, "
             f"{res['seeds']} seeds; EM optimum {res['em_nll']:.4f} nats.", "",
             "| optimiser | method | best peak lr | final gap to EM (mean; max) | "
             f"steps to within {res['tol']:g} (median; reached) |", "|---|---|---:|---:|---:|"]
    for r in res["rows"]:
        b = r["best"]
        hits = [h for h in b["steps_to_tol"] if h is not None]
        med = f"{np.median(hits):.0f}" if hits else "—"
        lines.append(f"| {r['optimizer']} | {r['method']} | {b['lr']:g} | "
                     f"{np.mean(b['final_gap']):.4f}; {np.max(b['final_gap']):.4f} | "
                     f"{med} ({len(hits)}/{len(b['steps_to_tol'])}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ngem_static")
    p.add_argument("--n", type=int, default=2000, help="draws of the mixture")
    p.add_argument("--steps", type=int, default=600, help="full-batch optimiser steps")
    p.add_argument("--seeds", type=int, default=3, help="initialisations per setting")
    p.add_argument("--tol", type=float, default=0.01, help="nats from the EM optimum")
    a = p.parse_args(argv)
    for name in ("n", "steps", "seeds"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be a positive integer")
    if not a.tol > 0:
        p.error("--tol must be positive")
    print(render(run(Path(a.out), n=a.n, steps=a.steps, seeds=a.seeds, tol=a.tol)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
