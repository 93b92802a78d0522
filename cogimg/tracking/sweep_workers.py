"""N Optuna workers on one storage: ``cogimg sweep … --workers N [--executor slurm]``.

Workers share nothing but the storage URL (Optuna's own way of distributing a study): each is
a process that runs :func:`cogimg.tracking.sweep.run_sweep` until the study holds ``n_trials``
finished or pruned trials. ``executor="local"`` starts them as processes on this machine;
``"slurm"`` submits them as one SLURM job array through ``submitit`` (its ``local`` and
``debug`` clusters run the same path without SLURM). A worker killed mid-trial (node failure,
pre-emption) stops heart-beating; on RDB storages the next trial any worker starts marks its
trial failed and enqueues it again, resumed in the same run folder.

Storages: SQLite (the default, one machine: workers queue on the file lock), a server URL
(``postgresql://…``, ``mysql://…``: several machines), or ``journal:<file>`` (a shared file
system without a database; no heartbeat, see ``--retry-running``).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import optuna

from cogimg.tracking.sweep import (
    FINISHED,
    TrainFn,
    make_storage,
    run_sweep,
    storage_url,
    train_trial,
    write_summary,
)
from cogimg.tracking.sweep_spec import SweepSpec

EXECUTORS = ("local", "slurm")


def run_worker(spec: SweepSpec, out: str, storage: str, worker: int, train: TrainFn,
               sweep_kw: dict[str, Any]) -> int:
    """One worker (the function a process or SLURM job runs): returns how many trials of the
    study are finished or pruned when it stops."""
    study = run_sweep(spec, out, storage=storage, train=train, worker=worker, progress=False,
                      summary=False, **sweep_kw)
    return sum(t.state in FINISHED for t in study.trials)


def _start_local(n: int, args: tuple) -> list[str]:
    """``n`` worker processes (spawned: no state inherited but the arguments); waits for them
    and returns one line per worker that did not exit cleanly."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(*args[:3], i, *args[3:]), name=f"sweep-worker-{i}")
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return [f"worker {i} (pid {p.pid}): exit code {p.exitcode}" for i, p in enumerate(procs) if p.exitcode]


def _start_submitit(n: int, args: tuple, folder: Path, cluster: str | None,
                    parameters: dict[str, Any]) -> list[str]:
    """``n`` workers as one submitit job array (SLURM by default); waits for them and returns one
    line per job that failed, with its log folder."""
    import submitit

    # "slurm" unless told otherwise: submitit's own guess would fall back to local processes.
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster or "slurm")
    executor.update_parameters(name="cogimg-sweep", **parameters)
    columns = [[a] * n for a in args[:3]] + [list(range(n))] + [[a] * n for a in args[3:]]
    jobs = executor.map_array(run_worker, *columns)
    print(f"submitted {n} sweep workers as {executor.cluster} job(s) "
          f"{', '.join(j.job_id for j in jobs)}; logs in {folder}", flush=True)
    failures = []
    for i, job in enumerate(jobs):
        err = job.exception()  # waits for the job; None when it succeeded
        if err is not None:  # the job's stderr is in the log folder
            last = str(err).strip().splitlines()[-1:] or [""]
            failures.append(f"worker {i} (job {job.job_id}): {type(err).__name__}: {last[0]}")
    return failures


def run_workers(spec: SweepSpec, out: str | Path, workers: int, storage: str | None = None,
                n_trials: int | None = None, executor: str = "local", train: TrainFn = train_trial,
                cluster: str | None = None, parameters: dict[str, Any] | None = None,
                heartbeat_s: int = 60, grace_s: int = 180) -> tuple[optuna.Study, list[str]]:
    """Run the sweep with ``workers`` processes sharing ``storage`` (default
    ``sqlite:///<out>/study.db``) until the study holds ``n_trials`` (default
    ``spec.n_trials``) finished or pruned trials; then write ``trials.csv`` and ``best.json``
    / ``pareto.csv`` once. ``executor``: ``"local"`` (processes here) or ``"slurm"`` (submitit;
    ``cluster`` ``"local"``/``"debug"`` runs submitit without SLURM, ``parameters`` go to
    ``AutoExecutor.update_parameters``: ``timeout_min``, ``slurm_partition``,
    ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``…). Returns the study and one line per
    worker that failed (empty when all exited cleanly)."""
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    out = Path(out).resolve()
    url = storage_url(storage or spec.storage, out)
    if url.startswith("sqlite") and executor == "slurm":
        raise ValueError("SQLite is for workers on one machine; SLURM workers need a server URL "
                         "(--storage postgresql://…) or a shared journal (--storage journal:<file>)")
    # Tables and study are created once here: workers racing to create them could collide.
    storage_obj = make_storage(url, out, heartbeat_s, grace_s)
    optuna.create_study(study_name=spec.name, storage=storage_obj, directions=spec.directions,
                        load_if_exists=True)
    sweep_kw = {"n_trials": n_trials, "heartbeat_s": heartbeat_s, "grace_s": grace_s}
    args = (spec, str(out), url, train, sweep_kw)
    if executor == "local":
        failures = _start_local(workers, args)
    else:
        failures = _start_submitit(workers, args, out / "submitit", cluster, parameters or {})
    study = optuna.load_study(study_name=spec.name, storage=storage_obj)
    write_summary(study, spec, out)
    return study, failures
