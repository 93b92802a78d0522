"""Percentile bootstrap confidence intervals over subjects: plain, stratified, cluster, paired.

One resampling scheme serves every interval in cogimg. A resample draws ``n`` of the ``n``
units with replacement (``rng.choice(units, size=units.size, replace=True)`` with
``rng = np.random.default_rng(seed)``, one draw per stratum in stratum order), so the same
seed gives the same resamples — and the same interval — wherever it is used:

- **plain**: the units are the entries (subjects);
- **stratified** (``strata``): each class is resampled within itself, so every resample
  keeps the class counts of the test set (balanced accuracy and AUROC stay defined on small
  sets);
- **cluster** (``groups``): the units are the clusters (participants with several
  sessions, sites); a drawn cluster brings all its entries. With ``strata`` too, a cluster's
  class is that of its first entry;
- **paired**: two statistics scored on the *same* resample each time, so the interval of
  their difference reflects the difference, not two marginal intervals.

The interval is the ``(1 − level) / 2`` and ``(1 + level) / 2`` percentiles (numpy's
linear interpolation) of the resampled statistic. A statistic is a function of the index
array of one resample, ``statistic(idx) -> float``, so any metric of any aligned arrays fits
(``lambda idx: balanced_accuracy(y[idx], pred[idx])``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Statistic = Callable[[np.ndarray], float]


def _check(n: int, n_boot: int, level: float | None = None) -> None:
    if n < 1:
        raise ValueError("cannot bootstrap an empty sample (n = 0)")
    if n_boot < 1:
        raise ValueError(f"n_boot must be ≥ 1, got {n_boot}")
    if level is not None and not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _per_entry(values: ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(f"{name} has shape {array.shape}; expected ({n},), one per entry")
    return array


def resample_indices(n: int, n_boot: int, seed: int = 0, *, strata: ArrayLike | None = None,
                     groups: ArrayLike | None = None) -> Iterator[np.ndarray]:
    """The ``n_boot`` resamples, each an index array into the ``n`` entries.

    Args:
        n: entries (rows) of the data.
        n_boot: resamples.
        seed: seed of ``np.random.default_rng``.
        strata: ``(n,)`` class of each entry: resample within each class (counts kept).
        groups: ``(n,)`` cluster id of each entry: resample clusters, carrying all their
            entries (a resample then has as many clusters as the data, not always ``n``
            entries).

    Yields:
        ``(m,)`` int index arrays (``m = n`` without ``groups``), strata in sorted class order.
    """
    _check(n, n_boot)
    strata = _per_entry(strata, n, "strata")
    groups = _per_entry(groups, n, "groups")
    ids = np.arange(n) if groups is None else groups
    unique, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    members = None if groups is None else [np.flatnonzero(inverse == g) for g in range(unique.size)]
    units = ([np.flatnonzero(strata[first] == c) for c in np.unique(strata[first])]
             if strata is not None else [np.arange(unique.size)])
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        chosen = np.concatenate([rng.choice(s, size=s.size, replace=True) for s in units])
        yield chosen if members is None else np.concatenate([members[g] for g in chosen])


def bootstrap_distribution(statistic: Statistic, n: int, n_boot: int = 1000, seed: int = 0, *,
                           strata: ArrayLike | None = None,
                           groups: ArrayLike | None = None) -> np.ndarray:
    """``(n_boot,)`` float values of ``statistic`` over the resamples of
    :func:`resample_indices` (undefined resamples stay ``nan``)."""
    return np.array([statistic(idx) for idx in resample_indices(n, n_boot, seed, strata=strata,
                                                                 groups=groups)], dtype=float)


def percentile_interval(values: ArrayLike, level: float = 0.95, *,
                        skip_nan: bool = True) -> tuple[float, float]:
    """Percentile interval ``(low, high)`` of resampled values ``(B,)``.

    ``skip_nan``: leave undefined (``nan``) resamples out, ``(nan, nan)`` if all are;
    ``False``: any ``nan`` makes the interval ``(nan, nan)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = np.asarray(values, dtype=float)
    if skip_nan:
        values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(statistic: Statistic, n: int, n_boot: int = 1000, seed: int = 0, *,
                 level: float = 0.95, strata: ArrayLike | None = None,
                 groups: ArrayLike | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``n`` entries.

    Args:
        statistic: ``statistic(idx) -> float`` on the entries ``idx`` of one resample.
        n: entries; n_boot: resamples; seed: seed of the resampling.
        level: coverage (0.95 → 2.5th and 97.5th percentiles).
        strata, groups: stratified and/or cluster resampling (:func:`resample_indices`).

    Returns:
        ``(low, high)``; undefined (``nan``) resamples are left out, ``(nan, nan)`` if all are.
    """
    _check(n, n_boot, level)
    scores = bootstrap_distribution(statistic, n, n_boot, seed, strata=strata, groups=groups)
    return percentile_interval(scores, level)


def paired_bootstrap(statistic_a: Statistic, statistic_b: Statistic, n: int, n_boot: int = 1000,
                     seed: int = 0, *, level: float = 0.95, strata: ArrayLike | None = None,
                     groups: ArrayLike | None = None) -> dict[str, Any]:
    """Difference ``statistic_a − statistic_b`` on the same entries, with a paired interval.

    Each resample scores both statistics on the same ``idx``.

    Returns:
        ``delta`` (the difference on all entries), ``ci_low``, ``ci_high`` (percentiles of
        the defined resampled differences) and ``p_le_0``: the share of defined resamples
        where the difference is ≤ 0 (one-sided bootstrap p-value of "a beats b" for a
        higher-is-better statistic); ``nan`` where no resample is defined.
    """
    _check(n, n_boot, level)
    deltas = bootstrap_distribution(lambda idx: statistic_a(idx) - statistic_b(idx), n, n_boot,
                                    seed, strata=strata, groups=groups)
    deltas = deltas[~np.isnan(deltas)]
    everyone = np.arange(n)
    low, high = percentile_interval(deltas, level)
    return {"delta": statistic_a(everyone) - statistic_b(everyone), "ci_low": low, "ci_high": high,
            "p_le_0": float(np.mean(deltas <= 0)) if deltas.size else float("nan")}


def mean_ci(values: ArrayLike, n_boot: int = 1000, seed: int = 0, *, level: float = 0.95,
            strata: ArrayLike | None = None, groups: ArrayLike | None = None) -> tuple[float, float]:
    """Interval of the mean of a per-entry score vector ``(N,)`` (e.g. per-subject Dice)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"values must be (N,), got shape {v.shape}")
    return bootstrap_ci(lambda idx: float(v[idx].mean()), v.size, n_boot, seed, level=level,
                        strata=strata, groups=groups)


def paired_mean_ci(a: ArrayLike, b: ArrayLike, n_boot: int = 1000, seed: int = 0, *,
                   level: float = 0.95, strata: ArrayLike | None = None,
                   groups: ArrayLike | None = None) -> tuple[float, float]:
    """Interval of ``mean(a − b)`` for two aligned per-entry score vectors ``(N,)`` (the same
    subjects scored by two models)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be aligned (N,) vectors, got shapes {a.shape} and {b.shape}")
    result = paired_bootstrap(lambda idx: float(a[idx].mean()), lambda idx: float(b[idx].mean()),
                              a.size, n_boot, seed, level=level, strata=strata, groups=groups)
    return result["ci_low"], result["ci_high"]


__all__ = ["bootstrap_ci", "bootstrap_distribution", "mean_ci", "paired_bootstrap",
           "paired_mean_ci", "percentile_interval", "resample_indices"]
