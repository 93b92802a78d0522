"""Per-site splits for federated experiments: each client's own train/val/test, and their
union for the centralised baseline (so every arm is scored on the same test subjects)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from cogimg.data.participants import read_participants, select_diagnoses
from cogimg.data.splits import Split, make_kfold_split


def site_splits(participants: pd.DataFrame | str | os.PathLike, site_col: str = "site",
                test_fraction: float = 0.25, n_folds: int = 4, stratify: str | None = "diagnosis",
                diagnoses: Sequence[str] | None = None, seed: int = 0) -> dict[str, Split]:
    """One split per site, made on that site's participants only: a stratified held-out
    ``test`` and fold 0 of a stratified ``n_folds``-fold CV as ``train``/``val``.
    ``diagnoses`` keeps only those participants (a preset's ``diagnoses``)."""
    table = participants if isinstance(participants, pd.DataFrame) else read_participants(participants)
    if diagnoses is not None:
        table = select_diagnoses(table, diagnoses)
    if site_col not in table.columns:
        raise ValueError(f"participants table has no {site_col!r} column; columns: {list(table.columns)}")
    out = {}
    for site in sorted(table[site_col].astype(str).unique()):
        rows = table[table[site_col].astype(str) == site]
        try:
            full = make_kfold_split(rows, n_folds=n_folds, test_fraction=test_fraction,
                                    stratify=stratify, seed=seed)
        except ValueError as err:
            raise ValueError(f"site {site!r}: {err}") from None
        fold = full.fold(0)
        out[site] = Split(kind="custom", folds=[{"name": site, **fold}], seed=seed, stratify=stratify,
                          participants_hash=full.participants_hash)
    return out


def pooled_split(splits: dict[str, Split]) -> Split:
    """The union of per-site splits (train ∪ train, val ∪ val, test ∪ test): the centralised
    baseline's split."""
    subsets = {s: sorted(i for split in splits.values() for i in split.fold(0)[s]) for s in ("train", "val", "test")}
    return Split(kind="custom", folds=[{"name": "pooled", **subsets}], seed=None, stratify=None)
