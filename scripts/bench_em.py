"""Seconds per EM iteration and peak memory: grnn_jax vs scikit-learn (vs pomegranate).

Every measurement runs in its own subprocess (so peak memory is that
implementation's alone) on the same float32 data and the same initial
parameters; initialisation and compilation are excluded. scikit-learn is timed
on one E-step plus M-step; grnn_jax and pomegranate, whose fits include per-fit
set-up, as ``(fit(1 + iters) - fit(1)) / iters``. Times are medians of repeats;
ratios are taken between numbers measured in the same run.

    python scripts/bench_em.py                 # the full grid (takes a while)
    python scripts/bench_em.py --quick         # N=1e5, D in {16, 64}, K=32, full
    python scripts/bench_em.py --sizes 1e6 --dims 16 --ks 32 --ctypes full --only jax,sklearn

Flops for full covariance are counted as 4*N*K*D^2 per iteration (the E-step
projections plus the M-step second moments as if unpacked), and compared with
this machine's float32 matmul rate measured by ``jnp.matmul`` of large square
matrices in the same process, just before the EM timing.

For fair scikit-learn timings, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are
removed from its subprocess's environment; the BLAS that threadpoolctl reports
there is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

_BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# --- measurement helpers (run inside the worker subprocess) -------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _trim_heap():
    """Returns freed heap pages to the OS, so RSS reflects live memory (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Peak:
    """Peak resident memory above the level at ``start()`` (data and runtime already resident)."""

    def start(self):
        _trim_heap()
        try:  # resets VmHWM to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.base_kb = _rss_kb("VmRSS")
        self.base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def mib(self) -> float:
        if self.reset:
            return max(_rss_kb("VmHWM") - self.base_kb, 0) / 1024
        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_max, 0) / 1024


def _data(n: int, d: int, k: int, seed: int = 0):
    """float32 data (a K-cluster mixture) built in chunks, and shared initial parameters."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)).astype(np.float32) * 3
    x = np.empty((n, d), np.float32)
    step = 1 << 16
    for s in range(0, n, step):
        m = min(step, n - s)
        x[s : s + m] = rng.standard_normal((m, d), dtype=np.float32)
        x[s : s + m] += centers[rng.integers(0, k, m)]
    means = x[rng.choice(n, k, replace=False)] + np.float32(0.1)
    weights = np.full(k, 1.0 / k, np.float32)
    return x, weights, means


def _timed(run) -> float:
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def _repeat(measure, repeats: int, budget_s: float) -> list[float]:
    """Up to ``repeats`` values of ``measure()``, stopping once ``budget_s`` seconds have passed."""
    out = []
    t_all = time.perf_counter()
    for _ in range(repeats):
        out.append(measure())
        if time.perf_counter() - t_all > budget_s:
            break
    return out


def _marginal_times(fit, iters: int, repeats: int, budget_s: float) -> list[float]:
    """Seconds per iteration as ``(fit(1 + iters) - fit(1)) / iters``, per-fit set-up excluded.

    The two fits alternate, so that a change in machine load hits both.
    """

    def pair():
        one = _timed(lambda: fit(1))
        return max(_timed(lambda: fit(1 + iters)) - one, 0.0) / iters

    return _repeat(pair, repeats, budget_s)


def _matmul_rate(n: int = 2048, repeats: int = 7) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts)


def _worker_jax(n, d, k, ctype, iters, repeats, budget, block_size, reg):
    import jax
    import jax.numpy as jnp

    from grnn_jax import em, gmm

    x_np, w, means = _data(n, d, k)
    x = jnp.asarray(x_np)
    del x_np  # hold one copy of the data, as scikit-learn does
    cov = np.broadcast_to(np.eye(d, dtype=np.float32), (k, d, d)) if ctype == "full" else np.ones((k, d), np.float32)
    g0 = gmm.from_covariances(jnp.log(jnp.asarray(w)), jnp.asarray(means), jnp.asarray(cov), ctype)

    def fit(max_iter):
        jax.block_until_ready(em.fit_from(x, g0, max_iter=max_iter, tol=0.0, reg_covar=reg, block_size=block_size))

    fit(1), fit(1 + iters)  # compile both
    rate = _matmul_rate()
    peak = _Peak()
    peak.start()
    times = _marginal_times(fit, iters, repeats, budget)
    bs = block_size or em.default_block_size(d, k, ctype)
    return dict(times=times, peak_mib=peak.mib(), matmul_flops=rate, block_size=bs)


def _worker_sklearn(n, d, k, ctype, iters, repeats, budget, block_size, reg):
    import warnings

    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_info

    x, w, means = _data(n, d, k)
    cov = np.broadcast_to(np.eye(d, dtype=np.float32), (k, d, d)) if ctype == "full" else np.ones((k, d), np.float32)
    gm = GaussianMixture(
        k, covariance_type=ctype, max_iter=1, reg_covar=reg, weights_init=w, means_init=means, precisions_init=cov
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(x[: max(4 * k, 1000)])  # sets up the estimator; the parameters are reset below
    prec_chol = np.ascontiguousarray(cov)

    def reset():
        gm.weights_, gm.means_, gm.precisions_cholesky_ = w.copy(), means.copy(), prec_chol.copy()

    def run():  # one iteration per repeat: at N=1e6 one can take minutes
        reset()
        _, log_resp = gm._e_step(x)
        gm._m_step(x, log_resp)

    peak = _Peak()
    peak.start()
    times = _repeat(lambda: _timed(run), repeats, budget)
    blas = [
        f"{i.get('internal_api')}:{i.get('architecture')} x{i.get('num_threads')}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return dict(times=times, peak_mib=peak.mib(), blas=blas, dtype=str(gm.means_.dtype))


def _worker_pomegranate(n, d, k, ctype, iters, repeats, budget, block_size, reg):
    import torch
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel

    x_np, w, means = _data(n, d, k)
    x = torch.from_numpy(x_np)
    cov = np.broadcast_to(np.eye(d, dtype=np.float32), (k, d, d)) if ctype == "full" else np.ones((k, d), np.float32)

    def model(max_iter):
        dists = [
            Normal(
                torch.from_numpy(means[j].copy()),
                torch.from_numpy(np.array(cov[j])),
                covariance_type=ctype,
                min_cov=reg,
            )
            for j in range(k)
        ]
        return GeneralMixtureModel(dists, priors=torch.from_numpy(w.copy()), max_iter=max_iter, tol=0.0)

    model(1).fit(x)  # warm-up
    peak = _Peak()
    peak.start()
    times = _marginal_times(lambda max_iter: model(max_iter).fit(x), iters, repeats, budget)
    return dict(times=times, peak_mib=peak.mib(), torch_threads=torch.get_num_threads())


_WORKERS = {"jax": _worker_jax, "sklearn": _worker_sklearn, "pomegranate": _worker_pomegranate}


# --- driver -------------------------------------------------------------------------------------


def _run_worker(impl, n, d, k, ctype, args) -> dict:
    env = dict(os.environ)
    if impl == "sklearn":
        for name in _BLAS_ENV:
            env.pop(name, None)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, str(n), str(d), str(k), ctype]
    cmd += ["--iters", str(args.iters), "--repeats", str(args.repeats), "--budget", str(args.budget)]
    cmd += ["--reg-covar", str(args.reg_covar)]
    if args.block_size:
        cmd += ["--block-size", str(args.block_size)]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"timeout after {args.timeout}s")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(error=tail[:120])
    return json.loads(lines[-1])


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1e5,1e6", help="comma-separated N")
    p.add_argument("--dims", default="2,16,64", help="comma-separated D")
    p.add_argument("--ks", default="8,32", help="comma-separated K")
    p.add_argument("--ctypes", default="full,diag")
    p.add_argument("--only", default="jax,sklearn,pomegranate", help="implementations to run")
    p.add_argument("--quick", action="store_true", help="N=1e5, D in {16, 64}, K=32, full")
    p.add_argument("--iters", type=int, default=3, help="EM iterations per timed fit")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=60.0, help="stop repeating after this many seconds")
    p.add_argument("--timeout", type=float, default=1800.0, help="per subprocess")
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument(
        "--reg-covar", type=float, default=1e-3,
        help="for every implementation (1e-6 makes scikit-learn's float32 Cholesky fail at D=64)",
    )
    p.add_argument("--worker", nargs=5, metavar=("IMPL", "N", "D", "K", "CTYPE"), help=argparse.SUPPRESS)
    return p


def _implementations(only: str) -> list[str]:
    """The implementations asked for that can run here (pomegranate only where importable)."""
    impls = [s for s in only.split(",") if s]
    if "pomegranate" in impls:
        try:
            import pomegranate  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            print("pomegranate/torch not importable: skipped")
            impls.remove("pomegranate")
    return impls


def _measure(n, d, k, ctype, impls, args) -> tuple[dict, list]:
    """One grid point, every implementation in its own subprocess: (the table row, the BLAS
    scikit-learn reported)."""
    res = {impl: _run_worker(impl, n, d, k, ctype, args) for impl in impls}
    for impl, r in res.items():
        if "error" in r:
            print(f"  N={n} D={d} K={k} {ctype} {impl}: {r['error']}", file=sys.stderr)
    med = {i: statistics.median(r["times"]) if r.get("times") else None for i, r in res.items()}
    mem = {i: r.get("peak_mib") for i, r in res.items()}
    ours = res.get("jax", {})
    frac = gflops = None
    if ctype == "full" and med.get("jax"):
        flops = 4 * n * k * d * d / med["jax"]
        gflops, frac = flops / 1e9, flops / ours["matmul_flops"]
    row = dict(
        n=n, d=d, k=k, ctype=ctype, ours=med.get("jax"), sk=med.get("sklearn"),
        pg=med.get("pomegranate"), gflops=gflops, frac=frac,
        mm=ours.get("matmul_flops", 0) / 1e9 if ours else None,
        mem_ours=mem.get("jax"), mem_sk=mem.get("sklearn"), mem_pg=mem.get("pomegranate"),
        block=ours.get("block_size"),
    )
    row["ratio"] = row["sk"] / row["ours"] if row["sk"] and row["ours"] else None
    row["ratio_pg"] = row["pg"] / row["ours"] if row["pg"] and row["ours"] else None
    return row, res.get("sklearn", {}).get("blas", [])


def _print_table(rows: list[dict], blas: set) -> None:
    print(f"\nscikit-learn BLAS (threadpoolctl): {', '.join(sorted(blas)) or 'n/a'}\n")
    head = "| N | D | K | cov | block | ours s/iter | sklearn s/iter | sklearn/ours | pomegranate s/iter | pomegranate/ours | GFLOP/s (4NKD²) | matmul GFLOP/s | % of matmul | peak MiB ours | peak MiB sklearn | peak MiB pomegranate |"
    print(head)
    print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    for r in rows:
        print(
            f"| {r['n']:.0e} | {r['d']} | {r['k']} | {r['ctype']} | {r['block'] or '—'} | {_fmt(r['ours'], '.4f')} | "
            f"{_fmt(r['sk'], '.4f')} | {_fmt(r['ratio'], '.1f')} | {_fmt(r['pg'], '.4f')} | {_fmt(r['ratio_pg'], '.1f')} | "
            f"{_fmt(r['gflops'], '.1f')} | {_fmt(r['mm'], '.1f')} | "
            f"{'—' if r['frac'] is None else format(100 * r['frac'], '.0f') + ' %'} | "
            f"{_fmt(r['mem_ours'], '.0f')} | {_fmt(r['mem_sk'], '.0f')} | {_fmt(r['mem_pg'], '.0f')} |"
        )


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        impl, n, d, k, ctype = args.worker
        res = _WORKERS[impl](
            int(float(n)), int(d), int(k), ctype, args.iters, args.repeats, args.budget, args.block_size, args.reg_covar
        )
        print(json.dumps(res))
        return 0

    if args.quick:
        args.sizes, args.dims, args.ks, args.ctypes = "1e5", "16,64", "32", "full"
    impls = _implementations(args.only)
    configs = [
        (int(float(n)), int(d), int(k), c)
        for n in args.sizes.split(",")
        for d in args.dims.split(",")
        for k in args.ks.split(",")
        for c in args.ctypes.split(",")
    ]
    print("command:", " ".join([os.path.basename(sys.executable), "scripts/bench_em.py"] + (argv or sys.argv[1:])))
    print(f"env: {', '.join(f'{v}={os.environ.get(v)}' for v in _BLAS_ENV)} (removed for scikit-learn only)")
    rows, blas = [], set()
    for n, d, k, ctype in configs:
        row, row_blas = _measure(n, d, k, ctype, impls, args)
        blas.update(row_blas)
        rows.append(row)
        print(json.dumps(row), flush=True)
    _print_table(rows, blas)
    return 0


if __name__ == "__main__":
    sys.exit(main())
