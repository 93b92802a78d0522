"""One lesion–symptom mapping run: masks (+ scores) in, statistic maps and a summary out.

:func:`run_lsm` reads the masks (and the score table, or generates scores from known regions
with ``synthetic_regions``), runs the permutation-FWE mapping (:mod:`.stats`) and writes
``t.nii.gz``, ``neglog10_p_fwe.nii.gz``, ``significant.nii.gz``, ``lesion_count.nii.gz`` (and
``truth.nii.gz`` for synthetic scores), ``lsm.png`` and ``summary.json`` into ``out``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def run_lsm(mask_dir: str | Path, out: str | Path, *, scores_path: str | Path | None = None,
            score: str = "nihss", stat: str = "regression", tail: str = "greater",
            n_perm: int = 1000, alpha: float = 0.05, min_count: int | None = None,
            downsample: int = 2, synthetic_regions: int = 0, noise_sd: float = 3.0,
            seed: int = 0) -> dict:
    """Map ``score`` against lesion presence; returns ``summary.json``'s dict.

    Args:
        mask_dir: folder of ``sub-*_lesion.nii[.gz]`` masks.
        out: output folder.
        scores_path: TSV with ``participant_id`` and ``score`` (real scores).
        stat: ``ttest`` (pooled t), ``regression`` (lesion volume in mL as covariate) or
            ``brunner-munzel`` (rank test).
        tail: ``greater`` = lesion goes with a higher (worse) score.
        n_perm, alpha: permutations and family-wise error level.
        min_count: minimum lesioned subjects per voxel (default 5 % of N, at least 2).
        downsample: mask voxels per map voxel per axis.
        synthetic_regions: ≥ 1 replaces the score by one generated from that many known
            regions (noise SD ``noise_sd`` points) and adds recovery figures (Dice, peak
            distance in mm) to the summary.

    Summary keys: subjects, tested_voxels, min_count, stat, tail, n_perm, alpha,
    fwe_threshold_t, significant_voxels, max_t, min_t, voxel_mm, load_s, mapping_s, wall_s,
    (+ the recovery figures).
    """
    import nibabel as nib
    import numpy as np

    from cogimg.data.outcome import find_soop_masks, load_outcome_dataset, read_lesion_stack
    from cogimg.io import atomic_save_nifti, atomic_write_text
    from cogimg.paradigms.lsm import maps as lsm_maps
    from cogimg.paradigms.lsm import synthetic
    from cogimg.paradigms.lsm.stats import lesion_matrix, permutation_lsm

    start = time.perf_counter()
    out = Path(out)
    if synthetic_regions < 1 and not scores_path:
        raise ValueError("give a scores table (real scores) or synthetic_regions ≥ 1")
    if synthetic_regions:
        masks = find_soop_masks(mask_dir)
        ids = sorted(masks)
        stack = read_lesion_stack([masks[i] for i in ids], ids, Path(mask_dir),
                                  downsample=downsample)
        binary = stack["maps"] * 2 >= downsample**3
        volume, affine = stack["lesion_volume_ml"], stack["map_affine"]
    else:
        cohort = load_outcome_dataset("soop", mask_dir=mask_dir, scores=scores_path,
                                      score=score, covariates=(),
                                      downsample=downsample, unmatched="exclude")
        binary, volume, affine = cohort.binary_maps(), cohort.lesion_volume_ml, cohort.map_affine
    loaded = time.perf_counter()
    matrix = lesion_matrix(binary, min_count)
    truth = None
    if synthetic_regions:
        regions = synthetic.pick_regions(binary, synthetic_regions, radius_vox=3.0,
                                         min_count=matrix.min_count, seed=seed)
        truth = np.logical_or.reduce(regions)
        scores = synthetic.synthetic_scores(binary, regions, noise_sd=noise_sd, seed=seed)
    else:
        scores = cohort.scores
    covariate = volume if stat == "regression" else None
    result = permutation_lsm(matrix.values, scores, covariate, n_perm=n_perm,
                             alpha=alpha, tail=tail, seed=seed,
                             stat="brunner-munzel" if stat == "brunner-munzel" else "glm")
    mapped = time.perf_counter()
    paths = lsm_maps.save_maps(out, matrix, result, affine)
    summary = {"subjects": int(binary.shape[0]), "tested_voxels": int(matrix.voxel_mask.sum()),
               "min_count": matrix.min_count, "stat": stat, "tail": tail,
               "n_perm": n_perm, "alpha": alpha, "fwe_threshold_t": result.threshold,
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
    return summary


def format_summary(summary: dict, out: str | Path) -> str:
    """One line: tested voxels, FWE threshold, significant voxels, recovery, timings."""
    s = summary
    text = (f"{s['subjects']} subjects, {s['tested_voxels']} voxels tested (lesioned in "
            f"≥ {s['min_count']}); {s['stat']}, {s['n_perm']} permutations: FWE threshold "
            f"t = {s['fwe_threshold_t']:.2f}, {s['significant_voxels']} significant voxels")
    if "dice" in s:
        text += (f"; vs truth: Dice {s['dice']:.3f}, top-{s['truth_voxels']} Dice "
                 f"{s['top_dice']:.3f}, peak {s['peak_distance_mm']:.1f} mm from a region, "
                 f"sensitivity {s['sensitivity']}")
    return text + (f"; load {s['load_s']:.1f} s, mapping {s['mapping_s']:.1f} s, "
                   f"total {s['wall_s']:.1f} s → {out}")
