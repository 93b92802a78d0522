"""From the synthetic cohort to a real scan: conventional vs domain-randomised training (issue 30).

Arms (same network, same optimiser, same number of training steps, same synthetic cohort and
split; every arm a run directory ``<out>/<arm>/``):

- ``conventional``: the cohort's own images, light augmentation, normalisation in the
  "above the mean" foreground (``experiments/stroke/seg_unet.yaml``);
- ``conventional_head``: the same with the real-scan preprocessing (``foreground: head``,
  :mod:`cogimg.data.real_scan`) — the effect of the preprocessing alone;
- ``randomised``: images redrawn from the label maps at every draw
  (``experiments/stroke/synthstroke_unet.yaml``: ``randomise: synthstroke``,
  ``foreground: head``).

Each arm is evaluated on the cohort's held-out synthetic test subjects (its own images; the
split's test set, never seen in training or validation) and on every real case under
``--isles`` (a test only: nothing is tuned on it) with the ISLES'22 metrics (Dice, lesion F1,
absolute volume difference, predicted/true volume ratio) and cogimg's OOD score of the scan
against the training inputs (:func:`cogimg.data.ood.ood_report`, what ``cogimg clinical``
flags). Writes ``<out>/<arm>/metrics.json`` and the side-by-side ``--results`` JSON.

Usage::

    python benchmarks/sim2real.py --data DATA/synth_stroke --isles ../shared/data/isles22 \\
        --out runs/sim2real --steps 240 [--arms conventional,randomised]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cogimg.cli import main as cli_main
from cogimg.data.datamodules import PatchDataModule
from cogimg.data.ood import ood_report, scan_features
from cogimg.inference import (
    predict_dataset,
    preprocessed_subjects,
    preprocessing_config,
    read_checkpoint,
    subjects_from_input,
)
from cogimg.io import atomic_write_text

ARMS = {
    "conventional": ("experiments/stroke/seg_unet.yaml", ["--data.init_args.augmentation", "light"]),
    "conventional_head": ("experiments/stroke/seg_unet.yaml",
                          ["--data.init_args.augmentation", "light",
                           "--data.init_args.foreground", "head"]),
    "randomised": ("experiments/stroke/synthstroke_unet.yaml", []),
}
NETWORK = "{channels: [8, 16, 32, 64], strides: [2, 2, 2]}"


def train(arm: str, data: Path, run: Path, cache: Path, steps: int, seed: int,
          max_minutes: float) -> Path:
    """Fit one arm; returns its last checkpoint."""
    config, extra = ARMS[arm]
    args = ["fit", "--config", config, "--seed_everything", str(seed),
            "--trainer.max_steps", str(steps), "--trainer.max_epochs", "1000",
            "--trainer.max_time", f"00:00:{int(max_minutes):02d}:00",
            "--trainer.limit_val_batches", "4", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.precision", "32-true",
            "--trainer.default_root_dir", str(run / "train"),
            "--model.init_args.model_kwargs", NETWORK,
            "--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(cache),
            "--data.init_args.num_workers", "0", "--data.init_args.seed", str(seed), *extra]
    if cli_main(args) != 0:
        raise RuntimeError(f"training arm {arm!r} failed")
    ckpts = sorted((run / "train").glob("lightning_logs/version_*/checkpoints/*.ckpt"),
                   key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise RuntimeError(f"arm {arm!r} wrote no checkpoint under {run / 'train'}")
    return ckpts[-1]


def test_subjects(data: Path, cache: Path, seed: int) -> list[str]:
    """The held-out synthetic test participants of the split every arm trains on."""
    dm = PatchDataModule(data, preset="stroke", cache_dir=cache, seed=seed)
    dm.setup("test")
    return sorted({s["participant_id"] for s in dm.subjects["test"]})


def evaluate(ckpt: Path, inputs: list[Path], out: Path) -> list[dict]:
    """ISLES'22 metrics and OOD score of every subject under ``inputs``."""
    loaded = read_checkpoint(ckpt)
    modalities = tuple(loaded.data["modalities"])
    rows = []
    for path in inputs:
        for report in predict_dataset(ckpt, path, out, overwrite=True):
            m = report["metrics"]
            rows.append({"subject_id": report["subject_id"], "dice": m["dice"],
                         "lesion_f1": m["lesion_f1"],
                         "avd_ml": m["absolute_volume_difference_ml"],
                         "volume_pred_ml": m["volume_pred_ml"], "volume_truth_ml": m["volume_truth_ml"],
                         "volume_ratio": (m["volume_pred_ml"] / m["volume_truth_ml"]
                                          if m["volume_truth_ml"] > 0 else None),
                         "n_lesions_pred": m["n_lesions_pred"], "n_lesions_truth": m["n_lesions_truth"]})
        subjects = subjects_from_input(path, modalities, loaded.data["preset"])
        for subject, processed, _ in preprocessed_subjects(subjects, preprocessing_config(loaded.data),
                                                           modalities):
            features = scan_features(processed["cache_entry"], modalities)
            ood = ood_report(features, loaded.input_summary)
            row = next(r for r in rows if r["subject_id"] == subject["subject_id"])
            row["ood_score"] = ood["score"] if ood else None
            row["ood_flag"] = ood["flag"] if ood else None
    return rows


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic stroke cohort "
                        "(cogimg synth --diseases stroke; with desc-tissue_dseg maps)")
    parser.add_argument("--isles", type=Path, default=Path("../shared/data/isles22"))
    parser.add_argument("--out", type=Path, default=Path("runs/sim2real"))
    parser.add_argument("--results", type=Path, default=Path("results/sim2real.json"))
    parser.add_argument("--steps", type=int, default=240, help="training steps per arm")
    parser.add_argument("--max-minutes", type=float, default=12.0, help="wall-clock cap per arm")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    if unknown := [a for a in arms if a not in ARMS]:
        parser.error(f"unknown arm(s) {unknown}; expected {list(ARMS)}")
    cache = args.out / "cache"
    synth_ids = test_subjects(args.data, cache, args.seed)
    table = {}
    for arm in arms:
        run = args.out / arm
        start = time.perf_counter()
        ckpt = train(arm, args.data, run, cache, args.steps, args.seed, args.max_minutes)
        train_s = time.perf_counter() - start
        steps_done = int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
        synth = evaluate(ckpt, [args.data / pid for pid in synth_ids], run / "pred_synthetic")
        real = evaluate(ckpt, [args.isles], run / "pred_real")
        metrics = {"arm": arm, "config": ARMS[arm][0], "overrides": ARMS[arm][1],
                   "checkpoint": str(ckpt), "train_seconds": round(train_s, 1),
                   "steps": args.steps, "steps_done": steps_done, "network": NETWORK,
                   "synthetic_test": {"n": len(synth), "dice": _mean(synth, "dice"),
                                      "lesion_f1": _mean(synth, "lesion_f1"),
                                      "volume_ratio": _mean(synth, "volume_ratio"),
                                      "ood_score": _mean(synth, "ood_score"), "rows": synth},
                   "real": real}
        atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=1) + "\n")
        table[arm] = metrics
        print(f"{arm}: synthetic test Dice {metrics['synthetic_test']['dice']:.3f} | real: "
              + "; ".join(f"{r['subject_id']} Dice {r['dice']:.3f} F1 {r['lesion_f1']:.3f} "
                          f"AVD {r['avd_ml']:.2f} mL ratio {r['volume_ratio']:.2f} "
                          f"OOD {r['ood_score']}" for r in real), flush=True)
    for arm in ARMS:  # arms run by an earlier invocation into the same --out
        earlier = args.out / arm / "metrics.json"
        if arm not in table and earlier.is_file():
            table[arm] = json.loads(earlier.read_text(encoding="utf-8"))
    result = {"command": "python benchmarks/sim2real.py " + " ".join(argv),
              "machine": "shared 2-core CPU, one thread (OMP_NUM_THREADS=1), contended",
              "synthetic_test_subjects": synth_ids, "arms": table}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
