"""The data flags shared by the commands that read sequences (``--data`` as ``.npz`` or
``.csv``, ``--sequence-column``, ``--time-column``, ``--columns``, ``--covariate-columns``),
and the checks that a file suits a trained model. The formats are described in one place:
``docs/guide/data_format.md``."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from grnn_jax.data import Sequences
from grnn_jax.data.tables import TableInfo, read_csv_rows, read_csv_sequences
from grnn_jax.train import read_run_config

FORMAT_DOC = "docs/guide/data_format.md"
DATA_HELP = (f"sequences: a .npz holding x (S, T, D), optional lengths (S,) and covariates u, or a "
             f".csv with one row per step (see {FORMAT_DOC})")
TABLE_FLAGS = ("sequence_column", "time_column", "columns", "covariate_columns")


def add_table_flags(group, *, sequences: bool = True) -> None:
    """Adds ``--columns`` (and, for sequences, ``--sequence-column``, ``--time-column`` and
    ``--covariate-columns``) to an argparse parser or argument group."""
    if sequences:
        group.add_argument("--sequence-column", metavar="NAME",
                           help="CSV column naming each row's sequence (default: the whole "
                                "table is one sequence)")
        group.add_argument("--time-column", metavar="NAME",
                           help="CSV column to sort each sequence's rows by (default: file order)")
    group.add_argument("--columns", metavar="A,B,...",
                       help="CSV feature columns, in this order (default: every numeric column"
                            + (" except the sequence, time and covariate columns)" if sequences
                               else ")"))
    if sequences:
        group.add_argument("--covariate-columns", metavar="A,B,...",
                           help="CSV columns read as covariates u, fed with the step they "
                                "belong to (default none)")


def column_list(text: str | None, flag: str) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None stays None; an empty name is an error."""
    if text is None:
        return None
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise ValueError(f"{flag} {text!r} holds an empty column name")
    return names


def is_csv(path) -> bool:
    return Path(path).suffix.lower() == ".csv"


def check_table_flags(args, path) -> None:
    """Refuses the table flags unless ``path`` (the ``--data`` file, or None) is a ``.csv``."""
    given = [f"--{k.replace('_', '-')}" for k in TABLE_FLAGS if getattr(args, k, None) is not None]
    if given and (path is None or not is_csv(path)):
        what = "no --data was given" if path is None else f"{path} is not one"
        raise ValueError(f"{', '.join(given)} read a .csv --data file; {what} (see {FORMAT_DOC})")


def load_sequences(path: str | os.PathLike, what: str = "data", *, one_sequence_ok: bool = False,
                   covariates_ok: bool = False) -> Sequences:
    """Reads and checks a ``.npz`` of sequences; errors name the file and the problem.

    Args:
      path: the file.
      what: how errors name it (the flag).
      one_sequence_ok: read a 2-D ``x`` (T, D) as one sequence; otherwise a 2-D ``x`` is
        refused, because (S, T) univariate sequences and (T, D) one sequence look alike.
      covariates_ok: accept covariates ``u``; otherwise a file holding them is refused.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not an .npz, no ``x``, wrong rank, NaN/inf in an observed step, lengths
        outside [1, T] or of the wrong shape, covariates where none are taken.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what} file {path} is not a readable .npz (not a zip archive; "
                         f"see {FORMAT_DOC})")
    try:
        if not one_sequence_ok:
            with np.load(path, allow_pickle=False) as f:
                shape = f["x"].shape if "x" in f.files else None
            if shape is not None and len(shape) == 2:
                raise ValueError(
                    f"x has shape {shape}, but sequences are (S, T, D); save x[None] for one "
                    f"sequence of {shape[0]} steps and {shape[1]} features, or x[..., None] for "
                    f"{shape[0]} univariate sequences of {shape[1]} steps")
        seqs = Sequences.load(path)
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{what} file {path} is not a readable .npz: {err}") from None
    except ValueError as err:
        raise ValueError(f"{what} file {path}: {err}") from None
    if seqs.u is not None and not covariates_ok:
        raise ValueError(f"{what} file {path} holds covariates 'u', which this command does not take")
    return seqs


def load_data(args, what: str = "--data") -> tuple[Sequences, TableInfo | None]:
    """The sequences ``args.data`` names: an ``.npz`` as it is, or a ``.csv`` read with the
    table flags (:func:`grnn_jax.data.tables.read_csv_sequences`). Covariates are taken.

    Returns:
      ``(seqs, info)``; ``info`` is None for an ``.npz``.
    """
    path = args.data
    check_table_flags(args, path)
    if not is_csv(path):
        return load_sequences(path, what, covariates_ok=True), None
    try:
        return read_csv_sequences(
            path, sequence_column=args.sequence_column, time_column=args.time_column,
            columns=column_list(args.columns, "--columns"),
            covariate_columns=column_list(args.covariate_columns, "--covariate-columns"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None


def load_rows(path: str, columns: str | None) -> tuple[np.ndarray, TableInfo]:
    """An (N, D) table from a ``.csv`` (:func:`grnn_jax.data.tables.read_csv_rows`)."""
    return read_csv_rows(path, columns=column_list(columns, "--columns"))


def announce_data(info: TableInfo | None, command: str, *, quiet: bool = False) -> None:
    """Says which CSV columns became what (stdout, unless ``quiet``), and warns on stderr about
    default-chosen features whose names look like identifiers or clocks."""
    if info is None:
        return
    if not quiet:
        print(f"data {info.describe()}")
    if info.identifier_like:
        names = ", ".join(repr(n) for n in info.identifier_like)
        hint = "" if command == "fit-gmm" else ", or give it a role with --sequence-column or --time-column"
        print(f"grnn {command}: warning: {info.path}: column(s) {names} read as features, though "
              f"the name looks like an identifier or a clock; choose the features with --columns{hint}",
              file=sys.stderr)


def table_report(info: TableInfo | None) -> dict | None:
    """The columns a CSV gave, for ``--json`` reports (None for an ``.npz``)."""
    if info is None:
        return None
    return {"columns": list(info.columns), "covariate_columns": list(info.covariate_columns),
            "sequence_column": info.sequence_column, "time_column": info.time_column,
            "left_out": dict(info.left_out)}


def check_workdir_model(workdir: Path, seqs: Sequences, what: str) -> dict:
    """The saved run in ``workdir``, after checking that ``seqs`` have its numbers of features
    and covariates; FileNotFoundError when there is no run."""
    saved = read_run_config(workdir)
    if int(saved["n_features"]) != seqs.n_features:
        raise ValueError(f"{what} has {seqs.n_features} features; the model in {workdir} was "
                         f"trained on {saved['n_features']}")
    c = int(saved.get("n_covariates", 0))
    if c != seqs.n_covariates:
        raise ValueError(f"{what} has {seqs.n_covariates} covariates; the model in {workdir} was "
                         f"trained with {c} (--covariate-columns)")
    return saved
