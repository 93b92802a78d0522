"""Cross-validated lesion → clinical outcome regression (NIHSS …), one YAML per model.

One YAML per model (``experiments/outcome/*.yaml``)::

    kind: outcome              # required: what ``cogimg fit --config`` routes to ``cogimg outcome``
    data:    # cogimg.data.outcome.load_outcome_dataset arguments (paths relative to the cwd)
      layout: soop
      mask_dir: ../shared/data/soop_masks/lesions
      scores: ../shared/data/soop_masks/participants_cleaned.tsv
      atlas: ../shared/data/soop_masks/ArterialAtlas136.nii.gz
      score: nihss
      covariates: [age]
      downsample: 2            # mask voxels per map block (1 mm masks → 2 mm maps)
      unmatched: exclude
    cv: {n_folds: 5, seed: 0, split: runs/outcome/soop_split.json}  # made once, reused
    model:
      name: svr        # soop_svr | svr | kernel_ridge | ridge | gbm | ensemble | stack | cnn
      features: [territories, covariates, log_volume]   # groups: cogimg/data/outcome_features.py
      map_coarsen: 3           # maps summed over 3³ blocks for the model (2 mm → 6 mm)
      params: {}               # build_classical overrides, or the CNN's (see CNN_DEFAULTS)
    reference:                 # optional: a model fitted on the same folds (e.g. the SOOP demo's
      name: soop_svr           # SVR); the result gets ΔR and ΔMAE with paired bootstrap CIs
      features: [territories, covariates, volume_ml]
    out: runs/outcome/svr

Every section is a typed schema (:class:`OutcomeFile`, :class:`DataSection`, :class:`CVSection`,
:class:`ModelSection`, :class:`ReferenceSection`) checked by :func:`cogimg.schema.parse_section`.
Folds are participant-level k-fold (stratified by score quintile), saved with
:func:`cogimg.data.splits.save_split` (leakage-checked) and reused when the file exists.
:func:`cross_validate` returns the out-of-fold table and the metrics; the run directory is
written by :func:`cogimg.tracking.outcome.write_outcome_run`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cogimg.schema import parse_section

#: the top-level ``kind`` every outcome YAML carries
KIND = "outcome"
POOLED_METRICS = ("pearson_r", "spearman_rho", "mae", "r2")
DEFAULT_FEATURES = ("territories", "covariates", "log_volume")


# --------------------------------------------------------------------------- config schema
@dataclass
class DataSection:
    """``data:``: :func:`cogimg.data.outcome.load_outcome_dataset` arguments (paths relative
    to the working directory; ``downsample`` in mask voxels per map block)."""

    layout: Literal["soop", "bids"] = "soop"
    root: str | None = None
    mask_dir: str | None = None
    scores: str | None = None
    score: str = "nihss"
    covariates: list[str] = field(default_factory=lambda: ["age"])
    derivative: str | None = None
    atlas: str | None = None
    downsample: int = 2
    unmatched: Literal["error", "exclude"] = "error"


@dataclass
class CVSection:
    """``cv:``: participant-level k-fold; ``split`` is the split JSON (made once, reused)."""

    n_folds: int = 5
    seed: int = 0
    split: str | None = None


@dataclass
class ReferenceSection:
    """``reference:``: a model fitted on the same folds for paired ΔR / ΔMAE.

    ``name``: a :data:`cogimg.tasks.classical.CLASSICAL` model or ``cnn``; ``features``:
    groups of :data:`cogimg.data.outcome_features.FEATURE_GROUPS`; ``params``:
    ``build_classical`` overrides, or the CNN's (``CNN_DEFAULTS``)."""

    name: str
    features: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES))
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSection(ReferenceSection):
    """``model:``: as :class:`ReferenceSection`, plus ``map_coarsen`` (map blocks summed per
    model voxel along each axis)."""

    map_coarsen: int = 1


@dataclass
class OutcomeFile:
    """The top level of an outcome YAML (module docstring); ``bootstrap`` is the number of
    bootstrap draws of every CI."""

    data: dict
    model: dict
    kind: str | None = None
    cv: dict | None = None
    reference: dict | None = None
    out: str | None = None
    bootstrap: int = 1000


#: section -> its schema
SECTIONS = {"data": DataSection, "cv": CVSection, "model": ModelSection,
            "reference": ReferenceSection}


# --------------------------------------------------------------------------- config
def load_config(path: str | Path) -> dict:
    """Read and check an outcome experiment YAML against :class:`OutcomeFile` and its section
    schemas; any problem is one ``ValueError`` ``"<file>: <key>: <problem>"``, and the top
    level must say ``kind: outcome``.

    Returns the config as a dict holding the keys the file sets (with their checked types),
    ``cv`` (default ``{}``), ``out`` (default ``runs/outcome/<stem>``) and ``experiment`` (the
    file's stem) filled in.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"outcome config not found: {path}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    from cogimg.paradigms import connectome_baseline

    if connectome_baseline.is_connectome(raw):  # data.layout: connectome
        return connectome_baseline.load_config(path, raw)
    top = parse_section(OutcomeFile, raw, path)
    config = {key: getattr(top, key) for key in raw}
    for section, schema in SECTIONS.items():
        given = raw.get(section)
        if given is not None:
            parsed = parse_section(schema, given, path, section)
            config[section] = {key: getattr(parsed, key) for key in given}
    if top.kind != KIND:
        raise ValueError(f"{path}: top level needs 'kind: {KIND}' (got {top.kind!r})")
    _check_values(path, config)
    config.setdefault("cv", {})
    config.setdefault("out", f"runs/outcome/{path.stem}")
    config["experiment"] = path.stem
    return config


def _check_values(path: Path, config: dict) -> None:
    """The checks a field type does not express: known model names and feature groups,
    positive counts."""
    from cogimg.data.outcome_features import FEATURE_GROUPS
    from cogimg.tasks.classical import CLASSICAL

    models = [*CLASSICAL, "cnn"]
    for section in ("model", "reference"):
        if not config.get(section):
            continue
        if config[section]["name"] not in models:
            raise ValueError(f"{path}: {section}.name: {config[section]['name']!r} is not one "
                             f"of {models}")
        if unknown := [g for g in config[section].get("features", []) if g not in FEATURE_GROUPS]:
            raise ValueError(f"{path}: {section}.features: unknown group(s) {unknown}; "
                             f"known: {list(FEATURE_GROUPS)}")
    for where, value, low in (("model.map_coarsen", config["model"].get("map_coarsen", 1), 1),
                              ("data.downsample", config["data"].get("downsample", 2), 1),
                              ("cv.n_folds", (config.get("cv") or {}).get("n_folds", 5), 2),
                              ("bootstrap", config.get("bootstrap", 1000), 1)):
        if value < low:
            raise ValueError(f"{path}: {where}: must be at least {low}, got {value}")


# --------------------------------------------------------------------------- cohort and folds
def load_cohort(data: dict):
    """The :class:`~cogimg.data.outcome.OutcomeCohort` that a config's ``data`` describes."""
    from cogimg.data.outcome import load_outcome_dataset

    data = dict(data)
    if "covariates" in data:
        data["covariates"] = tuple(data["covariates"])
    return load_outcome_dataset(data.pop("layout", "soop"), **data)


def cohort_split(cohort, n_folds: int = 5, seed: int = 0, path: str | Path | None = None):
    """Participant-level k-fold split stratified by score quintile; loaded from ``path`` when
    it exists (its IDs must be the cohort's), else made and saved there."""
    import pandas as pd

    from cogimg.data.splits import check_leakage, load_split, make_kfold_split, save_split

    if path is not None and Path(path).is_file():
        split = load_split(path)
        check_leakage(split)
        listed = {i for k in range(len(split.folds)) for i in split.fold(k)["val"]}
        if listed != set(cohort.ids):
            raise ValueError(f"split {path} lists {len(listed)} participants in its val folds, "
                             f"the cohort has {len(cohort)}: {len(listed ^ set(cohort.ids))} "
                             "differ (delete the file to make a new split)")
        return split
    bins = pd.qcut(pd.Series(cohort.scores).rank(method="first"), min(5, len(cohort) // n_folds),
                   labels=False)
    table = pd.DataFrame({"participant_id": cohort.ids, "score_bin": bins.astype(str)})
    split = make_kfold_split(table, n_folds=n_folds, test_fraction=0.0, stratify="score_bin",
                             seed=seed)
    if path is not None:
        save_split(split, path)
    return split


# --------------------------------------------------------------------------- fitting
def fit_predict(model: dict, train, val, seed: int = 0):
    """Fit ``model`` (config section) on the ``train`` cohort; ``(N_val,)`` predicted scores
    (in the score's units)."""
    from cogimg.tasks.regression import FEATURE_GROUPS, build_classical, tabular_features

    groups = list(model.get("features", DEFAULT_FEATURES))
    params = dict(model.get("params", {}))
    if model["name"] == "cnn":
        from cogimg.tasks.regression import fit_predict_cnn

        return fit_predict_cnn(train, val, [g for g in groups if g != "map"], params, seed)
    if "map" in groups and groups[-1] != "map":
        raise ValueError(f"model.features {groups}: 'map' must come last (of {FEATURE_GROUPS})")
    x_train, names = tabular_features(train, groups)
    x_val, _ = tabular_features(val, groups)
    n_tabular = sum(not n.startswith("map_") for n in names) if "map" in groups else None
    estimator = build_classical(model["name"], n_tabular=n_tabular, seed=seed,
                                feature_names=names, **params)
    return estimator.fit(x_train, train.scores).predict(x_val)


@dataclass
class CrossValidation:
    """What :func:`cross_validate` returns.

    Attributes:
        result: metrics (per-fold Pearson R, mean ± SD over folds, pooled out-of-fold report
            with 95 % subject-bootstrap CIs, wall time in s; with a reference its pooled
            report and ``delta_vs_reference``).
        table: one row per subject: ``subject_id, fold, target, pred`` [, ``reference_pred``].
        split: the :class:`~cogimg.data.splits.Split` used.
    """

    result: dict[str, Any]
    table: Any
    split: Any


def cross_validate(config: dict, cohort=None) -> CrossValidation:
    """Cross-validate ``config``'s model (and its ``reference`` on the same folds).

    ``cohort``: an already loaded cohort at ``config['data']['downsample']`` (the benchmark
    reads the masks once for every model); default: read from ``config['data']``.
    """
    import numpy as np
    import pandas as pd

    from cogimg.metrics.regression import (
        bootstrap_ci,
        paired_bootstrap_delta,
        pearson_r,
        regression_report,
    )

    start = time.perf_counter()
    cohort = load_cohort(config["data"]) if cohort is None else cohort
    model = config["model"]
    if model.get("map_coarsen", 1) > 1:
        cohort = cohort.coarsen(int(model["map_coarsen"]))
    cv = config.get("cv", {})
    seed = int(cv.get("seed", 0))
    split = cohort_split(cohort, int(cv.get("n_folds", 5)), seed, cv.get("split"))
    reference, tables = config.get("reference"), []
    for k, name in enumerate(split.fold_names):
        fold = split.fold(k)
        train, val = cohort.subset(fold["train"]), cohort.subset(fold["val"])
        rows = {"subject_id": val.ids, "fold": name, "target": val.scores,
                "pred": fit_predict(model, train, val, seed)}
        if reference:  # same folds, same subjects: a paired comparison
            rows["reference_pred"] = fit_predict(reference, train, val, seed)
        tables.append(pd.DataFrame(rows))
    table = pd.concat(tables, ignore_index=True)
    per_fold = [pearson_r(g["target"], g["pred"]) for _, g in table.groupby("fold", sort=False)]
    pooled = regression_report(table["target"], table["pred"])
    n_boot = int(config.get("bootstrap", 1000))
    for metric in POOLED_METRICS:
        pooled[f"{metric}_ci"] = bootstrap_ci(table["target"], table["pred"], metric, n_boot, seed)
    result = {"experiment": config.get("experiment", "outcome"), "model": model["name"],
              "pearson_r_folds": per_fold, "pearson_r_mean": float(np.mean(per_fold)),
              "pearson_r_std": float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0,
              "pooled": pooled, "n_subjects": len(cohort), "n_folds": len(per_fold)}
    if reference:
        result["reference"] = {
            "model": reference["name"],
            "pooled": regression_report(table["target"], table["reference_pred"])}
        result["delta_vs_reference"] = {
            metric: paired_bootstrap_delta(table["target"], table["pred"], table["reference_pred"],
                                           metric, n_boot, seed) for metric in ("pearson_r", "mae")}
    result["wall_s"] = time.perf_counter() - start
    return CrossValidation(result, table, split)


# --------------------------------------------------------------------------- reporting
def save_scatter(path: Path, table, result: dict) -> Path:
    """Out-of-fold predicted vs observed scores, with the pooled R and its 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cogimg.io import atomic_path

    pooled = result["pooled"]
    low, high = pooled["pearson_r_ci"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(table["target"], table["pred"], s=8, alpha=0.5)
    top = float(max(table["target"].max(), table["pred"].max()))
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--")
    ax.set(xlabel="observed", ylabel="predicted (out of fold)",
           title=f"{result['experiment']}: R = {pooled['pearson_r']:.2f} "
                 f"[{low:.2f}, {high:.2f}], n = {pooled['n']}")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def format_row(name: str, result: dict) -> str:
    """One leaderboard line: R mean ± SD over folds, pooled R with its 95 % CI, MAE, wall time."""
    if result.get("layout") == "connectome":
        from cogimg.paradigms.connectome_baseline import format_row as connectome_row

        return connectome_row(name, result)
    pooled = result["pooled"]
    low, high = pooled["pearson_r_ci"]
    return (f"{name:<22} R {result['pearson_r_mean']:.3f} ± {result['pearson_r_std']:.3f} "
            f"(folds)  pooled R {pooled['pearson_r']:.3f} [{low:.3f}, {high:.3f}]  "
            f"ρ {pooled['spearman_rho']:.3f}  MAE {pooled['mae']:.2f}  R² {pooled['r2']:.3f}  "
            f"{result['wall_s']:.1f} s" + delta_text(result.get("delta_vs_reference")))


def delta_text(delta: dict | None) -> str:
    """``ΔR +0.05 [+0.02, +0.08]`` (paired bootstrap vs the reference), or ``""``."""
    if not delta:
        return ""
    d = delta["pearson_r"]
    return f"  ΔR {d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
