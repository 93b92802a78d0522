"""``cogimg check DATA_ROOT``: validate a BIDS-like dataset and summarise what it holds.

Prints subjects per diagnosis and site, shapes and spacings per modality, label statistics
(voxels, volume in mL, 26-connected components) and then every problem and skipped file
(:mod:`cogimg.data.statistics`). A subject-session missing a modality its preset requires is
an error: ``--preset NAME`` for every subject, else the presets made for its diagnosis
(:func:`cogimg.data.validation.preset_modalities`: stroke needs dwi and adc, AD/PD T1w, CN none);
``--preset none`` checks only ``--required``. Exits 1 when the dataset (or the ``--split``
file) has any error, 0 otherwise. Resting-state BOLD (BIDS ``func/`` or fMRIPrep derivatives)
gets its own section (:func:`cogimg.data.func.checks.func_summary`): 4D, a TR in the header
or sidecar (agreeing), ``--min-volumes``, confounds rows = volumes, the parcellation
(``--atlas``/``--atlas-labels``, default the one ``cogimg synth --bold`` wrote) on the BOLD
grid; high-motion runs are listed (warnings: flagged, kept).
"""

from __future__ import annotations

import argparse

HELP = "validate a BIDS dataset (NIfTI integrity, labels, grids, participants) and summarise it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_root", metavar="DATA_ROOT", help="dataset folder holding participants.tsv")
    parser.add_argument("--required", default="", metavar="MODS",
                        help="comma-separated modality keys every subject must have, e.g. dwi,adc")
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="disease preset every subject must have the modalities of (default: the "
                             "presets of each subject's diagnosis; 'none' = only --required)")
    parser.add_argument("--split", metavar="FILE", help="split JSON to check for participant leakage")
    parser.add_argument("--out", metavar="JSON", help="also write the summary and problems to this JSON file")
    parser.add_argument("--atlas", metavar="NIFTI", help="parcellation label image to check BOLD runs against")
    parser.add_argument("--atlas-labels", metavar="TSV", help="its region table (index, name, network)")
    parser.add_argument("--min-volumes", type=int, default=50, metavar="T",
                        help="fewest volumes a BOLD run may have (default 50)")
    parser.add_argument("--headers-only", action="store_true",
                        help="skip voxel checks (truncation, NaN, label values): fast on large datasets")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cogimg.commands._common import UsageError
    from cogimg.data.bids import load_dataset
    from cogimg.data.func.checks import format_func_summary, func_summary
    from cogimg.data.statistics import check_split_file, dataset_ok, format_summary, summarise
    from cogimg.data.validation import check_preset_modalities
    from cogimg.diseases import PRESETS
    from cogimg.io import atomic_write_text

    if args.preset not in (None, "none", *PRESETS):
        raise UsageError(f"--preset {args.preset}: unknown preset; known: {sorted(PRESETS)} or none")
    required = tuple(m.strip() for m in args.required.split(",") if m.strip())
    dataset = load_dataset(args.data_root, required_modalities=required, strict=False,
                           validate_voxels=not args.headers_only)
    if args.preset != "none":
        dataset.problems += check_preset_modalities(dataset.subjects, args.preset)
    summary = summarise(dataset, read_labels=not args.headers_only)
    func = func_summary(args.data_root, args.atlas, args.atlas_labels, args.min_volumes)
    if func is not None:
        summary["problems"] += [{"severity": p.severity, "path_or_key": p.path_or_key,
                                 "message": p.message} for p in func.pop("problems")]
        summary["ok"] = summary["ok"] and func["ok"]
        summary["func"] = func
    if args.split:
        summary["split"] = check_split_file(args.split, dataset)
    text = format_summary(summary)
    if func is not None:  # the functional block goes just before the problem list
        head, sep, tail = text.partition("Problems: ")
        text = head + "\n".join(format_func_summary(func)) + "\n" + sep + tail
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(summary, indent=2) + "\n")
    return 0 if dataset_ok(summary) else 1
