"""Sweep workers started at the same instant on a fresh SQLite storage all get the study."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import optuna


def _open(out: str, barrier, results) -> None:
    from cogimg.tracking.sweep import creation_lock, make_storage, storage_url

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    barrier.wait()
    try:
        storage = make_storage(None, Path(out))
        with creation_lock(storage_url(None, Path(out))):
            study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
        study.enqueue_trial({"x": 1.0})
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - the failure is what this test reports
        results.put(f"{type(exc).__name__}: {exc}")


def test_workers_started_together_on_a_fresh_sqlite_storage_all_open_the_study(tmp_path):
    ctx = mp.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    workers = [ctx.Process(target=_open, args=(str(tmp_path / "sweep"), barrier, results))
               for _ in range(n)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert outcomes == ["ok"] * n, outcomes
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    assert len(study.trials) == n  # one enqueued trial per worker, none lost
