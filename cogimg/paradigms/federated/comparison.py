"""Centralised vs federated vs local-only, pooled over training seeds, with paired CIs.

The input is one row per (arm, training seed, test subject): ``arm`` (``centralised``,
``local:<site>``, ``fedavg`` …), ``seed``, ``subject_id`` and what the metric needs —
``label`` and ``pred`` (class indices) for balanced accuracy, or one per-subject score column
(e.g. ``dice``) whose mean over subjects is the arm's score. Every arm and seed must score the
same test subjects, so each bootstrap resample draws subjects once (stratified by label for
balanced accuracy) and scores every arm and seed on them: the CIs of the differences are paired.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cogimg.metrics.bootstrap import percentile_interval, resample_indices
from cogimg.metrics.classification import balanced_accuracy

CENTRAL = "centralised"
LOCAL_PREFIX = "local:"
BALANCED_ACCURACY = "balanced_accuracy"


def arm_comparison(rows: pd.DataFrame, metric: str = BALANCED_ACCURACY, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> pd.DataFrame:
    """Per arm: the metric averaged over training seeds (and its SD over seeds), its share of
    the centralised arm's, and its difference from the best local-only arm (the local arm with
    the highest seed-averaged score, chosen once on all subjects), each with a paired
    subject-bootstrap CI.

    Args:
        rows: columns ``arm, seed, subject_id`` and ``label, pred`` (balanced accuracy) or
            ``metric`` (see the module docstring).
        metric: ``"balanced_accuracy"`` (resampling stratified by label), or the name of a
            per-subject score column, higher is better (e.g. ``"dice"``; unstratified).
        n_boot: bootstrap resamples.
        seed: seeds the resampling.
        level: coverage of the intervals.

    Returns:
        One row per arm (input order): ``arm, score, score_sd, score_seed_<S>`` (one column per
        training seed), ``score_low, score_high, of_central, of_central_low, of_central_high,
        vs_best_local, vs_best_local_low, vs_best_local_high``; the last six are NaN where
        there is no centralised or no local arm.
    """
    by_class = metric == BALANCED_ACCURACY
    needed = {"arm", "seed", "subject_id", *(("label", "pred") if by_class else (metric,))}
    missing = needed - set(rows.columns)
    if missing:
        raise ValueError(f"rows lack columns {sorted(missing)} (metric {metric!r})")
    arms = list(dict.fromkeys(rows["arm"]))
    seeds = sorted(set(rows["seed"]))
    subjects = sorted(set(rows["subject_id"]))
    labels = (rows.drop_duplicates("subject_id").set_index("subject_id").loc[subjects, "label"].to_numpy()
              if by_class else None)
    values = {}  # (arm, seed) -> per-subject predictions (balanced accuracy) or scores
    for (arm, s), group in rows.groupby(["arm", "seed"]):
        group = group.set_index("subject_id")
        if sorted(group.index) != subjects:
            raise ValueError(f"arm {arm!r}, seed {s}: scored {len(group)} subjects, not the "
                             f"{len(subjects)} every arm and seed must share")
        if by_class and (group.loc[subjects, "label"].to_numpy() != labels).any():
            raise ValueError(f"arm {arm!r}, seed {s}: labels differ from the other arms'")
        values[arm, s] = group.loc[subjects, "pred" if by_class else metric].to_numpy()
    for arm in arms:
        absent = [s for s in seeds if (arm, s) not in values]
        if absent:
            raise ValueError(f"arm {arm!r} has no results for seeds {absent}")

    def score(arm: str, idx: np.ndarray, among: Sequence[int] = seeds) -> float:
        """``arm``'s metric on the subjects ``idx``, averaged over the seeds ``among``."""
        if by_class:
            return float(np.mean([balanced_accuracy(labels[idx], values[arm, s][idx]) for s in among]))
        return float(np.mean([values[arm, s][idx].mean() for s in among]))

    everyone = np.arange(len(subjects))
    pooled = {arm: score(arm, everyone) for arm in arms}
    local = [a for a in arms if a.startswith(LOCAL_PREFIX)]
    best_local = max(local, key=pooled.get) if local else None
    central = CENTRAL if CENTRAL in arms else None

    draws = {arm: np.empty(n_boot) for arm in arms}
    for b, idx in enumerate(resample_indices(len(subjects), n_boot, seed, strata=labels)):
        for arm in arms:
            draws[arm][b] = score(arm, idx)

    def ci(values: np.ndarray) -> tuple[float, float]:
        return percentile_interval(values, level, skip_nan=False)

    out = []
    for arm in arms:
        per_seed = {s: score(arm, everyone, [s]) for s in seeds}
        row = {"arm": arm, "score": pooled[arm],
               "score_sd": float(np.std(list(per_seed.values()), ddof=1)) if len(seeds) > 1 else float("nan"),
               **{f"score_seed_{s}": v for s, v in per_seed.items()}}
        row["score_low"], row["score_high"] = ci(draws[arm])
        nan3 = (float("nan"),) * 3
        row["of_central"], row["of_central_low"], row["of_central_high"] = (
            (pooled[arm] / pooled[central], *ci(draws[arm] / draws[central])) if central else nan3)
        row["vs_best_local"], row["vs_best_local_low"], row["vs_best_local_high"] = (
            (pooled[arm] - pooled[best_local], *ci(draws[arm] - draws[best_local])) if best_local else nan3)
        out.append(row)
    return pd.DataFrame(out)
