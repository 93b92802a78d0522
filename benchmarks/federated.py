"""Centralised vs federated (FedAvg, FedProx, FedBN) vs local-only training across sites.

Target (cogimg issue 9): on the synthetic multi-site cohort, FedAvg/FedProx/FedBN reach
≥ 90 % of centralised performance and beat the best local-only site model; per-round curves
and wall time printed. Two tasks: AD classification (``--task ad``, the default; balanced
accuracy) and stroke lesion segmentation (``--task stroke``; mean Dice per subject).

Protocol: each site is split on its own participants (stratified: 25 % test, then train/val
of the rest, :func:`cogimg.paradigms.federated.splits.site_splits`); the centralised model
trains on the union of the sites' training subjects. Every arm sees the same number of
epochs over its data (``rounds × local_epochs``) with the same task configuration
(``experiments/ad/lso_resnet10_t1.yaml``, CN vs AD from T1w, constant learning rate), and
every arm is scored on the same subjects: the union of the sites' test sets, balanced
accuracy with a 95 % stratified bootstrap CI. Federated clients are scored with the final
global model (FedBN: with each site's own batch-norm layers). Local-only: each site's model
is scored on all sites' test subjects; the best one is the bar to beat.

Run: ``OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/federated.py --data DIR
--rounds N [--seed S]`` (DIR as in ``benchmarks/leave_site_out.py``); every run writes the
test predictions of every arm to ``OUT/fed_subjects.csv``, and one run directory per arm to
``OUT/runs/<arm>/`` (:func:`cogimg.tracking.run.write_run`: manifest with the split files'
hashes, training wall time and peak memory; the task's per-subject test rows; the federated
arms' per-round validation curve as ``metrics.csv``), so that with the runs of several seeds
under one folder ``cogimg leaderboard FOLDER --stage test``, ``cogimg figures FOLDER --stage
test`` and ``cogimg report FOLDER --stage test`` give the table (experiment
``federated_<task>``, one row per arm, mean ± SD over seeds, bootstrap CI over test
subjects), its dot plot, the round curves and, for AD, ROC / reliability / confusion. For
CSVs written before the run directories existed, ``--summary CSV… --runs-out DIR`` writes
them from the stroke rows (Dice only). ``--seed`` is the training seed
(weight initialisation, subject order, augmentation); the split stays the same.
The federated arms run through Flower (:func:`cogimg.paradigms.federated.app.simulate`: Flower's
simulation engine on Ray, FedAvg/FedProx as Flower's strategies, FedBN/SiloBN as subclasses; each
site's client writes the model it evaluated last under ``OUT/flower/<arm>/clients/``, and the
server its per-round history and global models under ``OUT/flower/<arm>/server/``); the printed
per-round train loss is the example-weighted mean of the clients' last-batch losses. The tables
below were measured with the in-house simulation loop that Flower replaced.
``--summary OUT*/fed_subjects.csv`` pools seeds
(:func:`cogimg.paradigms.federated.comparison.arm_comparison`): per arm the BA averaged over
seeds, its share of centralised and its difference from the best local-only arm (the site
with the best seed-averaged BA), with paired label-stratified subject-bootstrap CIs. Wall
times are from a shared, busy 2-core CPU.

Protocol for the pooled result, written 2026-12-05 before any of its runs finished: training
seeds 0, 1, 2 on the cohort below with ``--rounds 60`` (seed 0 rerun to record its
predictions); the goal is judged on the seed-averaged BA (≥ 90 % of centralised, above the
best local-only arm), and the paired CIs say whether a gap is resolved.

Measured 2026-12-04 on ``cogimg synth --out runs/bench_data/ad4mm_fed450 --subjects 450
--spacing 4 --diseases ad --proportions CN=0.5,AD=0.5,MCI=0 --difficulty medium
--site-confound 0 --seed 0`` (1.4 min; 75 CN + 75 AD per site): per site 84 train,
28 validation, 38 test subjects; 114 pooled test subjects. ``--out runs/bench_federated450
--rounds 60`` (24.8 min wall, one thread, beside another benchmark)::

    arm              test BA   95% CI            site-1   site-2   site-3   wall s
    centralised      0.825    [0.754, 0.886]     0.816    0.947    0.711      263
    local:site-1     0.772    [0.702, 0.833]     0.789    0.737    0.789       97
    local:site-2     0.737    [0.658, 0.807]     0.711    0.816    0.684      104
    local:site-3     0.667    [0.605, 0.737]     0.632    0.789    0.579      105
    fedavg           0.842    [0.781, 0.904]     0.816    0.895    0.816      298
    fedprox          0.807    [0.737, 0.877]     0.789    0.868    0.763      296
    fedbn            0.772    [0.693, 0.842]     0.816    0.737    0.763      306

FedAvg 102 %, FedProx 98 %, FedBN 94 % of centralised: all three clear the 90 % bar.
FedAvg (+0.070) and FedProx (+0.035) beat the best local-only model (site-1, 0.772);
FedBN only ties it (0.772). So the goal is **met for FedAvg and FedProx, not for FedBN**,
and even the two wins are point estimates: the CIs (±0.06-0.07) of every federated arm
overlap the best local model's and the centralised one, so no gap here is resolved at 95 %.
Validation BA (example-weighted over sites) of the global model climbs from 0.49-0.57
(round 1) to 0.79-0.82 by round 30 and stays there (round 60: FedAvg 0.798, FedProx 0.833,
FedBN 0.762); the printed train loss is each client's last-batch loss, hence noisy.

Pooled over training seeds 0, 1, 2 (the protocol above; 2026-12-05, three runs side by side
on 2 cores beside a sweep, 38-43 min wall each; seed 0 reproduced the table above exactly),
``--summary runs/fed_seeds/seed{0,1,2}/fed_subjects.csv``::

    test BA per seed     0      1      2     mean ± SD over seeds [95% CI]   % of centralised         vs best local (site-1)
    centralised        0.825  0.772  0.816   0.804 ± 0.028 [0.746, 0.857]   100                      +0.023 [−0.020, +0.067]
    local:site-1       0.772  0.754  0.816   0.781 ± 0.032 [0.731, 0.830]    97.1 [91.7, 102.7]       (best local)
    local:site-2       0.737  0.763  0.535   0.678 ± 0.125 [0.632, 0.722]    84.4 [78.8, 90.5]       −0.102 [−0.155, −0.055]
    local:site-3       0.667  0.825  0.632   0.708 ± 0.103 [0.661, 0.751]    88.0 [81.5, 95.2]       −0.073 [−0.140, −0.012]
    fedavg             0.842  0.868  0.816   0.842 ± 0.026 [0.784, 0.898]   104.7 [99.3, 110.7]      +0.061 [+0.009, +0.108]
    fedprox            0.807  0.798  0.825   0.810 ± 0.013 [0.751, 0.866]   100.7 [95.8, 106.4]      +0.029 [−0.012, +0.076]
    fedbn              0.772  0.746  0.772   0.763 ± 0.015 [0.708, 0.816]    94.9 [89.3, 100.7]      −0.018 [−0.067, +0.029]

(CIs: paired, label-stratified bootstrap over the 114 test subjects, each resample scoring
every arm and seed.) All three federated arms reach ≥ 90 % of centralised on the mean (FedBN's
CI reaches 89.3 %). FedAvg beats the best local-only model with a CI above 0; FedProx beats
it on the mean, unresolved; **FedBN does not** (−0.018): it is below FedAvg in every seed.
Which local site is best changes with the seed (site-1, site-3, site-1), and a single local
model can fail outright (site-2, seed 2: 0.535), which the federated arms never did. Why
FedBN trails was not established. Each site's batch-norm layers learn from a third of the data
(84 training subjects), and z-scoring each scan already removes its global scale and offset;
the site effects left (contrast, response curve, blur, bias field) were not enough here for
local normalisation to pay for that.

SiloBN (``--arms silobn``; Andreux et al. 2020: batch-norm running statistics local, affine
weights shared), protocol written 2026-12-05 before its runs: seeds 0, 1, 2 on the cohort
above, 60 rounds, pooled with the three runs above (``--summary`` over both sets of CSVs). It
asks whether FedBN's deficit comes from the batch-norm affine weights learning from one site.
Measured (``--out runs/fed_silobn/seed{S} --arms silobn``, about 5 min per seed; ``--summary
runs/fed_seeds/seed{0,1,2}/fed_subjects.csv runs/fed_silobn/seed{0,1,2}/fed_subjects.csv``):
SiloBN 0.860 / 0.825 / 0.746, mean 0.810 ± 0.058 [0.751, 0.863], 100.7 % of centralised
[95.6, 106.4], vs the best local +0.029 [−0.018, +0.076]. Sharing the affine weights lifts the
mean by 0.047 over FedBN (above it in seeds 0 and 1, below in seed 2) to FedProx's level, still
below FedAvg (0.842) and not resolved against the best local model: the affine weights learning
from one site explain part of FedBN's deficit at most.

A stronger site effect, protocol written 2026-12-05 before the runs: does keeping batch norm
local pay when scanners differ more? The same cohort with ``--site-spread 2.5`` (every site
effect 2.5× stronger, nothing else changed; ``runs/bench_data/ad4mm_fed450_spread``),
training seeds 0 and 1, ``--rounds 60``, all arms, pooled as above. Measured (two runs side
by side, 22-24 min wall each; ``--summary runs/fed_spread/seed{0,1}/fed_subjects.csv``)::

    test BA per seed     0      1      mean [95% CI]          % of centralised   vs best local (site-3)
    centralised        0.535  0.833   0.684 [0.627, 0.732]   100                −0.127 [−0.193, −0.061]
    local:site-1       0.746  0.640   0.693 [0.640, 0.746]   101.3
    local:site-2       0.649  0.623   0.636 [0.579, 0.693]    92.9
    local:site-3       0.825  0.798   0.811 [0.759, 0.864]   118.6              (best local)
    fedavg             0.798  0.754   0.776 [0.715, 0.838]   113.5              −0.035 [−0.101, +0.035]
    fedprox            0.833  0.816   0.825 [0.763, 0.882]   120.5              +0.013 [−0.040, +0.066]
    fedbn              0.772  0.561   0.667 [0.618, 0.719]    97.4              −0.145 [−0.206, −0.075]

With 2.5× site effects single runs become unstable: the centralised model of seed 0 and FedBN
of seed 1 end near chance (0.535, 0.561) with the constant learning rate every arm shares, so
"% of centralised" means little here. FedBN does not gain from the stronger shift: it is the
least stable arm and below FedAvg and FedProx in both seeds. FedProx is the steadiest
federated arm (0.833, 0.816) and ties the best local site.

Stroke lesion segmentation (``--task stroke``: ``experiments/stroke/lso_unet.yaml``, the
batch-norm U-Net of the leave-site-out benchmark, at the cohort's 4 mm with 32³ patches, 8 per
volume; score = mean Dice over test subjects, CIs from an unstratified subject bootstrap).
Protocol, written 2026-12-05 before any of its runs: cohort ``cogimg synth --out
runs/bench_data/stroke4mm_fed210 --subjects 210 --spacing 4 --diseases stroke --proportions
CN=0,stroke=1.0,MCI=0,AD=0,PD=0 --difficulty medium --site-spread 2.5 --site-confound 0
--seed 0`` (the leave-site-out stroke cohort's settings with 70 stroke subjects per site: per
site 39 train, 13 validation, 18 test; 54 pooled test subjects); ``--task stroke --rounds 12
--seed S`` for S = 0, 1, 2 (three runs side by side), all arms, pooled with ``--summary``. Same
goal and reading as for AD: seed-averaged Dice ≥ 90 % of centralised and above the best
local-only arm, the paired CIs saying whether a gap is resolved. 12 rounds is what three seeds
of every arm cost in about 70 min on 2 cores (one round: about 50 s per federated arm).

Measured (three runs side by side with up to three other benchmarks, about 1.9 h wall each;
per seed, wall s: centralised about 1350, each local 410-525, each federated arm 1320-1385;
``--summary runs/fed_stroke/seed{0,1,2}/fed_subjects.csv``)::

    test Dice per seed   0      1      2     mean ± SD over seeds [95% CI]   % of centralised      vs best local (site-3)
    centralised        0.597  0.567  0.568   0.577 ± 0.017 [0.495, 0.649]   100                   +0.074 [+0.051, +0.101]
    local:site-1       0.429  0.480  0.422   0.444 ± 0.032 [0.363, 0.517]    76.8 [69.4, 83.6]    −0.060 [−0.095, −0.026]
    local:site-2       0.294  0.395  0.371   0.354 ± 0.053 [0.271, 0.431]    61.2 [51.9, 70.9]    −0.150 [−0.202, −0.087]
    local:site-3       0.507  0.513  0.491   0.504 ± 0.012 [0.423, 0.574]    87.2 [82.6, 91.0]    (best local)
    fedavg             0.603  0.539  0.556   0.566 ± 0.033 [0.485, 0.635]    98.0 [94.2, 101.8]   +0.062 [+0.042, +0.081]
    fedprox            0.577  0.490  0.567   0.545 ± 0.047 [0.461, 0.616]    94.3 [90.5, 97.6]    +0.041 [+0.018, +0.062]
    fedbn              0.593  0.519  0.572   0.561 ± 0.038 [0.480, 0.630]    97.2 [94.2, 100.5]   +0.057 [+0.035, +0.079]

The goal is **met for all three strategies on segmentation**: each reaches ≥ 90 % of
centralised Dice (its CI's lower end too) and beats the best local-only model with a paired
CI above 0. Local models trained on one site's 39 subjects generalise badly to the other
sites (site-2's model: Dice 0.09-0.24 on site-1), which federation avoids. FedBN is within
0.005 of FedAvg here, unlike on AD. Validation Dice of the global model (seed 0) climbs from
0.21-0.28 after round 1 to 0.48-0.52 by round 6 and 0.53-0.57 at round 12, still rising, so
12 rounds under-train every arm alike.

This run is after a fix in :class:`cogimg.paradigms.federated.client.SiteClient`: a new
``Trainer.fit`` per round called ``train_dataloader()`` anew, whose generator restarts
from the datamodule's seed, so every client replayed its first epoch's subject order and
augmentation draws in every round, while the centralised and local arms (one long fit)
drew new ones each epoch; the fix's effect alone was not measured on this cohort. The
measurement before (2026-12-03, with that replay, 150 subjects, 33 pooled test subjects,
30 rounds) had FedAvg/FedProx/FedBN at 0.58/0.59/0.54 vs centralised 0.72 and best local
0.67, with CIs of ±0.15 that could rank nothing.

As run directories (2026-12-05). AD, protocol written before the runs: rerun seeds 0, 1, 2 on
the AD cohort above, 60 rounds, all arms and SiloBN (``--out runs/fed_ad_runs/seed{S} --arms
centralised,local,fedavg,fedprox,fedbn,silobn``; three runs side by side beside five other
benchmarks, 1 h 48 min wall each), then ``cogimg leaderboard runs/fed_ad_runs --stage test``,
``cogimg figures … --stage test`` and ``cogimg report … --stage test``. Every arm and seed
reproduced the BA of the tables above to the last digit, and the leaderboard's BA means and
CIs equal ``--summary``'s (both: label-stratified bootstrap over the 114 test subjects). The
run directories add AUROC (mean ± SD over seeds): FedAvg 0.914 ± 0.014, FedProx 0.905 ±
0.015, local site-3 0.905 ± 0.004, centralised 0.895 ± 0.013, SiloBN 0.893 ± 0.024, local
site-1 0.886 ± 0.008, FedBN 0.863 ± 0.023, local site-2 0.816 ± 0.035; training wall s
(contended): centralised 723, each local 283-299, FedAvg 1072, FedProx 1226, FedBN 1227,
SiloBN 937; peak memory 0.74-1.16 GiB. (These manifests name the commit checked out when
each arm ended, 72c8caf / bd68d29 / 54b4aec, all clean; the code that ran was ef73db0's —
the benchmark has since recorded the commit it starts from.) Stroke: the three seeds'
``fed_subjects.csv`` above exported with ``--summary runs/fed_stroke/seed{0,1,2}/fed_subjects.csv
--runs-out runs/fed_stroke_runs``; the leaderboard's Dice means and CIs equal the table above.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
#: Per task: experiment, the participants it keeps, split stratification, the per-subject metric.
TASKS = {
    "ad": {"config": "experiments/ad/lso_resnet10_t1.yaml", "diagnoses": ("CN", "AD"),
           "stratify": "diagnosis", "metric": "balanced_accuracy"},
    "stroke": {"config": "experiments/stroke/lso_unet.yaml", "diagnoses": ("stroke",),
               "stratify": None, "metric": "dice"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="ad",
                        help="ad: CN vs AD, balanced accuracy; stroke: lesion segmentation, mean Dice")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--patch-size", type=int, default=32,
                        help="stroke: training and sliding-window patch edge in voxels (at 4 mm)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/federated"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--mu", type=float, default=0.01, help="FedProx proximal strength")
    parser.add_argument("--arms", default="centralised,local,fedavg,fedprox,fedbn",
                        help="comma-separated; silobn (shared batch-norm affine, local statistics) on request")
    parser.add_argument("--seed", type=int, default=0, help="training seed (the split stays seed 0)")
    parser.add_argument("--summary", type=Path, nargs="+", metavar="CSV",
                        help="pool runs' fed_subjects.csv (one per seed) instead of training")
    parser.add_argument("--n-boot", type=int, default=1000, help="--summary: bootstrap resamples")
    parser.add_argument("--runs-out", type=Path, metavar="DIR",
                        help="--summary of stroke runs: also write their rows as run directories under DIR "
                             "(for CSVs recorded before the benchmark wrote run directories itself)")
    args = parser.parse_args()
    if args.summary:
        rows = pd.concat([pd.read_csv(p, dtype={"subject_id": str}) for p in args.summary], ignore_index=True)
        if args.runs_out:
            export_runs(rows, args.runs_out, args.summary)
        return summarise(rows, args.n_boot)
    if args.data is None:
        parser.error("--data is required (unless --summary)")

    import lightning as L
    import torch

    from cogimg.data.splits import save_split
    from cogimg.io import atomic_write_text
    from cogimg.paradigms.adaptation.protocol import Experiment, score_subjects, subject_scores
    from cogimg.paradigms.federated.app import simulate
    from cogimg.paradigms.federated.splits import pooled_split, site_splits
    from cogimg.tracking.run import (
        MANIFEST,
        PeakMemory,
        data_fingerprint,
        file_sha256,
        git_info,
        write_run,
    )

    spec = TASKS[args.task]
    arms = args.arms.split(",")
    metric = spec["metric"]
    exp = Experiment.from_yaml(ROOT / spec["config"])
    task_args = {**exp.task_args, "scheduler": "constant"}  # rounds restart the trainer
    # The training seed also seeds subject order and augmentation (the split stays fixed).
    data_args = {**exp.data_args, "data_root": str(args.data), "num_workers": 0, "seed": args.seed}
    if args.task == "stroke":  # the 4 mm cohort as it is (the preset resamples to 2 mm), smaller patches
        patch = [args.patch_size] * 3
        data_args.update(spacing_mm=4.0, patch_size=patch)
        task_args.update(patch_size=patch)
    args.out.mkdir(parents=True, exist_ok=True)
    splits = site_splits(args.data / "participants.tsv", diagnoses=spec["diagnoses"],
                         stratify=spec["stratify"], seed=0)
    paths = {}
    for name, split in {**splits, "pooled": pooled_split(splits)}.items():
        paths[name] = args.out / f"split_{name}.json"
        save_split(split, paths[name], overwrite=True)
    sites = sorted(splits)
    code = git_info()  # the commit this process runs, not the one checked out when an arm ends
    data_entry = {"root": str(args.data), "sha256": data_fingerprint(args.data),
                  "split_files": {n: {"path": str(f), "sha256": file_sha256(f)} for n, f in paths.items()}}
    epochs = args.rounds * args.local_epochs

    def datamodule(name: str):
        return exp.data_class(**{**data_args, "split_file": str(paths[name])})

    def task():
        return exp.task_class(**task_args)

    def trainer(**kw) -> L.Trainer:
        return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(args.out), **kw)

    test_dms = {s: datamodule(s) for s in sites}
    for dm in test_dms.values():
        dm.setup("test")

    subject_rows = []  # fed_subjects.csv: the compact rows --summary pools
    task_rows: dict[str, list[dict]] = {}  # per arm: the task's full test rows (+ site), for its run directory

    def pooled_test(arm: str, models: dict[str, object]) -> tuple[float, float, float, dict[str, float]]:
        """Score (+ 95 % CI) over the union of the sites' test subjects; ``models[site]`` scores site."""
        tables, per_site = [], {}
        task_rows[arm] = []
        for s in sites:
            trainer().test(models[s], datamodule=test_dms[s], verbose=False)
            ids, *arrays = subject_scores(models[s], "test")
            tables.append(arrays)
            per_site[s] = (score_subjects(*arrays) or {"value": float("nan")})["value"]
            task_rows[arm] += [{**r, "site": s} for r in models[s].subject_rows["test"]]
            compact = ([{"dice": d} for d in arrays[0]] if metric == "dice" else
                       [{"label": int(y), "pred": int(k)} for y, k in zip(arrays[0], arrays[1].argmax(1))])
            subject_rows.extend({"arm": arm, "seed": args.seed, "site": s, "subject_id": i, **c}
                                for i, c in zip(ids, compact))
        pooled = score_subjects(*(np.concatenate(column) for column in zip(*tables)))
        return pooled["value"], pooled["ci_low"], pooled["ci_high"], per_site

    def record(arm: str, model, wall_s: float, memory: dict, curve: list[dict] | None = None) -> None:
        """The arm's run directory, for ``cogimg leaderboard/figures/report OUT --stage test``."""
        write_run(run_dirs[arm], model, experiment=f"federated_{args.task}", variant=arm, seed=args.seed,
                  subjects={"test": task_rows[arm]}, metrics={"test": {f"test/{metric}": results[arm][0]}},
                  log=curve, wall_s=round(wall_s, 1), **memory, data=data_entry, git=code,
                  federated={"rounds": args.rounds, "local_epochs": args.local_epochs, "sites": sites,
                             **({"mu": args.mu} if arm == "fedprox" else {})})

    def fit_one(split_name: str):
        """Centralised (``pooled``) or local (a site's split) training: one model for every site."""
        def train():
            L.seed_everything(args.seed, verbose=False)
            model = task()
            trainer(max_epochs=epochs, limit_val_batches=0).fit(model, datamodule=datamodule(split_name))
            return dict.fromkeys(sites, model), None
        return train

    def federate(name: str):
        """A federated strategy through Flower's simulation engine; each site is scored by the model
        its client evaluated last (the final global weights; FedBN/SiloBN: with its own batch norm)."""
        def train():
            folder = args.out / "flower" / name
            spec = {"task": {"class_path": f"{exp.task_class.__module__}.{exp.task_class.__qualname__}",
                             "init_args": task_args},
                    "data": {"class_path": f"{exp.data_class.__module__}.{exp.data_class.__qualname__}",
                             "init_args": data_args},
                    "sites": {s: {"split_file": str(paths[s])} for s in sites},
                    "strategy": name, "proximal_mu": args.mu, "rounds": args.rounds,
                    "local_epochs": args.local_epochs, "seed": args.seed,
                    "out_dir": str(folder / "server"), "model_dir": str(folder / "clients")}
            strategy = simulate(spec)
            curves[name] = [(h["round"], float(h["train"].get("train_loss", float("nan"))),
                             float(h["val"].get(metric, float("nan"))), h.get("seconds", float("nan")))
                            for h in strategy.history]
            log = [{"epoch": r - 1, "train/loss": loss, f"val/{metric}": value} for r, loss, value, _ in curves[name]]
            models = {}
            for s in sites:
                models[s] = task()
                models[s].load_state_dict(torch.load(folder / "clients" / f"{s}.pt", weights_only=True))
            return models, log
        return train

    plan = {**({"centralised": fit_one("pooled")} if "centralised" in arms else {}),
            **({f"local:{s}": fit_one(s) for s in sites} if "local" in arms else {}),
            **{name: federate(name) for name in ("fedavg", "fedprox", "fedbn", "silobn") if name in arms}}
    run_dirs = {arm: args.out / "runs" / arm.replace(":", "-") for arm in plan}
    if taken := [str(d) for d in run_dirs.values() if (d / MANIFEST).exists()]:
        raise FileExistsError(f"run directories {taken} exist; choose another --out")
    results, curves = {}, {}
    for arm, train in plan.items():
        memory = PeakMemory().start()
        start = time.perf_counter()
        models, log = train()
        train_s = time.perf_counter() - start
        results[arm] = (*pooled_test(arm, models), time.perf_counter() - start)
        record(arm, models[sites[0]], train_s, memory.stop(), log)
    atomic_write_text(args.out / "fed_subjects.csv", pd.DataFrame(subject_rows).to_csv(index=False))

    for name, curve in curves.items():
        print(f"\n{name}: round, client train loss, val {metric} (both example-weighted), s")
        for r, loss, value, sec in curve:
            print(f"  {r:3d}  {loss:.3f}  {value:.3f}  {sec:5.1f}")
    print(f"\narm              test {'Dice' if metric == 'dice' else 'BA  '}   95% CI           {'  '.join(f'{s:>7}' for s in sites)}   wall s")
    for name, (value, low, high, per_site, wall) in results.items():
        print(f"{name:15s}  {value:.3f}    [{low:.3f}, {high:.3f}]   "
              f"{'  '.join(f'{per_site[s]:7.3f}' for s in sites)}   {wall:6.0f}")
    if "centralised" in results:
        central = results["centralised"][0]
        local = [v[0] for k, v in results.items() if k.startswith("local:")]
        best_local = max(local) if local else float("nan")
        for name in ("fedavg", "fedprox", "fedbn", "silobn"):
            if name in results:
                value = results[name][0]
                print(f"{name}: {100 * value / central:.0f}% of centralised (goal ≥ 90%); "
                      f"{'beats' if value > best_local else 'does not beat'} the best local-only model "
                      f"({best_local:.3f})")
    print(f"\n{epochs} epochs per arm (rounds {args.rounds} × local epochs {args.local_epochs}); "
          "timings on a shared CPU under nice")
    return 0


def summarise(rows: pd.DataFrame, n_boot: int = 1000) -> int:
    """Print the arms pooled over several runs' ``fed_subjects.csv`` rows (one run per training seed)."""
    from cogimg.paradigms.federated.comparison import arm_comparison

    metric = "dice" if "dice" in rows else "balanced_accuracy"
    table = arm_comparison(rows, metric, n_boot=n_boot, seed=0)
    seeds = sorted(set(rows["seed"]))
    print(f"test {metric} per training seed ({', '.join(map(str, seeds))}):")
    print(table.set_index("arm")[[f"score_seed_{s}" for s in seeds]].round(3).to_string())
    resampling = "label-stratified subject" if metric == "balanced_accuracy" else "subject"
    print(f"\npooled over {len(seeds)} seeds (mean {metric}; paired {resampling} bootstrap, {n_boot} resamples):")
    for r in table.itertuples():
        print(f"{r.arm:15s} {r.score:.3f} ± {r.score_sd:.3f} [{r.score_low:.3f}, {r.score_high:.3f}]   "
              f"{100 * r.of_central:5.1f} % of centralised [{100 * r.of_central_low:.1f}, "
              f"{100 * r.of_central_high:.1f}]   vs best local {r.vs_best_local:+.3f} "
              f"[{r.vs_best_local_low:+.3f}, {r.vs_best_local_high:+.3f}]")
    return 0


def export_runs(rows: pd.DataFrame, out: Path, sources: list[Path]) -> None:
    """One run directory per (arm, seed) of stroke ``fed_subjects.csv`` rows, holding their
    per-subject Dice (no other metric, curve or timing was recorded in that file)."""
    from cogimg.paradigms.adaptation.protocol import Experiment
    from cogimg.tracking.run import write_run

    if "dice" not in rows:
        raise ValueError("--runs-out needs Dice rows (--task stroke); classification rows hold no "
                         "probabilities: rerun the benchmark, which writes its run directories itself")
    exp = Experiment.from_yaml(ROOT / TASKS["stroke"]["config"])
    model = exp.task_class(**exp.task_args)
    for (arm, seed), group in rows.groupby(["arm", "seed"], sort=False):
        folder = write_run(out / f"seed{seed}" / arm.replace(":", "-"), model, experiment="federated_stroke",
                           variant=arm, seed=int(seed),
                           subjects={"test": group[["subject_id", "dice", "site"]].to_dict("records")},
                           metrics={"test": {"test/dice": float(group["dice"].mean())}},
                           source=[str(p) for p in sources])
        print(f"wrote {folder}")


if __name__ == "__main__":
    raise SystemExit(main())
