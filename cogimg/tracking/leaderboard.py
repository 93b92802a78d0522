"""Leaderboards from run directories (``manifest.json`` + ``metrics.json`` + ``subjects_<stage>.csv``).

Runs are grouped by task kind (segmentation / classification), experiment, model and variant;
the seeds of a group are its repeats. A row reports, for the kind's primary and secondary
metrics, the mean ± sample std **over seeds** of each run's metric, and a 95 % percentile
bootstrap interval **over subjects** of the seed-averaged metric (subjects resampled with
replacement — within each true class for classification — the metric recomputed on every
seed's predictions for the same resample, then averaged over seeds). Then the parameter
count (M), training wall time (s), inference latency (s) and peak memory (GiB), and the rank
by the primary metric's mean within the kind. Rendering lives in :mod:`cogimg.tracking.tables`.

Segmentation run metrics are subject means of the per-subject columns (undefined values
such as HD95 of an empty pair left out); classification metrics are computed from the
per-subject labels and ``prob_<class>`` columns with :mod:`cogimg.metrics.classification`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.metrics import classification as cls_metrics
from cogimg.tracking.run import MANIFEST, METRICS


@dataclass(frozen=True)
class Kind:
    """A task kind: its primary metric (ranked, higher is better) and secondary metrics."""

    name: str
    primary: str
    secondary: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)


KINDS = {
    "segmentation": Kind("segmentation", "dice",
                         ("lesion_f1", "absolute_volume_difference_ml", "lesion_count_difference",
                          "hausdorff95_mm"),
                         {"dice": "Dice", "lesion_f1": "lesion F1",
                          "absolute_volume_difference_ml": "AVD (mL)",
                          "lesion_count_difference": "ALD", "hausdorff95_mm": "HD95 (mm)"}),
    "classification": Kind("classification", "balanced_accuracy", ("auroc", "f1_macro", "accuracy"),
                           {"balanced_accuracy": "BA", "auroc": "AUROC", "f1_macro": "macro F1",
                            "accuracy": "accuracy"}),
}
GROUP_KEYS = ("kind", "experiment", "model", "variant")


@dataclass
class Run:
    """One run directory with its records."""

    path: Path
    manifest: dict
    metrics: dict
    subjects: pd.DataFrame

    @property
    def kind(self) -> str:
        task = self.manifest.get("task", "")
        return "segmentation" if "Segmentation" in task else "classification" if "Classification" in task else task

    def key(self) -> tuple[str, ...]:
        m = self.manifest
        return (self.kind, str(m.get("experiment")), str(m.get("model")), str(m.get("variant", "default")))


def find_runs(root: str | Path, stage: str = "val") -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every run directory under ``root`` (a folder holding ``manifest.json``), and the ones
    left out with the reason (unfinished, no per-subject rows, unknown task kind)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder {root} does not exist")
    runs, skipped = [], []
    for manifest_path in sorted(root.rglob(MANIFEST)):
        folder = manifest_path.parent
        subjects_path = folder / f"subjects_{stage}.csv"
        if not (folder / METRICS).is_file():
            skipped.append((folder, "no metrics.json (unfinished run)"))
            continue
        if not subjects_path.is_file():
            skipped.append((folder, f"no {subjects_path.name}"))
            continue
        run = Run(folder, _read_json(manifest_path), _read_json(folder / METRICS), pd.read_csv(subjects_path))
        status = run.manifest.get("status", "finished")
        if status != "finished":
            skipped.append((folder, f"status: {status}"))
            continue
        if run.kind not in KINDS:
            skipped.append((folder, f"task {run.manifest.get('task')!r} has no leaderboard kind"))
            continue
        runs.append(run)
    return runs, skipped


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


# ----------------------------------------------------------------------------- metrics
class _SubjectScores:
    """A run's per-subject predictions, aligned to a common subject order, that can score
    any subset (bootstrap resample) of those subjects."""

    def __init__(self, kind: Kind, subjects: pd.DataFrame, ids: np.ndarray) -> None:
        self.kind = kind
        if kind.name == "segmentation":
            columns = [m for m in (kind.primary, *kind.secondary) if m in subjects]
            table = subjects.groupby("subject_id")[columns].mean().loc[ids]
            self.values = {m: table[m].to_numpy(dtype=float) for m in columns}
        else:
            prob_cols = [c for c in subjects.columns if c.startswith("prob_")]
            self.classes = [c.removeprefix("prob_") for c in prob_cols]
            grouped = subjects.groupby("subject_id")
            self.prob = grouped[prob_cols].mean().loc[ids].to_numpy(dtype=float)
            self.labels = np.array([self.classes.index(v) for v in grouped["label"].first().loc[ids]])

    def score(self, metric: str, idx: np.ndarray | None = None) -> float:
        if self.kind.name == "segmentation":
            if metric not in self.values:
                return float("nan")
            v = self.values[metric] if idx is None else self.values[metric][idx]
            v = v[np.isfinite(v)]
            return float(v.mean()) if v.size else float("nan")
        fn, uses_prob = cls_metrics.METRICS[metric]
        y, p = (self.labels, self.prob) if idx is None else (self.labels[idx], self.prob[idx])
        return float(fn(y, p if uses_prob else p.argmax(axis=1)))


def group_statistics(runs: list[Run], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Statistics of one group of runs (the seeds of one experiment/model/variant)."""
    kind = KINDS[runs[0].kind]
    common = set.intersection(*(set(r.subjects["subject_id"].astype(str)) for r in runs))
    if not common:
        raise ValueError(f"runs {[str(r.path) for r in runs]} share no validation subject")
    ids = np.array(sorted(common))
    for r in runs:
        r.subjects["subject_id"] = r.subjects["subject_id"].astype(str)
    scores = [_SubjectScores(kind, r.subjects, ids) for r in runs]
    strata = ([np.flatnonzero(scores[0].labels == c) for c in np.unique(scores[0].labels)]
              if kind.name == "classification" else [np.arange(ids.size)])
    rng = np.random.default_rng(seed)
    resamples = [np.concatenate([rng.choice(s, size=s.size, replace=True) for s in strata])
                 for _ in range(n_boot)]
    tail = 100 * (1 - level) / 2
    row: dict = {"n_seeds": len(runs),
                 "seeds": ",".join(str(r.manifest.get("seed")) for r in runs), "n_subjects": ids.size}
    for metric in (kind.primary, *kind.secondary):
        per_run = np.array([s.score(metric) for s in scores])
        if not np.isfinite(per_run).any():
            continue
        boot = np.array([_mean_defined([s.score(metric, idx) for s in scores]) for idx in resamples])
        boot = boot[np.isfinite(boot)]
        low, high = np.percentile(boot, [tail, 100 - tail]) if boot.size else (np.nan, np.nan)
        row.update({f"{metric}_mean": float(np.nanmean(per_run)),
                    f"{metric}_std": float(np.nanstd(per_run, ddof=1)) if len(runs) > 1 else float("nan"),
                    f"{metric}_ci_low": float(low), f"{metric}_ci_high": float(high)})
    row.update(
        params_M=float(np.mean([r.manifest.get("params", np.nan) for r in runs])) / 1e6,
        train_s=float(np.mean([r.manifest.get("wall_s", np.nan) for r in runs])),
        latency_s=float(np.mean([r.metrics.get("extra", {}).get("latency_s", np.nan) for r in runs])),
        peak_memory_gb=float(np.max([r.manifest.get("peak_memory_gb", np.nan) for r in runs])),
        run_dirs=";".join(str(r.path) for r in runs))
    return row


def _mean_defined(values: list[float]) -> float:
    """Mean of the finite values; ``nan`` (silently) when none is, e.g. HD95 of a resample
    holding only subjects without a lesion."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def leaderboard(runs: list[Run], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (kind, experiment, model, variant), ranked by the primary metric's mean
    within each kind (see module docstring). Empty frame for no runs."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key(), []).append(run)
    rows = [dict(zip(GROUP_KEYS, key), **group_statistics(group, n_boot=n_boot, seed=seed))
            for key, group in groups.items()]
    if not rows:
        return pd.DataFrame(columns=["rank", *GROUP_KEYS])
    table = pd.DataFrame(rows)
    table["primary"] = table["kind"].map(lambda k: KINDS[k].primary)
    table["primary_mean"] = [r[f"{p}_mean"] for p, (_, r) in zip(table["primary"], table.iterrows())]
    table = table.sort_values(["kind", "primary_mean", "experiment"], ascending=[False, False, True],
                              ignore_index=True)
    table.insert(0, "rank", table.groupby("kind").cumcount() + 1)
    return table.drop(columns=["primary_mean"])
