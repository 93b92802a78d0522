"""``cogimg lsm``: voxel-wise lesion–symptom mapping with permutation FWE correction.

    cogimg lsm --mask-dir ../shared/data/soop_masks/lesions \\
               --scores ../shared/data/soop_masks/participants_cleaned.tsv --score nihss \\
               --stat regression --n-perm 1000 --out runs/lsm/soop_nihss
    cogimg lsm --mask-dir ../shared/data/soop_masks/lesions --synthetic-regions 2 \\
               --out runs/lsm/synthetic          # every mask, score from 2 known regions

Writes ``t.nii.gz``, ``neglog10_p_fwe.nii.gz``, ``significant.nii.gz``, ``lesion_count.nii.gz``
(and ``truth.nii.gz`` with ``--synthetic-regions``), ``lsm.png`` and ``summary.json``; prints
the tested voxels, the FWE threshold, significant voxels, Dice against the truth (synthetic)
and the wall time.
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
    import json
    import time
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    from cogimg.data.outcome import find_soop_masks, load_outcome_dataset, read_lesion_stack
    from cogimg.io import atomic_save_nifti, atomic_write_text
    from cogimg.paradigms.lsm import maps as lsm_maps
    from cogimg.paradigms.lsm import synthetic
    from cogimg.paradigms.lsm.stats import lesion_matrix, permutation_lsm

    start = time.perf_counter()
    out = Path(args.out)
    if args.synthetic_regions < 1 and not args.scores:
        raise SystemExit("cogimg lsm: give --scores (real scores) or --synthetic-regions N")
    if args.synthetic_regions:
        masks = find_soop_masks(args.mask_dir)
        ids = sorted(masks)
        stack = read_lesion_stack([masks[i] for i in ids], ids, Path(args.mask_dir),
                                  downsample=args.downsample)
        binary = stack["maps"] * 2 >= args.downsample**3
        volume, affine = stack["lesion_volume_ml"], stack["map_affine"]
    else:
        cohort = load_outcome_dataset("soop", mask_dir=args.mask_dir, scores=args.scores,
                                      score=args.score, covariates=(),
                                      downsample=args.downsample, unmatched="exclude")
        binary, volume, affine = cohort.binary_maps(), cohort.lesion_volume_ml, cohort.map_affine
    loaded = time.perf_counter()
    matrix = lesion_matrix(binary, args.min_count)
    truth = None
    if args.synthetic_regions:
        regions = synthetic.pick_regions(binary, args.synthetic_regions, radius_vox=3.0,
                                         min_count=matrix.min_count, seed=args.seed)
        truth = np.logical_or.reduce(regions)
        scores = synthetic.synthetic_scores(binary, regions, noise_sd=args.noise_sd, seed=args.seed)
    else:
        scores = cohort.scores
    covariate = volume if args.stat == "regression" else None
    result = permutation_lsm(matrix.values, scores, covariate, n_perm=args.n_perm,
                             alpha=args.alpha, tail=args.tail, seed=args.seed,
                             stat="brunner-munzel" if args.stat == "brunner-munzel" else "glm")
    mapped = time.perf_counter()
    paths = lsm_maps.save_maps(out, matrix, result, affine)
    summary = {"subjects": int(binary.shape[0]), "tested_voxels": int(matrix.voxel_mask.sum()),
               "min_count": matrix.min_count, "stat": args.stat, "tail": args.tail,
               "n_perm": args.n_perm, "alpha": args.alpha, "fwe_threshold_t": result.threshold,
               "significant_voxels": int(result.significant.sum()),
               "max_t": float(result.t.max()), "min_t": float(result.t.min()),
               "voxel_mm": float(abs(np.linalg.det(affine[:3, :3])) ** (1 / 3)),
               "load_s": loaded - start, "mapping_s": mapped - loaded}
    if truth is not None:
        found = matrix.to_volume(result.significant) > 0
        summary.update(synthetic.recovery(matrix.to_volume(result.t), found, regions,
                                          summary["voxel_mm"]))
        atomic_save_nifti(nib.Nifti1Image(truth.astype(np.uint8), affine), out / "truth.nii.gz")
    lsm_maps.save_figure(out / "lsm.png", paths["t"], paths["lesion_count"], result.threshold)
    summary["wall_s"] = time.perf_counter() - start
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"{summary['subjects']} subjects, {summary['tested_voxels']} voxels tested "
          f"(lesioned in ≥ {matrix.min_count}); {args.stat}, {args.n_perm} permutations: "
          f"FWE threshold t = {result.threshold:.2f}, {summary['significant_voxels']} significant "
          f"voxels" + (f"; vs truth: Dice {summary['dice']:.3f}, top-{summary['truth_voxels']} "
                       f"Dice {summary['top_dice']:.3f}, peak {summary['peak_distance_mm']:.1f} mm "
                       f"from a region, sensitivity {summary['sensitivity']}"
                       if truth is not None else "")
          + f"; load {summary['load_s']:.1f} s, mapping {summary['mapping_s']:.1f} s, "
          f"total {summary['wall_s']:.1f} s → {out}")
    return 0
