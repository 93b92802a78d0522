"""``cogimg sweep sweeps/<name>.yaml``: an Optuna sweep whose trials are normal run directories."""

from __future__ import annotations

import argparse

HELP = "Optuna sweep over experiment configs (TPE, pruning, multi-objective Pareto front; resumable, parallel workers)"


def add_arguments(parser) -> None:
    parser.add_argument("sweep", help="sweep file (sweeps/<name>.yaml)")
    _add_options(parser)
    # REMAINDER takes everything after the sweep file, this command's own options included
    # (``cogimg sweep FILE --out DIR``): :func:`split_overrides` takes those back out.
    parser.add_argument("overrides", nargs=argparse.REMAINDER,
                        help="extra LightningCLI arguments for every trial (after --, or any option "
                             "this command does not take), e.g. -- --data.init_args.data_root data/synth")


def _add_options(parser) -> None:
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
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes sharing the storage (default 1: this process)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="where --workers run: local processes, or a SLURM job array through submitit")
    parser.add_argument("--slurm-partition", default=None, help="SLURM partition of the worker jobs")
    parser.add_argument("--timeout-min", type=int, default=24 * 60,
                        help="wall-time limit of each SLURM worker job in minutes (default one day)")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per SLURM worker job")
    parser.add_argument("--cpus-per-task", type=int, default=8, help="CPU cores per SLURM worker job")
    parser.add_argument("--mem-gb", type=int, default=32, help="memory per SLURM worker job (GB)")


def split_overrides(args) -> argparse.Namespace:
    """Parse this command's options out of ``args.overrides`` (what followed the sweep file, up
    to a ``--``) into ``args``; the rest, and all after ``--``, stay trial overrides."""
    rest = list(args.overrides)
    cut = rest.index("--") if "--" in rest else len(rest)
    own = argparse.ArgumentParser(prog="cogimg sweep", add_help=False, allow_abbrev=False)
    _add_options(own)
    args, unknown = own.parse_known_args(rest[:cut], namespace=args)
    args.overrides = [*unknown, *rest[cut + 1:]]
    return args


def run(args) -> int:
    import dataclasses
    from pathlib import Path

    from cogimg.tracking.sweep import run_sweep
    from cogimg.tracking.sweep_spec import load_sweep

    args = split_overrides(args)
    spec = load_sweep(args.sweep)
    extra = args.overrides
    if extra:
        spec = dataclasses.replace(spec, overrides=(*spec.overrides, *extra))
    out = Path(args.out or Path("runs") / "sweeps" / spec.name)
    heartbeat_s = max(1, args.grace // 3)
    failures: list[str] = []
    if args.workers == 1 and args.executor == "local":
        study = run_sweep(spec, out, n_trials=args.n_trials, storage=args.storage,
                          heartbeat_s=heartbeat_s, grace_s=args.grace,
                          retry_running_trials=args.retry_running)
    else:
        from cogimg.tracking.sweep_workers import run_workers

        if args.retry_running:
            raise SystemExit("--retry-running needs --workers 1 (no other worker may be alive)")
        parameters = {"timeout_min": args.timeout_min, "gpus_per_node": args.gpus_per_node,
                      "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb}
        if args.slurm_partition:
            parameters["slurm_partition"] = args.slurm_partition
        study, failures = run_workers(spec, out, args.workers, storage=args.storage,
                                      n_trials=args.n_trials, executor=args.executor,
                                      parameters=parameters, heartbeat_s=heartbeat_s,
                                      grace_s=args.grace)
    states = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    print(f"study {spec.name!r}: {states}; trials.csv and "
          f"{'pareto.csv' if spec.multi_objective else 'best.json'} in {out}")
    for line in failures:
        print(f"failed: {line}")
    return 1 if failures else 0
