"""Validation Dice vs. training wall time for segmentation architectures, side by side.

On a synthetic stroke cohort at 2 mm (120 patients, medium difficulty; generated once into
--data if absent),
each model trains from its shipped experiment YAML for up to --budget seconds (default 600 =
10 minutes, a hard stop through ``trainer.max_time``) in its own process (so peak RSS is per
model), validating every --val-every epochs. Prints the learning curves, the final
validation metrics, and peak RSS. Target: the best default config reaches Dice ≥ 0.85 within
10 minutes on 2 CPU cores; peak RSS ≤ 4 GB.

The learning-rate schedule needs to know how long training is: a cosine schedule over the
YAML's ``max_epochs`` would still be at its peak when the budget stops it. So each model's
seconds per training step are measured first (random input of the configured patch and batch
size, median of 8 steps after 2 warm-up steps), and ``max_steps`` is set to the number of
steps that fit in --train-fraction of the budget (the rest is validation and data loading);
the schedule then anneals within the budget. ``max_steps`` is printed.

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

    # Stroke patients only: every subject has lesions, so the split (stratified, 20 % test,
    # fold 0 of 5 for validation) trains on ~77 subjects and validates on ~19.
    generate_cohort(data, subjects, seed, spacing_mm=2.0, difficulty="medium", workers=2,
                    diseases=("stroke",), proportions={"CN": 0.0, "stroke": 1.0}, progress=False)


def config_of(model: str) -> Path:
    return REPO / "experiments" / "stroke" / f"seg_{model}.yaml"


def seconds_per_step(model: str) -> float:
    """Median seconds of one optimizer step of ``model``'s YAML task on random input."""
    import statistics
    import time

    import torch

    from cogimg.lightning_cli import build_cli

    cli = build_cli(["--config", str(config_of(model)), "--trainer.logger", "false"])
    task, batch = cli.model, cli.datamodule.batch_size
    task.train()
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)
    image = torch.randn(batch, task.in_channels, *task.patch_size)
    label = (torch.rand(batch, 1, *task.patch_size) > 0.9).long()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        optimizer.zero_grad()
        task.training_step({"image": image, "label": label}, 0).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def train_one(model: str, data: Path, out: Path, budget: float, val_every: int,
              train_fraction: float) -> None:
    from cogimg.tracking.experiment import run_experiment

    step_s = seconds_per_step(model)
    max_steps = int(budget * train_fraction / step_s)
    (out / model).mkdir(parents=True, exist_ok=True)
    (out / model / "schedule.json").write_text(json.dumps({"step_s": step_s, "max_steps": max_steps}), encoding="utf-8")
    run_experiment(config_of(model), out / model, name=model, budget_s=budget,
                   overrides=["--data.init_args.data_root", str(data), "--data.init_args.cache_dir",
                              str(out / "cache"), "--trainer.max_epochs", "-1",
                              "--trainer.max_steps", str(max_steps),
                              "--trainer.check_val_every_n_epoch", str(val_every)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unet,dynunet,unetr")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per model")
    parser.add_argument("--data", type=Path, default=Path("/tmp/cogimg-bench/stroke2mm"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/cogimg-bench/seg_time_to_dice"))
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=2, help="validate every N epochs")
    parser.add_argument("--train-fraction", type=float, default=0.8,
                        help="share of the budget the LR schedule plans for training steps")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: train one model
    args = parser.parse_args()
    if args.single:
        train_one(args.single, args.data, args.out, args.budget, args.val_every, args.train_fraction)
        return
    ensure_cohort(args.data, args.subjects, args.seed)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        subprocess.run([sys.executable, __file__, "--single", model, "--budget", str(args.budget),
                        "--data", str(args.data), "--out", str(args.out),
                        "--val-every", str(args.val_every), "--train-fraction", str(args.train_fraction)],
                       check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"cohort {args.data} ({args.subjects} stroke patients, 2 mm, medium); budget {args.budget:.0f} s/model")
    print(f"{'model':<16}{'params M':>9}{'s/step':>8}{'steps':>7}{'val Dice':>10}{'lesion F1':>10}"
          f"{'train s':>9}{'latency s':>10}{'peak RSS GB':>12}")
    curves = {}
    for model in models:
        r = json.loads((args.out / model / "result.json").read_text(encoding="utf-8"))
        m = r["metrics"]
        curves[model] = r["curve"]
        schedule = json.loads((args.out / model / "schedule.json").read_text(encoding="utf-8"))
        steps = r["curve"][-1]["step"] if r["curve"] else 0
        print(f"{model:<16}{r['params'] / 1e6:>9.2f}{schedule['step_s']:>8.2f}{steps:>7d}"
              f"{m.get('val/dice', float('nan')):>10.3f}"
              f"{m.get('val/lesion_f1', float('nan')):>10.3f}{r['train_s']:>9.0f}"
              f"{r['latency_s']:>10.2f}{r['peak_rss_gb']:>12.2f}")
    print("\nDice vs. training time (s):")
    for model, curve in curves.items():
        print(f"  {model:<14}" + "  ".join(f"{p['train_s']:.0f}s:{p.get('val/dice', float('nan')):.3f}"
                                           for p in curve))


if __name__ == "__main__":
    main()
