"""The files of a run's work dir besides checkpoints: ``config.json`` (everything needed to
rebuild the model, written atomically) and ``metrics.jsonl`` (one JSON record per line)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from grnn_jax._util.atomic import interrupts_deferred, write_json_atomic
from grnn_jax.data import Sequences
from grnn_jax._util import jsonio

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FORMAT = 1


def read_run_config(workdir: str | Path) -> dict:
    """The JSON record of a run: ``train_config``, ``standardiser``, ``n_features``...

    Raises:
      FileNotFoundError: ``workdir`` holds no run.
      ValueError: ``workdir/config.json`` is not a run's config (e.g. an unrelated file).
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {workdir} holds no training run")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is not a training run's config (not valid JSON: {err}); use another "
            "work dir, or remove that file"
        ) from None
    if not isinstance(saved, dict) or not {"train_config", "standardiser", "n_features"} <= set(saved):
        raise ValueError(
            f"{path} is not a training run's config (it lacks train_config, standardiser or "
            "n_features); use another work dir, or remove that file"
        )
    return saved


def write_run_config(workdir: Path, config, standardiser, train_seqs: Sequences) -> None:
    """Writes ``config.json`` atomically: everything needed to rebuild the model and to check
    that a resumed run sees the same training data."""
    write_json_atomic(Path(workdir) / CONFIG_FILE, {
        "format": CONFIG_FORMAT,
        "train_config": config.to_dict(),
        "standardiser": standardiser.to_dict(),
        "n_features": train_seqs.n_features,
        "n_covariates": train_seqs.n_covariates,
        "n_train_sequences": train_seqs.n_sequences,
        "n_train_steps": train_seqs.n_steps,
        "train_data_sha256": fingerprint(train_seqs),
    })


def fingerprint(seqs: Sequences) -> str:
    """SHA-256 of the observed training steps and lengths (what the batch stream depends on)."""
    h = hashlib.sha256(np.ascontiguousarray(seqs.lengths, np.int64).tobytes())
    h.update(np.ascontiguousarray(seqs.observed(), np.float64).tobytes())
    if seqs.u is not None:
        h.update(np.ascontiguousarray(seqs.u[seqs.mask], np.float64).tobytes())
    return h.hexdigest()


def append_metrics(path: Path, records: list[dict]) -> None:
    # Whole lines only: Ctrl-C waits for the write, so a resumed run never reads half a record.
    if records:
        text = "".join(jsonio.dumps(r) + "\n" for r in records)
        with interrupts_deferred(), open(path, "a") as f:
            f.write(text)


def truncate_metrics(path: Path, step: int) -> None:
    """Drops records written after the checkpoint being resumed from."""
    if not path.exists():
        return
    with open(path) as f:
        keep = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    tmp.replace(path)


def read_metrics(workdir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl``, oldest first.

    ``kind == "train"``: ``loss`` (mean NLL per step over the steps since the last record,
    standardised units, what the optimiser sees), ``nll`` (the same in original units),
    ``grad_norm``, ``n_skipped``, ``lr``, ``steps_per_s`` and ``obs_steps_per_s`` (training
    throughput, without compilation, evaluation and checkpoints).
    ``kind == "eval"``: ``val_nll`` (original units), ``best_val_nll``, ``best_step``.
    """
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]
