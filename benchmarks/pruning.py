"""Does pruning pay? The same Optuna sweep with and without pruning (same sampler seed,
same number of trials), counted in training epochs.

For each sweep: the epochs every trial trained (validated epochs in its CSV log), the best
value, and the epochs spent — in trial order — until a trial first reached the *unpruned*
sweep's best value. Target: pruned ≤ 0.5 × unpruned epochs to reach it.
Met on the 32-trial architecture sweep of 6. (0.47×); missed on the smaller sweeps of 2., 3.
and 5., on each of which no pruner could have met it (see 6.).

    cogimg synth --out data/synth --subjects 300 --seed 0 --diseases ad   # once (or pass --data)
    python benchmarks/pruning.py --data data/synth --out runs/bench_pruning --pruner successive_halving

The sweep (default): CN/MCI/AD staging from T1w with the default 3D CNN
(experiments/ad/cls_resnet10_t1.yaml, 4 mm) over learning rate (1e-5 … 1e-1, log), weight
decay and label smoothing, 20 epochs per trial, objective and pruning metric the last / each
epoch's validation macro AUROC, random sampler (both sweeps try the same candidates in the
same order, and training is deterministic, so a pruned trial's curve is the unpruned one cut
short). ``--replay`` runs only the unpruned sweep and replays its curves through every
candidate pruner, in trial order and over 200 random trial orders (one sweep's ratio hangs
on where its best trial happens to fall).

Measured 2026-12-03 on ``runs/bench_data/ad2mm_300`` (300 CN/MCI/AD, 192 train / 48
validation subjects), 2 cores shared with other benchmarks:

1. Choosing the pruner on a sweep that is not scored (``--sampler-seed 1 --trials 12
   --replay``, 12 trials in 30 min; best AUROC 0.820 at trial 0, so every in-order ratio is
   1.00). Median ratio over 200 orders [share of orders that pruned every best trial]:
   successive halving (min resource 2, factor 3) 0.56 [6 %], median 0.85 [4 %], median with
   5 warm-up epochs 0.88 [6 %], hyperband 0.92 [8 %], 25th percentile 1.00 [29 %]. Chosen:
   successive halving.
2. Scored (``--sampler-seed 0 --trials 16 --pruner successive_halving``; unpruned 16 trials
   in about 45 min, pruned 16 in about 10 min): the unpruned sweep's best, AUROC 0.865, is trial 1 after
   40 epochs. Successive halving stopped 14 of 16 trials (110 epochs in all, 0.34x the
   unpruned 320) and kept trials 0 (0.821) and 11 (0.834), but stopped trial 1 after 3
   epochs (AUROC 0.62 there, below trial 0's 0.66): the best value is **never reached, so
   the target is not met**. The replay predicted the pruned sweep's epochs exactly. Replayed
   over 200 orders of these 16 curves every candidate loses the best trial often (successive
   halving 91 %, percentile 75 %, median 55 %, hyperband 45 %): trial 1 starts slowly and
   overtakes at epoch 15, and its 0.865 is within validation noise of the 0.83-0.84 that
   three other trials reach (48 validation subjects).

3. Lesion segmentation (``--task stroke``: experiments/stroke/seg_unet.yaml on a 4 mm cohort,
   32³ patches, 2 per volume; objective and pruning metric the last / each epoch's validation
   Dice; space: learning rate 1e-4 … 3e-2 log, weight decay, loss dice_ce / dice_focal /
   tversky). Why: Dice over every validation voxel is a finer, steadier signal than AUROC on
   48 subjects, so early epochs may rank trials as the last does. Protocol fixed 2026-12-05
   before any trial ran: ``--task stroke --data runs/bench_data/stroke4mm_lso --trials 16
   --epochs 12 --sampler-seed 0 --pruner successive_halving`` (the pruner chosen in 1.; the
   only candidate whose typical saving there was near 0.5), scored as above (in-order ratio),
   the replay over 200 orders printed alongside. Measured (``runs/bench_data/stroke4mm_lso``,
   105 stroke subjects at 4 mm; unpruned 16 × 12 epochs in 60 min on one core shared with three
   other runs, pruned in 10 min): the unpruned best, Dice 0.549, is trial 2 after 36 epochs;
   trials 1 (0.542), 7 (0.541) and 10 (0.531) are within 0.02 of it. Successive halving stopped
   14 of 16 trials after 3 epochs (66 epochs in all, 0.34× the unpruned 192) and kept trials 0
   (0.519) and 9 (0.520), but stopped trial 2 (Dice 0.31 at epoch 3, while trial 0 had 0.41):
   the best value is **never reached, target not met**, again. The replay predicted the pruned
   sweep exactly. Over 200 trial orders every candidate loses the best trial most of the time
   (successive halving 88 %, percentile 80 %, hyperband 74 %, median 72 %, median with 5
   warm-up epochs 72 %): the trial that ends best starts slowly (0.06 after one epoch, against
   0.18-0.27 for the early leaders), so the segmentation curves do not rank trials early
   either. What pruning does buy on both tasks: a third of the epochs for a best value 0.03
   below the unpruned sweep's (AUROC 0.834 vs 0.865, Dice 0.520 vs 0.549).
4. Sparing slow starters (2026-12-05, added after 3., so chosen knowing its curves): the patient
   pruner (Optuna's ``PatientPruner``, patience 1) prunes only a trial that the wrapped pruner
   would stop *and* whose last two reports are below its earlier best. Replayed on the stroke
   sweep of 3. (``--task stroke --data runs/bench_data/stroke4mm_lso --out runs/prune_stroke
   --trials 16 --epochs 12 --sampler-seed 0 --replay``; the finished study trains nothing more):
   around the median pruner it stops 8 of 16 trials, 164 of 192 epochs (0.85×), keeps the best
   trial in this order (ratio 1.00) but loses it in 43 % of 200 orders; around successive
   halving, 143 epochs (0.74×), best lost in this order and in 84 % of orders. Validation Dice
   of 4 mm U-Nets moves up and down by 0.05-0.1 between epochs, so "stopped improving" fires on
   noise too: no rule tried reaches the unpruned best at ≤ 0.5× the epochs on these curves.

5. Comparing architectures (protocol fixed 2026-12-05 before any trial ran). The sweeps of 2.
   and 3. tune one network, and most of their trials train well (9 of 16 stroke trials end within
   0.05 Dice of the best), so a pruner that stops only the clearly bad trials saves little and
   one that saves half must rank good trials early, which their noisy curves do not allow. A
   sweep that also chooses the architecture, as the shipped ``sweeps/stroke_seg.yaml`` does, may
   hold more clearly bad trials. ``--task stroke_arch`` is 3.'s sweep with ``model`` drawn from
   unet, dynunet, segresnet, attention_unet and unetr. Choice: ``--sampler-seed 1 --trials 16
   --epochs 12 --replay``; chosen is the candidate with the lowest median ratio over 200 orders
   among those that stop the best trial in at most 25 % of orders (none: the one that stops it
   least often). Score: ``--sampler-seed 0 --trials 16 --epochs 12 --pruner <chosen>``, in-order
   ratio as in 2.-3., with the 200-order replay alongside. Both on
   ``runs/bench_data/stroke4mm_lso``, ``--out runs/prune_arch/seed{1,0}``.
   Measured (the two unpruned sweeps side by side with two leave-site-out runs, 80 min; the
   pruned one alone on one core, 26 min). It does hold more bad trials: 4 of 16 (seed 1) and 6
   of 16 (seed 0) end below 0.2 Dice, against 3 of 16 in 3. Choice (seed 1): one trial wins
   clearly (unetr, 0.656, against 0.594 next) and leads from epoch 3; over 200 orders no
   candidate but patient successive halving (12 %) ever stops it, and the median ratios are
   successive halving 0.57, percentile 0.69, hyperband 0.76, median 0.78, median with 5
   warm-up 0.85, patient median 0.94, patient successive halving 0.86. In this order successive
   halving reaches it in 0.45x the epochs. Chosen: successive halving. Score (seed 0): three
   trials tie at the top (dynunet 0.592 at trial 3, 0.589 at trials 0 and 11; 35 validation
   subjects, so 0.003 Dice is noise), and the unpruned sweep reaches the best after 48 epochs.
   Successive halving stopped 12 of 16 trials (92 epochs in all, 0.48x the unpruned 192),
   kept trials 0, 3, 11 and 14 and so found the same best, 0.592, after 30 epochs (12 + 3 + 3
   for trials 0-2, then trial 3's 12): ratio **0.62, target not met**. The replay predicted the
   pruned sweep's epochs exactly. Over 200 orders of these curves it stops the best trial (0.592)
   in 54 % of orders (median ratio infinite), uses 0.44x the sweep's epochs and keeps a trial
   within 0.02 Dice of the best in 84 % of orders (``--tolerance``, an aside).
   Reading: whether a pruner reaches *the* best at half the epochs turns on whether one trial
   wins clearly and early (seed 1: it does) or several tie within validation noise (seed 0 and
   the sweeps of 2.-3.: then which of them is "the best" is a coin the early curves cannot call).
6. What a single sweep can show (2026-12-05). ``floor_to_reach``: no pruner that judges a
   trial against earlier ones can reach the best in fewer epochs than the first trial in full,
   one epoch for each trial before the best and the best in full, (2E + k - 1) / (E (k + 1))
   of the unpruned epochs with the best at trial k (0-based) of E epochs each. The scored
   sweeps of 2., 3. and 5. had their best at trials 1, 2 and 3: floors 1.00, 0.69 and 0.54, so
   **no pruner could have met the target on any of them**. Over 200 orders of their curves
   (``--replay`` on the finished studies) the floor is ≤ 0.5 in 72-78 % of orders, and
   successive halving's ratio in 4 % (5., seed 0), 30 % (5., seed 1) and 0 % (3.). Pooling the
   32 curves of 5.'s two sweeps and drawing sweeps of n of them (10 draws × 40 orders) puts the
   chance that successive halving meets the target on one sweep at 16 % for 16 trials, 37 % for
   24 and 55 % for 32 (median pruner 0 %, 3 %, 8 %): one sweep's in-order ratio is a draw whose
   odds grow with the sweep's size. Protocol fixed before its trials ran: ``--task stroke_arch
   --data runs/bench_data/stroke4mm_lso --out runs/prune_arch32/seed2 --trials 32 --epochs 12
   --sampler-seed 2 --pruner successive_halving`` (5.'s choice, not re-chosen), the unpruned
   sweep run with ``--replay`` and the pruned one with ``--pruned-only`` side by side, then the
   scored command, which trains nothing more; scored as before by the in-order ratio, with a
   chance of about 55 % to meet the target predicted beforehand.
   Measured (each sweep on one core, side by side and beside other benchmarks: unpruned 32 ×
   12 epochs in 105 min, pruned in 51 min). The unpruned best, Dice 0.638 (unetr), is trial 27
   after 336 epochs; trial 7 (unetr, 0.634) is within noise of it, and no pruner could reach it
   in fewer than 50 epochs (floor 0.15). Successive halving stopped 27 of 32 trials (173 epochs
   in all, 0.45× the unpruned 384), kept trials 0, 4, 7, 18 and 27, and reached the best, 0.638,
   after 157 epochs: ratio **0.47, target met**. The replay predicted the pruned sweep's epochs
   exactly. It is a draw that fell on the right side of the line, as predicted (55 %): over 200
   orders of these curves successive halving's median ratio is 0.51, ≤ 0.5 in 49 % of orders,
   the best trial stopped in 7 %, 0.42× the sweep's epochs, and a trial within 0.02 Dice of the
   best kept in 100 % (percentile 0.53 / 42 %, median 0.65 / 4 %, hyperband 0.68 / 0 %).

Earlier (2026-12-02, stage from clinical features, experiments/ad/cls_tabular.yaml, 12 trials,
median pruning): ratios 0.75-1.43 (0.79 with the random sampler, 5 warm-up epochs); the
tabular curves were too flat and noisy on ~21 validation subjects to tell losers early. CN
vs AD (experiments/ad/cn_vs_ad_resnet10.yaml) is no better objective: its validation AUROC
lies at 0.91-1.00 after 20 epochs in the first 6 trials (1.00 in two of them, from epoch 13),
so the decent trials tie near the ceiling.
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
#: Random trial orders each candidate pruner is replayed over (``--replay``).
N_ORDERS = 200
#: The issue's target: pruned ≤ TARGET × unpruned epochs to reach the unpruned best.
TARGET = 0.5
#: Candidate pruners for ``--replay`` (and ``--pruner``'s default: the first).
PRUNERS = {
    "median": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 3},
    "median_w5": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 5},
    "successive_halving": {"type": "successive_halving", "min_resource": 2, "reduction_factor": 3},
    "percentile25": {"type": "percentile", "percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 2},
    "hyperband": {"type": "hyperband", "min_resource": 2, "reduction_factor": 3},
    # spare trials still improving (the slow starters that won both scored sweeps)
    "patient_median": {"type": "patient", "patience": 1,
                       "wrapped": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 3}},
    "patient_successive_halving": {"type": "patient", "patience": 1,
                                   "wrapped": {"type": "successive_halving", "min_resource": 2,
                                               "reduction_factor": 3}},
}
SPACE = """
name: {name}
config: {config}
objectives: [{{metric: {objective}, direction: maximize}}]
n_trials: {trials}
sampler: {sampler}
pruner: {pruner}
prune_metric: {prune_metric}
overrides: ["--trainer.max_epochs", "{epochs}", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_model_summary", "false"]
space:
{space}
"""
#: What each ``--task`` sweeps: its experiment, objective, search space and the overrides
#: that size it for a 2-core CPU.
TASKS = {
    "ad": {  # CN/MCI/AD staging from T1w, 4 mm (the config's own resampling)
        "config": "experiments/ad/cls_resnet10_t1.yaml", "objective": "val/auroc", "overrides": [],
        "space": """
  lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true, targets: [model.init_args.lr]}
  weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true, targets: [model.init_args.weight_decay]}
  label_smoothing: {type: float, low: 0.0, high: 0.2, targets: [model.init_args.label_smoothing]}"""},
    "stroke": {  # lesion segmentation on a 4 mm cohort as it is, 32³ patches, 2 patches per volume
        "config": "experiments/stroke/seg_unet.yaml", "objective": "val/dice",
        "overrides": ["--data.init_args.spacing_mm", "4.0", "--data.init_args.patch_size", "[32, 32, 32]",
                      "--data.init_args.samples_per_volume", "2", "--data.init_args.queue_length", "16",
                      "--data.init_args.num_workers", "0",
                      "--trainer.precision", "32-true"],
        "space": """
  lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true, targets: [model.init_args.lr]}
  weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true, targets: [model.init_args.weight_decay]}
  loss: {type: categorical, choices: [dice_ce, dice_focal, tversky], targets: [model.init_args.loss]}"""},
}
#: the shipped sweeps/stroke_seg.yaml's question (which architecture?) on the stroke task's budget
TASKS["stroke_arch"] = {**TASKS["stroke"], "space": """
  model: {type: categorical, choices: [unet, dynunet, segresnet, attention_unet, unetr], targets: [model.init_args.model]}""" + TASKS["stroke"]["space"]}


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
    task = TASKS[args.task]
    spec_file.write_text(SPACE.format(
        name=f"pruning_{out.name}", config=args.config or task["config"], objective=args.objective,
        trials=args.trials, epochs=args.epochs, pruner=json.dumps(pruner), space=task["space"].strip("\n"),
        prune_metric=args.prune_metric or args.objective,
        sampler=SAMPLERS[args.sampler].format(seed=args.sampler_seed)), encoding="utf-8")
    spec = load_sweep(spec_file)
    spec = dataclasses.replace(spec, config=str(REPO / spec.config), overrides=(
        *spec.overrides, *task["overrides"], "--data.init_args.data_root", str(data),
        "--data.init_args.cache_dir", str(out.parent / "cache")))
    study = run_sweep(spec, out, progress=False)
    rows = []
    for t in sorted(study.trials, key=lambda t: t.number):
        root = Path(t.user_attrs.get("run_root", out / "trials" / f"trial_{t.number:04d}"))
        curve = trial_curve(root, args.prune_metric or args.objective, args.epochs)
        value = t.value if t.value is not None else float("nan")
        rows.append({"trial": t.number, "state": t.state.name, "value": value, "epochs": len(curve),
                     "curve": curve})
    return rows


def reaches(row: dict, target: float) -> bool:
    """Whether the trial finished with a value ≥ ``target``."""
    return row["state"] == "COMPLETE" and row["value"] >= target - 1e-9


def epochs_to_reach(rows: list[dict], target: float) -> tuple[int, bool]:
    """Cumulative epochs (trial order) until a finished trial's value ≥ target."""
    spent = 0
    for r in rows:
        spent += r["epochs"]
        if reaches(r, target):
            return spent, True
    return spent, False


def floor_to_reach(rows: list[dict], target: float) -> int:
    """The fewest epochs (trial order) any pruner that judges a trial against earlier trials
    could spend until a trial reaches ``target``: the first trial has nothing to be judged
    against and trains in full (every Optuna pruner lets it), each later trial before the best
    is stopped after one epoch, and the best trains in full. With the best at trial k of
    epochs E each, that is (2E + k - 1) / (E (k + 1)) of the unpruned epochs: above 0.5 for
    k ≤ 3 at E = 12, whatever the pruner."""
    cut = [r if i == 0 or reaches(r, target) else {**r, "epochs": min(1, r["epochs"])}
           for i, r in enumerate(rows)]
    return epochs_to_reach(cut, target)[0]


def replay(rows: list[dict], pruner: dict) -> list[dict]:
    """What ``pruner`` would have done to an unpruned random-sampler sweep: its trials'
    learning curves reported epoch by epoch, in trial order, to a fresh study. Exact for a
    random sampler and deterministic training (the candidates and the curves up to any
    pruning point do not depend on the pruner), so it can choose a pruner without training.
    Hyperband is the exception: it puts a trial in a bracket by a hash of the study name, so
    its replay is a fair draw of the same rule, not the sweep's exact run."""
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


def replay_orders(rows: list[dict], pruner: dict, n_orders: int = N_ORDERS, seed: int = 0,
                  tolerance: float = 0.02) -> dict[str, float]:
    """The pruner replayed over ``n_orders`` random orderings of the unpruned sweep's trials.

    One sweep's ratio hangs on where its best trial happens to fall (first trial: 1.0 whatever
    the pruner); these are the pruner's typical figures on these learning curves:

    - ``reach``: median pruned/unpruned ratio of epochs-to-reach-the-best (the target's);
    - ``lost``: share of orderings in which the pruner stopped every best trial (ratio infinite);
    - ``met``: share of orderings whose ratio is ≤ ``TARGET``, against ``floor_met``: the share
      in which :func:`floor_to_reach` is (no pruner can meet the target in the others);
    - ``epochs``: median pruned/unpruned ratio of the whole sweep's epochs;
    - ``near``: share of orderings whose pruned sweep still finishes a trial within
      ``tolerance`` of the unpruned best (an aside for judging the target, not its rule).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    best = max(r["value"] for r in rows if r["state"] == "COMPLETE")
    total = sum(r["epochs"] for r in rows)
    reach, floor, epochs, near = [], [], [], []
    for _ in range(n_orders):
        order = [rows[i] for i in rng.permutation(len(rows))]
        plain, _ = epochs_to_reach(order, best)
        floor.append(floor_to_reach(order, best) / plain)
        pruned = replay(order, pruner)
        spent, reached = epochs_to_reach(pruned, best)
        reach.append(spent / plain if reached else float("inf"))
        epochs.append(sum(r["epochs"] for r in pruned) / total)
        pruned_best = max((r["value"] for r in pruned if r["state"] == "COMPLETE"), default=-np.inf)
        near.append(pruned_best >= best - tolerance)
    reach = np.asarray(reach)
    return {"reach": float(np.median(reach)), "lost": float(np.mean(np.isinf(reach))),
            "met": float(np.mean(reach <= TARGET + 1e-9)),
            "floor_met": float(np.mean(np.asarray(floor) <= TARGET + 1e-9)),
            "epochs": float(np.median(epochs)), "near": float(np.mean(near))}


def print_orders(figures: dict[str, float], tolerance: float, indent: str = " " * 21) -> None:
    print(f"{indent}over {N_ORDERS} trial orders: median ratio {figures['reach']:.2f}, ≤ {TARGET} in "
          f"{100 * figures['met']:.0f} % (possible in {100 * figures['floor_met']:.0f} %), best trial pruned in "
          f"{100 * figures['lost']:.0f} %; sweep epochs {figures['epochs']:.2f}x, a trial within {tolerance:g} "
          f"of the best kept in {100 * figures['near']:.0f} %")


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
    parser.add_argument("--task", choices=sorted(TASKS), default="ad",
                        help="ad: CN/MCI/AD staging (AUROC); stroke: lesion segmentation (Dice); "
                             "stroke_arch: stroke's sweep, also choosing the architecture")
    parser.add_argument("--config", default=None,
                        help="experiment swept (default: the task's; for ad, CN vs AD runs into "
                             "validation AUROC 0.91-1.00, where decent trials tie)")
    parser.add_argument("--objective", default=None,
                        help="validation metric maximised (last epoch; default: the task's). AUROC "
                             "is finer-grained than balanced accuracy on a small validation set")
    parser.add_argument("--prune-metric", default=None,
                        help="metric the pruner compares across trials (default: the objective)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="the 200-order replay also says how often the pruned sweep keeps a trial "
                             "within this much of the unpruned best (an aside; the target counts the "
                             "best itself)")
    parser.add_argument("--replay", action="store_true",
                        help="run only the unpruned sweep and replay its curves through every "
                             "candidate pruner (to choose one on a sweep the benchmark does not score)")
    parser.add_argument("--pruned-only", action="store_true",
                        help="run only the pruned sweep (beside the unpruned one, run with --replay on "
                             "another core); the full command afterwards trains nothing more")
    args = parser.parse_args()
    args.objective = args.objective or TASKS[args.task]["objective"]
    os.environ.setdefault("COGIMG_WANDB", "off")  # logger start-up is not what is measured
    if args.pruned_only:
        sweep(args.out / "pruned", args.data, args, PRUNERS[args.pruner])
        return
    plain = sweep(args.out / "unpruned", args.data, args, {"type": "none"})
    best = max(r["value"] for r in plain if r["state"] == "COMPLETE")
    e_plain, _ = epochs_to_reach(plain, best)
    floor = floor_to_reach(plain, best)
    print(pd.DataFrame([{k: v for k, v in r.items() if k != "curve"} | {"curve": " ".join(f"{v:.2f}" for v in r["curve"][::2])}
                        for r in plain]).to_string(index=False))
    print(f"\nunpruned best {args.objective} {best:.3f}, reached after {e_plain} epochs; no pruner can reach "
          f"it in fewer than {floor} (ratio {floor / e_plain:.2f})")
    if args.replay:
        for name, pruner in PRUNERS.items():
            report(f"replay {name}", replay(plain, pruner), best, e_plain)
            print_orders(replay_orders(plain, pruner, tolerance=args.tolerance), args.tolerance)
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
    print_orders(replay_orders(plain, PRUNERS[args.pruner], tolerance=args.tolerance), args.tolerance, indent="replayed ")
    print(f"target: ratio ≤ {TARGET}")


if __name__ == "__main__":
    main()
