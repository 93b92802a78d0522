"""``cogimg lsm``: voxel-wise lesion–symptom mapping with permutation FWE correction.

    cogimg lsm --mask-dir ../shared/data/soop_masks/lesions \\
               --scores ../shared/data/soop_masks/participants_cleaned.tsv --score nihss \\
               --stat regression --n-perm 1000 --out runs/lsm/soop_nihss
    cogimg lsm --mask-dir ../shared/data/soop_masks/lesions --synthetic-regions 2 \\
               --out runs/lsm/synthetic          # every mask, score from 2 known regions

Writes ``t.nii.gz``, ``neglog10_p_fwe.nii.gz``, ``significant.nii.gz``, ``lesion_count.nii.gz``
(and ``truth.nii.gz`` with ``--synthetic-regions``), ``lsm.png`` and ``summary.json``; prints
the tested voxels, the FWE threshold, significant voxels, Dice against the truth (synthetic)
and the wall time (:mod:`cogimg.paradigms.lsm.pipeline`).
"""

from __future__ import annotations

import argparse

HELP = ("voxel-wise lesion-symptom mapping (t-test / volume-adjusted regression / "
        "Brunner-Munzel, permutation FWE)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mask-dir", required=True, help="folder of sub-*_lesion.nii[.gz] masks")
    parser.add_argument("--scores", help="TSV with participant_id and the score column")
    parser.add_argument("--score", default="nihss", help="score column (default nihss)")
    parser.add_argument("--stat", choices=("ttest", "regression", "brunner-munzel"),
                        default="regression",
                        help="ttest: pooled two-sample t; regression: lesion volume as covariate; "
                             "brunner-munzel: rank test (N× dearer per permutation)")
    parser.add_argument("--tail", choices=("greater", "less", "two-sided"), default="greater",
                        help="greater: lesion goes with a higher (worse) score (default)")
    parser.add_argument("--n-perm", type=int, default=1000, help="permutations (default 1000)")
    parser.add_argument("--alpha", type=float, default=0.05, help="FWE level (default 0.05)")
    parser.add_argument("--min-count", type=int, help="min lesioned subjects per voxel "
                        "(default 5%% of N, at least 2)")
    parser.add_argument("--downsample", type=int, default=2,
                        help="mask voxels per map voxel per axis (default 2: 1 mm → 2 mm)")
    parser.add_argument("--synthetic-regions", type=int, default=0,
                        help="replace the score by one generated from N known regions and "
                             "report Dice of the significant map against them")
    parser.add_argument("--noise-sd", type=float, default=3.0,
                        help="synthetic score noise SD (points; a destroyed region adds 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    from cogimg.commands._common import UsageError
    from cogimg.paradigms.lsm.pipeline import format_summary, run_lsm

    if args.synthetic_regions < 1 and not args.scores:
        raise UsageError("give --scores (real scores) or --synthetic-regions N")
    summary = run_lsm(args.mask_dir, args.out, scores_path=args.scores, score=args.score,
                      stat=args.stat, tail=args.tail, n_perm=args.n_perm, alpha=args.alpha,
                      min_count=args.min_count, downsample=args.downsample,
                      synthetic_regions=args.synthetic_regions, noise_sd=args.noise_sd,
                      seed=args.seed)
    print(format_summary(summary, args.out))
    return 0
