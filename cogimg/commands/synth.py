"""``cogimg synth --out DIR --subjects N --seed S``: generate the synthetic cohort.

Writes a BIDS-like tree (seven modalities per subject on one MNI152 grid, lesion and
microbleed labels, per-subject ground truth) that ``cogimg check`` accepts; see
:func:`cogimg.data.synth.generate_cohort`. ``--preview`` adds a PNG montage (one subject
per diagnosis × modality with overlays, plus one T1w per site); given an existing cohort
and no ``--subjects``, it only draws the montage.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

HELP = "generate the synthetic multi-site stroke/AD/PD cohort with ground truth (BIDS-like)"


def _proportions(text: str) -> dict[str, float]:
    """``CN=0.4,AD=0.3`` → ``{"CN": 0.4, "AD": 0.3}``."""
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--proportions: expected DX=WEIGHT, got {item!r}") from None
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    parser.add_argument("--subjects", type=int, metavar="N", help="number of subjects")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--spacing", type=float, default=2.0, metavar="MM", help="isotropic voxel size in mm (default 2)")
    parser.add_argument("--sites", type=int, default=3, metavar="K", help="number of scanner sites (default 3)")
    parser.add_argument("--diseases", default="stroke,ad,pd", help="comma list of stroke, ad, pd (default all)")
    parser.add_argument("--difficulty", default="medium", choices=("easy", "medium", "hard"))
    parser.add_argument("--site-spread", type=float, default=1.0, metavar="S",
                        help="multiply the difficulty's scanner differences between sites (contrast, response "
                             "curve, blur, bias field) by S (default 1)")
    parser.add_argument("--proportions", type=_proportions, metavar="DX=W,…",
                        help="diagnosis weights, e.g. CN=0.4,AD=0.2 (default CN .30, MCI .15, AD .15, PD .20, "
                             "stroke .20); a diagnosis not named keeps its default weight (MCI=0 drops MCI)")
    parser.add_argument("--site-confound", type=float, default=0.3, metavar="C",
                        help="0 = sites balanced across diagnoses … 1 = each diagnosis at its own site (default 0.3)")
    parser.add_argument("--bold", action="store_true",
                        help="also write resting-state fMRI (BIDS func + fMRIPrep-like derivative with "
                             "confounds), its parcellation and the perturbed-edge ground truth")
    parser.add_argument("--bold-volumes", type=int, default=150, metavar="T",
                        help="volumes per BOLD run (default 150; with --bold)")
    parser.add_argument("--bold-tr", type=float, default=2.0, metavar="S",
                        help="repetition time of site 1 in seconds; other sites differ (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--preview", nargs="?", const="", metavar="PNG",
                        help="also save a montage PNG (default DIR/preview.png)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _command_line(args: argparse.Namespace) -> str:
    """The equivalent command line, for the cohort's README."""
    parts = ["cogimg", "synth", "--out", str(args.out), "--subjects", str(args.subjects),
             "--seed", str(args.seed), "--spacing", f"{args.spacing:g}", "--sites", str(args.sites),
             "--diseases", args.diseases, "--difficulty", args.difficulty,
             "--site-confound", f"{args.site_confound:g}"]
    if args.site_spread != 1:
        parts += ["--site-spread", f"{args.site_spread:g}"]
    if args.bold:
        parts += ["--bold", "--bold-volumes", str(args.bold_volumes), "--bold-tr", f"{args.bold_tr:g}"]
    if args.proportions:
        parts += ["--proportions", ",".join(f"{k}={v:g}" for k, v in args.proportions.items())]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from cogimg.commands._common import UsageError
    from cogimg.data.synth import generate_cohort
    from cogimg.data.synth.preview import make_preview

    out = Path(args.out)
    if args.subjects is None:
        if args.preview is None:
            raise UsageError("--subjects is required (or pass --preview to draw an existing cohort)")
        if not (out / "participants.tsv").is_file():
            raise UsageError(f"{out} holds no cohort (no participants.tsv) to preview")
    else:
        try:
            generate_cohort(
                out, args.subjects, args.seed, spacing_mm=args.spacing, sites=args.sites,
                diseases=args.diseases, difficulty=args.difficulty,
                site_spread=args.site_spread, workers=args.workers,
                proportions=args.proportions, site_confound=args.site_confound,
                overwrite=args.overwrite, progress=not args.no_progress,
                command=_command_line(args), bold=args.bold, bold_volumes=args.bold_volumes,
                bold_tr=args.bold_tr,
            )
        except ValueError as exc:  # out-of-range options; a non-empty --out is exit 1
            raise UsageError(str(exc)) from None
        print(f"wrote {args.subjects} subjects to {out}")
    if args.preview is not None:
        png = Path(args.preview) if args.preview else out / "preview.png"
        make_preview(out, png)
        print(f"preview: {png}")
    return 0
