"""Does pruning pay? The same Optuna sweep with and without median pruning (same sampler
seed, same number of trials), counted in training epochs.

For each sweep: the epochs every trial trained (validated epochs in its CSV log), the best
value, and the epochs spent — in trial order — until a trial first reached the *unpruned*
sweep's best value. Target: pruned ≤ 0.5 × unpruned epochs to reach it.

    cogimg synth --out data/synth --subjects 120 --seed 0      # once (or pass --data)
    python benchmarks/pruning.py --data data/synth --out runs/bench_pruning --trials 12

The sweep: AD staging from clinical features (experiments/ad/cls_tabular.yaml, CPU-fast)
over learning rate (1e-5 … 1e-1, log), weight decay and label smoothing, 10 epochs per trial.
Timings on a shared CPU are noisy; epochs are not.

Measured 2026-12-02 (12 trials each; "reach" = epochs until a trial first matched the
unpruned best; ratio = pruned / unpruned epochs to reach it; target ≤ 0.5):

    data (subjects)      epochs  sampler  prune on  warm-up  epochs total      reach       ratio
    demo cohort (120)        10  tpe      BA        -        -                 -           0.75
    AD, 2 mm (150)           20  tpe      AUROC     2        240 -> 105        never       1.05
    AD, 2 mm (150)           20  tpe      AUROC     5        240 -> 143        never       1.43
    AD, 2 mm (130)           20  random   AUROC     5        240 -> 184        200 -> 158  0.79

The last row (``--data runs/bench_data/ad2mm_130 --trials 12 --epochs 20 --warmup-epochs 5
--sampler random``, idle 2-core machine, 26 min together with another benchmark) shows the
mechanism: with the same candidates in the same order the completed trials score exactly
the same in both sweeps (training is deterministic), the median pruner stops 4 of the 9
trials it may judge after 6 epochs, and the best trial (no. 9, BA 0.567) survives, so the
saving is the 56 epochs of the pruned trials before it: 0.79. **The 0.5 target is not met**:
it needs most trials before the best one to be stopped early, and on this objective
(3-class BA from clinical features, 0.33-0.57 across trials on ~21 validation subjects) the
learning curves are too flat and noisy for a median rule to tell losers at epoch 5. With TPE
(rows 2-3) the pruned sweep's proposals diverge from the unpruned one after the first prune
and never reached its best. (In the printed tables a pruned trial's value is its best
intermediate value of the pruning metric, not the objective.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SAMPLERS = {"random": "{{type: random, seed: {seed}}}", "tpe": "{{type: tpe, seed: {seed}, n_startup_trials: 4}}"}
#: Candidate pruners for ``--replay`` (and ``--pruner``'s default: the first).
PRUNERS = {
    "successive_halving": {"type": "successive_halving", "min_resource": 2, "reduction_factor": 3},
    "median": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 2},
    "median_w5": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 5},
    "percentile25": {"type": "percentile", "percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 2},
    "hyperband": {"type": "hyperband", "min_resource": 2, "reduction_factor": 3},
}
SPACE = """
name: {name}
config: experiments/ad/cls_tabular.yaml
objectives: [{{metric: val/balanced_accuracy, direction: maximize}}]
n_trials: {trials}
sampler: {sampler}
pruner: {pruner}
prune_metric: {prune_metric}
overrides: ["--trainer.max_epochs", "{epochs}", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_model_summary", "false"]
space:
  lr: {{type: float, low: 1.0e-5, high: 1.0e-1, log: true, targets: [model.init_args.lr]}}
  weight_decay: {{type: float, low: 1.0e-6, high: 1.0e-2, log: true, targets: [model.init_args.weight_decay]}}
  label_smoothing: {{type: float, low: 0.0, high: 0.2, targets: [model.init_args.label_smoothing]}}
"""


def trial_curve(run_root: Path, metric: str, max_epochs: int) -> list[float]:
    """The trial's per-epoch validation ``metric`` from its CSV log (one value per trained
    epoch; the re-validation ``run_experiment`` may add after fit is not an epoch)."""
    logs = sorted(run_root.glob("lightning_logs/*/metrics.csv"))
    if not logs:
        return []
    log = pd.read_csv(logs[-1])
    if metric not in log:
        return []
    return [float(v) for v in log.loc[log[metric].notna()].groupby("epoch")[metric].first()][:max_epochs]


def sweep(out: Path, data: Path, args, pruner: dict) -> list[dict]:
    from cogimg.tracking.sweep import run_sweep
    from cogimg.tracking.sweep_spec import load_sweep

    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "sweeps" / "pruning.yaml"
    spec_file.parent.mkdir(exist_ok=True)
    spec_file.write_text(SPACE.format(
        name=f"pruning_{out.name}", trials=args.trials, epochs=args.epochs, pruner=json.dumps(pruner),
        prune_metric=args.prune_metric, sampler=SAMPLERS[args.sampler].format(seed=args.sampler_seed)),
        encoding="utf-8")
    spec = load_sweep(spec_file)
    spec = dataclasses.replace(spec, config=str(REPO / spec.config), overrides=(
        *spec.overrides, "--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(out.parent / "cache")))
    study = run_sweep(spec, out, progress=False)
    rows = []
    for t in sorted(study.trials, key=lambda t: t.number):
        root = Path(t.user_attrs.get("run_root", out / "trials" / f"trial_{t.number:04d}"))
        curve = trial_curve(root, args.prune_metric, args.epochs)
        value = t.value if t.value is not None else float("nan")
        rows.append({"trial": t.number, "state": t.state.name, "value": value, "epochs": len(curve),
                     "curve": curve})
    return rows


def epochs_to_reach(rows: list[dict], target: float) -> tuple[int, bool]:
    """Cumulative epochs (trial order) until a finished trial's value ≥ target."""
    spent = 0
    for r in rows:
        spent += r["epochs"]
        if r["state"] == "COMPLETE" and r["value"] >= target - 1e-9:
            return spent, True
    return spent, False


def replay(rows: list[dict], pruner: dict) -> list[dict]:
    """What ``pruner`` would have done to an unpruned random-sampler sweep: its trials'
    learning curves reported epoch by epoch, in trial order, to a fresh study. Exact for a
    random sampler and deterministic training (the candidates and the curves up to any
    pruning point do not depend on the pruner), so it can choose a pruner without training."""
    import optuna

    from cogimg.tracking.sweep import build_pruner

    study = optuna.create_study(direction="maximize", pruner=build_pruner(pruner, "replay"))
    out = []
    for r in rows:
        trial, epochs = study.ask(), len(r["curve"])
        for epoch, value in enumerate(r["curve"]):
            trial.report(value, epoch)
            if trial.should_prune():
                epochs = epoch + 1
                break
        if epochs < len(r["curve"]):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            out.append({**r, "state": "PRUNED", "value": float("nan"), "epochs": epochs})
        else:
            study.tell(trial, r["value"])
            out.append(r)
    return out


def report(name: str, rows: list[dict], best: float, unpruned_reach: int) -> None:
    reach, reached = epochs_to_reach(rows, best)
    print(f"{name:20s} {sum(r['state'] == 'PRUNED' for r in rows):2d}/{len(rows)} pruned, "
          f"{sum(r['epochs'] for r in rows):4d} epochs in all, {reach:4d} to reach the best"
          f"{'' if reached else ' (never reached)'}: ratio {reach / max(unpruned_reach, 1):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench_pruning"))
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="random",
                        help="random (default): both sweeps try the same candidates in the same "
                             "order, so the comparison isolates what pruning stops; tpe: the "
                             "sweeps' proposals diverge once a trial is pruned")
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--pruner", choices=sorted(PRUNERS), default=next(iter(PRUNERS)))
    parser.add_argument("--prune-metric", default="val/auroc",
                        help="metric the pruner compares across trials (maximised like the "
                             "objective); AUROC is finer-grained than balanced accuracy on a "
                             "small validation set, where many trials tie")
    parser.add_argument("--replay", action="store_true",
                        help="run only the unpruned sweep and replay its curves through every "
                             "candidate pruner (to choose one on a sweep the benchmark does not score)")
    args = parser.parse_args()
    os.environ.setdefault("COGIMG_WANDB", "off")  # logger start-up is not what is measured
    plain = sweep(args.out / "unpruned", args.data, args, {"type": "none"})
    best = max(r["value"] for r in plain if r["state"] == "COMPLETE")
    e_plain, _ = epochs_to_reach(plain, best)
    print(pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} | {f"last {args.prune_metric}": r["curve"][-1]}
                        for r in plain]).to_string(index=False))
    print(f"\nunpruned best val/balanced_accuracy {best:.3f}, reached after {e_plain} epochs")
    if args.replay:
        for name, pruner in PRUNERS.items():
            report(f"replay {name}", replay(plain, pruner), best, e_plain)
        return
    pruned = sweep(args.out / "pruned", args.data, args, PRUNERS[args.pruner])
    print(f"\npruned ({args.pruner}: {PRUNERS[args.pruner]}):")
    print(pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} for r in pruned]).to_string(index=False))
    if args.sampler == "random":
        replayed = replay(plain, PRUNERS[args.pruner])
        same = [r["epochs"] for r in replayed] == [r["epochs"] for r in pruned]
        print(f"replay of the unpruned curves predicts the pruned sweep's epochs exactly: {same}")
    report("unpruned", plain, best, e_plain)
    report(f"pruned {args.pruner}", pruned, best, e_plain)
    print("target: ratio ≤ 0.5")


if __name__ == "__main__":
    main()
