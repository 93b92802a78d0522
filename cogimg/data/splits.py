"""Leakage-safe data splits: made once at subject level, saved, reused and checked.

Two kinds are generated (scikit-learn does the splitting; this module groups, sorts,
validates and records):

* ``kfold``: a stratified held-out test set (``test_fraction``), then stratified k-fold
  cross-validation on the rest; every remaining participant is in ``val`` of exactly one
  fold and the test set is the same for every fold.
* ``leave-site-out``: one fold per site; ``test`` is that site, ``train``/``val`` are the
  other sites with a stratified ``val_fraction``.

**Grouping.** A split lists values of one ID column, ``group`` (``participant_id`` unless
told otherwise), and every row sharing a value goes to the same subset. The input may be
``participants.tsv`` (one row per participant) or a table of scans (``participant_id``
repeated, one row per session): rows are collapsed to one unit per ID before splitting, so
two sessions of one participant can never straddle subsets. A unit whose rows disagree on
the stratification label (e.g. an MCI→AD converter in a scans table) is stratified by its
most frequent label, ties broken alphabetically. A class with too few units to stratify
(fewer than ``n_folds`` outside the test set, or fewer than 2 for a shuffle split) is an
error that names the class and suggests fewer folds, ``--diagnoses`` or ``stratify=None``.

**Determinism.** IDs are sorted before splitting and every list is written sorted, so the
same table (in any row order) and seed give byte-identical files.

**File format** (JSON, also valid for hand-written files; only ``folds`` is required)::

    {
      "format_version": 1,                 # optional; 1 is the only version
      "kind": "kfold",                     # "kfold" | "leave-site-out" | "custom" (default)
      "seed": 0,                           # int or null (default null)
      "stratify": "diagnosis",             # column name or null (default null)
      "group": "participant_id",           # column whose values are listed (default)
      "participants_hash": "…",            # sha256 of the table used, see participants_hash
      "test": ["sub-07", …],               # held out from every fold (default [])
      "folds": [                           # non-empty list
        {"name": "fold0",                  # optional, unique (default "fold<i>")
         "train": ["sub-01", …], "val": ["sub-02", …],
         "test": ["sub-09", …]}            # optional; replaces the top-level test in this fold
      ]
    }

IDs are strings; unknown keys are errors (a typo would otherwise be ignored). Next to
``split.json`` :func:`save_split` writes ``split.tsv`` with one row per
(``participant_id``, ``fold``, ``subset``) for reading and pivoting; it is not read back.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.data.participants import (
    TableLike,
    as_frame,
    listed,
    participants_hash,
    require_columns,
)
from cogimg.io import atomic_write_text

FORMAT_VERSION = 1
KINDS = ("kfold", "leave-site-out", "custom")
SUBSETS = ("train", "val", "test")
_TOP_KEYS = {"format_version", "kind", "seed", "stratify", "group", "participants_hash",
             "test", "folds"}
_FOLD_KEYS = {"name", "train", "val", "test"}
_MISSING_VALUES = ("n/a", "")  # BIDS writes n/a; the dataset loader keeps it as text


class LeakageError(ValueError):
    """A split puts one participant (or session) in two subsets.

    Attributes:
        problems: one line per leak, each naming the fold, the subsets and the IDs.
        ids: sorted offending IDs (values of the split's ``group`` column).
    """

    def __init__(self, problems: list[str], ids: Iterable[str]):
        self.problems = problems
        self.ids = sorted(set(ids))
        super().__init__("data leakage in split:\n  " + "\n  ".join(problems))


class SplitFormatError(ValueError):
    """A split file or dict does not follow the format; the message names the source and key."""


@dataclass
class Split:
    """A saved split: ID lists per fold and subset, plus how they were made (see module doc)."""

    kind: str
    folds: list[dict]
    test: list[str] = field(default_factory=list)
    seed: int | None = None
    stratify: str | None = None
    group: str = "participant_id"
    participants_hash: str = ""

    @property
    def fold_names(self) -> list[str]:
        return [f["name"] for f in self.folds]

    def fold(self, k: int | str) -> dict[str, list[str]]:
        """``{"train", "val", "test"}`` ID lists of fold ``k`` (its index or its name)."""
        if isinstance(k, str):
            if k not in self.fold_names:
                raise KeyError(f"no fold named {k!r}; folds: {self.fold_names}")
            entry = self.folds[self.fold_names.index(k)]
        elif 0 <= k < len(self.folds):
            entry = self.folds[k]
        else:
            raise IndexError(f"fold index {k} out of range: the split has {len(self.folds)} folds")
        return {"train": list(entry["train"]), "val": list(entry["val"]),
                "test": list(entry.get("test", self.test))}

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "kind": self.kind, "seed": self.seed,
                "stratify": self.stratify, "group": self.group,
                "participants_hash": self.participants_hash, "test": list(self.test),
                "folds": [{key: f[key] if key == "name" else list(f[key])
                           for key in ("name", *SUBSETS) if key in f} for f in self.folds]}

    @classmethod
    def from_dict(cls, data: object, source: str = "split") -> Split:
        """Validate ``data`` (parsed JSON) and build a split; errors name ``source`` and the key."""

        def fail(key: str, problem: str):
            raise SplitFormatError(f"{source}: {key}: {problem}")

        def typed(key, value, types, expected, nullable=False):
            if value is None and nullable:
                return value
            if isinstance(value, bool) or not isinstance(value, types):
                fail(key, f"expected {expected}, got {type(value).__name__} {value!r}")
            return value

        def id_list(key: str, value: object) -> list[str]:
            if not isinstance(value, list):
                fail(key, f"expected a list of ID strings, got {type(value).__name__}")
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    fail(f"{key}[{i}]",
                         f"expected an ID string, got {type(item).__name__} {item!r}")
            return list(value)

        if not isinstance(data, Mapping):
            fail("top level", f"expected a JSON object, got {type(data).__name__}")
        if unknown := sorted(set(data) - _TOP_KEYS):
            fail(unknown[0], f"unknown key; allowed keys: {sorted(_TOP_KEYS)}")
        if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            fail("format_version", f"unsupported version {data['format_version']!r}; "
                                   f"this cogimg reads version {FORMAT_VERSION}")
        kind = typed("kind", data.get("kind", "custom"), str, "a string")
        if kind not in KINDS:
            fail("kind", f"{kind!r} is not one of {list(KINDS)}")
        if "folds" not in data:
            fail("folds", "missing (required)")
        if not isinstance(data["folds"], list) or not data["folds"]:
            fail("folds", "expected a non-empty list of fold objects")
        folds = []
        for i, raw in enumerate(data["folds"]):
            where = f"folds[{i}]"
            if not isinstance(raw, Mapping):
                fail(where, f"expected an object, got {type(raw).__name__}")
            if unknown := sorted(set(raw) - _FOLD_KEYS):
                fail(f"{where}.{unknown[0]}", f"unknown key; allowed keys: {sorted(_FOLD_KEYS)}")
            fold = {"name": typed(f"{where}.name", raw.get("name", f"fold{i}"), str, "a string")}
            for subset in SUBSETS:
                if subset in raw:
                    fold[subset] = id_list(f"{where}.{subset}", raw[subset])
                elif subset != "test":
                    fail(f"{where}.{subset}", "missing (required)")
            folds.append(fold)
        if dupes := [n for n, c in Counter(f["name"] for f in folds).items() if c > 1]:
            fail("folds", f"fold names must be unique; repeated: {dupes}")
        return cls(
            kind=kind, folds=folds, test=id_list("test", data.get("test", [])),
            seed=typed("seed", data.get("seed"), int, "an integer or null", True),
            stratify=typed("stratify", data.get("stratify"), str, "a column name or null",
                           True),
            group=typed("group", data.get("group", "participant_id"), str, "a column name"),
            participants_hash=typed("participants_hash", data.get("participants_hash", ""),
                                    str, "a string"),
        )


# --------------------------------------------------------------------------- making splits


def make_kfold_split(participants: TableLike, n_folds: int = 5, test_fraction: float = 0.2,
                     stratify: str | None = "diagnosis", seed: int = 0,
                     group: str = "participant_id") -> Split:
    """Stratified held-out test set + stratified k-fold CV, grouped by ``group``."""
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    if n_folds < 2:
        raise ValueError(f"n_folds must be ≥ 2, got {n_folds}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    table = as_frame(participants)
    ids, labels = _units(table, group, stratify)
    test_ids: np.ndarray = ids[:0]
    if test_fraction > 0:
        _check_class_sizes(labels, n_folds + 1, f"hold out a test set and make {n_folds} folds",
                           group)
        try:
            ids, test_ids, *rest = train_test_split(
                ids, *([labels] if labels is not None else []), test_size=test_fraction,
                stratify=labels, random_state=seed)
        except ValueError as err:  # e.g. fewer test places than classes
            raise ValueError(f"cannot hold out test_fraction={test_fraction}: {err}") from None
        labels = rest[0] if labels is not None else None
    _check_class_sizes(labels, n_folds, f"make {n_folds} stratified folds", group)
    if len(ids) < n_folds:
        raise ValueError(f"{len(ids)} {group} values left for {n_folds} folds")
    splitter = (StratifiedKFold if labels is not None else KFold)(
        n_folds, shuffle=True, random_state=seed)
    folds = [{"name": f"fold{i}", "train": _sorted(ids[tr]), "val": _sorted(ids[va])}
             for i, (tr, va) in enumerate(splitter.split(ids, labels))]
    return Split(kind="kfold", folds=folds, test=_sorted(test_ids), seed=int(seed),
                 stratify=stratify, group=group, participants_hash=participants_hash(table))


def make_leave_site_out_split(participants: TableLike, site_col: str = "site",
                              val_fraction: float = 0.2, stratify: str | None = "diagnosis",
                              seed: int = 0, group: str = "participant_id") -> Split:
    """One fold per site (named after it): ``test`` = that site, ``train``/``val`` = the rest."""
    from sklearn.model_selection import train_test_split

    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    table = as_frame(participants)
    ids, labels = _units(table, group, stratify)
    sites = _per_unit(table, group, site_col, "constant").loc[ids].to_numpy()
    if len(set(sites)) < 2:
        raise ValueError(f"leave-site-out needs ≥ 2 values in column {site_col!r}, "
                         f"found {sorted(set(sites))}")
    folds = []
    for site in sorted(set(sites)):
        rest = sites != site
        train, val = ids[rest], ids[:0]
        if val_fraction > 0:
            rest_labels = labels[rest] if labels is not None else None
            _check_class_sizes(rest_labels, 2, f"stratify val for held-out site {site!r}", group)
            train, val = train_test_split(train, test_size=val_fraction, stratify=rest_labels,
                                          random_state=seed)
        folds.append({"name": str(site), "train": _sorted(train), "val": _sorted(val),
                      "test": _sorted(ids[~rest])})
    return Split(kind="leave-site-out", folds=folds, seed=int(seed), stratify=stratify, group=group,
                 participants_hash=participants_hash(table))


# --------------------------------------------------------------------------- files


def save_split(split: Split, path: str | os.PathLike, *, overwrite: bool = False
               ) -> tuple[Path, Path]:
    """Check ``split`` for leakage, then write ``path`` (JSON) and its ``.tsv`` listing atomically.

    Refuses to replace existing files unless ``overwrite``: splits are made once and reused.
    Returns the JSON and TSV paths.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"split file must end in .json, got {path}")
    tsv = path.with_suffix(".tsv")
    if not overwrite and (existing := [str(p) for p in (path, tsv) if p.exists()]):
        raise FileExistsError(f"{', '.join(existing)} already exist(s); splits are made once "
                              "and reused (pass overwrite=True / --overwrite to replace)")
    check_leakage(split)
    atomic_write_text(path, json.dumps(split.to_dict(), indent=2) + "\n")
    atomic_write_text(tsv, split_table(split).to_csv(sep="\t", index=False, lineterminator="\n"))
    return path, tsv


def load_split(path: str | os.PathLike) -> Split:
    """Read and validate a split file (generated or hand-written, see module doc)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"split file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SplitFormatError(f"{path}: not valid JSON ({err})") from None
    return Split.from_dict(data, source=str(path))


def split_table(split: Split) -> pd.DataFrame:
    """Long table (``<group>``, ``fold``, ``subset``): one row per ID, fold and subset."""
    rows = [(i, fold, subset) for fold in split.fold_names
            for subset, ids in split.fold(fold).items() for i in ids]
    return pd.DataFrame(rows, columns=[split.group, "fold", "subset"])


def split_summary(split: Split, participants: TableLike,
                  columns: Sequence[str] = ("diagnosis", "site")) -> pd.DataFrame:
    """Counts per fold and subset: ``n`` and, for each of ``columns`` present, per value."""
    table = as_frame(participants)
    long = split_table(split)
    known = set(table[split.group].astype(str)) if split.group in table.columns else set()
    if missing := sorted(set(long[split.group]) - known):
        raise ValueError(f"split IDs not in the participants table: {listed(missing)}")
    parts = [long.groupby(["fold", "subset"], sort=False).size().to_frame(("n", ""))]
    for column in [c for c in columns if c in table.columns]:
        value = _per_unit(table, split.group, column, "mode").astype(str)
        crosstab = pd.crosstab([long["fold"], long["subset"]], long[split.group].map(value))
        parts.append(pd.concat({column: crosstab}, axis=1))
    summary = pd.concat(parts, axis=1).fillna(0).astype(int)
    return summary.reindex(parts[0].index).reset_index()


# --------------------------------------------------------------------------- leakage


def check_leakage(split: Split, sessions: TableLike | None = None, *,
                  scan_col: str = "subject_id") -> None:
    """Raise :class:`LeakageError` if any ID (or, with ``sessions``, any scan) is in two subsets.

    Checks, for every fold: IDs repeated within a subset; IDs in two of train / val / test;
    the held-out ``split.test`` overlapping train or val. ``sessions`` is a scans table with
    the split's ``group`` column plus ``participant_id`` and/or ``scan_col`` (a globally unique
    scan ID such as ``subject_id``); then no participant or scan may link IDs that sit in
    different subsets — this catches splits made per session or per image.
    """
    problems: list[str] = []
    offenders: set[str] = set()

    def report(message: str, ids: Iterable[str], detail: Iterable[str] | None = None) -> None:
        ids = sorted(set(ids))
        problems.append(f"{message}: {listed(sorted(set(detail)) if detail else ids)}")
        offenders.update(ids)

    lists = [("held-out test", split.test)] + [
        (f"fold {f['name']!r} {s}", f[s]) for f in split.folds for s in SUBSETS if s in f]
    for where, ids in lists:
        if repeated := [i for i, n in Counter(ids).items() if n > 1]:
            report(f"{where}: listed more than once", repeated)
    for fold in split.folds:
        subsets = {s: set(fold[s]) for s in SUBSETS if s in fold}
        if split.test:
            subsets["held-out test"] = set(split.test)
        for (a, ids_a), (b, ids_b) in combinations(subsets.items(), 2):
            if {a, b} != {"test", "held-out test"} and (both := ids_a & ids_b):
                report(f"fold {fold['name']!r}: in both {a} and {b}", both)
    if sessions is not None:
        _session_leaks(split, as_frame(sessions), scan_col, report)
    if problems:
        raise LeakageError(problems, offenders)


def _session_leaks(split: Split, sessions: pd.DataFrame, scan_col: str, report) -> None:
    require_columns(sessions, [split.group], "check a split against sessions")
    links = [c for c in ("participant_id", scan_col) if c != split.group and c in sessions]
    if not links:
        raise ValueError(f"sessions table needs participant_id or {scan_col!r} besides "
                         f"{split.group!r} (columns: {list(sessions.columns)})")
    ids = sessions[split.group].astype(str)
    for fold in split.folds:
        subset_of = {i: s for s, members in split.fold(fold["name"]).items() for i in members}
        subset = ids.map(subset_of)
        for link in links:
            used = pd.DataFrame({"id": ids, "subset": subset, "link": sessions[link]}).dropna()
            spread = used.groupby("link")["subset"].nunique()
            for key in spread.index[spread > 1]:
                rows = used[used["link"] == key].drop_duplicates()
                report(f"fold {fold['name']!r}: {link} {key!r} spans "
                       f"{sorted(set(rows['subset']))}",
                       rows["id"], [f"{i} ({s})" for i, s in zip(rows["id"], rows["subset"])])


# --------------------------------------------------------------------------- helpers


def _per_unit(table: pd.DataFrame, group: str, column: str, how: str) -> pd.Series:
    """One value of ``column`` per ``group`` ID: the only one (``constant``) or the most frequent
    (``mode``, ties alphabetical). Missing values and, for ``constant``, conflicts raise."""
    require_columns(table, [group, column], f"assign {column} per {group}")
    rows = pd.DataFrame({"id": table[group].astype(str), "value": table[column]})
    missing = rows["value"].isna() | rows["value"].isin(_MISSING_VALUES)
    if missing.any():
        raise ValueError(f"missing {column} for {group}(s) "
                         f"{listed(sorted(set(rows['id'][missing])))}")
    rows["value"] = rows["value"].astype(str)
    counts = rows.value_counts().rename("n").reset_index()
    if how == "constant" and (conflict := sorted(set(counts["id"][counts["id"].duplicated()]))):
        raise ValueError(f"{group}(s) with more than one {column}: {listed(conflict)}")
    counts = counts.sort_values(["id", "n", "value"], ascending=[True, False, True])
    return counts.drop_duplicates("id").set_index("id")["value"]


def _units(table: pd.DataFrame, group: str, stratify: str | None):
    """Sorted unique IDs of ``group`` and their stratification labels (or None)."""
    require_columns(table, [group], "split by it")
    if table[group].isna().any():
        raise ValueError(f"column {group!r} has {int(table[group].isna().sum())} empty value(s)")
    if stratify is None:
        return np.array(sorted(set(table[group].astype(str))), dtype=object), None
    labels = _per_unit(table, group, stratify, "mode")
    return labels.index.to_numpy(dtype=object), labels.to_numpy(dtype=object)


def _check_class_sizes(labels, minimum: int, purpose: str, group: str) -> None:
    if labels is None:
        return
    counts = Counter(labels)
    if small := sorted(c for c, n in counts.items() if n < minimum):
        detail = ", ".join(f"{c!r} has {counts[c]}" for c in small)
        raise ValueError(f"cannot {purpose}: class {detail} {group} value(s), need ≥ {minimum}; "
                         "use fewer folds, drop the class (--diagnoses) or stratify=None")


def _sorted(ids) -> list[str]:
    return sorted(str(i) for i in ids)
