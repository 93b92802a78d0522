"""Validation Dice vs. training wall time for segmentation architectures, side by side.

On a synthetic stroke cohort at 2 mm (120 patients, medium difficulty; generated once into
--data if absent),
each model trains from its shipped experiment YAML for up to --budget seconds (default 600 =
10 minutes, a hard stop through ``trainer.max_time``) in its own process (so peak memory is per
model), validating every --val-every epochs. Prints the learning curves, the final
validation metrics, and peak memory. Target: the best default config reaches Dice ≥ 0.85 within
10 minutes on 2 CPU cores; peak RSS ≤ 4 GB.

The learning-rate schedule needs to know how long training is: a cosine schedule over the
YAML's ``max_epochs`` would still be at its peak when the budget stops it. The task's
scheduler is therefore replaced by :class:`TimeBudgetCosine`, which anneals by wall time over
the budget.

    python benchmarks/seg_time_to_dice.py [--models unet,dynunet,unetr] [--budget 600]
    python benchmarks/seg_time_to_dice.py --models unet --precision bf16-mixed
    python benchmarks/seg_time_to_dice.py --quick      # 12 subjects at 2 mm, unet, 60 s

``--device`` (default: CUDA when available) and ``--precision`` override the YAMLs'
trainer settings. Per model the table (parameters, seconds per step, steps, validation Dice
and lesion F1, training and inference seconds, peak memory) and the Dice-vs-time curve go to
``results/seg_time_to_dice.json`` (``--quick``: ``results/seg_time_to_dice_quick.json``);
being wall-time budgeted, the numbers vary run to run with the host's speed and load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import write_result
from lightning.pytorch.callbacks import Callback

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


class TimeBudgetCosine(Callback):
    """Learning rate by wall time: linear warm-up over ``warmup_steps`` steps, then the tasks'
    cosine (:func:`cogimg.tasks.base.cosine_factor`) from ``lr`` down to 1 % of it
    ``budget_s`` seconds after training started.

    A step-based schedule needs the number of steps that fit in the budget, i.e. a guess of
    the step time made before training, which varies with the host's load; a run whose guess
    was too slow finishes its planned steps, annealed, long before the budget ends.
    Following the clock uses the whole budget at whatever speed the host runs."""

    def __init__(self, budget_s: float, warmup_steps: int = 20) -> None:
        self.budget_s, self.warmup_steps = budget_s, warmup_steps

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()
        self.base = [group["lr"] for group in trainer.optimizers[0].param_groups]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from cogimg.tasks.base import cosine_factor

        factor = cosine_factor((time.perf_counter() - self.start) / self.budget_s)
        if trainer.global_step < self.warmup_steps:
            factor = min(factor, (trainer.global_step + 1) / self.warmup_steps)
        for group, base in zip(trainer.optimizers[0].param_groups, self.base):
            group["lr"] = base * factor


def train_one(model: str, data: Path, out: Path, budget: float, val_every: int, precision: str | None,
              device: str = "cpu") -> None:
    from cogimg.tracking.experiment import run_experiment

    (out / model).mkdir(parents=True, exist_ok=True)
    run_experiment(config_of(model), out / model, name=model, budget_s=budget,
                   callbacks=[TimeBudgetCosine(budget)],
                   overrides=["--data.init_args.data_root", str(data), "--data.init_args.cache_dir",
                              str(out / "cache"), "--trainer.max_epochs", "-1",
                              "--model.init_args.scheduler", "constant",
                              "--trainer.check_val_every_n_epoch", str(val_every)]
                   + ["--trainer.accelerator", "gpu" if device.startswith("cuda") else "cpu",
                      "--trainer.devices", "1"]
                   + (["--trainer.precision", precision] if precision else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unet,dynunet,unetr")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per model")
    parser.add_argument("--data", type=Path, default=Path("/tmp/cogimg-bench/stroke2mm"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/cogimg-bench/seg_time_to_dice"))
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=2, help="validate every N epochs")
    parser.add_argument("--precision", help="override the YAML's trainer.precision (e.g. bf16-mixed)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when available)")
    parser.add_argument("--quick", action="store_true",
                        help="12 subjects, unet only, 60 s budget (a smoke run)")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: train one model
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        args.subjects, args.models, args.budget = 12, "unet", 60.0
        args.data = args.data.with_name(args.data.name + "_quick")
        args.out = args.out.with_name(args.out.name + "_quick")
    if args.single:
        train_one(args.single, args.data, args.out, args.budget, args.val_every, args.precision,
                  args.device)
        return
    ensure_cohort(args.data, args.subjects, args.seed)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        subprocess.run([sys.executable, __file__, "--single", model, "--budget", str(args.budget),
                        "--data", str(args.data), "--out", str(args.out),
                        "--val-every", str(args.val_every), "--device", args.device]
                       + (["--precision", args.precision] if args.precision else []),
                       check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"cohort {args.data} ({args.subjects} stroke patients, 2 mm, medium); budget {args.budget:.0f} s/model")
    print(f"{'model':<16}{'params M':>9}{'s/step':>8}{'steps':>7}{'val Dice':>10}{'lesion F1':>10}"
          f"{'train s':>9}{'latency s':>10}{'peak mem GB':>12}")
    curves, table = {}, []
    for model in models:
        r = json.loads((args.out / model / "result.json").read_text(encoding="utf-8"))
        m = r["metrics"]
        curves[model] = r["curve"]
        steps, last = r["steps"], (r["curve"] or [{"train_s": float("nan"), "step": 1}])[-1]
        step_s = last["train_s"] / max(1, last["step"])
        print(f"{model:<16}{r['params'] / 1e6:>9.2f}{step_s:>8.2f}{steps:>7d}"
              f"{m.get('val/dice', float('nan')):>10.3f}"
              f"{m.get('val/lesion_f1', float('nan')):>10.3f}{r['train_s']:>9.0f}"
              f"{r['latency_s']:>10.2f}{r['peak_memory_gb'] or float('nan'):>12.2f}")
        table.append({"model": model, "params_m": r["params"] / 1e6, "step_s": step_s,
                      "steps": steps, "val_dice": m.get("val/dice"),
                      "val_lesion_f1": m.get("val/lesion_f1"), "train_s": r["train_s"],
                      "latency_s": r["latency_s"], "peak_memory_gb": r["peak_memory_gb"]})
    print("\nDice vs. training time (s):")
    for model, curve in curves.items():
        print(f"  {model:<14}" + "  ".join(f"{p['train_s']:.0f}s:{p.get('val/dice', float('nan')):.3f}"
                                           for p in curve))
    best = max(table, key=lambda row: row["val_dice"] or 0.0)
    write_result("seg_time_to_dice_quick" if args.quick else "seg_time_to_dice",
                 {"settings": {"models": models, "budget_s": args.budget, "subjects": args.subjects,
                               "seed": args.seed, "precision": args.precision,
                               "val_every": args.val_every, "quick": args.quick},
                  "rows": table, "curves": curves},
                 device=args.device,
                 headline={f"best val Dice ({best['model']})": best["val_dice"],
                           "budget, s": args.budget, "target Dice": 0.85})


if __name__ == "__main__":
    main()
