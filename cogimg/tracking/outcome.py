"""Run directories of cross-validated outcome regression (:mod:`cogimg.paradigms.outcome`).

Written with :func:`cogimg.tracking.run.write_run`, so that ``cogimg leaderboard`` reads them
like any run: ``manifest.json`` (``"kind": "regression"``, experiment, model, variant, seed,
task, split), ``metrics.json`` (``val`` = pooled out-of-fold metrics as ``val/<name>``, plus
the per-fold and bootstrap figures of :func:`~cogimg.paradigms.outcome.cross_validate`),
``subjects_val.csv`` (one row per subject: ``subject_id, fold, target, pred`` [,
``reference_pred``]), ``config.yaml``, ``split.json`` (when the config names no split file)
and ``predicted_vs_observed.png``.
"""

from __future__ import annotations

from pathlib import Path

from cogimg.tasks.regression import RegressionTask
from cogimg.tracking.run import start_config_run, write_run

KIND = "regression"


def write_outcome_run(out: str | Path, config: dict, cv, *, overwrite: bool = False) -> Path:
    """Write the run directory of ``cv`` (a :class:`~cogimg.paradigms.outcome.CrossValidation`).

    A folder that already records a run is refused unless ``overwrite`` (then its manifest is
    removed first, so that an interrupted rewrite leaves no run the leaderboard reads).
    """
    from cogimg.data.splits import save_split
    from cogimg.paradigms.outcome import save_scatter

    out = start_config_run(out, config, overwrite=overwrite)
    cv_config, name = config.get("cv", {}), config["model"]["name"]
    split = cv_config.get("split")
    if not split:
        split = out / "split.json"
        save_split(cv.split, split, overwrite=True)
    save_scatter(out / "predicted_vs_observed.png", cv.table, cv.result)
    pooled = cv.result["pooled"]
    metrics = {"val": {f"val/{k}": float(v) for k, v in pooled.items() if not k.endswith("_ci")},
               **cv.result}
    # fitted once per fold, scikit-learn or a fresh CNN per fold: no single LightningModule,
    # so the manifest entries that describe the task are given here
    return write_run(out, None, experiment=config.get("experiment", "outcome"),
                     variant="default", seed=int(cv_config.get("seed", 0)),
                     subjects={"val": cv.table.to_dict("records")}, metrics=metrics,
                     kind=KIND, task=_task_name(name), model=name,
                     primary_metric=RegressionTask.default_metric,
                     metric_mode=RegressionTask.default_mode, split=str(split),
                     n_folds=cv.result["n_folds"], wall_s=round(cv.result["wall_s"], 2))


def _task_name(model: str) -> str:
    """The manifest's ``task``: the CNN's task class path, ``sklearn:<model>`` otherwise."""
    if model == "cnn":
        return f"{RegressionTask.__module__}.{RegressionTask.__qualname__}"
    return f"sklearn:{model}"


def run_outcome_experiment(config: dict, cohort=None, *, overwrite: bool = False) -> dict:
    """Cross-validate ``config`` and write its run directory at ``config['out']``; returns the
    metrics (``metrics.json`` without its ``val`` section)."""
    from cogimg.paradigms.outcome import cross_validate

    if config["data"].get("layout") == "connectome":  # cogimg.paradigms.connectome_baseline
        from cogimg.tracking.connectome_baseline import run_baseline_experiment

        return run_baseline_experiment(config, cohort, overwrite=overwrite)
    cv = cross_validate(config, cohort)
    write_outcome_run(config["out"], config, cv, overwrite=overwrite)
    return cv.result
