"""Re-scoring a run's per-subject table (``subjects_<stage>.csv``) on any subset of subjects.

Each task kind names one :class:`SubjectScorer` (``Task.subject_scorer``); leaderboards and
studies resample subjects and call :meth:`SubjectScorer.score` on each resample, so that
intervals are over subjects and every kind is scored the same way from its rows alone.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from cogimg.metrics import classification as cls_metrics
from cogimg.metrics import regression as reg_metrics
from cogimg.metrics.detection import froc, match_from_row


class SubjectScorer:
    """Scores subsets of one run's subjects, aligned to ``ids`` (unique subject IDs).

    ``strata`` is ``None`` or each subject's stratum ``(N,)``, resampled separately by a
    bootstrap (:func:`cogimg.metrics.bootstrap.resample_indices`).
    """

    def __init__(self, table: pd.DataFrame, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids)
        self.strata: np.ndarray | None = None

    def score(self, metric: str, idx: np.ndarray | None = None) -> float:
        """``metric`` over the subjects at positions ``idx`` of ``ids`` (``None`` = all);
        ``nan`` where undefined."""
        raise NotImplementedError


class MeanScorer(SubjectScorer):
    """Metrics that are subject means of per-subject columns (rows of one subject — several
    classes — averaged first; undefined values such as HD95 of an empty pair left out)."""

    def __init__(self, table: pd.DataFrame, ids: np.ndarray) -> None:
        super().__init__(table, ids)
        numeric = [c for c in table.columns
                   if c != "subject_id" and pd.api.types.is_numeric_dtype(table[c])]
        means = table.groupby("subject_id")[numeric].mean().loc[self.ids]
        self.values = {c: means[c].to_numpy(dtype=float) for c in numeric}

    def score(self, metric: str, idx: np.ndarray | None = None) -> float:
        if metric not in self.values:
            return float("nan")
        v = self.values[metric] if idx is None else self.values[metric][idx]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")


class ClassScorer(SubjectScorer):
    """Classification metrics (:data:`cogimg.metrics.classification.METRICS`) from ``label``
    and ``prob_<class>`` columns (a subject's rows averaged); resampled within each class."""

    def __init__(self, table: pd.DataFrame, ids: np.ndarray) -> None:
        super().__init__(table, ids)
        prob_cols = [c for c in table.columns if c.startswith("prob_")]
        self.classes = [c.removeprefix("prob_") for c in prob_cols]
        grouped = table.groupby("subject_id")
        self.prob = grouped[prob_cols].mean().loc[self.ids].to_numpy(dtype=float)
        self.labels = np.array([self.classes.index(str(v))
                                for v in grouped["label"].first().loc[self.ids]])
        self.strata = self.labels

    def score(self, metric: str, idx: np.ndarray | None = None) -> float:
        if metric not in cls_metrics.METRICS:
            return float("nan")
        fn, uses_prob = cls_metrics.METRICS[metric]
        y, p = (self.labels, self.prob) if idx is None else (self.labels[idx], self.prob[idx])
        return float(fn(y, p if uses_prob else p.argmax(axis=1)))


class RegressionScorer(SubjectScorer):
    """Regression metrics (Pearson r, Spearman ρ, MAE, R²) from ``target`` and ``pred``."""

    METRICS: ClassVar[dict] = {"pearson_r": reg_metrics.pearson_r, "spearman_rho": reg_metrics.spearman_rho,
               "mae": reg_metrics.mae, "r2": reg_metrics.r2}

    def __init__(self, table: pd.DataFrame, ids: np.ndarray) -> None:
        super().__init__(table, ids)
        means = table.groupby("subject_id")[["target", "pred"]].mean().loc[self.ids]
        self.target = means["target"].to_numpy(dtype=float)
        self.pred = means["pred"].to_numpy(dtype=float)

    def score(self, metric: str, idx: np.ndarray | None = None) -> float:
        if metric not in self.METRICS:
            return float("nan")
        t, p = (self.target, self.pred) if idx is None else (self.target[idx], self.pred[idx])
        if t.size < 2:
            return float("nan")
        return float(self.METRICS[metric](t, p))


class DetectionScorer(SubjectScorer):
    """FROC CPM and sensitivities from the FROC inputs each row stores
    (:func:`~cogimg.metrics.detection.scan_row`), plus subject means of the count columns."""

    def __init__(self, table: pd.DataFrame, ids: np.ndarray) -> None:
        super().__init__(table, ids)
        rows = table.to_dict("records")
        by_subject: dict[str, list] = {}
        for row in rows:
            by_subject.setdefault(str(row["subject_id"]), []).append(match_from_row(row))
        self.matches = [by_subject[str(i)] for i in self.ids]
        self.means = MeanScorer(table.drop(columns=["scores", "hits", "target_scores"],
                                           errors="ignore"), self.ids)

    def score(self, metric: str, idx: np.ndarray | None = None) -> float:
        positions = range(self.ids.size) if idx is None else idx
        if metric == "cpm" or metric.startswith("sens_"):
            matches = [m for i in positions for m in self.matches[i]]
            if not any(m.n_targets for m in matches):
                return float("nan")
            result = froc(matches)
            if metric == "cpm":
                return result["cpm"]
            rate = float(metric.removeprefix("sens_").removesuffix("fp"))
            return result["sensitivity"].get(rate, float("nan"))
        return self.means.score(metric, idx)
