"""The connectome baseline: nilearn connectivity (tangent space) + a scikit-learn linear model.

The honest reference of the connectome models (Dadi et al. 2019, NeuroImage 192:115–134: a
tangent-space embedding with an l2 linear model is hard to beat). It is an outcome-style
experiment YAML (``kind: outcome``, so ``cogimg fit --config`` and ``cogimg outcome`` run it)
whose ``data.layout: connectome`` says that its features are the vectorised connectomes of a
:class:`~cogimg.data.connectome.ConnectomeDataModule`, on the **same split** as the deep
connectome models (the datamodule's saved k-fold split: same preset, ``n_folds``, ``seed``,
``test_fraction`` and cache folder give the same file)::

    kind: outcome
    data: {layout: connectome, root: data/synth, preset: ad, connectivity: tangent}
    cv: {n_folds: 5, seed: 0, fold: 0}       # split: a split JSON to use instead
    model: {name: logistic, params: {C: 1.0}} # logistic (classification) | ridge (regression)
    out: runs/connectome/ad_tangent_logistic

The connectivity measure and the model are fitted on the fold's training subjects only; the
validation and test subjects are predicted. :func:`fit_baseline` returns per-subject rows in the
columns the classification / regression tasks write (so the leaderboard scores them alike) and
the metrics; :func:`cogimg.tracking.connectome_baseline.write_baseline_run` writes the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cogimg.schema import parse_section

LAYOUT = "connectome"
#: model name -> the task kind it serves
MODELS = {"logistic": "classification", "ridge": "regression"}
STAGES = ("val", "test")


@dataclass
class DataSection:
    """``data:`` (``layout: connectome``): the :class:`ConnectomeDataModule` arguments.
    ``connectivity``: ``correlation``, ``partial correlation`` or ``tangent``; ``features``:
    ``connectome`` (that measure, vectorised) or ``coupling`` (per-region structure–function
    coupling from T1w and the parcellation; ``connectivity`` unused)."""

    root: str
    layout: Literal["connectome"] = "connectome"
    preset: str = "ad"
    connectivity: str = "tangent"
    features: Literal["connectome", "coupling"] = "connectome"
    target: str | None = None
    test_fraction: float = 0.2
    cache_dir: str | None = None


@dataclass
class CVSection:
    """``cv:``: the datamodule's k-fold split and which fold; ``split``: a split JSON instead."""

    n_folds: int = 5
    seed: int = 0
    fold: int = 0
    split: str | None = None


@dataclass
class ModelSection:
    """``model:``: ``logistic`` (l2 ``LogisticRegression``, balanced class weights) or
    ``ridge`` (``RidgeCV``, α by efficient leave-one-out); ``params`` are the estimator's."""

    name: Literal["logistic", "ridge"]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class BaselineFile:
    """The top level of a connectome baseline YAML (``bootstrap``: draws of every CI)."""

    kind: str
    data: dict
    model: dict
    cv: dict | None = None
    out: str | None = None
    bootstrap: int = 1000


def is_connectome(raw: dict) -> bool:
    """Whether an outcome YAML's parsed content is a connectome baseline."""
    data = raw.get("data")
    return isinstance(data, dict) and data.get("layout") == LAYOUT


def load_config(path: str | Path, raw: dict) -> dict:
    """``raw`` (the YAML ``path``) checked against the schemas above; ``cv`` filled with its
    defaults, ``out`` defaulting to ``runs/connectome/<stem>``, ``experiment`` the stem.
    Errors are ``ValueError("<file>: <key>: <problem>")``."""
    path = Path(path)
    top = parse_section(BaselineFile, raw, path)
    data = parse_section(DataSection, top.data, path, "data")
    model = parse_section(ModelSection, top.model, path, "model")
    cv = parse_section(CVSection, top.cv or {}, path, "cv")
    from cogimg.diseases import get_preset

    task = "classification" if get_preset(data.preset).task == "classification" else "regression"
    if MODELS[model.name] != task:
        wanted = [m for m, t in MODELS.items() if t == task]
        raise ValueError(f"{path}: model.name: {model.name!r} is a {MODELS[model.name]} model; "
                         f"preset {data.preset!r} is {task} (use {wanted})")
    if cv.n_folds < 2 or top.bootstrap < 1:
        raise ValueError(f"{path}: cv.n_folds must be ≥ 2 and bootstrap ≥ 1")
    return {"kind": top.kind, "data": vars(data), "model": vars(model), "cv": vars(cv),
            "out": top.out or f"runs/connectome/{path.stem}", "bootstrap": top.bootstrap,
            "experiment": path.stem}


def datamodule(config: dict, func_dataset: Any = None):
    """The :class:`ConnectomeDataModule` of ``config`` (vector output), not yet set up."""
    from cogimg.data.connectome import ConnectomeDataModule

    data, cv = config["data"], config.get("cv", {})
    return ConnectomeDataModule(
        data["root"], preset=data.get("preset", "ad"),
        kind=data.get("connectivity", "tangent"), output="vector", target=data.get("target"),
        split_file=cv.get("split"), fold=int(cv.get("fold", 0)),
        n_folds=int(cv.get("n_folds", 5)), test_fraction=float(data.get("test_fraction", 0.2)),
        cache_dir=data.get("cache_dir"), seed=int(cv.get("seed", 0)), func_dataset=func_dataset,
        features=data.get("features", "connectome"))


def build_estimator(name: str, params: dict | None = None, seed: int = 0):
    """The unfitted scikit-learn estimator of ``name`` (:data:`MODELS`)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV

    params = dict(params or {})
    if name == "logistic":
        return LogisticRegression(**{"C": 1.0, "class_weight": "balanced", "max_iter": 2000,
                                     "random_state": seed, **params})
    if name == "ridge":
        return RidgeCV(**{"alphas": np.logspace(-3, 3, 13), **params})
    raise ValueError(f"model {name!r}; choose one of {list(MODELS)}")


@dataclass
class BaselineResult:
    """What :func:`fit_baseline` returns.

    Attributes:
        kind: ``classification`` or ``regression``.
        rows: ``{stage: rows}`` for ``val`` and ``test``: classification rows ``subject_id,
            label, pred, loss, prob_<class>…`` (class names; ``loss`` the cross-entropy),
            regression rows ``subject_id, target, pred`` (target units).
        metrics: ``{stage: {"<stage>/<metric>": value}}`` (with 95 % subject-bootstrap CIs
            of the primary metric(s)).
        result: summary (experiment, model, preset, subjects per stage, wall time in s).
        datamodule: the set-up datamodule (split path, subjects).
    """

    kind: str
    rows: dict[str, list[dict]]
    metrics: dict[str, dict[str, float]]
    result: dict[str, Any]
    datamodule: Any


def fit_baseline(config: dict, func_dataset: Any = None) -> BaselineResult:
    """Fit the baseline on the fold's training subjects; predict its ``val`` and ``test``."""
    start = time.perf_counter()
    dm = datamodule(config, func_dataset)
    dm.setup("fit")
    seed = int(config.get("cv", {}).get("seed", 0))
    model = config["model"]
    estimator = build_estimator(model["name"], model.get("params"), seed)
    estimator.fit(dm.features["train"], dm.values["train"])
    n_boot = int(config.get("bootstrap", 1000))
    rows, metrics = {}, {}
    for stage in STAGES:
        if not len(dm.subjects[stage]):
            continue
        x, y, ids = dm.features[stage], dm.values[stage], dm.subjects[stage]
        if dm.task == "classification":
            prob = np.zeros((len(ids), len(dm.preset.classes)))
            prob[:, estimator.classes_] = estimator.predict_proba(x)
            rows[stage] = _class_rows(ids, y, prob, dm.preset.classes)
            metrics[stage] = _class_metrics(stage, y, prob, n_boot, seed)
        else:
            pred = estimator.predict(x)
            rows[stage] = [{"subject_id": s, "target": float(t), "pred": float(p)}
                           for s, t, p in zip(ids, y, pred)]
            metrics[stage] = _regression_metrics(stage, y, pred, n_boot, seed)
    result = {"experiment": config.get("experiment", "connectome_baseline"),
              "model": model_name(config), "preset": dm.preset.name, "kind": dm.task,
              "layout": LAYOUT, "n_subjects": {s: len(v) for s, v in dm.subjects.items()},
              "split": str(dm.split_path), "wall_s": time.perf_counter() - start}
    return BaselineResult(dm.task, rows, metrics, result, dm)


def model_name(config: dict) -> str:
    """The leaderboard's model name: ``<connectivity>_<model>`` (``tangent_logistic``), or
    ``coupling_<model>`` for coupling features."""
    connectivity = config["data"].get("connectivity", "tangent").replace(" ", "_")
    if config["data"].get("features") == "coupling":
        connectivity = "coupling"
    return f"{connectivity}_{config['model']['name']}"


def _class_rows(ids, labels, prob, classes) -> list[dict]:
    rows = []
    for sid, y, p in zip(ids, labels, prob):
        row = {"subject_id": sid, "label": classes[int(y)], "pred": classes[int(p.argmax())],
               "loss": float(-np.log(max(p[int(y)], 1e-12)))}
        row.update({f"prob_{c}": float(v) for c, v in zip(classes, p)})
        rows.append(row)
    return rows


def _class_metrics(stage, labels, prob, n_boot, seed) -> dict[str, float]:
    from cogimg.metrics.classification import bootstrap_ci, classification_report

    report = classification_report(labels, prob, prob.shape[1])
    values = {f"{stage}/{k}": float(v) for k, v in report.items() if k != "confusion_matrix"}
    for metric in ("balanced_accuracy", "auroc"):
        low, high = bootstrap_ci(labels, prob, metric, n_boot, seed)
        values.update({f"{stage}/{metric}_ci_low": low, f"{stage}/{metric}_ci_high": high})
    return values


def _regression_metrics(stage, target, pred, n_boot, seed) -> dict[str, float]:
    from cogimg.metrics.regression import bootstrap_ci, regression_report

    values = {f"{stage}/{k}": float(v) for k, v in regression_report(target, pred).items()
              if k != "n"}
    low, high = bootstrap_ci(target, pred, "pearson_r", n_boot, seed)
    return {**values, f"{stage}/pearson_r_ci_low": low, f"{stage}/pearson_r_ci_high": high}


def format_row(name: str, result: dict) -> str:
    """One line: the test (else validation) primary metric with its 95 % CI."""
    metrics = result.get("metrics", {})
    stage = "test" if metrics.get("test") else "val"
    m = metrics.get(stage, {})
    key = "balanced_accuracy" if result.get("kind") == "classification" else "pearson_r"
    value = m.get(f"{stage}/{key}", float("nan"))
    low, high = m.get(f"{stage}/{key}_ci_low", np.nan), m.get(f"{stage}/{key}_ci_high", np.nan)
    return (f"{name:<26} {stage} {key} {value:.3f} [{low:.3f}, {high:.3f}]  "
            f"n={result.get('n_subjects', {}).get(stage, 0)}  {result.get('wall_s', 0.0):.1f} s")
