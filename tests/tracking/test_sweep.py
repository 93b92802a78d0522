"""Sweeps: spec checking, parallel workers on one storage (no duplicate or lost trials), a
killed worker's trial retried in its own run folder, Pareto front; trials are trained by a
stand-in function here (a real trial is a ``run_experiment`` call, tested in
``tests/tracking/test_run.py``)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from cogimg.tracking.sweep import build_pruner, run_sweep
from cogimg.tracking.sweep_spec import load_sweep

REPO = Path(__file__).resolve().parents[2]
SPEC = """
name: toy
config: experiments/stroke/seg_unet.yaml
objectives: [{metric: val/dice, direction: maximize}]
n_trials: 6
pruner: none
space:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, targets: [model.init_args.lr]}
  model: {type: categorical, choices: [unet, dynunet], targets: [model.init_args.model]}
"""


def toy_train(spec, trial, root, params):
    """Stand-in for training: records who ran the trial, sleeps a little, scores the lr."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "workers.txt", "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {trial.number}\n")
    if os.environ.get("TOY_FREEZE_AT") == str(trial.number):
        time.sleep(120)  # the test kills the worker here
    time.sleep(0.1)
    return {"val/dice": 1 - abs(params["lr"] - 3e-3) * 100, "params_M": 1.0 if params["model"] == "unet" else 2.0}


def write_spec(tmp_path, text=SPEC) -> Path:
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    path = tmp_path / "sweeps" / "toy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _worker(spec_path, out, storage, **kw):
    run_sweep(load_sweep(spec_path), out, storage=storage, train=toy_train, progress=False, **kw)


def test_spec_errors_name_file_and_key(tmp_path):
    spec = load_sweep(write_spec(tmp_path))
    assert [p.name for p in spec.space] == ["lr", "model"] and spec.directions == ["maximize"]
    with pytest.raises(ValueError, match=r"toy.yaml: spaec: unknown key"):
        load_sweep(write_spec(tmp_path, SPEC.replace("space:", "spaec:")))
    with pytest.raises(ValueError, match=r"space.lr: needs numbers low < high"):
        load_sweep(write_spec(tmp_path, SPEC.replace("high: 1.0e-2", "high: 1.0e-5")))
    with pytest.raises(ValueError, match=r"space.model: targets"):
        load_sweep(write_spec(tmp_path, SPEC.replace(", targets: [model.init_args.model]", "")))
    with pytest.raises(ValueError, match=r"pruner: type must be one of"):
        load_sweep(write_spec(tmp_path, SPEC.replace("pruner: none", "pruner: sometimes")))


def test_shipped_sweeps_parse():
    for name in ("stroke_seg", "ad_cls", "fusion"):
        spec = load_sweep(REPO / "sweeps" / f"{name}.yaml")
        assert spec.space and spec.objectives
    assert load_sweep(REPO / "sweeps" / "fusion.yaml").multi_objective


@pytest.mark.slow  # two spawned worker processes
def test_two_workers_one_storage_no_duplicate_or_lost_trials(tmp_path):
    spec_path, out = write_spec(tmp_path), tmp_path / "out"
    storage = f"journal:{tmp_path / 'journal.log'}"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_worker, args=(spec_path, out, storage)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
        assert w.exitcode == 0
    study = optuna.load_study(study_name="toy", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))))
    trials = study.trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert all(t.state == TrialState.COMPLETE for t in trials)  # none lost (RUNNING/FAIL)
    assert 6 <= len(trials) <= 7  # at most one extra: both workers may start the last trial
    # Each trial ran exactly once, in its own folder.
    for t in trials:
        lines = (out / "trials" / f"trial_{t.number:04d}" / "workers.txt").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 and lines[0].endswith(f" {t.number}")
    assert json.loads((out / "best.json").read_text(encoding="utf-8"))["number"] in numbers


def _heartbeat_recorded(db: Path, trial: int) -> bool:
    """Whether Optuna's SQLite storage ``db`` holds a heartbeat of trial number ``trial``."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(
            "SELECT COUNT(*) FROM trial_heartbeats JOIN trials USING (trial_id) WHERE trials.number = ?",
            (trial,)).fetchone()[0] > 0


@pytest.mark.slow  # a worker process killed mid-trial, heartbeat grace
def test_killed_worker_trial_is_retried_in_its_folder(tmp_path):
    spec_path, out = write_spec(tmp_path), tmp_path / "out"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from tests.tracking.test_sweep import _worker; "
            f"_worker({str(spec_path)!r}, {str(out)!r}, {storage!r}, heartbeat_s=1, grace_s=2)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TOY_FREEZE_AT": "2"},
                            start_new_session=True)
    marker = out / "trials" / "trial_0002" / "workers.txt"
    deadline = time.time() + 180
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert marker.exists(), "the worker never reached trial 2"
    # Optuna only fails a trial whose heartbeat went stale: one never recorded (a kill before the
    # heartbeat thread's first write, seen on a loaded machine) stays RUNNING for ever.
    while not _heartbeat_recorded(tmp_path / "study.db", trial=2) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # killed mid-trial
    proc.wait()
    time.sleep(3)  # let the heartbeat go stale (grace 2 s)
    study = run_sweep(load_sweep(spec_path), out, storage=storage, train=toy_train, progress=False,
                      heartbeat_s=1, grace_s=2)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 6
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.number == 2
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 2)
    assert retry.params == failed.params  # same parameters, same run folder
    assert retry.user_attrs["run_root"].endswith("trial_0002") and len(marker.read_text(encoding="utf-8").splitlines()) == 2


def test_multi_objective_writes_pareto_front(tmp_path):
    text = SPEC.replace("objectives: [{metric: val/dice, direction: maximize}]",
                        "objectives: [{metric: val/dice, direction: maximize}, {metric: params_M, direction: minimize}]")
    spec = load_sweep(write_spec(tmp_path, text))
    study = run_sweep(spec, tmp_path / "out", n_trials=5, train=toy_train, progress=False)
    pareto = pd.read_csv(tmp_path / "out" / "pareto.csv")
    assert sorted(pareto["number"]) == sorted(t.number for t in study.best_trials)
    assert {"val/dice", "params_M", "params_lr", "params_model"} <= set(pareto.columns)
    # Resuming a finished study runs nothing more.
    assert len(run_sweep(spec, tmp_path / "out", n_trials=5, train=toy_train, progress=False).trials) == 5


def curve_train(spec, trial, root, params):
    """Stand-in for an epoch loop under a pruning callback: reports a learning curve that
    rises towards a plateau set by the lr (best at 3e-3) and stops when the pruner says so."""
    plateau = 1 - abs(float(np.log10(params["lr"] / 3e-3))) / 2
    value = 0.0
    for epoch in range(12):
        value = plateau * (1 - 0.7 ** (epoch + 1))
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return {"val/dice": value}


@pytest.mark.parametrize("pruner", [
    "{type: successive_halving, min_resource: 2, reduction_factor: 3}",
    "{type: percentile, percentile: 25.0, n_startup_trials: 3}",
    "{type: median, n_startup_trials: 3}",
])
def test_pruned_sweep_stops_losers_and_keeps_the_best(tmp_path, pruner):
    spec = load_sweep(write_spec(tmp_path, SPEC.replace("pruner: none", f"pruner: {pruner}")
                                 .replace("n_trials: 6", "n_trials: 16")))
    study = run_sweep(spec, tmp_path / "out", train=curve_train, progress=False)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.PRUNED) >= 4
    # A pruned trial never had a better curve than the best finished trial at its last epoch.
    best = study.best_trial
    for t in study.trials:
        if t.state == TrialState.PRUNED:
            step = max(t.intermediate_values)
            assert t.intermediate_values[step] <= best.intermediate_values[step] + 1e-12


def test_patient_pruner_spares_a_slow_starter_that_keeps_improving():
    """Median pruning stops a trial that is below the median at a step; wrapped in the patient
    pruner, the same trial survives while it still improves; one that falls back is stopped once
    its best of the last ``patience`` + 1 reports is below its earlier best (− min_delta)."""
    leaders = [[0.5, 0.6, 0.7, 0.75, 0.8]] * 3
    slow = [0.1, 0.3, 0.5, 0.7, 0.9]     # below the median until the last step, always improving
    falling = [0.2, 0.1, 0.1, 0.1, 0.1]  # below the median and worse than its start

    def pruned_at(pruner, curve) -> int | None:
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for c in leaders:
            trial = study.ask()
            for step, v in enumerate(c):
                trial.report(v, step)
            study.tell(trial, c[-1])
        trial = study.ask()
        for step, v in enumerate(curve):
            trial.report(v, step)
            if trial.should_prune():
                return step
        return None

    median = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    patient = {"type": "patient", "patience": 1, "wrapped": median}
    assert pruned_at(build_pruner(median), slow) == 0
    assert pruned_at(build_pruner(patient), slow) is None
    assert pruned_at(build_pruner(patient), falling) == 2  # steps 1-2 below step 0's 0.2
    assert pruned_at(build_pruner({**patient, "min_delta": 0.15}), falling) is None
    with pytest.raises(ValueError, match="pruner 'patient' needs wrapped"):
        build_pruner({"type": "patient", "patience": 1})


def test_pruner_options_are_checked(tmp_path):
    spec = load_sweep(write_spec(tmp_path, SPEC.replace("pruner: none", "pruner: {type: median, warmup: 3}")))
    with pytest.raises(ValueError, match=r"toy.yaml: pruner 'median': .*warmup"):
        run_sweep(spec, tmp_path / "out", train=curve_train, progress=False)
