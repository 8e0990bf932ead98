"""``grnn fit-gmm``: fit a Gaussian mixture to a .npy or .csv table by EM.

A .csv holds one observation per row (format: ``docs/guide/data_format.md``); its
features are every column holding numbers, or those ``--columns`` names, and the output
says which it read. Every check (file, extension, parse, NaN, rank, sizes, the
--init-from file, the --out folder) runs before any compute, so bad input writes nothing.
With ``--chunk-size`` the .npy file is read a chunk at a time (exact EM, one
M-step per pass); with ``--online`` by stepwise EM over mini-batches; with
``--coordinator`` several processes (hosts) share the rows, each reading only
its own slice, and process 0 alone prints and writes.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import jax
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from grnn_jax import em, gmm
from grnn_jax._util.atomic import save_npz_atomic
from grnn_jax.cli.data_flags import FORMAT_DOC, add_table_flags, announce_data, load_rows
from grnn_jax.cli.process_flags import add_process_flags, check_process_flags, join
from grnn_jax.data.tables import TableInfo
from grnn_jax.em import distributed
from grnn_jax.em.chunked import DEFAULT_INIT_SAMPLE
from grnn_jax.em.rows import RowSource
from grnn_jax.em.estimator import GaussianMixture
from grnn_jax._util.validation import check_data, check_positive
from grnn_jax._util import jsonio

SAVED_KEYS = ("weights", "means", "covariances", "precisions_cholesky", "covariance_type")
DEFAULT_CHUNK = 65536  # rows per chunk of a multi-process run without --chunk-size


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers ``fit-gmm`` on the ``grnn`` dispatcher's sub-parsers.

    Example:
      >>> import argparse
      >>> from grnn_jax.cli import fit_gmm_cmd as fit_gmm
      >>> sub = argparse.ArgumentParser(prog="grnn").add_subparsers(dest="command")
      >>> args = fit_gmm.add_parser(sub).parse_args(["x.csv", "--components", "3", "--json"])
      >>> args.components, args.covariance_type, args.json, args.func is fit_gmm.run
      (3, None, True, True)
    """
    p = subparsers.add_parser(
        "fit-gmm",
        help="fit a Gaussian mixture to a .npy or .csv table",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("data", help=".npy file holding an (N, D) array, or a .csv with a row per "
                                f"observation (header optional; see {FORMAT_DOC})")
    add_table_flags(p, sequences=False)
    p.add_argument("--components", "-k", type=int, required=True, help="number of components K")
    p.add_argument("--covariance-type", choices=gmm.COVARIANCE_TYPES, default=None,
                   help="full (default), diag, spherical or tied; defaults to the --init-from file's")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation (default 0)")
    p.add_argument("--max-iter", type=int, default=100, help="EM iterations at most (default 100)")
    p.add_argument("--tol", type=float, default=1e-3,
                   help="stop when the mean log-likelihood gains less than this (default 1e-3)")
    p.add_argument("--reg-covar", type=float, default=1e-6,
                   help="added to every variance, > 0 (default 1e-6)")
    p.add_argument("--n-init", type=int, default=1, help="restarts; the best is kept (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.add_argument("--out", help="save the fitted parameters to this .npz file")
    p.add_argument("--init-from", help="start EM from parameters saved by --out")
    g = p.add_argument_group("data larger than memory, streams and several hosts")
    g.add_argument("--chunk-size", type=int, default=None,
                   help="read the .npy file this many rows at a time (exact EM, one M-step per pass)")
    g.add_argument("--online", action="store_true",
                   help="stepwise (online) EM over mini-batches of --batch-size rows")
    g.add_argument("--batch-size", type=int, default=None, help="rows per mini-batch of --online")
    g.add_argument("--passes", type=int, default=1, help="passes over the data with --online (default 1)")
    g.add_argument("--step-exponent", type=float, default=0.6,
                   help="alpha of the --online step size (t + 2)^-alpha, in (0.5, 1] (default 0.6)")
    g.add_argument("--init-sample", type=int, default=DEFAULT_INIT_SAMPLE,
                   help="rows of the seeded uniform sample that --chunk-size, --online and several "
                        f"processes initialise on (default {DEFAULT_INIT_SAMPLE})")
    add_process_flags(g)
    p.set_defaults(func=run)
    return p


def _load_data(path_str: str, columns: str | None) -> tuple[np.ndarray, TableInfo | None]:
    """Loads a .npy or .csv table (``--columns`` picks a CSV's columns); raises
    FileNotFoundError/ValueError naming the problem."""
    path = Path(path_str)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    ext = path.suffix.lower()
    if columns is not None and ext != ".csv":
        raise ValueError(f"--columns reads a .csv file; {path} is not one (see {FORMAT_DOC})")
    info = None
    if ext == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path} is not a plain numeric .npy array: {err}") from None
    elif ext == ".csv":
        x, info = load_rows(str(path), columns)
    else:
        raise ValueError(f"unsupported data file extension {ext or '(none)'!r} of {path}; "
                         f"expected .npy or .csv (see {FORMAT_DOC})")
    return check_data(x, str(path), ndim=2), info


def _load_params(path_str: str, *, n_components: int, n_features: int, covariance_type: str | None):
    """Reads a --out file and checks it against K, D and the covariance type.

    Returns:
      ``(covariance_type, weights, means, precisions)`` as scikit-learn's ``*_init`` take them.
    """
    path = Path(path_str)
    if not path.is_file():
        raise FileNotFoundError(f"--init-from file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            saved = {k: f[k] for k in f.files}
    except (ValueError, OSError) as err:
        raise ValueError(f"--init-from {path} is not a parameter .npz file: {err}") from None
    missing = [k for k in ("weights", "means", "precisions_cholesky", "covariance_type") if k not in saved]
    if missing:
        raise ValueError(f"--init-from {path} lacks {', '.join(missing)}; save it with --out")
    ctype = str(saved["covariance_type"])
    if covariance_type is not None and covariance_type != ctype:
        raise ValueError(f"--init-from {path} holds a {ctype!r} mixture but --covariance-type is "
                         f"{covariance_type!r}; drop --covariance-type or pass {ctype!r}")
    means = np.asarray(saved["means"], np.float64)
    if means.ndim != 2 or means.shape[0] != n_components or means.shape[1] != n_features:
        raise ValueError(f"--init-from {path} holds means of shape {means.shape}, but --components "
                         f"{n_components} on {n_features}-feature data needs "
                         f"({n_components}, {n_features})")
    p = np.asarray(saved["precisions_cholesky"], np.float64)
    precisions = p @ np.swapaxes(p, -1, -2) if ctype in ("full", "tied") else p**2
    return ctype, np.asarray(saved["weights"], np.float64), means, precisions


def _save_params(path: Path, params: dict) -> None:
    """Writes the fitted parameters atomically (nothing half-written is ever left at ``path``)."""
    save_npz_atomic(path, **params)


def _check_args(args) -> None:
    for flag, value, low in (("--components", args.components, 1), ("--max-iter", args.max_iter, 1),
                             ("--n-init", args.n_init, 1)):
        if value < low:
            raise ValueError(f"{flag} must be >= {low}; got {value}")
    if not args.tol >= 0:
        raise ValueError(f"--tol must be >= 0; got {args.tol}")
    check_positive(args.reg_covar, "--reg-covar")
    if args.out is not None:
        out = Path(args.out)
        if out.suffix != ".npz":
            raise ValueError(f"--out {out} must end in .npz")
        if not out.parent.is_dir():
            raise ValueError(f"--out folder {out.parent} does not exist")
    for flag, value in (("--chunk-size", args.chunk_size), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1; got {value}")
    for flag, value in (("--passes", args.passes), ("--init-sample", args.init_sample)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1; got {value}")
    if args.online:
        if args.batch_size is None:
            raise ValueError("--online needs --batch-size B (rows per mini-batch)")
        if args.chunk_size is not None:
            raise ValueError("--online reads --batch-size rows at a time; drop --chunk-size")
        if not 0.5 < args.step_exponent <= 1.0:
            raise ValueError(f"--step-exponent must be in (0.5, 1]; got {args.step_exponent}")
    elif args.batch_size is not None or args.passes != 1:
        raise ValueError("--batch-size and --passes apply to --online only")
    if check_process_flags(args) and args.online:
        raise ValueError("--online runs in one process; use --chunk-size across processes")
    scaled = args.chunk_size is not None or args.online or args.coordinator is not None
    if scaled and args.columns is not None:
        raise ValueError("--columns reads a .csv file; --chunk-size, --online and --coordinator "
                         "read an .npy file")
    if scaled and Path(args.data).suffix.lower() != ".npy":
        raise ValueError(f"--chunk-size, --online and --coordinator read an .npy file; got {args.data}")
    if scaled and args.n_init != 1:
        raise ValueError("--n-init applies to in-memory fits; drop it with --chunk-size, --online or --coordinator")


def _params(g) -> dict:
    return dict(weights=np.asarray(gmm.weights(g), np.float64), means=np.asarray(g.means, np.float64),
                covariances=np.asarray(gmm.covariances(g), np.float64),
                precisions_cholesky=np.asarray(g.prec_chol, np.float64),
                covariance_type=np.array(g.covariance_type))


def _run_scaled(args) -> int:
    """--chunk-size, --online or several processes: the .npy file is read in chunks, never whole."""
    # Files are checked before joining the other processes (and before any JAX computation).
    full = RowSource(args.data)
    n, d = full.n_total, full.n_features
    k = args.components
    if k > n:
        raise ValueError(f"--components {k} is more than the {n} rows of {args.data}")
    if n < 2:
        raise ValueError(f"{args.data} has {n} row; at least 2 are needed")
    ctype = args.covariance_type or "full"
    init = "k-means++"
    if args.init_from is not None:
        ctype, w, mu, prec = _load_params(args.init_from, n_components=k, n_features=d,
                                         covariance_type=args.covariance_type)
    if args.coordinator is not None:
        join(args)
    if args.init_from is not None:
        init = gmm.from_precisions(np.log(w), mu, prec, ctype)
    key = jax.random.key(args.seed)
    chunk = args.batch_size if args.online else (args.chunk_size or DEFAULT_CHUNK)
    report = {"data": str(args.data), "n_samples": n, "n_features": d, "n_components": k,
              "covariance_type": ctype}
    if args.online:
        res = em.fit_online(full, k, key=key, batch_size=chunk, passes=args.passes,
                            step_exponent=args.step_exponent, covariance_type=ctype,
                            reg_covar=args.reg_covar, init=init, init_sample=args.init_sample)
        report.update(mode="online", batch_size=chunk, passes=args.passes, n_steps=int(res.n_steps),
                      step_exponent=args.step_exponent)
    else:
        source = RowSource(args.data, rows=distributed.process_rows(n))
        res = em.fit_chunked(source, k, key=key, chunk_size=chunk, covariance_type=ctype, tol=args.tol,
                             reg_covar=args.reg_covar, max_iter=args.max_iter, init=init,
                             init_sample=args.init_sample)
        report.update(mode="chunked", chunk_size=chunk, num_processes=jax.process_count(),
                      n_iter=int(res.n_iter), converged=bool(res.converged))
    g = res.gmm
    ll_sum, total = em.log_likelihood_chunked(
        g, RowSource(args.data, rows=distributed.process_rows(n)), chunk_size=chunk)
    p = gmm.n_parameters(k, d, ctype)
    params = _params(g)
    report.update(log_likelihood=ll_sum / total, bic=-2.0 * ll_sum + p * np.log(total),
                  aic=-2.0 * ll_sum + 2.0 * p, weights=params["weights"].tolist(),
                  means=params["means"].tolist(), covariances=params["covariances"].tolist())
    if jax.process_index() != 0:
        return 0
    return _emit(args, report, params)


def run(args) -> int:
    """Fits, prints a summary or JSON, and saves with --out; returns the exit status."""
    _check_args(args)
    if args.chunk_size is not None or args.online or args.coordinator is not None:
        return _run_scaled(args)
    x, info = _load_data(args.data, args.columns)
    announce_data(info, "fit-gmm", quiet=True)
    n, d = x.shape
    k = args.components
    if k > n:
        raise ValueError(f"--components {k} is more than the {n} rows of {args.data}")
    if n < 2:
        raise ValueError(f"{args.data} has {n} row; at least 2 are needed")
    init = {}
    ctype = args.covariance_type or "full"
    if args.init_from is not None:
        ctype, w, mu, prec = _load_params(args.init_from, n_components=k, n_features=d,
                                         covariance_type=args.covariance_type)
        init = dict(weights_init=w, means_init=mu, precisions_init=prec)
    est = GaussianMixture(k, covariance_type=ctype, tol=args.tol, reg_covar=args.reg_covar,
                          max_iter=args.max_iter, n_init=args.n_init, random_state=args.seed,
                          **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x)
    report = {
        "data": str(args.data),
        "columns": None if info is None else list(info.columns),
        "left_out": None if info is None else dict(info.left_out),
        "n_samples": n,
        "n_features": d,
        "n_components": k,
        "covariance_type": ctype,
        "log_likelihood": est.score(x),
        "bic": est.bic(x),
        "aic": est.aic(x),
        "n_iter": est.n_iter_,
        "converged": est.converged_,
        "weights": est.weights_.tolist(),
        "means": est.means_.tolist(),
        "covariances": est.covariances_.tolist(),
    }
    return _emit(args, report, dict(
        weights=est.weights_, means=est.means_, covariances=est.covariances_,
        precisions_cholesky=est.precisions_cholesky_, covariance_type=np.array(est.covariance_type)))


def _emit(args, report: dict, params: dict) -> int:
    """Saves ``params`` to ``--out`` when given, then prints the report (JSON or a summary)."""
    if args.out is not None:
        _save_params(Path(args.out), params)
        report["out"] = str(args.out)
    if args.json:
        print(jsonio.dumps(report))
    else:
        _print_summary(report)
    return 0


def _print_summary(r: dict) -> None:
    head = (f"{r['n_components']}-component {r['covariance_type']} GMM on {r['n_samples']} x "
            f"{r['n_features']} data from {r['data']}: ")
    if r.get("mode") == "online":
        print(head + f"online EM, {r['n_steps']} steps of {r['batch_size']} rows over {r['passes']} pass(es)")
    else:
        status = "converged" if r["converged"] else "did NOT converge (raise --max-iter or --tol)"
        print(head + f"{status} after {r['n_iter']} iterations")
    if r.get("columns"):
        left = ", ".join(f"{k} ({v})" for k, v in r["left_out"].items())
        left = f"; left out: {left}" if left else ""
        print("columns " + ", ".join(r["columns"]) + left)
    print(f"mean log-likelihood {r['log_likelihood']:.6g}   BIC {r['bic']:.6g}   AIC {r['aic']:.6g}")
    for i, (w, mu) in enumerate(zip(r["weights"], r["means"])):
        print(f"  component {i}: weight {w:.4f}  mean [{', '.join(f'{m:.4g}' for m in mu)}]")
    if "out" in r:
        print(f"parameters saved to {r['out']}")
