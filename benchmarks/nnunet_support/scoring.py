"""Scoring and reporting of benchmarks/vs_nnunet.py: both contenders' masks scored by cogimg's
ISLES'22 metric code, cogimg's also with its chosen lesion-size threshold, and the table,
headline and figure built from a run's per-budget records.

A budget's record (what ``vs_nnunet.run_budget`` returns) holds ``budget_min``, the
measurements ``<tool>_train`` (``train_s``, ``peak_rss_gb``) and ``<tool>_predict_<where>_<tta>``
(``per_case_s``, ``peak_rss_gb``) of each tool (``cogimg``, ``nnunet``), and the scores
``scores_<where>_<tta>`` of :func:`score_arms` (``where``: ``test`` or ``real``; ``tta``:
``mirror`` or ``no_tta``).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from cogimg.metrics.bootstrap import mean_ci, paired_mean_ci
from cogimg.metrics.segmentation import segmentation_report, summarise
from cogimg.models.postprocess import remove_small_lesions

#: cogimg's scored arms (raw masks, masks with the chosen lesion-size threshold) and nnU-Net
ARMS = {"cogimg": "cogimg", "cogimg_pp": "cogimg+pp", "nnunet": "nnU-Net"}
#: metric key in segmentation_report → its column in the table
METRICS = {"dice": "Dice", "lesion_f1": "lesion F1", "absolute_volume_difference_ml": "AVD mL",
           "lesion_count_difference": "ALD", "hausdorff95_mm": "HD95 mm"}


def score(pred_dir: Path, truths: dict[str, Path], suffix: str = ".nii.gz",
          min_lesion_ml: float = 0.0) -> list[dict]:
    """Per-subject rows of ``segmentation_report`` for ``pred_dir/<id><suffix>`` vs ``truths``,
    the prediction's lesions smaller than ``min_lesion_ml`` (mL) removed first."""
    rows = []
    for sid, truth_path in sorted(truths.items()):
        truth_img = nib.load(str(truth_path))
        truth = np.asarray(truth_img.dataobj) > 0
        pred = np.asarray(nib.load(str(pred_dir / f"{sid}{suffix}")).dataobj) > 0
        if pred.shape != truth.shape:
            raise ValueError(f"{pred_dir / sid}: prediction {pred.shape} vs truth {truth.shape}")
        spacing = truth_img.header.get_zooms()[:3]
        if min_lesion_ml > 0:
            pred = np.asarray(remove_small_lesions(pred, spacing, min_lesion_ml))
        rows.append(segmentation_report(pred, truth, spacing, sid))
    return rows


def summarise_rows(rows: list[dict], n_boot: int) -> dict:
    """:func:`cogimg.metrics.segmentation.summarise`'s mean and counts of defined and undefined
    values per metric, with a subject-bootstrap 95 % CI of the mean."""
    summary = {}
    for key, stats in summarise(rows).items():
        defined = [r[key] for r in rows if not math.isnan(r[key])]
        low, high = mean_ci(defined, n_boot=n_boot) if defined else (math.nan, math.nan)
        summary[key] = {"mean": stats["mean"], "ci": [low, high], "n": stats["n"],
                        "n_undefined": stats["n_undefined"]}
    return summary


def paired(rows_a: list[dict], rows_b: list[dict], n_boot: int) -> dict:
    """``rows_a`` − ``rows_b`` per metric on the subjects where both are defined."""
    out = {}
    for key in METRICS:
        a = np.array([r[key] for r in rows_a], dtype=float)
        b = np.array([r[key] for r in rows_b], dtype=float)
        ok = ~(np.isnan(a) | np.isnan(b))
        if not ok.any():
            out[key] = {"delta": float("nan"), "ci": [float("nan")] * 2, "n": 0}
            continue
        low, high = paired_mean_ci(a[ok], b[ok], n_boot=n_boot)
        out[key] = {"delta": float((a[ok] - b[ok]).mean()), "ci": [low, high], "n": int(ok.sum())}
    return out


def score_arms(cogimg_pred: Path, nnunet_pred: Path, truths: dict[str, Path],
               min_lesion_ml: float, n_boot: int) -> dict:
    """Per-subject rows and their summary for each of :data:`ARMS` (``cogimg_pred`` scored as
    it is and with lesions under ``min_lesion_ml`` removed), and the paired difference of each
    cogimg arm minus nnU-Net (``paired_<arm>_minus_nnunet``)."""
    rows = {"cogimg": score(cogimg_pred, truths, "_pred_msk.nii.gz"),
            "cogimg_pp": score(cogimg_pred, truths, "_pred_msk.nii.gz", min_lesion_ml),
            "nnunet": score(nnunet_pred, truths)}
    scores = {arm: {"summary": summarise_rows(r, n_boot), "subjects": r}
              for arm, r in rows.items()}
    for arm in ("cogimg", "cogimg_pp"):
        scores[f"paired_{arm}_minus_nnunet"] = paired(rows[arm], rows["nnunet"], n_boot)
    return scores

def result_rows(budgets: list[dict]) -> list[dict]:
    """One flat row per (subjects, budget, TTA, model): each metric's mean [CI], the paired
    ΔDice against nnU-Net [CI] (test subjects), training time, inference time per case and
    peak RSS of the model's training or prediction, whichever is larger."""
    rows = []
    for where, rec, tta, (arm, label) in itertools.product(
            ("test", "real"), budgets, ("mirror", "no_tta"), ARMS.items()):
        scores = rec.get(f"scores_{where}_{tta}")
        if not scores:
            continue
        tool = arm.removesuffix("_pp")
        row = {"subjects": where, "budget_min": rec["budget_min"], "tta": tta, "model": label}
        for key, name in METRICS.items():
            m = scores[arm]["summary"][key]
            ci = f" [{m['ci'][0]:.3g}, {m['ci'][1]:.3g}]" if m["n"] > 1 else ""
            row[name] = f"{m['mean']:.3g}{ci}"
        d = scores.get(f"paired_{arm}_minus_nnunet", {}).get("dice")
        row["ΔDice vs nnU-Net [CI]"] = (f"{d['delta']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
                                        if d and d["n"] > 1 else "")
        train, pred = rec[f"{tool}_train"], rec[f"{tool}_predict_{where}_{tta}"]
        row.update({"train s": round(train["train_s"]), "infer s/case": pred["per_case_s"],
                    "peak RSS GB": max(train["peak_rss_gb"], pred["peak_rss_gb"])})
        rows.append(row)
    return rows


def headline(budgets: list[dict]) -> dict[str, str]:
    """Test Dice of the three arms with mirroring, ΔDice of cogimg+pp and the inference-time
    ratio, per budget."""
    out = {}
    for rec in budgets:
        scores, tag = rec["scores_test_mirror"], f"{rec['budget_min']:g} min"
        dice = {arm: scores[arm]["summary"]["dice"]["mean"] for arm in ARMS}
        out[f"test Dice cogimg / cogimg+pp / nnU-Net, {tag}, mirror TTA"] = " / ".join(
            f"{dice[arm]:.3f}" for arm in ARMS)
        d = scores["paired_cogimg_pp_minus_nnunet"]["dice"]
        out[f"ΔDice cogimg+pp − nnU-Net, {tag}"] = (
            f"{d['delta']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
        cogimg_s, nnunet_s = (rec[f"{tool}_predict_test_mirror"]["per_case_s"]
                              for tool in ("cogimg", "nnunet"))
        out[f"inference per case cogimg / nnU-Net, {tag}, mirror TTA"] = (
            f"{cogimg_s / nnunet_s:.2f}")
    return out


def markdown_table(rows: list[dict], where: str) -> str:
    rows = [r for r in rows if r["subjects"] == where]
    columns = [c for c in rows[0] if c != "subjects"] if rows else []
    return "\n".join([f"### {where} subjects", "", "| " + " | ".join(columns) + " |",
                      "|" + "---|" * len(columns)]
                     + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows])


def figure(budgets: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    # cogimg+pp shares cogimg's training time and is often equal to it: drawn hollow and
    # nudged right by 1 % of the longest budget, so that neither hides the other
    nudge = 0.01 * max(rec["budget_min"] for rec in budgets)
    for (arm, label), colour in zip(ARMS.items(), ("C0", "C2", "C3")):
        for tta, style in (("mirror", "-o"), ("no_tta", "--s")):
            xs, ys, lo, hi = [], [], [], []
            for rec in budgets:
                s = rec.get(f"scores_test_{tta}", {}).get(arm)
                if s is None:
                    continue
                m = s["summary"]["dice"]
                xs.append(rec[f"{arm.removesuffix('_pp')}_train"]["train_s"] / 60
                          + (nudge if arm == "cogimg_pp" else 0.0))
                ys.append(m["mean"])
                lo.append(m["mean"] - m["ci"][0])
                hi.append(m["ci"][1] - m["mean"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, color=colour, capsize=3,
                            mfc="none" if arm == "cogimg_pp" else colour,
                            label=f"{label} ({'mirror TTA' if tta == 'mirror' else 'no TTA'})")
    ax.set_xlabel("training wall time (min, CPU)")
    ax.set_ylabel("test Dice (mean, 95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
