"""CSV tables read as sequences: one row per step, an optional column naming each row's
sequence, an optional column giving its time, and numeric feature (and covariate) columns.

The format is described in ``docs/guide/data_format.md``. Only the ``csv`` module and NumPy
are used. Every problem is one ``ValueError`` line naming the file, the column and the line.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Mapping, Sequence as _Seq

import numpy as np

from grnn_jax.data.sequences import Sequences

# Cells read as a missing value (compared in lower case): an error in a column that is read.
MISSING = frozenset({"", "na", "nan", "n/a", "null", "none"})
# Words that make a column's name look like an identifier or a clock rather than a feature.
_ID_WORDS = frozenset({"id", "ids", "idx", "index", "key", "seq", "sequence", "t", "time",
                       "timestamp", "date", "datetime", "step", "row"})


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """What :func:`read_csv_sequences` or :func:`read_csv_rows` read from a CSV file.

    Attributes:
      path: the file.
      columns: the feature columns, in the order of the last axis of ``x``.
      covariate_columns: the covariate columns, in the order of the last axis of ``u``.
      sequence_column: the column naming each row's sequence, or None (one sequence).
      time_column: the column the rows of each sequence were sorted by, or None (file order).
      sequence_ids: the id of each sequence, in the order of ``x``'s first axis; empty without
        a sequence column.
      left_out: column name -> why it was not read ("sequence column", "time column",
        "not numeric", "not chosen", "no name").
      identifier_like: features chosen by default (no ``columns`` given) whose names look
        like an identifier or a clock (``id``, ``seq``, ``t``, ``time``, ``date``, ``step``,
        ...): read as features, but worth a second look.
      n_rows: the data rows read.
    """

    path: str
    columns: tuple[str, ...]
    covariate_columns: tuple[str, ...] = ()
    sequence_column: str | None = None
    time_column: str | None = None
    sequence_ids: tuple[str, ...] = ()
    left_out: Mapping[str, str] = dataclasses.field(default_factory=dict)
    identifier_like: tuple[str, ...] = ()
    n_rows: int = 0

    def describe(self) -> str:
        """One line for people: which columns became what.

        Example:
          >>> TableInfo("f.csv", ("a", "b"), sequence_column="id", left_out={"id": "sequence column"},
          ...           n_rows=10).describe()
          'f.csv: 10 rows; features a, b; sequences by id; left out: id (sequence column)'
        """
        parts = [f"{self.path}: {self.n_rows} rows", "features " + ", ".join(self.columns)]
        if self.covariate_columns:
            parts.append("covariates " + ", ".join(self.covariate_columns))
        if self.sequence_column is not None:
            parts.append(f"sequences by {self.sequence_column}")
        if self.time_column is not None:
            parts.append(f"sorted by {self.time_column}")
        if self.left_out:
            parts.append("left out: " + ", ".join(f"{k} ({v})" for k, v in self.left_out.items()))
        return "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class _Table:
    path: str
    names: list[str] | None  # None: the file has no header row
    rows: list[list[str]]
    lines: list[int]  # the file line of each row, for messages


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_missing(cell: str) -> bool:
    return cell.lower() in MISSING


def _read_table(path: str | os.PathLike) -> _Table:
    """The cells of a CSV file; blank lines skipped, a header row detected, widths checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for row in reader:
                cells = [c.strip() for c in row]
                if any(cells):
                    rows.append(cells)
                    lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path} is not a readable CSV file: {err}") from None
    if not rows:
        raise ValueError(f"{path} holds no rows")
    # The first row is a header when one of its cells is text (not a number, not missing).
    names = None
    if any(not _is_number(c) and not _is_missing(c) for c in rows[0]):
        names, rows, lines = rows[0], rows[1:], lines[1:]
        if not rows:
            raise ValueError(f"{path} holds a header row but no data")
        seen = set()
        for name in names:
            if name and name in seen:
                raise ValueError(f"{path}: the header names column {name!r} twice")
            seen.add(name)
    width = len(names) if names is not None else len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise ValueError(f"{path} line {line} has {len(row)} fields; expected {width}")
    return _Table(str(path), names, rows, lines)


def _label(table: _Table, j: int) -> str:
    return f"column {table.names[j]!r}" if table.names is not None else f"column {j + 1}"


def _index(table: _Table, name: str) -> int:
    if table.names is None:
        raise ValueError(f"{table.path} has no header row (its first row is all numbers), so it "
                         f"has no column named {name!r}; add a header row")
    if name not in table.names or not name:
        known = ", ".join(n for n in table.names if n)
        raise ValueError(f"{table.path} has no column {name!r}; its columns are {known}")
    return table.names.index(name)


def _numbers(table: _Table, j: int) -> np.ndarray:
    """(N,) float64 values of column ``j``; an error names the first cell that is not a finite number."""
    out = np.empty(len(table.rows))
    for i, row in enumerate(table.rows):
        cell = row[j]
        where = f"{table.path}: {_label(table, j)} line {table.lines[i]}"
        if _is_missing(cell):
            raise ValueError(f"{where} has a missing value ({cell!r}); fill it or drop the row "
                             "(a sequence has no missing steps)")
        try:
            value = float(cell)
        except ValueError:
            raise ValueError(f"{table.path}: {_label(table, j)} is not numeric: line "
                             f"{table.lines[i]} holds {cell!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{where} holds {cell!r}, not a finite number")
        out[i] = value
    return out


def _is_text(table: _Table, j: int) -> bool:
    """A column with no number in it (text, or empty): left out unless named."""
    return not any(_is_number(r[j]) and not _is_missing(r[j]) for r in table.rows)


def _looks_like_identifier(name: str) -> bool:
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)
    return any(w.lower() in _ID_WORDS for w in words)


def _names(columns) -> list[str] | None:
    if columns is None:
        return None
    return [columns] if isinstance(columns, str) else [str(c) for c in columns]


def _choose(table: _Table, columns, roles: dict[str, str]) -> tuple[list[int], dict, tuple]:
    """Feature column indices, the left-out columns with reasons, and the identifier-like
    features chosen by default. ``roles``: column name -> its other role (sequence, ...)."""
    width = len(table.rows[0])
    names = table.names or [f"column {j + 1}" for j in range(width)]
    left_out = {n: roles[n] for n in names if n in roles}
    if columns is not None:
        chosen = [_index(table, c) for c in columns]
        left_out.update({n: "not chosen" for j, n in enumerate(names)
                         if n and j not in chosen and n not in roles})
        left_out.update({f"(unnamed column {j + 1})": "no name" for j, n in enumerate(names)
                         if not n})
        return chosen, left_out, ()
    chosen = []
    for j, n in enumerate(names):
        if n in roles:
            continue
        if not n:
            left_out[f"(unnamed column {j + 1})"] = "no name"
        elif _is_text(table, j):
            left_out[n] = "not numeric"
        else:
            chosen.append(j)
    if not chosen:
        raise ValueError(f"{table.path} has no numeric column to read as a feature; name the "
                         "features")
    suspects = tuple(names[j] for j in chosen if table.names is not None
                     and _looks_like_identifier(names[j]))
    return chosen, left_out, suspects


def _check_roles(feature_names, covariate_names, sequence_column, time_column) -> dict[str, str]:
    """Column name -> role for every column given a role other than feature; no name twice."""
    given = [(c, "feature") for c in feature_names or ()]
    given += [(c, "covariate") for c in covariate_names or ()]
    given += [(c, r) for c, r in ((sequence_column, "sequence column"),
                                  (time_column, "time column")) if c is not None]
    seen: dict[str, str] = {}
    for name, role in given:
        if name in seen:
            what = "twice" if seen[name] == role else f"as the {seen[name]} and the {role}"
            raise ValueError(f"column {name!r} is given {what}")
        seen[name] = role
    return {n: r for n, r in seen.items() if r != "feature"}


def read_csv_rows(path: str | os.PathLike, *, columns: _Seq[str] | None = None
                  ) -> tuple[np.ndarray, TableInfo]:
    """An (N, D) table of numbers from a CSV file, one row per data row.

    Args:
      path: the file (header row optional; without one every column is read).
      columns: the columns to read, by header name, in this order; default every column
        that holds numbers (text columns are left out, and said so in ``info.left_out``).

    Returns:
      ``(x, info)``: x (N, D) float64, and a :class:`TableInfo`.

    Raises:
      FileNotFoundError: no such file.
      ValueError: empty file, ragged rows, an unknown column, or a cell of a read column
        that is missing or not a finite number (the message names column and line).

    Example:
      >>> import tempfile, pathlib
      >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
      >>> _ = f.write_text("id,a,b,name\\n1,0.5,2,x\\n2,1.5,3,y\\n")
      >>> x, info = read_csv_rows(f, columns=["b", "a"])
      >>> x.tolist(), info.columns
      ([[2.0, 0.5], [3.0, 1.5]], ('b', 'a'))
      >>> read_csv_rows(f)[1].identifier_like   # read by default, but worth a look
      ('id',)
    """
    table = _read_table(path)
    names = _names(columns)
    _check_roles(names, None, None, None)
    chosen, left_out, suspects = _choose(table, names, {})
    x = np.stack([_numbers(table, j) for j in chosen], axis=1)
    info = TableInfo(table.path, tuple(_column_names(table, chosen)), left_out=left_out,
                     identifier_like=suspects, n_rows=len(table.rows))
    return x, info


def _column_names(table: _Table, idx: list[int]) -> list[str]:
    return [table.names[j] if table.names is not None else f"column {j + 1}" for j in idx]


def _sort_key(values: list[str]):
    """Numbers sort as numbers; anything else (ISO dates, say) as text."""
    if all(_is_number(v) for v in values):
        return [float(v) for v in values]
    return values


def _groups(table: _Table, seq_j: int | None, time_j: int | None) -> tuple[list[np.ndarray], tuple]:
    """Row indices of each sequence (sorted by time when given) and the sequences' ids."""
    for j in (seq_j, time_j):
        for i, row in enumerate(table.rows):
            if j is not None and (not row[j] or (j == time_j and row[j].lower() in MISSING)):
                raise ValueError(f"{table.path}: {_label(table, j)} line {table.lines[i]} is "
                                 f"empty ({row[j]!r}); every row needs one")
    n = len(table.rows)
    if seq_j is None:
        members, ids = {None: list(range(n))}, ()
    else:
        members = {}
        for i, row in enumerate(table.rows):
            members.setdefault(row[seq_j], []).append(i)
        keys = _sort_key(list(members))
        ids = tuple(k for _, k in sorted(zip(keys, members)))
        members = {k: members[k] for k in ids}
    if time_j is None:
        return [np.array(rows) for rows in members.values()], ids
    key = _sort_key([row[time_j] for row in table.rows])
    groups = []
    for sid, rows in members.items():
        rows = sorted(rows, key=lambda i: key[i])
        for a, b in zip(rows, rows[1:]):
            if key[a] == key[b]:
                where = "" if sid is None else f"sequence {sid!r} "
                raise ValueError(f"{table.path}: {where}has two rows at {_label(table, time_j)} "
                                 f"= {table.rows[a][time_j]!r} (lines {table.lines[a]} and "
                                 f"{table.lines[b]})")
        groups.append(np.array(rows))
    return groups, ids


def read_csv_sequences(path: str | os.PathLike, *, sequence_column: str | None = None,
                       time_column: str | None = None, columns: _Seq[str] | None = None,
                       covariate_columns: _Seq[str] | None = None) -> tuple[Sequences, TableInfo]:
    """Sequences from a CSV file with one row per step (format: ``docs/guide/data_format.md``).

    Args:
      path: the file; a header row names the columns.
      sequence_column: the column naming each row's sequence (any text); rows need not be
        contiguous. Sequences are ordered by id (numerically when every id is a number).
        None: the whole table is one sequence.
      time_column: sort each sequence's rows by this column (numbers as numbers, anything
        else as text, so ISO dates sort right); two rows of a sequence at one time are an
        error. None: the file's order.
      columns: the feature columns, in this order; default every column holding numbers
        except the sequence, time and covariate columns (text columns are left out).
      covariate_columns: columns read as covariates ``u`` (S, T, C); default none.

    Returns:
      ``(seqs, info)``: :class:`Sequences` with ``x`` (S, T, D) float64, each sequence its own
      length (padded with zeros), and a :class:`TableInfo` saying which column became what.

    Raises:
      FileNotFoundError: no such file.
      ValueError: empty file, ragged rows, an unknown column or one given two roles, a
        missing or non-numeric value in a feature or covariate column, an empty sequence or
        time cell, or two rows of one sequence at the same time. Each names column and line.

    Example:
      >>> import tempfile, pathlib
      >>> f = pathlib.Path(tempfile.mkdtemp()) / "walks.csv"
      >>> _ = f.write_text("walk,t,a,note\\nB,1,10,x\\nA,2,2,y\\nA,1,1,z\\nB,0,0,w\\nB,2,20,v\\n")
      >>> seqs, info = read_csv_sequences(f, sequence_column="walk", time_column="t")
      >>> seqs.x[..., 0].tolist(), seqs.lengths.tolist(), info.sequence_ids
      ([[1.0, 2.0, 0.0], [0.0, 10.0, 20.0]], [2, 3], ('A', 'B'))
      >>> info.columns, dict(info.left_out)
      (('a',), {'walk': 'sequence column', 't': 'time column', 'note': 'not numeric'})
    """
    table = _read_table(path)
    names, cov_names = _names(columns), _names(covariate_columns)
    roles = _check_roles(names, cov_names, sequence_column, time_column)
    seq_j = None if sequence_column is None else _index(table, sequence_column)
    time_j = None if time_column is None else _index(table, time_column)
    cov_idx = [_index(table, c) for c in cov_names or ()]
    chosen, left_out, suspects = _choose(table, names, roles)
    left_out = {k: v for k, v in left_out.items() if v != "covariate"}
    x = np.stack([_numbers(table, j) for j in chosen], axis=1)
    u = np.stack([_numbers(table, j) for j in cov_idx], axis=1) if cov_idx else None
    groups, ids = _groups(table, seq_j, time_j)
    seqs = Sequences.from_list([x[g] for g in groups],
                               None if u is None else [u[g] for g in groups])
    info = TableInfo(table.path, tuple(_column_names(table, chosen)),
                     tuple(_column_names(table, cov_idx)), sequence_column, time_column,
                     ids, left_out, suspects, len(table.rows))
    return seqs, info
