"""``grnn regimes``: per-step regime probabilities of a model trained with ``--head em``.

Writes an ``.npz`` with ``filtering`` (S, T, K) ``p(regime k at t | x_<=t)``,
``predictive`` (S, T, K) the mixing weights ``pi_t = p(regime k at t | x_<t)``,
``lengths`` (S,), and the regimes' ``means`` (K, D) and ``covariances`` (K, D, D) in the
data's original units. Every check runs before anything is computed or written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from grnn_jax import gmm
from grnn_jax._util.atomic import save_npz_atomic
from grnn_jax.cli.train_cmd import (
    _check_workdir_model,
    _quiet_checkpoint_logs,
    load_sequences,
)
from grnn_jax.train import load_trained, regime_probabilities


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Registers ``regimes`` on the ``grnn`` dispatcher."""
    p = subparsers.add_parser(
        "regimes", help="per-step regime probabilities of a GRNN trained with --head em",
        description="Writes filtering probabilities p(regime k at t | x_<=t), the predictive "
                    "mixing weights pi_t, lengths, and the regimes' means and covariances "
                    "(original units) to --out.")
    p.add_argument("--workdir", required=True, help="a run directory written by grnn train --head em")
    p.add_argument("--data", required=True, help=".npz holding x (S, T, D) and optionally lengths (S,)")
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
    seqs = load_sequences(args.data, "--data")
    saved = _check_workdir_model(workdir, seqs.n_features, f"--data {args.data}")
    head = saved["train_config"]["model"].get("head", "mdn")
    if head != "em":
        raise ValueError(f"--workdir {workdir} holds a model with the {head!r} head; grnn regimes "
                         "needs one trained with --head em")
    net, variables, standardiser, _ = load_trained(workdir, which=args.which)
    filtering, predictive = regime_probabilities(net, variables, seqs, standardiser=standardiser)
    # The global components of a model of standardised data, in original units.
    g = net.apply(variables, np.zeros((1, 1, seqs.n_features), np.float32))
    comps = gmm.GMM(g.logits[0, 0], g.means[0, 0], g.prec_chol[0, 0], g.covariance_type)
    orig = standardiser.gmm_from(gmm.as_full(comps))
    means = np.asarray(orig.means, np.float64)
    cov = np.asarray(gmm.covariances(orig), np.float64)
    save_npz_atomic(out, filtering=filtering, predictive=predictive, lengths=seqs.lengths,
                     means=means, covariances=cov)
    print(f"wrote regime probabilities of {seqs.n_sequences} sequences ({filtering.shape[-1]} "
          f"regimes) to {out}")
    return 0
