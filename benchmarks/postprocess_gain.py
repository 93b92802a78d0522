"""What removing small predicted lesions, chosen on validation, does to test metrics (issue 29).

nnU-Net decides on its validation predictions whether post-processing helps; cogimg applies
the same rule to a lesion-size threshold (:mod:`cogimg.models.postprocess`). This benchmark
takes a trained stroke U-Net checkpoint (by default the ``conventional`` arm of
``studies/sim2real.yaml``: experiments/stroke/seg_unet.yaml, 240 steps on the 40-subject 2 mm
synthetic cohort), copies it with its run's ``config.yaml`` into a scratch run folder (so the
choice file is not written beside the original), and

1. chooses ``min_lesion_ml`` on the run's validation subjects (``cogimg postprocess``'s code,
   :func:`cogimg.inference.choose_for_checkpoint`; the per-candidate table is kept);
2. predicts the held-out test subjects once and scores them with and without the chosen
   threshold: Dice, lesion F1, ALD, AVD, HD95 (subject means, bootstrap CIs) and the paired
   difference (post-processed − raw) with its subject-bootstrap CI
   (:func:`cogimg.metrics.bootstrap.paired_mean_ci`; HD95 paired over subjects where both are
   defined);
3. repeats 1–2 with a wider candidate grid (``--wide``, up to 20 mL) to show how far a choice
   made on few validation subjects carries to the test subjects;
4. applies the checkpoint to the real ISLES'22 case(s) (``--isles``, read only) through
   ``cogimg predict``'s code with ``min_lesion_ml`` 0 and the chosen value.

Usage::

    python benchmarks/postprocess_gain.py [--ckpt RUN/checkpoints/last.ckpt]
        [--isles ../shared/data/isles22] [--candidates 0,0.05,0.1,0.2,0.5,1,2]

Output: ``results/postprocess_gain.json`` (:func:`_common.write_result`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_runtime_args, apply_runtime, write_result

from cogimg.inference import choose_for_checkpoint, load_task, predict_dataset
from cogimg.inference.postprocess import run_config, validation_datamodule
from cogimg.metrics.bootstrap import mean_ci, paired_mean_ci
from cogimg.metrics.segmentation import segmentation_report
from cogimg.models.postprocess import DEFAULT_CANDIDATES_ML, remove_small_lesions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = ("runs/studies/sim2real/runs/conventional/seed0/lightning_logs/version_0/"
                "checkpoints/last.ckpt")
#: metric key → (short name, higher is better)
METRICS = {"dice": ("Dice", True), "lesion_f1": ("lesion F1", True),
           "lesion_count_difference": ("ALD", False),
           "absolute_volume_difference_ml": ("AVD mL", False),
           "hausdorff95_mm": ("HD95 mm", False)}


def scratch_run(ckpt: Path, folder: Path) -> Path:
    """A copy of ``ckpt`` in ``folder/checkpoints/`` with its run's ``config.yaml`` beside."""
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy2(run_config(ckpt), folder / "config.yaml")
    copy = folder / "checkpoints" / ckpt.name
    shutil.copy2(ckpt, copy)
    return copy


def test_rows(ckpt: Path, threshold: float, device: str) -> tuple[list[dict], list[dict]]:
    """Per-subject ISLES'22 rows of the run's test subjects: raw argmax and post-processed."""
    task, _ = load_task(ckpt)
    task.to(device)
    datamodule = validation_datamodule(run_config(ckpt))
    raw, post = [], []
    for batch in datamodule.test_dataloader():
        with torch.inference_mode():
            pred = task.predict_volume(batch["image"].to(device)).argmax(dim=1).cpu().numpy()
        truth = batch["label"][:, 0].cpu().numpy()
        for i, sid in enumerate(batch["subject_id"]):
            spacing = [float(v) for v in np.asarray(batch["spacing_mm"][i]).reshape(3)]
            raw.append(segmentation_report(pred[i] == 1, truth[i] == 1, spacing, str(sid)))
            kept = remove_small_lesions(pred[i] == 1, spacing, threshold)
            post.append(segmentation_report(kept, truth[i] == 1, spacing, str(sid)))
    return raw, post


def compare(raw: list[dict], post: list[dict]) -> dict:
    """Means with bootstrap CIs of both, and the paired difference post − raw, per metric."""
    out = {}
    for key, (label, higher) in METRICS.items():
        a = np.array([r[key] for r in post], dtype=float)
        b = np.array([r[key] for r in raw], dtype=float)
        both = np.isfinite(a) & np.isfinite(b)
        entry = {"label": label, "higher_is_better": higher, "n_paired": int(both.sum())}
        for name, values in (("raw", b), ("postprocessed", a)):
            finite = values[np.isfinite(values)]
            low, high = mean_ci(finite, seed=0) if finite.size >= 2 else (np.nan, np.nan)
            entry[name] = {"mean": float(finite.mean()) if finite.size else np.nan,
                           "ci_low": float(low), "ci_high": float(high),
                           "n_undefined": int(values.size - finite.size)}
        diff = a[both] - b[both]
        low, high = paired_mean_ci(a[both], b[both], seed=0) if both.sum() >= 2 else (np.nan,) * 2
        entry["difference"] = {"mean": float(diff.mean()) if diff.size else np.nan,
                               "ci_low": float(low), "ci_high": float(high)}
        out[key] = entry
    return out


def real_cases(ckpt: Path, isles: Path, threshold: float, work: Path, device: str) -> list[dict]:
    """``cogimg predict`` on the real cases with min_lesion_ml 0 and ``threshold``."""
    rows = []
    for name, value in (("raw", 0.0), ("postprocessed", threshold)):
        for report in predict_dataset(ckpt, isles, work / name, device=device, overwrite=True,
                                      min_lesion_ml=value):
            if "metrics" not in report:
                continue
            m = report["metrics"]
            rows.append({"subject_id": report["subject_id"], "variant": name,
                         "min_lesion_ml": value,
                         **{k: float(m[k]) for k in (*METRICS, "volume_pred_ml",
                                                     "volume_truth_ml", "n_lesions_pred",
                                                     "n_lesions_truth")}})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=REPO / DEFAULT_CKPT)
    parser.add_argument("--isles", type=Path, default=REPO.parent / "shared/data/isles22")
    parser.add_argument("--candidates", default=",".join(f"{c:g}" for c in DEFAULT_CANDIDATES_ML))
    parser.add_argument("--wide", default="0,0.05,0.1,0.2,0.5,1,2,5,10,20")
    parser.add_argument("--results-dir", type=Path, default=None)
    add_runtime_args(parser, threads=1)
    args = parser.parse_args()
    if not args.ckpt.is_file():
        parser.error(f"no checkpoint {args.ckpt}: train it with `cogimg study studies/sim2real.yaml "
                     "--out runs/studies/sim2real` (the default) or pass --ckpt")
    device = str(apply_runtime(args))
    candidates = [float(c) for c in args.candidates.split(",")]
    with tempfile.TemporaryDirectory(prefix="postprocess-gain-") as tmp:
        ckpt = scratch_run(args.ckpt.resolve(), Path(tmp) / "run")
        start = time.perf_counter()
        choice = choose_for_checkpoint(ckpt, candidates, device=device)
        choose_s = time.perf_counter() - start
        threshold = float(choice["min_lesion_ml"])
        raw, post = test_rows(ckpt, threshold, device)
        wide = choose_for_checkpoint(ckpt, [float(c) for c in args.wide.split(",")],
                                     device=device, overwrite=True)
        wide_raw, wide_post = test_rows(ckpt, float(wide["min_lesion_ml"]), device)
        real = real_cases(ckpt, args.isles, threshold, Path(tmp) / "real", device) \
            if args.isles.is_dir() else []
    test = compare(raw, post)
    payload = {
        "checkpoint": str(args.ckpt.relative_to(REPO) if args.ckpt.is_relative_to(REPO)
                          else args.ckpt),
        "note": "CPU, one thread, on a shared machine (other jobs running): times are rough",
        "rule": choice["rule"], "chosen_min_lesion_ml": threshold,
        "validation_subjects": choice["subjects"], "validation_table": choice["table"],
        "choose_seconds": round(choose_s, 1),
        "test_subjects": [r["subject_id"] for r in raw], "test": test,
        "test_rows": [{"variant": v, **r} for v, rows in (("raw", raw), ("postprocessed", post))
                      for r in rows],
        "real_cases": real,
        "wide_grid": {"candidates": wide["candidates"],
                      "chosen_min_lesion_ml": float(wide["min_lesion_ml"]),
                      "validation_table": wide["table"], "test": compare(wide_raw, wide_post)},
    }
    headline = {"chosen min lesion (mL)": threshold}
    for key in ("dice", "lesion_f1", "hausdorff95_mm"):
        d = test[key]
        headline[f"test {d['label']} raw → post"] = (f"{d['raw']['mean']:.3f} → "
                                                     f"{d['postprocessed']['mean']:.3f}")
    write_result("postprocess_gain", payload, args.results_dir, device=device, headline=headline)
    for key, d in test.items():
        print(f"{d['label']:>10}: raw {d['raw']['mean']:.3f}  post {d['postprocessed']['mean']:.3f}"
              f"  diff {d['difference']['mean']:+.3f} [{d['difference']['ci_low']:+.3f}, "
              f"{d['difference']['ci_high']:+.3f}]")
    w = payload["wide_grid"]
    print(f"wide grid: chose {w['chosen_min_lesion_ml']:g} mL; test Dice difference "
          f"{w['test']['dice']['difference']['mean']:+.3f}")
    for row in real:
        print(f"real {row['subject_id']} {row['variant']}: Dice {row['dice']:.3f}, lesion F1 "
              f"{row['lesion_f1']:.3f}, ALD {row['lesion_count_difference']:.0f}, HD95 "
              f"{row['hausdorff95_mm']:.1f} mm, volume {row['volume_pred_ml']:.1f}/"
              f"{row['volume_truth_ml']:.1f} mL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
