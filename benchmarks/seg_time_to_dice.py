"""Validation Dice vs. training wall time for segmentation architectures, side by side.

On the synthetic cohort at 2 mm (medium difficulty; generated once into --data if absent),
each model trains from its shipped experiment YAML for up to --budget seconds (default 600 =
10 minutes) in its own process (so peak RSS is per model), validating every epoch. Prints the
learning curves, the final validation metrics, and peak RSS. Target: the best default config
reaches Dice ≥ 0.85 within 10 minutes on 2 CPU cores; peak RSS ≤ 4 GB.

    python benchmarks/seg_time_to_dice.py [--models unet,dynunet,unetr] [--budget 600]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ensure_cohort(data: Path, subjects: int, seed: int) -> None:
    if (data / "participants.tsv").is_file():
        return
    from cogimg.data.synth import generate_cohort

    generate_cohort(data, subjects, seed, spacing_mm=2.0, difficulty="medium", workers=2,
                    proportions={"stroke": 0.35}, progress=False)


def train_one(model: str, data: Path, out: Path, budget: float) -> None:
    from cogimg.tracking.experiment import run_experiment

    run_experiment(REPO / "experiments" / "stroke" / f"seg_{model}.yaml", out / model, name=model,
                   budget_s=budget,
                   overrides=["--data.init_args.data_root", str(data), "--data.init_args.cache_dir",
                              str(out / "cache"), "--trainer.max_epochs", "1000",
                              "--trainer.check_val_every_n_epoch", "1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unet,dynunet,unetr")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per model")
    parser.add_argument("--data", type=Path, default=Path("/tmp/cogimg-bench/synth2mm"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/cogimg-bench/seg_time_to_dice"))
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: train one model
    args = parser.parse_args()
    if args.single:
        train_one(args.single, args.data, args.out, args.budget)
        return
    ensure_cohort(args.data, args.subjects, args.seed)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        subprocess.run([sys.executable, __file__, "--single", model, "--budget", str(args.budget),
                        "--data", str(args.data), "--out", str(args.out)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"cohort {args.data} ({args.subjects} subjects, 2 mm, medium); budget {args.budget:.0f} s/model")
    print(f"{'model':<16}{'params M':>9}{'val Dice':>10}{'lesion F1':>10}{'train s':>9}"
          f"{'latency s':>10}{'peak RSS GB':>12}")
    curves = {}
    for model in models:
        r = json.loads((args.out / model / "result.json").read_text())
        m = r["metrics"]
        curves[model] = r["curve"]
        print(f"{model:<16}{r['params'] / 1e6:>9.2f}{m.get('val/dice', float('nan')):>10.3f}"
              f"{m.get('val/lesion_f1', float('nan')):>10.3f}{r['train_s']:>9.0f}"
              f"{r['latency_s']:>10.2f}{r['peak_rss_gb']:>12.2f}")
    print("\nDice vs. training time (s):")
    for model, curve in curves.items():
        print(f"  {model:<14}" + "  ".join(f"{p['train_s']:.0f}s:{p.get('val/dice', float('nan')):.3f}"
                                           for p in curve))


if __name__ == "__main__":
    main()
