"""EM at scale: seconds per pass and peak memory of out-of-core EM against N, 1 vs 2 processes,
and data-parallel training steps per second on 1 vs 8 (fake) devices.

    python scripts/bench_scale.py em --sizes 1e5,1e6,1e7,1e8     # chunked EM on .npy files
    python scripts/bench_scale.py procs --size 1e7                # 1 vs 2 local processes
    python scripts/bench_scale.py train                           # 1 vs 8 fake CPU devices

``em``: each size's .npy file (float32, D=2, a 4-component mixture) is written
in pieces of 1e6 rows into ``--dir`` (kept for reruns). Every measurement runs
in its own process: seconds per pass are ``(fit(1 + iters) - fit(1)) / iters``
(compilation and the two set-up passes excluded); peak memory is the process's
peak resident set (VmHWM) and its growth above the resident set after JAX's
start-up; the peak is reset after the first (compiling) fit, so it shows the
memory the passes themselves need. ``procs``: the same on 2 processes joined by ``jax.distributed`` on
127.0.0.1 (gloo), each reading its half of the rows; on a 2-core machine they
share the cores. ``train``: steps per second of the data-parallel train step
(batch sharded, parameters replicated) on 1 and on 8 fake CPU devices of one
CPU: a correctness run, not a speed claim. On a GPU, ``em`` and ``train``
report points per second and steps per second on it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
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
    import jax

    from grnn_jax.training.sharding import bench_steps

    out = bench_steps(n_steps=args.steps, batch_size=args.batch)
    out["devices"] = len(jax.devices())
    print(json.dumps(out), flush=True)


def bench_train(args) -> None:
    rows = []
    for n_dev in (1, 8):
        env = _env(XLA_FLAGS=f"--xla_force_host_platform_device_count={n_dev}") if args.cpu_devices else _env()
        rows.append(_run([sys.executable, __file__, "worker-train", "--steps", str(args.steps), "--batch",
                          str(args.batch)], env=env))
        if not args.cpu_devices:
            break
    print("| devices | batch | steps/s | final loss |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['devices']} | {r['batch']} | {r['steps_per_sec']:.2f} | {r['final_loss']:.5f} |")


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
    sub.choices["train"].add_argument("--no-cpu-devices", dest="cpu_devices", action="store_false",
                                      help="on a GPU: time the real devices instead of 1 vs 8 fake CPU ones")
    args = p.parse_args()
    {"em": bench_em, "procs": bench_procs, "worker-em": worker_em, "train": bench_train,
     "worker-train": worker_train}[args.mode](args)


if __name__ == "__main__":
    main()
