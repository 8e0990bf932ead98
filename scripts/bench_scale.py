"""EM at scale: seconds per pass and peak memory of out-of-core EM against N, 1 vs 2 processes,
and data-parallel training steps per second on 1 vs 8 (fake) devices.

    python scripts/bench_scale.py em --sizes 1e5,1e6,1e7,1e8     # chunked EM on .npy files
    python scripts/bench_scale.py procs --size 1e7                # 1 vs 2 local processes
    python scripts/bench_scale.py train                           # 1 vs 8 fake CPU devices
    python scripts/bench_scale.py online                          # online EM's gap, docs/online_gap.png

``em``: each size's .npy file (float32, D=2, a 4-component mixture) is written
in pieces of 1e6 rows into ``--dir`` (kept for reruns). Every measurement runs
in its own process: seconds per pass are ``(fit(1 + iters) - fit(1)) / iters``
(compilation and the two set-up passes excluded); peak memory is the process's
peak resident set (VmHWM) and its growth above the resident set after JAX's
start-up; the peak is reset after the first (compiling) fit, so it shows the
memory the passes themselves need. ``procs``: the same on 2 processes joined by ``jax.distributed`` on
127.0.0.1 (gloo), each reading its half of the rows; on a 2-core machine they
share the cores. ``train``: steps per second of the data-parallel train step
(batch sharded, parameters replicated) and of the whole fit loop
(``train(mesh=...)``) on 1 and on 8 fake CPU devices of one CPU: a correctness
run, not a speed claim. On a GPU, ``em`` and ``train``
report points per second and steps per second on it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Resets VmHWM to the current RSS (Linux >= 4.0), so the peak excludes compilation."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def make_npy(path: str, n: int, d: int = 2, piece: int = 1_000_000, seed: int = 0) -> None:
    """An (n, d) float32 .npy file from a 4-component mixture, written in pieces (never whole in memory)."""
    if os.path.exists(path) and np.load(path, mmap_mode="r").shape == (n, d):
        return
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, d)) * 4
    tmp = path + ".tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    for lo in range(0, n, piece):
        hi = min(lo + piece, n)
        out[lo:hi] = centers[rng.integers(0, 4, hi - lo)] + rng.normal(size=(hi - lo, d))
        out.flush()
    del out
    os.replace(tmp, path)


def worker_em(args) -> None:
    """Inside one process (or each of several): time chunked EM on args.path; print a JSON line."""
    import jax

    from grnn_jax import em
    from grnn_jax.em import distributed

    if args.coordinator:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout=60)
    base_kb = _status_kb("VmRSS")
    key = jax.random.key(0)
    kw = dict(key=key, chunk_size=args.chunk, covariance_type="full", tol=0.0, init_sample=10_000)

    def timed(iters):
        t = time.perf_counter()
        res = em.fit_chunked(args.path, args.k, max_iter=iters, **kw)
        res.gmm.means.block_until_ready()
        return time.perf_counter() - t

    timed(1)  # compiles
    after_compile_kb = _status_kb("VmRSS")
    _reset_peak()
    t1 = min(timed(1) for _ in range(args.repeats))
    tn = min(timed(1 + args.iters) for _ in range(args.repeats))
    n = np.load(args.path, mmap_mode="r").shape[0]
    per_pass = (tn - t1) / args.iters
    out = dict(n=n, processes=jax.process_count(), chunk=args.chunk, sec_per_pass=per_pass,
               points_per_sec=n / per_pass, peak_rss_mib=_status_kb("VmHWM") / 1024,
               growth_mib=(_status_kb("VmHWM") - base_kb) / 1024,
               run_growth_mib=(_status_kb("VmHWM") - after_compile_kb) / 1024, device=str(jax.devices()[0].platform),
               file_mib=os.path.getsize(args.path) / 2**20)
    if jax.process_index() == 0:
        print(json.dumps(out), flush=True)


def _run(cmd, env=None) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def _env(**extra):
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def bench_em(args) -> None:
    os.makedirs(args.dir, exist_ok=True)
    rows = []
    for n in [int(float(s)) for s in args.sizes.split(",")]:
        path = os.path.join(args.dir, f"x_{n}.npy")
        t = time.perf_counter()
        make_npy(path, n)
        print(f"# data N={n:.0e}: {time.perf_counter() - t:.1f} s to write (or found)", file=sys.stderr)
        r = _run([sys.executable, __file__, "worker-em", "--path", path, "--k", str(args.k), "--chunk",
                  str(args.chunk), "--iters", str(args.iters), "--repeats", str(args.repeats)], env=_env())
        rows.append(r)
        print(json.dumps(r), file=sys.stderr)
    print("| N | file MiB | chunk rows | s/pass | points/s | peak RSS MiB (fits, after compiling) | "
          "growth over the RSS after compiling, MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:.0e} | {r['file_mib']:.0f} | {r['chunk']} | {r['sec_per_pass']:.3f} | "
              f"{r['points_per_sec']:.3g} | {r['peak_rss_mib']:.0f} | {r['run_growth_mib']:.0f} |")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_procs(args) -> None:
    os.makedirs(args.dir, exist_ok=True)
    n = int(float(args.size))
    path = os.path.join(args.dir, f"x_{n}.npy")
    make_npy(path, n)
    base = [sys.executable, __file__, "worker-em", "--path", path, "--k", str(args.k), "--chunk", str(args.chunk),
            "--iters", str(args.iters), "--repeats", str(args.repeats)]
    env = _env(JAX_PLATFORMS="cpu", XLA_FLAGS="")
    rows = [_run(base, env=env)]
    port = _free_port()
    procs = [subprocess.Popen([*base, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    outs = [p.communicate() for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(outs[0][1][-3000:] + outs[1][1][-3000:])
    rows.append(json.loads(outs[0][0].strip().splitlines()[-1]))
    print("| processes | N | s/pass | points/s | peak RSS MiB (process 0) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['processes']} | {r['n']:.0e} | {r['sec_per_pass']:.3f} | {r['points_per_sec']:.3g} | "
              f"{r['peak_rss_mib']:.0f} |")


def worker_train(args) -> None:
    """Steps per second of the data-parallel train step on every device this process sees."""
    import jax

    from grnn_jax.data import Sequences, batch_at
    from grnn_jax.train import TrainConfig, train
    from grnn_jax.train import ModelConfig, init_state, make_optimizer, make_train_step, sharding

    net = ModelConfig(n_features=3, n_components=8, hidden_size=args.hidden).build()
    tx = make_optimizer(learning_rate=1e-3, num_steps=args.steps + 2, warmup_steps=0, weight_decay=0.0,
                        clip_norm=1.0)
    seqs = Sequences(np.random.default_rng(0).normal(size=(4 * args.batch, args.length, 3)))
    batches = [batch_at(seqs, s, batch_size=args.batch, seed=0) for s in range(args.steps + 1)]
    mesh = sharding.make_mesh()
    step = sharding.make_data_parallel_step(make_train_step(net, tx), mesh)
    state = sharding.replicate(init_state(net, tx, batches[0], key=jax.random.key(0)), mesh)
    state, m = step(state, batches[0])  # compiles
    jax.block_until_ready(state)
    t = time.perf_counter()
    for b in batches[1:]:
        state, m = step(state, b)
    jax.block_until_ready(state)
    sps = args.steps / (time.perf_counter() - t)
    # The whole fit loop (train(mesh=...)): batches built on the host, metrics, a checkpoint at the end;
    # its steps_per_s leaves out the first (compiling) step.
    cfg = TrainConfig(ModelConfig(n_features=3, n_components=8, hidden_size=args.hidden), num_steps=args.steps + 1,
                      batch_size=args.batch, log_every=args.steps + 1, warmup_steps=0, learning_rate=1e-3,
                      standardise=False)
    with tempfile.TemporaryDirectory() as wd:
        _, history = train(cfg, seqs, None, wd, progress=False, mesh=mesh)
    rec = [r for r in history if r["kind"] == "train"][-1]
    print(json.dumps(dict(devices=len(jax.devices()), platform=jax.devices()[0].platform, batch=args.batch,
                          steps_per_sec=sps, final_loss=float(m["loss"]), loop_steps_per_sec=rec["steps_per_s"],
                          loop_loss=rec["loss"])), flush=True)


def bench_train(args) -> None:
    rows = []
    for n_dev in (1, 8):
        env = _env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n_dev}") if args.cpu_devices else _env()
        rows.append(_run([sys.executable, __file__, "worker-train", "--steps", str(args.steps), "--batch",
                          str(args.batch), "--hidden", str(args.hidden), "--length", str(args.length)], env=env))
        if not args.cpu_devices:
            break
    print("| devices | platform | batch | step: steps/s | step: loss after the last step | "
          "train(mesh=...): steps/s | train(): mean loss over its steps |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['devices']} | {r['platform']} | {r['batch']} | {r['steps_per_sec']:.2f} | {r['final_loss']:.6f} "
              f"| {r['loop_steps_per_sec']:.2f} | {r['loop_loss']:.6f} |")


def online_gap(args) -> None:
    """The log-likelihood gap of stepwise EM to the batch-EM optimum against passes (a plot and a table)."""
    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt

    from grnn_jax import em, gmm

    truth = gmm.from_covariances(jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1])),
                                 jnp.array([[0.0, 0.0], [4.0, 4.0], [-4.0, 5.0], [1.0, -4.0]]),
                                 jnp.array([[1.0, 0.5], [0.5, 2.0], [1.0, 1.0], [2.0, 0.3]]), "diag")
    x = np.asarray(gmm.sample(jax.random.key(0), truth, args.n))
    kw = dict(key=jax.random.key(1), covariance_type="diag")
    opt = float(em.fit(x, 4, tol=1e-7, max_iter=500, **kw).log_likelihood)
    curves = {}
    for batch in args.batches:
        for alpha in args.alphas:
            gaps = []
            em.fit_online(x, 4, batch_size=batch, passes=args.passes, step_exponent=alpha,
                          on_pass=lambda p, g: gaps.append(opt - float(em.score(g, x))), **kw)
            curves[(batch, alpha)] = gaps
    fig, ax = plt.subplots(figsize=(6, 4))
    for (batch, alpha), gaps in curves.items():
        ax.semilogy(range(1, args.passes + 1), np.maximum(gaps, 1e-8), marker="o", ms=3,
                    label=f"B={batch}, alpha={alpha}")
    ax.set_xlabel("passes over the data")
    ax.set_ylabel("batch-EM optimum minus online EM (nats/row)")
    ax.set_title(f"Stepwise EM on {args.n} rows of a 4-component mixture (D=2)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    shown = [p for p in (1, 2, 3, 5, 10, 20) if p <= args.passes]
    print("| batch B | alpha | " + " | ".join(f"gap after {p}" for p in shown) + " |")
    print("|---:|---:|" + "---:|" * len(shown))
    for (batch, alpha), gaps in curves.items():
        print(f"| {batch} | {alpha} | " + " | ".join(f"{gaps[p - 1]:.1e}" for p in shown) + " |")
    print(f"\nbatch-EM optimum {opt:.6f} nats/row; plot: {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("em", "procs", "worker-em"):
        s = sub.add_parser(name)
        s.add_argument("--k", type=int, default=4)
        s.add_argument("--chunk", type=int, default=1 << 18)
        s.add_argument("--iters", type=int, default=4)
        s.add_argument("--repeats", type=int, default=2)
        s.add_argument("--dir", default="/tmp/grnn_bench_scale")
    sub.choices["em"].add_argument("--sizes", default="1e5,1e6,1e7,1e8")
    sub.choices["procs"].add_argument("--size", default="1e7")
    w = sub.choices["worker-em"]
    w.add_argument("--path", required=True)
    w.add_argument("--coordinator")
    w.add_argument("--num-processes", type=int)
    w.add_argument("--process-id", type=int)
    for name in ("train", "worker-train"):
        s = sub.add_parser(name)
        s.add_argument("--steps", type=int, default=20)
        s.add_argument("--batch", type=int, default=64)
        s.add_argument("--hidden", type=int, default=64)
        s.add_argument("--length", type=int, default=50)
    sub.choices["train"].add_argument("--no-cpu-devices", dest="cpu_devices", action="store_false",
                                      help="on a GPU: time the real devices instead of 1 vs 8 fake CPU ones")
    o = sub.add_parser("online")
    o.add_argument("--n", type=int, default=50_000)
    o.add_argument("--passes", type=int, default=10)
    o.add_argument("--batches", type=lambda v: [int(b) for b in v.split(",")], default=[500, 5000])
    o.add_argument("--alphas", type=lambda v: [float(a) for a in v.split(",")], default=[0.6, 1.0])
    o.add_argument("--out", default=os.path.join(ROOT, "docs", "online_gap.png"))
    args = p.parse_args()
    {"online": online_gap, "em": bench_em, "procs": bench_procs, "worker-em": worker_em, "train": bench_train,
     "worker-train": worker_train}[args.mode](args)


if __name__ == "__main__":
    main()
