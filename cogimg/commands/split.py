"""``cogimg split DATA_ROOT --out FILE``: make a subject-level split once and save it.

Reads ``DATA_ROOT/participants.tsv`` (a split needs participants only, not images), makes a
stratified k-fold or leave-one-site-out split (:mod:`cogimg.data.splits`), writes
``FILE`` (JSON) plus ``FILE`` with a ``.tsv`` suffix, and prints counts per fold and subset by
diagnosis and site. An existing split file is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "make a leakage-safe subject-level split (stratified k-fold or leave-one-site-out)"

#: option → the --kind it applies to; its default when not given
_KIND_OPTIONS = {"n_folds": ("kfold", 5), "test_fraction": ("kfold", 0.2),
                 "val_fraction": ("leave-site-out", 0.2)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_root", metavar="DATA_ROOT", type=Path,
                        help="BIDS root holding participants.tsv (or the .tsv file itself)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="split file to write (.json; a .tsv listing is written next to it)")
    parser.add_argument("--kind", choices=("kfold", "leave-site-out"), default="kfold",
                        help="kfold: held-out test set + stratified CV folds (default); "
                             "leave-site-out: one fold per site")
    parser.add_argument("--n-folds", type=int, help="number of CV folds (kfold; default 5)")
    parser.add_argument("--test-fraction", type=float,
                        help="fraction of participants held out for testing (kfold; default 0.2)")
    parser.add_argument("--val-fraction", type=float,
                        help="fraction of the other sites' participants used for validation "
                             "(leave-site-out; default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--stratify", default="diagnosis",
                        help="participants.tsv column to stratify by, or 'none' "
                             "(default diagnosis)")
    parser.add_argument("--site-col", default="site",
                        help="participants.tsv column naming the site (default site)")
    parser.add_argument("--diagnoses", metavar="DX[,DX…]",
                        help="keep only these diagnoses, e.g. CN,AD (default: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing split file (splits are meant to be reused)")


def run(args: argparse.Namespace) -> int:
    from cogimg.data import splits
    from cogimg.data.participants import read_participants, select_diagnoses

    options = _kind_options(args)
    tsv = args.data_root / "participants.tsv" if args.data_root.is_dir() else args.data_root
    if not tsv.is_file():
        raise FileNotFoundError(f"{tsv} does not exist")
    participants = read_participants(tsv)
    if args.diagnoses:
        participants = select_diagnoses(
            participants, [d for d in args.diagnoses.split(",") if d.strip()])
    stratify = None if args.stratify.lower() == "none" else args.stratify
    if args.kind == "kfold":
        split = splits.make_kfold_split(participants, n_folds=options["n_folds"],
                                        test_fraction=options["test_fraction"],
                                        stratify=stratify, seed=args.seed)
    else:
        split = splits.make_leave_site_out_split(participants, site_col=args.site_col,
                                                 val_fraction=options["val_fraction"],
                                                 stratify=stratify, seed=args.seed)
    json_path, tsv_path = splits.save_split(split, args.out, overwrite=args.overwrite)
    summary = splits.split_summary(split, participants, columns=list(dict.fromkeys(
        c for c in ("diagnosis", stratify, args.site_col) if c)))
    print(f"{split.kind} split of {len(participants)} participants (seed {split.seed}, "
          f"stratified by {split.stratify or 'nothing'}) → {json_path} (+ {tsv_path.name})")
    print(summary.to_string(index=False))
    return 0


def _kind_options(args: argparse.Namespace) -> dict:
    """Resolve kind-specific options; one given for the other kind is a usage error (exit 2),
    not ignored."""
    from cogimg.commands._common import UsageError

    resolved = {}
    for name, (kind, default) in _KIND_OPTIONS.items():
        value = getattr(args, name)
        if value is not None and kind != args.kind:
            raise UsageError(f"--{name.replace('_', '-')} applies to --kind {kind} only")
        resolved[name] = default if value is None else value
    return resolved
