"""Subject-level classification metrics and bootstrap confidence intervals.

Every function takes one entry per **subject** (never per image or slice): ``y_true``
``(N,)`` integer class indices, ``y_pred`` ``(N,)`` predicted indices, or ``prob``
``(N, K)`` class probabilities (``(N,)`` = probability of class 1 in binary problems).
They are plain numpy so that a bootstrap can call them thousands of times, and they equal
scikit-learn's functions wherever those are defined (``tests/metrics/
test_classification_metrics.py`` checks it):

- :func:`balanced_accuracy` = ``sklearn.metrics.balanced_accuracy_score`` (mean recall over
  the classes present in ``y_true``);
- :func:`f1_macro` = ``f1_score(average="macro", zero_division=0)``;
- :func:`auroc` = ``roc_auc_score`` (binary) or ``roc_auc_score(multi_class="ovr",
  average="macro")`` — one-vs-rest AUROC per class, unweighted mean;
- :func:`confusion_matrix` = ``sklearn.metrics.confusion_matrix(labels=range(K))``.

Where scikit-learn raises (AUROC when ``y_true`` holds one class, or a class absent from
``y_true`` in one-vs-rest), these return ``nan`` or leave that class out of the mean: a
bootstrap resample of a small test set hits those cases, and one undefined resample must
not abort the interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from cogimg.metrics import bootstrap

ArrayLike = np.ndarray | Sequence


def _labels(y: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class index per subject), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{name} must hold integer class indices, got {arr[:5]}…")
        arr = arr.astype(np.int64)
    return arr


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must have the same length")
    if t.size == 0:
        raise ValueError("no subjects: y_true is empty")
    return t, p


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """``(K, K)`` int64 counts: row = true class, column = predicted class.

    ``num_classes`` defaults to ``max(label) + 1`` over both arrays.
    """
    t, p = _pair(y_true, y_pred)
    k = int(max(t.max(), p.max()) + 1) if num_classes is None else int(num_classes)
    if t.min() < 0 or p.min() < 0 or max(t.max(), p.max()) >= k:
        raise ValueError(f"class indices must lie in [0, {k}), got {sorted(set(t) | set(p))}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of subjects classified correctly."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (chance = 1 / K)."""
    t, p = _pair(y_true, y_pred)
    cm = confusion_matrix(t, p)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def f1_macro(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over classes (F1 = 0 for a class never true nor predicted
    correctly). Classes: ``range(num_classes)``, or those present in either array (as
    scikit-learn's default ``labels``)."""
    t, p = _pair(y_true, y_pred)
    cm = confusion_matrix(t, p, num_classes)
    classes = np.arange(cm.shape[0]) if num_classes is not None else np.union1d(t, p)
    tp = np.diag(cm)[classes].astype(float)
    denom = cm.sum(axis=0)[classes] + cm.sum(axis=1)[classes]  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(np.mean(f1))


def _binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann–Whitney U / (n_pos · n_neg), ties counted one half (= ROC trapezoid area)."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(y_true: ArrayLike, prob: ArrayLike) -> float:
    """Area under the ROC curve; multi-class: one-vs-rest per class, macro mean.

    Args:
        y_true: ``(N,)`` class indices.
        prob: ``(N, K)`` probabilities (or any scores), or ``(N,)`` scores of class 1 for
            a binary problem.

    Returns ``nan`` when no class has both positive and negative subjects; classes absent
    from ``y_true`` are left out of the macro mean.
    """
    t = _labels(y_true, "y_true")
    s = np.asarray(prob, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"prob has {s.shape[0]} rows for {t.shape[0]} subjects")
    if s.ndim == 1:
        return _binary_auroc(t == 1, s)
    if s.ndim != 2:
        raise ValueError(f"prob must be (N,) or (N, K), got shape {s.shape}")
    if t.size and (t.min() < 0 or t.max() >= s.shape[1]):
        raise ValueError(f"class indices {sorted(set(t.tolist()))} do not fit {s.shape[1]} prob columns")
    per_class = [_binary_auroc(t == k, s[:, k]) for k in range(s.shape[1])]
    defined = [a for a in per_class if not np.isnan(a)]
    return float(np.mean(defined)) if defined else float("nan")


#: name -> (function, whether it takes probabilities rather than predicted labels)
METRICS: dict[str, tuple[Callable[..., float], bool]] = {
    "balanced_accuracy": (balanced_accuracy, False),
    "accuracy": (accuracy, False),
    "f1_macro": (f1_macro, False),
    "auroc": (auroc, True),
}


def classification_report(y_true: ArrayLike, prob: ArrayLike, num_classes: int | None = None) -> dict:
    """All metrics of :data:`METRICS` plus the confusion matrix (list of lists).

    ``prob`` ``(N, K)``: the prediction is its argmax; ``num_classes`` defaults to K.
    """
    t = _labels(y_true, "y_true")
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"prob must be (N, K) class probabilities, got shape {p.shape}")
    k = p.shape[1] if num_classes is None else num_classes
    pred = p.argmax(axis=1)
    report = {name: (fn(t, p) if uses_prob else fn(t, pred)) for name, (fn, uses_prob) in METRICS.items()}
    report["confusion_matrix"] = confusion_matrix(t, pred, k).tolist()
    return report


def _resolve(metric: str | Callable) -> tuple[Callable[..., float], bool | None]:
    if callable(metric):
        return metric, None
    try:
        return METRICS[metric]
    except KeyError:
        raise KeyError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)} or pass a function") from None


def bootstrap_ci(
    y_true: ArrayLike,
    y_pred_or_prob: ArrayLike,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "balanced_accuracy",
    n_boot: int = 1000,
    seed: int = 0,
    *,
    level: float = 0.95,
    stratified: bool = True,
    groups: ArrayLike | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a metric, resampling **subjects**.

    Args:
        y_true: ``(N,)`` true class per entry.
        y_pred_or_prob: ``(N,)`` predicted classes, or ``(N, K)`` probabilities; a label
            metric given probabilities uses their argmax.
        metric: a name of :data:`METRICS` or ``f(y_true, y_pred_or_prob) -> float``.
        n_boot: bootstrap resamples.
        seed: seed of the resampling (same seed, same interval).
        level: coverage of the interval (0.95 → 2.5th and 97.5th percentiles).
        stratified: resample within each true class, so every resample keeps the class
            counts of the test set (balanced accuracy and AUROC stay defined on small sets).
        groups: ``(N,)`` subject ids when a subject has several entries (sessions): the
            subjects are resampled, carrying all their entries (cluster bootstrap).

    Returns:
        ``(low, high)``. Resamples where the metric is undefined (``nan``) are left out;
        ``(nan, nan)`` if all are. Resampling: :mod:`cogimg.metrics.bootstrap`.
    """
    fn, uses_prob = _resolve(metric)
    t = _labels(y_true, "y_true")
    values = np.asarray(y_pred_or_prob)
    if values.shape[0] != t.shape[0]:
        raise ValueError(f"y_pred_or_prob has {values.shape[0]} rows for {t.shape[0]} entries in y_true")
    if uses_prob is False and values.ndim == 2:
        values = values.argmax(axis=1)
    if groups is not None and np.shape(groups)[0] != t.shape[0]:
        raise ValueError(f"groups has {np.shape(groups)[0]} entries for {t.shape[0]} in y_true")
    return bootstrap.bootstrap_ci(lambda idx: fn(t[idx], values[idx]), t.size, n_boot, seed,
                                  level=level, strata=t if stratified else None, groups=groups)
