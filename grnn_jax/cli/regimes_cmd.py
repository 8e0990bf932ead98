"""``grnn regimes``: per-step regime probabilities of a model trained with ``--head em`` or
``--head hmm``.

``--data`` is an ``.npz`` or a ``.csv`` (``docs/guide/data_format.md``). Writes an ``.npz``
with ``filtering`` (S, T, K) ``p(regime k at t | x_<=t)``, ``predictive`` (S, T, K) the
mixing weights ``pi_t = p(regime k at t | x_<t)``, ``smoothed`` (S, T, K) ``p(regime k at t |
the whole sequence)``, ``lengths`` (S,), and the regimes' ``means`` (K, D) and
``covariances`` (K, D, D) in the data's original units (with ``--lags``: ``means`` are the
intercepts, and ``coefficients`` (K, D, p*D) the slopes on the last p observations). Every
check runs before anything is computed or written.
"""

from __future__ import annotations

import argparse
from pathlib import Path


from grnn_jax._util.atomic import save_npz_atomic
from grnn_jax.cli.data_flags import (
    DATA_HELP,
    add_table_flags,
    announce_data,
    check_workdir_model,
    load_data,
)
from grnn_jax.cli.train_cmd import _quiet_checkpoint_logs
from grnn_jax.train import load_trained, regime_components, regime_probabilities


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers ``regimes`` on the ``grnn`` dispatcher."""
    p = subparsers.add_parser(
        "regimes", help="per-step regime probabilities of a GRNN trained with --head em or hmm",
        description="Writes filtering probabilities p(regime k at t | x_<=t), the predictive "
                    "mixing weights pi_t, smoothed probabilities, lengths, and the regimes' "
                    "means, covariances and (with lags) coefficients, in original units, to --out.")
    p.add_argument("--workdir", required=True, help="a run directory written by grnn train --head em or --head hmm")
    p.add_argument("--data", required=True, help=DATA_HELP)
    add_table_flags(p.add_argument_group("CSV columns (as given to grnn train)"))
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint (default best)")
    p.add_argument("--out", required=True, help="output .npz")
    p.set_defaults(func=run_regimes)
    return p


def run_regimes(args) -> int:
    """``grnn regimes``: every check first, then :func:`grnn_jax.train.regime_probabilities`."""
    _quiet_checkpoint_logs()
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out} must end in .npz")
    if not out.parent.is_dir():
        raise ValueError(f"--out folder {out.parent} does not exist")
    workdir = Path(args.workdir)
    seqs, info = load_data(args)
    saved = check_workdir_model(workdir, seqs, f"--data {args.data}")
    head = saved["train_config"]["model"].get("head", "mdn")
    if head not in ("em", "hmm"):
        raise ValueError(f"--workdir {workdir} holds a model with the {head!r} head; grnn regimes "
                         "needs one trained with --head em or --head hmm")
    announce_data(info, "regimes")
    net, variables, standardiser, _ = load_trained(workdir, which=args.which)
    filtering, predictive, smoothed = regime_probabilities(net, variables, seqs,
                                                           standardiser=standardiser)
    comps = regime_components(net, variables, standardiser)
    extra = {} if comps.coefficients is None else {"coefficients": comps.coefficients}
    save_npz_atomic(out, filtering=filtering, predictive=predictive, smoothed=smoothed,
                    lengths=seqs.lengths, means=comps.means, covariances=comps.covariances, **extra)
    print(f"wrote regime probabilities of {seqs.n_sequences} sequences ({filtering.shape[-1]} "
          f"regimes) to {out}")
    return 0
