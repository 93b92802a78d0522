"""The participants table and subject lists that splits are made from.

:func:`read_participants` reads ``participants.tsv`` with the dataset loader's rules;
:func:`select_diagnoses`, :func:`participants_hash`, :func:`sessions_table` and
:func:`subjects_for` select, fingerprint and match rows; :func:`as_frame`,
:func:`require_columns` and :func:`listed` are the helpers the split and leakage code shares
(a table from a DataFrame or a TSV path, one error naming missing columns, ID lists in error
messages cut after ``MAX_LISTED``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from cogimg.diseases import normalise_diagnosis

TableLike = pd.DataFrame | str | os.PathLike
MAX_LISTED = 20  # IDs named in one error message before "… and N more"
_HASH_COLUMNS = ("participant_id", "diagnosis", "site")


def read_participants(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``participants.tsv`` with the dataset loader's rules, indexed by ``participant_id``.

    The rules (required columns, ``sub-`` IDs, duplicates, diagnosis spelling, ``n/a``) are
    :func:`cogimg.data.validation.load_participants`'s; every error it finds is raised at
    once as a ``ValueError`` naming the file, so a split never silently drops a row.
    """
    from cogimg.data.validation import load_participants

    path = Path(path)
    table, problems = load_participants(path, table_key=str(path))
    if errors := [str(p) for p in problems if p.severity == "error"]:
        raise ValueError(f"{path}: {len(errors)} error(s):\n  " + "\n  ".join(errors))
    return table


def select_diagnoses(participants: TableLike, diagnoses: Sequence[str]) -> pd.DataFrame:
    """Rows whose ``diagnosis`` is one of ``diagnoses`` (normalised); a requested diagnosis
    that no row has is an error rather than an empty class."""
    table = as_frame(participants)
    require_columns(table, ["diagnosis"], "select diagnoses")
    wanted = [normalise_diagnosis(d) for d in diagnoses]
    if absent := [d for d in wanted if not (table["diagnosis"] == d).any()]:
        raise ValueError(f"no participants with diagnosis {absent}; present: "
                         f"{sorted(table['diagnosis'].dropna().unique())}")
    return table[table["diagnosis"].isin(wanted)]


def participants_hash(participants: TableLike) -> str:
    """sha256 of the sorted unique (participant_id, diagnosis, site) rows; missing → ``n/a``."""
    table = as_frame(participants)
    columns = [table[c].astype(object).where(table[c].notna(), "n/a").astype(str)
               if c in table.columns else pd.Series("n/a", index=table.index)
               for c in _HASH_COLUMNS]
    rows = sorted(set(zip(*columns)))
    return hashlib.sha256("\n".join("\t".join(r) for r in rows).encode()).hexdigest()


def sessions_table(subjects: Iterable[Mapping]) -> pd.DataFrame:
    """Scans table (``participant_id``, ``session_id``, ``subject_id`` where present)."""
    keys = ("participant_id", "session_id", "subject_id")
    return pd.DataFrame([{k: s[k] for k in keys if k in s} for s in subjects])


def subjects_for(subjects: Iterable[Mapping], ids: Iterable[str], key: str = "participant_id"):
    """The subjects (e.g. ``tio.Subject``) whose ``key`` is in ``ids``, in input order.

    Raises ``ValueError`` listing IDs that no subject has, so nothing in a split is dropped.
    """
    subjects = list(subjects)
    if lacking := [i for i, s in enumerate(subjects) if key not in s]:
        raise KeyError(f"subject(s) at position {listed(map(str, lacking))} have no {key!r} key")
    wanted = set(ids)
    if missing := sorted(wanted - {str(s[key]) for s in subjects}):
        raise ValueError(f"{len(missing)} ID(s) in the split have no subject: {listed(missing)}")
    return [s for s in subjects if str(s[key]) in wanted]


def as_frame(participants: TableLike) -> pd.DataFrame:
    """A DataFrame with ID columns as columns (an index named e.g. participant_id is reset)."""
    if isinstance(participants, (str, os.PathLike)):
        return read_participants(participants).reset_index()
    if not isinstance(participants, pd.DataFrame):
        raise TypeError(f"expected a DataFrame or a TSV path, got {type(participants).__name__}")
    index_names = [n for n in participants.index.names if n is not None]
    if index_names and not set(index_names) & set(participants.columns):
        return participants.reset_index()
    return participants


def require_columns(table: pd.DataFrame, columns: Sequence[str], purpose: str) -> None:
    """One ``ValueError`` naming every column of ``columns`` that ``table`` lacks, and why."""
    if missing := [c for c in columns if c not in table.columns]:
        raise ValueError(f"table has no column(s) {missing} needed to {purpose} "
                         f"(columns: {list(table.columns)})")


def listed(ids: Iterable[str]) -> str:
    """``ids`` comma-joined for an error message, the first ``MAX_LISTED`` only."""
    ids = list(ids)
    more = f" … and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else ""
    return ", ".join(ids[:MAX_LISTED]) + more
