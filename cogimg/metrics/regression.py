"""Subject-level regression metrics (outcome prediction) and bootstrap confidence intervals.

Every function takes one entry per **subject**: ``y_true`` ``(N,)`` observed scores (e.g.
NIHSS points) and ``y_pred`` ``(N,)`` predictions in the same unit. They are plain numpy (a
bootstrap calls them thousands of times) and equal the reference implementations
(``tests/metrics/test_regression_metrics.py`` checks it):

- :func:`pearson_r` = ``scipy.stats.pearsonr(y_true, y_pred).statistic``;
- :func:`spearman_rho` = ``scipy.stats.spearmanr(y_true, y_pred).statistic`` (average ranks
  for ties);
- :func:`mae` = ``sklearn.metrics.mean_absolute_error``;
- :func:`r2` = ``sklearn.metrics.r2_score`` (1 − SS_res / SS_tot: negative when the model is
  worse than predicting the mean).

Where the reference raises or warns (a constant input: correlation undefined; ``r2`` with
constant ``y_true``), these return ``nan`` — one degenerate bootstrap resample must not
abort an interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from cogimg.metrics import bootstrap

ArrayLike = np.ndarray | Sequence


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be 1-D (one value per subject)")
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must have the same length")
    if t.size == 0:
        raise ValueError("no subjects: y_true is empty")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("y_true and y_pred must be finite (no NaN or Inf)")
    return t, p


def pearson_r(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Pearson correlation; ``nan`` for fewer than 2 subjects or a constant input."""
    t, p = _pair(y_true, y_pred)
    tc, pc = t - t.mean(), p - p.mean()
    denom = np.sqrt(np.dot(tc, tc) * np.dot(pc, pc))
    if t.size < 2 or denom == 0:
        return float("nan")
    return float(np.clip(np.dot(tc, pc) / denom, -1.0, 1.0))


def spearman_rho(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    t, p = _pair(y_true, y_pred)
    return pearson_r(rankdata(t), rankdata(p))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error, in the unit of the score."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def r2(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Coefficient of determination; ``nan`` when ``y_true`` is constant."""
    t, p = _pair(y_true, y_pred)
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((t - p) ** 2)) / ss_tot


#: Metric name → function; ``regression_report`` computes all of them.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson_r": pearson_r, "spearman_rho": spearman_rho, "mae": mae, "r2": r2}


def regression_report(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Every metric of :data:`METRICS`, plus ``n`` (subjects)."""
    t, p = _pair(y_true, y_pred)
    report = {name: fn(t, p) for name, fn in METRICS.items()}
    report["n"] = int(t.size)
    return report


def bootstrap_ci(
    y_true: ArrayLike, y_pred: ArrayLike, metric: str | Callable[[np.ndarray, np.ndarray], float]
    = "pearson_r", n_boot: int = 1000, seed: int = 0, *, level: float = 0.95,
    groups: ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric, resampling **subjects** with replacement.

    Args:
        y_true, y_pred: ``(N,)`` observed and predicted scores.
        metric: a name of :data:`METRICS` or ``f(y_true, y_pred) -> float``.
        n_boot: resamples; seed: seed of the resampling (same seed, same interval).
        level: coverage (0.95 → 2.5th and 97.5th percentiles).
        groups: ``(N,)`` participant IDs when a participant has several entries: whole
            participants are resampled (cluster bootstrap), never single entries.

    Returns:
        ``(low, high)``; undefined (``nan``) resamples are left out, ``(nan, nan)`` if all are.
        Resampling: :mod:`cogimg.metrics.bootstrap`.
    """
    t, p = _pair(y_true, y_pred)
    fn = _resolve(metric)
    if groups is not None and np.shape(groups) != t.shape:
        raise ValueError(f"groups has {np.shape(groups)[0]} entries for {t.size} subjects")
    return bootstrap.bootstrap_ci(lambda idx: fn(t[idx], p[idx]), t.size, n_boot, seed,
                                  level=level, groups=groups)


def paired_bootstrap_delta(
    y_true: ArrayLike, y_pred: ArrayLike, y_reference: ArrayLike,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "pearson_r", n_boot: int = 1000,
    seed: int = 0, *, level: float = 0.95,
) -> dict[str, float]:
    """Difference of a metric between two models' predictions of the **same** subjects, with a
    paired percentile bootstrap: each resample draws subjects once and scores both models on
    them, so the interval reflects the models' difference, not the two marginal intervals.

    Args:
        y_true: ``(N,)`` observed scores; y_pred / y_reference: ``(N,)`` predictions of the
            model and of the reference (e.g. out-of-fold predictions on the same folds).
        metric, n_boot, seed, level: as :func:`bootstrap_ci`.

    Returns:
        ``delta`` (metric(y_pred) − metric(y_reference) on all subjects), ``ci_low``,
        ``ci_high`` (percentiles of the resampled differences) and ``p_le_0``: the share of
        resamples where the difference is ≤ 0 (a one-sided bootstrap p-value for "the model
        beats the reference" on a higher-is-better metric).
    """
    t, p = _pair(y_true, y_pred)
    _, ref = _pair(y_true, y_reference)
    fn = _resolve(metric)
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot ≥ 1, got {level}, {n_boot}")
    return bootstrap.paired_bootstrap(lambda idx: fn(t[idx], p[idx]), lambda idx: fn(t[idx], ref[idx]),
                                      t.size, n_boot, seed, level=level)


def _resolve(metric: str | Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise KeyError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a function")
    return METRICS[metric]


__all__ = ["METRICS", "bootstrap_ci", "mae", "paired_bootstrap_delta", "pearson_r", "r2",
           "regression_report", "spearman_rho"]
