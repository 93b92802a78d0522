"""Run directories of the connectome baseline (:mod:`cogimg.paradigms.connectome_baseline`).

Written with :func:`cogimg.tracking.run.write_run` in the layout of a deep connectome run, so
that ``cogimg leaderboard`` lists both side by side: ``manifest.json`` (``kind``
``classification`` or ``regression``, experiment, model ``<connectivity>_<model>``, seed,
``task: sklearn:<model>``, split), ``metrics.json`` (``val`` / ``test`` sections as
``<stage>/<metric>`` with 95 % subject-bootstrap CIs, plus ``summary``),
``subjects_val.csv`` / ``subjects_test.csv`` (the tasks' per-subject columns) and
``config.yaml``.

It also registers the study runner ``connectome_baseline`` (:mod:`cogimg.tracking.study`): an
arm ``{config: experiments/connectome/ad_tangent_logistic.yaml, runner:
connectome_baseline}`` fits the baseline on the study's data and each seed's split.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from cogimg.tasks.classification import ClassificationTask
from cogimg.tasks.regression import RegressionTask
from cogimg.tracking.run import start_config_run, write_run

TASKS = {"classification": ClassificationTask, "regression": RegressionTask}


def write_baseline_run(out: str | Path, config: dict, fitted, *, overwrite: bool = False) -> Path:
    """Write ``fitted`` (a :class:`~cogimg.paradigms.connectome_baseline.BaselineResult`) to
    ``out``; a folder that already records a run is refused unless ``overwrite``."""
    out = start_config_run(out, config, overwrite=overwrite)
    task = TASKS[fitted.kind]
    cv = config.get("cv", {})
    return write_run(out, None, experiment=config.get("experiment", "connectome_baseline"),
                     variant="default", seed=int(cv.get("seed", 0)), subjects=fitted.rows,
                     metrics={**fitted.metrics, "summary": fitted.result}, kind=fitted.kind,
                     task=f"sklearn:{config['model']['name']}", model=fitted.result["model"],
                     primary_metric=task.default_metric, metric_mode=task.default_mode,
                     split=fitted.result["split"], fold=int(cv.get("fold", 0)),
                     wall_s=round(fitted.result["wall_s"], 2),
                     data={"root": str(config["data"]["root"]),
                           "preset": fitted.result["preset"],
                           "connectivity": config["data"].get("connectivity", "tangent")})


def run_baseline_experiment(config: dict, func_dataset=None, *, overwrite: bool = False) -> dict:
    """Fit ``config``'s baseline and write its run at ``config['out']``; returns the summary
    with ``metrics`` (``{stage: {...}}``)."""
    from cogimg.paradigms.connectome_baseline import fit_baseline

    fitted = fit_baseline(config, func_dataset)
    write_baseline_run(config["out"], config, fitted, overwrite=overwrite)
    return {**fitted.result, "metrics": fitted.metrics}


# --------------------------------------------------------------------------- study runner
#: LightningCLI arguments a study gives every arm → (config section, key) of a baseline config
STUDY_KEYS = {"--data.init_args.data_root": ("data", "root", str),
              "--data.init_args.cache_dir": ("data", "cache_dir", str),
              "--data.init_args.test_fraction": ("data", "test_fraction", float),
              "--data.init_args.seed": ("cv", "seed", int),
              "--data.init_args.n_folds": ("cv", "n_folds", int),
              "--data.init_args.fold": ("cv", "fold", int)}


def study_config(config: dict, overrides: list[str], name: str, run_dir: Path) -> dict:
    """``config`` (a loaded baseline YAML) with a study's arm arguments applied: data root,
    cache, split seed, folds and test fraction as the deep arms get them (so every arm of a
    seed shares one split); other (trainer / model) arguments do not apply and are ignored."""
    config = {**config, "data": dict(config["data"]), "cv": dict(config.get("cv", {}))}
    for key, value in itertools.pairwise(overrides):
        if key in STUDY_KEYS:
            section, field, cast = STUDY_KEYS[key]
            config[section][field] = cast(value)
    return {**config, "out": str(run_dir), "experiment": name}


def _register_study_runner() -> None:
    from cogimg.tracking.study_registry import StudyContext, arm_overrides, register_runner

    @register_runner("connectome_baseline")
    def connectome_baseline_runner(arm: dict, seed: int, run_dir: Path,
                                   context: StudyContext) -> dict:
        """A study arm ``runner: connectome_baseline``: the arm's baseline YAML on the
        study's data and the seed's split (val and test rows), into ``run_dir``."""
        from cogimg.paradigms.outcome import load_config

        args = arm_overrides(arm, seed, context)
        if "--data.init_args.seed" not in args:
            args += ["--data.init_args.seed", str(seed)]
        config = study_config(load_config(arm["config"]), args, arm["name"], Path(run_dir))
        return run_baseline_experiment(config)


_register_study_runner()
