"""Optuna sweeps over experiment configs: ``cogimg sweep sweeps/<name>.yaml --out runs/sweeps/<name>``.

Each trial samples the search space of a sweep file (:mod:`cogimg.tracking.sweep_spec`),
fits the chosen experiment config with the sampled overrides through
:func:`cogimg.tracking.experiment.run_experiment` — so every trial is a normal run directory
under ``<out>/trials/trial_<NNNN>/lightning_logs/version_<N>/`` — and returns the objective
metrics. TPE by default; single-objective sweeps are pruned per epoch (median or Hyperband)
through optuna-integration's ``PyTorchLightningPruningCallback``; multi-objective sweeps
report their Pareto front (``pareto.csv``).

Storage: ``sqlite:///<out>/study.db`` by default, any SQLAlchemy URL (PostgreSQL, MySQL) for
workers on several machines, or ``journal:<file>`` (Optuna's JournalStorage, a lock-guarded
append-only log) for workers sharing a file system without a database. Workers share nothing
but the storage: :mod:`cogimg.tracking.sweep_workers` starts N of them (local processes or
SLURM jobs), or start the same command on several machines; ``n_trials`` counts finished and
pruned trials over all of them (a race can add at most one trial per extra worker).

Resuming: rerunning the command continues the study. With RDB storage a heartbeat marks the
trial of a killed worker failed after ``grace_s`` seconds, and the sweep retries it with the
same parameters in the same run directory, resuming from its ``last.ckpt``. (JournalStorage
has no heartbeat: pass ``--retry-running`` when no other worker is alive.)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from cogimg.io import atomic_write_text
from cogimg.tracking.sweep_spec import RUN_METRICS, SweepSpec, resolve_config

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

TrainFn = Callable[[SweepSpec, optuna.Trial, Path, dict], dict]
R = TypeVar("R")


def storage_url(url: str | None, out: Path) -> str:
    """``url``, or the default ``sqlite:///<out>/study.db`` (absolute, ``out`` created)."""
    if url is not None:
        return url
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(out / 'study.db').resolve()}"


def make_storage(url: str | None, out: Path, heartbeat_s: int = 60, grace_s: int = 180):
    """Optuna storage for ``url`` (see module docstring). RDB storages get a heartbeat every
    ``heartbeat_s`` seconds; a trial whose heartbeat is older than ``grace_s`` seconds is failed
    by the next worker that starts a trial and retried (same parameters, at most twice)."""
    url = storage_url(url, out)
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    # SQLite: concurrent workers wait for the file lock instead of failing after SQLite's 5 s;
    # servers: a connection dropped while a trial trained for hours is replaced, not an error.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with creation_lock(url):
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                          grace_period=grace_s,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))


@contextlib.contextmanager
def creation_lock(url: str):
    """Serialise creating the schema of a fresh SQLite storage (and its study) between workers
    started together: without it, one dies with ``IntegrityError … alembic_version``. A lock
    file beside the database; other URLs (servers, journals) need none."""
    if not url.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    database = Path(url.removeprefix("sqlite:///"))
    with FileLock(str(database) + ".lock", timeout=120):
        yield


def make_sampler(spec: SweepSpec, offset: int = 0) -> optuna.samplers.BaseSampler:
    """TPE (default), random or NSGA-II; the seed is offset per worker so that parallel
    workers do not draw the same first candidates."""
    options = {k: v for k, v in spec.sampler.items() if k != "type"}
    options["seed"] = int(options.get("seed", 0)) + offset
    kind = spec.sampler["type"]
    if kind == "random":
        return optuna.samplers.RandomSampler(**options)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(**options)
    return optuna.samplers.TPESampler(**options)


def build_pruner(pruner: dict, where: str = "sweep") -> optuna.pruners.BasePruner:
    """The Optuna pruner a sweep file's ``pruner`` mapping names (``type`` plus the pruner's
    own keyword arguments); an option Optuna does not take is a ``ValueError`` naming ``where``.
    ``patient`` is Optuna's ``PatientPruner`` around the pruner mapped by ``wrapped``: it prunes
    only a trial whose best of its last ``patience + 1`` reports is below its earlier best −
    ``min_delta`` (≥ 0), so a slow starter that keeps improving survives."""
    options = {k: v for k, v in pruner.items() if k != "type"}
    kind = pruner["type"]
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "patient":
        wrapped = options.pop("wrapped", None)
        if not isinstance(wrapped, dict) or wrapped.get("type") in (None, "patient", "none"):
            raise ValueError(f"{where}: pruner 'patient' needs wrapped: {{type: median | percentile | "
                             f"successive_halving | hyperband, ...}}, got {wrapped!r}")
        options["wrapped_pruner"] = build_pruner(wrapped, f"{where}: pruner 'patient' wrapped")
    pruners = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
               "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
               "hyperband": optuna.pruners.HyperbandPruner, "patient": optuna.pruners.PatientPruner}
    try:
        return pruners[kind](**options)
    except TypeError as err:
        raise ValueError(f"{where}: pruner {kind!r}: {err}") from None


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.multi_objective:  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    return build_pruner(spec.pruner, where=spec.path or spec.name)


def trial_run_root(out: Path, trial: optuna.Trial) -> Path:
    """``<out>/trials/trial_<NNNN>``; a retried trial reuses its original's folder."""
    frozen = trial.study.get_trials(deepcopy=False)[trial.number]  # trial numbers index the study
    number = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    return out / "trials" / f"trial_{trial.number if number is None else number:04d}"


def _last_checkpoint(root: Path) -> Path | None:
    ckpts = sorted(root.glob("lightning_logs/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return ckpts[-1] if ckpts else None


def train_trial(spec: SweepSpec, trial: optuna.Trial, root: Path, params: dict) -> dict[str, float]:
    """Fit the trial's config with its sampled overrides; return its metrics (validation
    metrics plus ``params_M``, ``latency_s``, ``train_s``)."""
    from cogimg.tracking.experiment import run_experiment

    config, overrides = spec.config, [*spec.overrides]
    for p in spec.space:
        for target in p.targets:
            if target == "config":
                config = str(params[p.name])
            else:
                overrides += [f"--{target}", str(params[p.name])]
    overrides += ["--seed_everything", str(spec.seed_everything)]

    def fit(callbacks: list):
        return run_experiment(resolve_config(spec, config), root, overrides=overrides, budget_s=spec.budget_s,
                              name=spec.name, callbacks=callbacks, ckpt_path=_last_checkpoint(root))

    if not spec.multi_objective and spec.pruner["type"] != "none":
        result = fit_pruned(trial, spec.prune_metric or spec.objectives[0][0], fit)
    else:
        result = fit([])
    trial.set_user_attr("run_dir", result.run_dir)
    return {**result.metrics, "params_M": result.params / 1e6, "latency_s": result.latency_s,
            "train_s": result.train_s}


def fit_pruned(trial: optuna.Trial, monitor: str, fit: Callable[[list], R]) -> R:
    """``fit(callbacks)`` with optuna-integration's Lightning pruning callback on ``monitor``.

    In one process the callback raises :class:`optuna.TrialPruned` from inside the fit. Under
    DDP (RDB storage only, the callback refuses others; tested with ``ddp_spawn``) rank 0
    reports each epoch and writes the decision into the trial's storage, every
    rank stops, and the pruning is raised here after the fit from what the storage holds.
    Returns what ``fit`` returns."""
    from optuna_integration import PyTorchLightningPruningCallback

    callback = PyTorchLightningPruningCallback(trial, monitor=monitor)
    result = fit([callback])
    callback.check_pruned()
    return result


def make_objective(spec: SweepSpec, out: Path, train: TrainFn = train_trial):
    def objective(trial: optuna.Trial):
        params = {p.name: p.suggest(trial) for p in spec.space}
        root = trial_run_root(out, trial)
        trial.set_user_attr("run_root", str(root))
        trial.set_user_attr("worker_pid", os.getpid())
        metrics = train(spec, trial, root, params)
        missing = [m for m, _ in spec.objectives if m not in metrics]
        if missing:
            raise KeyError(f"objective metric(s) {missing} not produced by trial {trial.number}; "
                           f"available: {sorted(metrics)} (+ {list(RUN_METRICS)})")
        values = tuple(float(metrics[m]) for m, _ in spec.objectives)
        return values if spec.multi_objective else values[0]

    return objective


def retry_running(study: optuna.Study) -> int:
    """Mark every RUNNING trial failed and enqueue its parameters again (only when no
    worker is alive: for storages without heartbeat). Returns how many were re-queued."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        count += 1
    return count


def run_sweep(spec: SweepSpec, out: str | Path, n_trials: int | None = None, storage: str | None = None,
              train: TrainFn = train_trial, heartbeat_s: int = 60, grace_s: int = 180,
              retry_running_trials: bool = False, progress: bool = True, worker: int = 0,
              summary: bool = True) -> optuna.Study:
    """Run (or continue) the sweep until ``n_trials`` (default ``spec.n_trials``) trials of
    the study have finished or were pruned; write ``trials.csv`` and ``pareto.csv`` /
    ``best.json`` into ``out`` (unless ``summary`` is false). ``worker`` (0, 1, …) offsets the
    sampler's seed so that workers started together do not draw the same candidates.
    Returns the study."""
    out = Path(out)
    total = n_trials or spec.n_trials
    storage_obj = make_storage(storage or spec.storage, out, heartbeat_s, grace_s)
    # Peek at the study size for the sampler offset (0 for a fresh single-worker sweep).
    with creation_lock(storage_url(storage or spec.storage, out)):
        study = optuna.create_study(study_name=spec.name, storage=storage_obj,
                                    directions=spec.directions, load_if_exists=True)
    offset = len(study.trials) + 1000 * worker
    study = optuna.load_study(study_name=spec.name, storage=storage_obj,
                              sampler=make_sampler(spec, offset=offset), pruner=make_pruner(spec))
    if retry_running_trials:
        retry_running(study)
    optuna.storages.fail_stale_trials(study)  # no-op without heartbeat
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if done < total:
        study.optimize(make_objective(spec, out, train), n_trials=total,
                       callbacks=[optuna.study.MaxTrialsCallback(total, states=FINISHED)],
                       catch=(RuntimeError,), show_progress_bar=progress, gc_after_trial=True)
    if summary:
        write_summary(study, spec, out)
    return study


def write_summary(study: optuna.Study, spec: SweepSpec, out: Path) -> None:
    """``trials.csv`` (every trial), and ``pareto.csv`` (multi-objective) or ``best.json``."""
    out.mkdir(parents=True, exist_ok=True)
    frame = study.trials_dataframe()
    atomic_write_text(out / "trials.csv", frame.to_csv(index=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return
    if spec.multi_objective:
        rows = [{"number": t.number, **{m: v for (m, _), v in zip(spec.objectives, t.values)},
                 **{f"params_{k}": v for k, v in t.params.items()}, "run_dir": t.user_attrs.get("run_dir")}
                for t in study.best_trials]
        import pandas as pd

        atomic_write_text(out / "pareto.csv", pd.DataFrame(rows).to_csv(index=False))
    else:
        best = study.best_trial
        atomic_write_text(out / "best.json", json.dumps(
            {"number": best.number, spec.objectives[0][0]: best.value, "params": best.params,
             "run_dir": best.user_attrs.get("run_dir")}, indent=2) + "\n")
