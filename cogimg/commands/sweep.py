"""``cogimg sweep sweeps/<name>.yaml``: an Optuna sweep whose trials are normal run directories."""

from __future__ import annotations

import argparse

HELP = "Optuna sweep over experiment configs (TPE, pruning, multi-objective Pareto front; resumable, parallel workers)"


def add_arguments(parser) -> None:
    parser.add_argument("sweep", help="sweep file (sweeps/<name>.yaml)")
    parser.add_argument("--out", default=None, help="output folder (default runs/sweeps/<name>)")
    parser.add_argument("--n-trials", type=int, default=None,
                        help="finished + pruned trials to reach over all workers (default: the file's n_trials)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage: sqlite:///…, postgresql://…, or journal:<file> "
                             "(default: the file's storage, else sqlite:///<out>/study.db)")
    parser.add_argument("--grace", type=int, default=180,
                        help="seconds without heartbeat after which a trial of a killed worker is retried (RDB storages)")
    parser.add_argument("--retry-running", action="store_true",
                        help="re-queue trials left RUNNING by a killed worker (JournalStorage; only when no other worker runs)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="extra LightningCLI arguments for every trial, e.g. --data.init_args.data_root data/synth")


def run(args) -> int:
    import dataclasses
    from pathlib import Path

    from cogimg.tracking.sweep import run_sweep
    from cogimg.tracking.sweep_spec import load_sweep

    spec = load_sweep(args.sweep)
    extra = [a for a in args.overrides if a != "--"]
    if extra:
        spec = dataclasses.replace(spec, overrides=(*spec.overrides, *extra))
    out = Path(args.out or Path("runs") / "sweeps" / spec.name)
    study = run_sweep(spec, out, n_trials=args.n_trials, storage=args.storage,
                      heartbeat_s=max(1, args.grace // 3), grace_s=args.grace,
                      retry_running_trials=args.retry_running)
    states = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    print(f"study {spec.name!r}: {states}; trials.csv and "
          f"{'pareto.csv' if spec.multi_objective else 'best.json'} in {out}")
    return 0
