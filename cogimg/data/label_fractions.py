"""Nested labelled subsets of a split's training folds, for low-label experiments.

A *label fraction* keeps only part of a fold's training participants labelled; the rest of
the fold is the **unlabelled** pool that semi-supervised methods
(:mod:`cogimg.paradigms.lowlabel`) may read images from. Validation and test subsets are
those of the split, identical for every fraction, so fractions are compared on one footing.

**Selection** (per fold): the fold's training IDs are sorted, grouped by ``stratify``
(diagnosis, where the table has it) and shuffled within each group by ``seed``; fraction
``f`` labels the first ``max(1, round(f · n_g))`` IDs of every group ``g``. Hence

* subsets are **nested** (5 % ⊂ 10 % ⊂ 25 % …) — the same order is cut at longer prefixes;
* each class keeps its share (and at least one labelled participant);
* a subset does not depend on which other fractions were asked for, and the same split,
  table and seed give byte-identical files.

**File** (JSON, written next to the split as ``<split stem>.labels-seed<seed>.json``)::

    {"format_version": 1, "split": "ad.json", "participants_hash": "…",
     "seed": 0, "stratify": "diagnosis",
     "folds": {"fold0": {"strata": {"AD": ["sub-07", …], …},  # labelling order per class
                         "labelled": {"0.1": ["sub-07", …], …}}}}

:func:`check_label_fractions` (run by every reader) asserts that labelled IDs are training
IDs of their fold — never validation or test — and that the subsets are nested.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cogimg.data.participants import as_frame, listed
from cogimg.data.splits import Split, _per_unit, check_leakage, load_split
from cogimg.io import atomic_write_text

FORMAT_VERSION = 1
DEFAULT_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)


def fraction_key(fraction: float) -> str:
    """Canonical text of a fraction in files: ``0.1`` → ``"0.1"``; must lie in (0, 1]."""
    value = float(fraction)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    return f"{value:g}"


def labelling_order(train_ids: Sequence[str], strata: Mapping[str, str] | None,
                    seed: int) -> dict[str, list[str]]:
    """Per stratum, the shuffled order in which ``train_ids`` get labelled (seeded, sorted first)."""
    groups: dict[str, list[str]] = {}
    for pid in sorted(train_ids):
        groups.setdefault(strata[pid] if strata is not None else "", []).append(pid)
    rng = np.random.default_rng(seed)
    return {g: [ids[i] for i in rng.permutation(len(ids))] for g, ids in sorted(groups.items())}


def select_labelled(order: Mapping[str, Sequence[str]], fraction: float) -> list[str]:
    """Sorted IDs labelled at ``fraction``: the first ``max(1, round(f · n_g))`` of each stratum."""
    f = float(fraction_key(fraction))
    chosen = [pid for ids in order.values() for pid in ids[:max(1, round(f * len(ids)))]]
    return sorted(chosen)


def make_label_fractions(split: Split, participants=None,
                         fractions: Iterable[float] = DEFAULT_FRACTIONS, seed: int = 0,
                         stratify: str | None = "diagnosis") -> dict:
    """Nested labelled subsets of every fold's training IDs (see module doc).

    Args:
        split: a saved split (:func:`cogimg.data.splits.load_split`).
        participants: table or ``participants.tsv`` path holding ``stratify``; ``None`` or a
            table without that column = no stratification.
        fractions: fractions of each fold's training IDs to label, in (0, 1].
        seed: seeds the labelling order.

    Returns the JSON-ready dict of the file format.
    """
    check_leakage(split)
    keys = sorted({fraction_key(f) for f in fractions}, key=float)
    strata = None
    if participants is not None and stratify is not None:
        table = as_frame(participants)
        if stratify in table.columns:
            strata = _per_unit(table, split.group, stratify, "mode").to_dict()
    used = stratify if strata is not None else None
    folds = {}
    for name in split.fold_names:
        train = split.fold(name)["train"]
        if strata is not None and (unknown := [i for i in train if i not in strata]):
            raise ValueError(f"training IDs without {stratify!r} in the table: {listed(unknown)}")
        order = labelling_order(train, strata, seed)
        folds[name] = {"strata": {g: list(ids) for g, ids in order.items()},
                       "labelled": {k: select_labelled(order, float(k)) for k in keys}}
    return {"format_version": FORMAT_VERSION, "participants_hash": split.participants_hash,
            "seed": int(seed), "stratify": used, "folds": folds}


def check_label_fractions(fractions: Mapping, split: Split, source: str = "label fractions") -> None:
    """Raise ``ValueError`` if a labelled ID is not a training ID of its fold (a leak into
    validation/test, or an unknown ID), or if the subsets are not nested."""
    if set(fractions["folds"]) != set(split.fold_names):
        raise ValueError(f"{source}: folds {sorted(fractions['folds'])} differ from the split's "
                         f"{split.fold_names}")
    for name, fold in fractions["folds"].items():
        subsets = split.fold(name)
        train = set(subsets["train"])
        ordered = [pid for ids in fold.get("strata", {}).values() for pid in ids]
        if "strata" in fold and (len(ordered) != len(set(ordered)) or set(ordered) != train):
            raise ValueError(f"{source}: fold {name!r}: the labelling order must list each "
                             "training ID exactly once")
        previous: set[str] = set()
        for key in sorted(fold["labelled"], key=float):
            labelled = set(fold["labelled"][key])
            for other in ("val", "test"):
                if leaked := sorted(labelled & set(subsets[other])):
                    raise ValueError(f"{source}: fold {name!r} fraction {key} labels {other} "
                                     f"participant(s) {listed(leaked)} (data leakage)")
            if stray := sorted(labelled - train):
                raise ValueError(f"{source}: fold {name!r} fraction {key} labels IDs outside the "
                                 f"fold's training set: {listed(stray)}")
            if missing := sorted(previous - labelled):
                raise ValueError(f"{source}: fold {name!r} fraction {key} is not nested: it drops "
                                 f"{listed(missing)} labelled at a smaller fraction")
            previous = labelled


def label_fractions_path(split_path: str | os.PathLike, seed: int) -> Path:
    """Where the label fractions of ``split_path`` with ``seed`` live (next to the split)."""
    split_path = Path(split_path)
    return split_path.with_name(f"{split_path.stem}.labels-seed{seed}.json")


def save_label_fractions(fractions: Mapping, split: Split, path: str | os.PathLike,
                         split_name: str = "") -> Path:
    """Check ``fractions`` against ``split`` and write them atomically; never replaces a file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; label fractions are made once and reused")
    check_label_fractions(fractions, split, str(path))
    atomic_write_text(path, json.dumps({"split": split_name, **fractions}, indent=1) + "\n")
    return path


def load_label_fractions(path: str | os.PathLike, split: Split) -> dict:
    """Read a label-fractions file and check it against ``split`` (same participants, no leak)."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {data.get('format_version')!r}")
    if data.get("participants_hash") != split.participants_hash:
        raise ValueError(f"{path}: made for another split (participants hash differs); delete it "
                         "to remake the label fractions")
    check_label_fractions(data, split, str(path))
    return data


def labelled_subset(split_path: str | os.PathLike, fold: int | str, fraction: float, seed: int = 0,
                    participants=None) -> dict[str, list[str]]:
    """Fold ``fold`` of the split at ``split_path`` with only ``fraction`` of ``train`` labelled.

    Loads the fractions file next to the split, or makes and saves it (all
    :data:`DEFAULT_FRACTIONS` plus ``fraction``, stratified by diagnosis from ``participants``).
    A fraction the file lacks is cut from the file's saved order, so it nests with the rest.

    Returns ``{"train": labelled, "unlabelled": rest of train, "val": …, "test": …}``.
    """
    split = load_split(split_path)
    path = label_fractions_path(split_path, seed)
    if path.exists():
        data = load_label_fractions(path, split)
    else:
        data = make_label_fractions(split, participants, (*DEFAULT_FRACTIONS, fraction), seed)
        try:
            save_label_fractions(data, split, path, Path(split_path).name)
        except FileExistsError:  # another process made it meanwhile
            data = load_label_fractions(path, split)
    ids = split.fold(fold)
    name = fold if isinstance(fold, str) else split.fold_names[fold]
    entry = data["folds"][name]
    key = fraction_key(fraction)
    labelled = entry["labelled"].get(key) or select_labelled(entry["strata"], fraction)
    return {"train": sorted(labelled), "unlabelled": sorted(set(ids["train"]) - set(labelled)),
            "val": ids["val"], "test": ids["test"]}

