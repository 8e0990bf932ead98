"""The flags of ``grnn train``, by group (data, model, optimisation, regularisation, the run,
devices), and the config entries they set."""

from __future__ import annotations

import argparse
import re

from grnn_jax.cli.data_flags import DATA_HELP, add_table_flags
from grnn_jax.cli.device_flags import add_host_devices_flag
from grnn_jax.cli.process_flags import add_process_flags
from grnn_jax.model.heads import HEAD_COVARIANCE_TYPES
from grnn_jax.train import (
    HEADS,
    OBJECTIVES,
    OPTIMIZERS,
    apply_overrides,
    load_config_file,
    set_entry,
)
from grnn_jax.train.config import EM_HEAD_MAX_PREDICTABILITY

# Flags of ``grnn train`` that set a training field (flag dest -> dotted config key).
FLAG_KEYS = {
    "components": "model.n_components",
    "covariance_type": "model.covariance_type",
    "cell": "model.cell",
    "hidden": "model.hidden_size",
    "layers": "model.n_layers",
    "steps": "num_steps",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "optimizer": "optimizer",
    "seed": "seed",
    "val_fraction": "val_fraction",
    "objective": "objective",
    "em_init": "em_init",
    "head": "model.head",
    "lags": "model.lags",
    "constant_transitions": "model.constant_transitions",
    "hidden_gmm": "hidden_gmm",
    "hidden_gmm_weight": "hidden_gmm_weight",
    "input_noise": "input_noise",
    "input_dropout": "input_dropout",
    "output_dropout": "output_dropout",
    "recurrent_dropout": "recurrent_dropout",
}


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of ``grnn train``, group by group."""
    _add_data_flags(p)
    _add_model_flags(p)
    _add_optimisation_flags(p)
    _add_regularisation_flags(p)
    _add_run_flags(p)
    _add_device_flags(p)


def _add_data_flags(p) -> None:
    src = p.add_argument_group("data (one of --data or --config is required)")
    src.add_argument("--data", help=DATA_HELP)
    src.add_argument("--config", help="experiment config, a .py file with get_config() -> dict")
    add_table_flags(src)
    src.add_argument("--val-fraction", type=float,
                     help="share of the --data sequences held out for validation (default 0.15; a "
                          "single sequence gives its last part)")


def _add_model_flags(p) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--components", "-k", type=int, help="mixture components per step")
    g.add_argument("--covariance-type", choices=HEAD_COVARIANCE_TYPES,
                   help="covariance of each component; tied: one per step shared by the "
                        "components (default full up to 8 features, else diag)")
    g.add_argument("--cell", choices=("lstm", "gru", "ln_lstm"), help="recurrent cell (default lstm)")
    g.add_argument("--hidden", type=int, help="hidden units per layer")
    g.add_argument("--layers", type=int, help="recurrent layers")
    g.add_argument("--head", choices=HEADS,
                   help="mixture head: mdn (every parameter per step, trained by gradient), "
                        "em (global components updated by stepwise EM, the network emits the "
                        "mixing weights; any covariance type) or hmm (the exact regime filter: "
                        "the network emits transition matrices, EM-updated components); default: "
                        f"em when the last step linearly predicts the next one by less than "
                        f"{EM_HEAD_MAX_PREDICTABILITY} nats (returns-like series), else mdn")
    g.add_argument("--lags", type=int, metavar="P",
                   help="autoregressive components: every mean adds W_k [x_t-1 .. x_t-P] "
                        "(zeros before the first step); 0 (default): Gaussian components")
    g.add_argument("--race", action="store_true",
                   help="choose the model on the validation split: train the default and the "
                        "filtering head (hmm) whose K and lags are those of the Baum-Welch AR-HMM "
                        "that scores the validation split best, started at that AR-HMM; keep the "
                        "default unless the other is better by 2 paired standard errors (3-7x one "
                        "run's time on a 2-core CPU); race.json in --workdir records every candidate's "
                        "validation NLL and every AR-HMM size tried")
    g.add_argument("--constant-transitions", action="store_true", default=None,
                   help="with --head hmm: one learned transition matrix (an AR-HMM) instead of one "
                        "per step from the network")
    g.add_argument("--hidden-gmm", type=int, metavar="K",
                   help="keep a K-component GMM over the hidden states, updated by stepwise EM on "
                        "every batch, logged at every evaluation and checkpointed")


def _add_optimisation_flags(p) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help="optimiser steps")
    g.add_argument("--batch-size", type=int, help="sequences per batch")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="adamw (default) or sgd with momentum (--set momentum=0.9; weight decay "
                        "decoupled in both)")
    g.add_argument("--seed", type=int, help="seed of initialisation, shuffling and the validation split")
    g.add_argument("--objective", choices=tuple(OBJECTIVES),
                   help="training objective: " + "; ".join(
                       f"{o.name}: {o.description}" for o in OBJECTIVES.values())
                   + " (default nll; evaluation always reports the held-out NLL)")
    g.add_argument("--em-init", action="store_true", default=None,
                   help="start the mixture head from a GMM fitted by EM to the training "
                        "observations (the untrained model predicts that GMM at every step)")


def _add_regularisation_flags(p) -> None:
    g = p.add_argument_group("regularisation")
    g.add_argument("--hidden-gmm-weight", type=float, metavar="LAMBDA",
                   help="add -LAMBDA * mean log p_GMM(h_t) to the loss (needs --hidden-gmm)")
    g.add_argument("--input-noise", type=float, metavar="SIGMA",
                   help="std of Gaussian noise added in training to the observations the network "
                        "reads (standardised units; default 0)")
    g.add_argument("--input-dropout", type=float, metavar="RATE",
                   help="variational dropout on the network's inputs in training, in [0, 1) "
                        "(one mask per sequence for all steps; default 0)")
    g.add_argument("--output-dropout", type=float, metavar="RATE",
                   help="variational dropout on each recurrent layer's outputs in training, "
                        "in [0, 1) (default 0)")
    g.add_argument("--recurrent-dropout", type=float, metavar="RATE",
                   help="variational dropout on the state each layer's recurrent matmul reads, "
                        "in training, in [0, 1) (default: 0.45 to 0.15 by data size on noisy "
                        "series, 0 on smooth ones)")


def _add_run_flags(p) -> None:
    p.add_argument("--workdir", required=True, help="run directory (config.json, metrics.jsonl, checkpoints/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config entry, e.g. num_steps=200 or model.hidden_size=64 (repeatable)")
    p.add_argument("--restart", action="store_true",
                   help="start over instead of resuming the run found in --workdir (a run is "
                        "resumed only with the settings it was started with)")
    p.add_argument("--population", type=int, metavar="P",
                   help="train P members in one program (seeds seed..seed+P-1, learning rates "
                        "spread over a factor 4 around --lr) and keep the one best on validation; "
                        "always starts over")
    p.add_argument("--ensemble", type=int, default=0, metavar="M",
                   help="with --population: also save and score the equal-weight mixture of the "
                        "M members best on validation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_device_flags(p) -> None:
    par = p.add_argument_group("several devices and hosts (docs/scaling.md)")
    par.add_argument("--data-parallel", action="store_true",
                     help="shard the rows of every batch over all devices (--batch-size a multiple of "
                          "their number), parameters replicated: one device's training up to float "
                          "rounding; implied by --coordinator. With --population P: gcd(P, devices) "
                          "groups of members, each member's rows over the rest")
    add_host_devices_flag(par)
    add_process_flags(par)


def train_settings(args) -> tuple[dict, dict[str, str]]:
    """The config dict (``--config`` file, then ``--set``, then the flags) and, for messages,
    config key -> the flag that set it."""
    cfg = load_config_file(args.config) if args.config else {}
    apply_overrides(cfg, args.overrides)
    given = {}
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            set_entry(cfg, key, value)
            given[key] = "--" + dest.replace("_", "-")
    return cfg, given


def in_flag_words(message: str, given: dict[str, str]) -> str:
    """Names the flags the user typed where a message names their config keys
    (``num_steps`` -> ``--steps (num_steps)``)."""
    for key, flag in sorted(given.items(), key=lambda kv: -len(kv[0])):
        short = key.split(".")[-1]
        for name in (key, short):
            if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w])", message):
                return re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w])", f"{flag} ({key})",
                              message, count=1)
    return message
