"""The sim2real study (issue 30's Check): synthetic-cohort training, scored on real ISLES'22 scans.

Runs ``studies/sim2real.yaml`` (conventional training on the cohort's images, the same with the
real-scan head preprocessing, and domain-randomised training: one U-Net, one budget) with
:func:`cogimg.tracking.study.run_study` into ordinary run directories (finished runs are kept),
then writes ``results/sim2real[_<preset>].json`` from those directories alone:

- ``leaderboard``: every arm on its held-out **test** subjects — the fit arms on the synthetic
  test split, the ``*_real`` arms on the real cases (ISLES'22 Dice, lesion F1, AVD, HD95);
- ``real_cases``: one row per real case, arm and seed (``subjects_test.csv`` of each
  ``*_real`` run): Dice, lesion F1, AVD, predicted and true volume and their ratio, lesion
  counts, the OOD score and flag ``cogimg clinical`` would give the scan, and where the errors
  lie (false-positive and missed volume in mL, true and found lesions per lesion-volume bin);
- ``comparisons``: the study's paired comparisons (bootstrap CIs over subjects);
- ``headline``: real-case Dice and volume ratio of the randomised (default, subacute and
  embolic recipes) and conventional models and their synthetic-test Dice (the in-domain price).

    python benchmarks/sim2real.py [--out runs/studies/sim2real] [--preset tiny|full]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_study_benchmark, study_test_leaderboard, write_result

from cogimg.metrics.segmentation import detection_keys

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "sim2real.yaml"
#: Columns of a real case's row that the result file keeps.
REAL_COLUMNS = ("subject_id", "dice", "lesion_f1", "absolute_volume_difference_ml",
                "volume_pred_ml", "volume_truth_ml", "volume_ratio", "n_lesions_pred",
                "n_lesions_truth", "ood_score", "ood_flag")
#: Where the errors lie (:func:`cogimg.metrics.segmentation.detection_by_volume`): kept where
#: the rows have them (real-case runs scored before these columns existed lack them).
ERROR_COLUMNS = detection_keys()


def real_case_rows(out: Path, arms: list[str]) -> list[dict]:
    """Every ``subjects_test.csv`` row of the real-case ``arms`` (all seeds) under ``out/runs``."""
    import pandas as pd

    rows = []
    for arm in arms:
        for table in sorted((out / "runs" / arm).glob("seed*/subjects_test.csv")):
            frame = pd.read_csv(table)
            missing = [c for c in REAL_COLUMNS if c not in frame]
            if missing:
                raise KeyError(f"{table}: no column(s) {missing}")
            kept = list(REAL_COLUMNS) + [c for c in ERROR_COLUMNS if c in frame]
            for row in frame[kept].to_dict("records"):
                rows.append({"arm": arm, "seed": table.parent.name, **row})
    return rows


#: The models whose numbers the sim2real result's headline quotes (arms a study lacks are left out).
HEADLINE_MODELS = ("randomised_embolic", "randomised_subacute", "randomised", "conventional")


def headline(board, real_rows: list[dict], models=HEADLINE_MODELS) -> dict:
    """Real-case Dice and volume ratio (mean over cases and seeds; with several seeds also the
    lowest and highest seed's mean Dice) of each of ``models`` and their synthetic-test Dice;
    models the study lacks are left out."""
    import numpy as np

    out = {}
    for model in models:
        rows = [r for r in real_rows if r["arm"] == f"{model}_real"]
        if rows:
            out[f"real Dice ({model})"] = round(float(np.mean([r["dice"] for r in rows])), 3)
            seeds = sorted({r["seed"] for r in rows})
            if len(seeds) > 1:
                per_seed = [np.mean([r["dice"] for r in rows if r["seed"] == s]) for s in seeds]
                out[f"real Dice seed range ({model})"] = [round(float(min(per_seed)), 3),
                                                          round(float(max(per_seed)), 3)]
            out[f"real volume ratio ({model})"] = round(
                float(np.nanmean([r["volume_ratio"] for r in rows])), 2)
        fit = board[board["experiment"] == model] if board is not None else []
        if len(fit):
            out[f"synthetic test Dice ({model})"] = round(float(fit["dice_mean"].iloc[0]), 3)
    return out


def main(argv: list[str] | None = None, study_path: Path = STUDY,
         headline_models=HEADLINE_MODELS) -> int:
    """Run ``study_path`` (default ``studies/sim2real.yaml``; a follow-up study of the same
    shape, such as ``studies/sim2real_sulci.yaml``, works too) and write its result file."""
    args, out, study, outputs = run_study_benchmark(study_path, __doc__.splitlines()[0], argv)

    board = study_test_leaderboard(out, int(study.get("n_boot") or 1000))
    real_arms = [a["name"] for a in study["arms"] if a.get("runner") == "real_cases"]
    real_rows = real_case_rows(out, real_arms)
    comparisons = outputs.get("comparisons")
    payload = {"study": str(study_path.relative_to(REPO)), "preset": args.preset, "out": str(out),
               "seeds": study["seeds"] if args.seeds is None else args.seeds,
               "real_cases": real_rows,
               "comparisons": [] if comparisons is None else comparisons.to_dict("records"),
               "leaderboard_stage": "test",
               "leaderboard": [] if board is None else board.to_dict("records")}
    write_result(args.result_name, payload, results_dir=args.results_dir,
                 headline=headline(board, real_rows, headline_models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
