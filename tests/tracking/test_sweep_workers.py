"""Sweep workers at scale on a real PostgreSQL server (``tests/tracking/conftest.py``): four
concurrent workers lose and duplicate no trial, a worker killed mid-trial leaves its trial
failed and it is retried in its folder, submitit's local cluster runs the SLURM path, the
Lightning pruning callback works under DDP on the PostgreSQL storage, and optuna-dashboard
serves the study. Trials are trained by a stand-in function (a real trial is a
``run_experiment`` call, tested in ``tests/tracking/test_run.py``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from cogimg.tracking.sweep import fit_pruned, run_sweep
from cogimg.tracking.sweep_spec import load_sweep
from cogimg.tracking.sweep_workers import run_workers

REPO = Path(__file__).resolve().parents[2]
SPEC = """
name: toy
config: experiments/stroke/seg_unet.yaml
objectives: [{metric: val/dice, direction: maximize}]
n_trials: 8
pruner: none
space:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, targets: [model.init_args.lr]}
"""


def pg_train(spec, trial, root, params):
    """Stand-in for training. Records ``<pid> <trial number>`` in the trial folder; with
    ``TOY_BARRIER=N`` the first N trials wait until N trials run at once (so N workers provably
    run concurrently); ``TOY_FREEZE_AT=k`` hangs trial k (the test kills its worker) and makes
    later trials wait for the file ``TOY_GATE``."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "workers.txt", "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {trial.number}\n")
    barrier = int(os.environ.get("TOY_BARRIER", "0"))
    deadline = time.time() + 60
    while trial.number < barrier and time.time() < deadline and len(
            trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) < barrier:
        time.sleep(0.05)
    freeze = int(os.environ.get("TOY_FREEZE_AT", "-1"))
    if trial.number == freeze:
        time.sleep(120)
    while 0 <= freeze < trial.number and not Path(os.environ["TOY_GATE"]).exists():
        time.sleep(0.05)
    time.sleep(0.05)
    return {"val/dice": 1 - abs(params["lr"] - 3e-3) * 100}


def write_spec(tmp_path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return path


def runs_of(out: Path, number: int) -> list[tuple[int, int]]:
    """``(pid, trial number)`` of every run in the folder of trial ``number``."""
    lines = (out / "trials" / f"trial_{number:04d}" / "workers.txt").read_text(encoding="utf-8")
    return [tuple(map(int, line.split())) for line in lines.splitlines()]


def assert_no_trial_lost_or_duplicated(study, n_trials: int, workers: int) -> None:
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))  # each number once
    # MaxTrialsCallback is checked after each trial: each other worker may start one more.
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert n_trials <= len(finished) <= n_trials + workers - 1


def test_four_workers_on_postgresql_no_trial_lost_or_duplicated(tmp_path, postgres_url, monkeypatch):
    monkeypatch.setenv("TOY_BARRIER", "4")
    out = tmp_path / "out"
    study, failures = run_workers(load_sweep(write_spec(tmp_path)), out, workers=4, storage=postgres_url,
                                  train=pg_train)
    assert failures == []
    assert study._storage.__class__.__name__ == "_CachedStorage" and "postgresql" in postgres_url
    assert_no_trial_lost_or_duplicated(study, n_trials=8, workers=4)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    runs = {t.number: runs_of(out, t.number) for t in study.trials}
    assert all(len(r) == 1 and r[0][1] == n for n, r in runs.items())  # each trial ran once
    assert len({runs[n][0][0] for n in range(4)}) == 4  # the first 4 ran in 4 processes at once
    best = json.loads((out / "best.json").read_text(encoding="utf-8"))
    assert best["number"] == max(study.trials, key=lambda t: t.value).number
    assert len({t.params["lr"] for t in study.trials}) == len(study.trials)  # per-worker seeds


def _heartbeat_recorded(url: str, trial: int) -> bool:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(sa.text(
            "SELECT COUNT(*) FROM trial_heartbeats JOIN trials USING (trial_id) WHERE trials.number = :n"),
            {"n": trial}).scalar()
    engine.dispose()
    return count > 0


def test_killed_worker_trial_is_failed_and_retried_on_postgresql(tmp_path, postgres_url, monkeypatch):
    out, gate = tmp_path / "out", tmp_path / "gate"
    for key, value in {"TOY_BARRIER": "4", "TOY_FREEZE_AT": "1", "TOY_GATE": str(gate)}.items():
        monkeypatch.setenv(key, value)
    killed = []

    def kill_worker_of_trial_1():
        marker = out / "trials" / "trial_0001" / "workers.txt"
        deadline = time.time() + 90
        while not (marker.exists() and _heartbeat_recorded(postgres_url, 1)) and time.time() < deadline:
            time.sleep(0.2)
        pid = runs_of(out, 1)[0][0]
        os.kill(pid, signal.SIGKILL)  # mid-trial, its heartbeat recorded
        killed.append(pid)
        time.sleep(3)  # heartbeat every 1 s, grace 2 s: stale by now
        gate.touch()   # the surviving workers go on; the next trial one starts fails trial 1

    watcher = threading.Thread(target=kill_worker_of_trial_1, daemon=True)
    watcher.start()
    study, failures = run_workers(load_sweep(write_spec(tmp_path)), out, workers=4, storage=postgres_url,
                                  train=pg_train, heartbeat_s=1, grace_s=2)
    watcher.join(timeout=5)
    assert len(killed) == 1 and len(failures) == 1 and f"pid {killed[0]}): exit code -9" in failures[0]
    assert_no_trial_lost_or_duplicated(study, n_trials=8, workers=3)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [1]
    assert all(t.state == TrialState.COMPLETE for t in study.trials if t.number != 1)
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == failed[0].params and retry.user_attrs["run_root"].endswith("trial_0001")
    (pid0, n0), (pid1, n1) = runs_of(out, 1)  # the original run, then the retry, same folder
    assert (pid0, n0, n1) == (killed[0], 1, retry.number) and pid1 != pid0


def test_slurm_executor_through_submitit_local_cluster(tmp_path, postgres_url, monkeypatch):
    """``--executor slurm`` path (a submitit job array) on submitit's local cluster."""
    # The jobs unpickle ``pg_train`` by its module, imported as pytest did (rootdir or test folder).
    path = [str(REPO), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    spec, out = load_sweep(write_spec(tmp_path)), tmp_path / "out"
    study, failures = run_workers(spec, out, workers=2, storage=postgres_url, n_trials=6,
                                  executor="slurm", cluster="local", train=pg_train,
                                  parameters={"timeout_min": 5})
    assert failures == []
    assert_no_trial_lost_or_duplicated(study, n_trials=6, workers=2)
    assert all(len(runs_of(out, t.number)) == 1 for t in study.trials)
    assert len(list((out / "submitit").glob("*/*_result.pkl"))) == 2  # one result per array job
    with pytest.raises(ValueError, match="SLURM workers need a server URL"):
        run_workers(spec, tmp_path / "sqlite", workers=2, executor="slurm", cluster="local")
    if shutil.which("srun") is None:  # no silent fallback to local processes
        with pytest.raises(RuntimeError, match="srun"):
            run_workers(spec, tmp_path / "j", workers=2, storage=f"journal:{tmp_path / 'j.log'}",
                        executor="slurm")
    with pytest.raises(ValueError, match="executor must be one of"):
        run_workers(spec, tmp_path / "k", workers=2, executor="kubernetes")


@pytest.mark.slow  # two spawned DDP processes
def test_ddp_pruning_on_postgresql_storage(postgres_url):
    """Under DDP the pruning decision travels through the RDB storage: rank 0 reports epoch 0
    (score 0.0 < the leader's 1.0 → median pruner prunes), both ranks stop, and
    :func:`fit_pruned` raises ``TrialPruned`` after the fit."""
    import lightning.pytorch as pl

    from tests.tracking.ddp_scorer import ConstantScore, loader

    storage = optuna.storages.RDBStorage(postgres_url)
    study = optuna.create_study(study_name="ddp", storage=storage, direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    leader = study.ask()
    for epoch in range(4):
        leader.report(1.0, epoch)
    study.tell(leader, 1.0)
    trainers = []

    def fit(callbacks):
        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=4,
                             callbacks=callbacks, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainers.append(trainer)
        trainer.fit(ConstantScore(0.0), loader(), loader())

    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 0"):
        fit_pruned(trial, "val_score", fit)
    assert trainers[0].strategy.__class__.__name__ == "DDPStrategy" and trainers[0].world_size == 2
    attrs = storage.get_trial_system_attrs(trial._trial_id)
    assert attrs["ddp_pl:pruned"] is True and attrs["ddp_pl:intermediate_value"] == {"0": 0.0}
    assert trial.study.get_trials(deepcopy=False)[1].intermediate_values == {0: 0.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, deadline: float) -> bytes:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                return response.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_optuna_dashboard_serves_the_study(tmp_path, postgres_url):
    """``optuna-dashboard STORAGE`` (README) on 127.0.0.1 answers and lists the sweep's study."""
    spec = load_sweep(write_spec(tmp_path))
    study = run_sweep(spec, tmp_path / "out", n_trials=2, storage=postgres_url, train=pg_train, progress=False)
    port = _free_port()
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(dashboard), postgres_url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        assert b"<html" in _get(f"http://127.0.0.1:{port}/", deadline).lower()
        studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies", deadline))["study_summaries"]
        assert [(s["study_name"], s["directions"]) for s in studies] == [("toy", ["maximize"])]
        detail = json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", deadline))
        assert [t["number"] for t in detail["trials"]] == [0, 1]
        assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
