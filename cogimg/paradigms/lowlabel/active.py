"""Active-learning simulation: does labelling the most uncertain scans first pay off?

On a cohort whose labels are all known (e.g. the synthetic one) the expert is simulated:
"labelling" a subject reveals its ground truth. Starting from ``initial`` labelled subjects,
each round fits a model on the labelled set, scores the validation set (e.g. Dice) and the
unlabelled pool (uncertainty per subject, as ``cogimg annotate`` ranks it), then the
strategy picks ``per_round`` subjects to label next:

- ``uncertainty``: the highest-uncertainty subjects (the top of ``review_list.csv``);
- ``random``: a seeded random draw (the baseline).

:func:`labels_gain` reports what each expert correction bought: the metric gained per newly
labelled subject, per round and overall.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

STRATEGIES = ("uncertainty", "random")

#: ``fit_and_score(labelled, unlabelled) -> (validation metric, {unlabelled id: uncertainty})``
FitAndScore = Callable[[list[str], list[str]], tuple[float, dict[str, float]]]


def pick(scores: dict[str, float], pool: Sequence[str], n: int, strategy: str,
         rng: np.random.Generator) -> list[str]:
    """``n`` IDs of ``pool`` to label next (highest ``scores`` first, ties by ID; or random)."""
    if strategy == "uncertainty":
        if missing := [i for i in pool if i not in scores]:
            raise KeyError(f"no uncertainty score for {missing}")
        return sorted(pool, key=lambda i: (-scores[i], i))[:n]
    if strategy == "random":
        return sorted(rng.choice(sorted(pool), size=min(n, len(pool)), replace=False).tolist())
    raise ValueError(f"strategy={strategy!r}; choose one of {list(STRATEGIES)}")


def simulate_active_learning(pool: Sequence[str], initial: Sequence[str], fit_and_score: FitAndScore,
                             rounds: int, per_round: int, strategy: str = "uncertainty",
                             seed: int = 0) -> pd.DataFrame:
    """Run ``rounds`` labelling rounds (see module doc); one row per fit.

    Columns: ``round``, ``n_labelled``, ``metric`` (validation), ``added`` (IDs labelled after
    this fit, ``;``-joined), ``strategy``.
    """
    if unknown := sorted(set(initial) - set(pool)):
        raise ValueError(f"initial IDs {unknown} are not in the pool")
    rng = np.random.default_rng(seed)
    labelled = sorted(set(initial))
    rows = []
    for r in range(rounds + 1):
        unlabelled = sorted(set(pool) - set(labelled))
        metric, scores = fit_and_score(list(labelled), unlabelled)
        chosen = pick(scores, unlabelled, per_round, strategy, rng) if r < rounds and unlabelled else []
        rows.append({"round": r, "n_labelled": len(labelled), "metric": float(metric),
                     "added": ";".join(chosen), "strategy": strategy})
        labelled = sorted(set(labelled) | set(chosen))
    return pd.DataFrame(rows)


def labels_gain(history: pd.DataFrame) -> dict[str, float]:
    """Metric gained per newly labelled subject over a :func:`simulate_active_learning` run:
    ``gain_per_label`` (overall), ``first_round_gain_per_label`` and ``final_metric``."""
    first, last = history.iloc[0], history.iloc[-1]
    added = last["n_labelled"] - first["n_labelled"]
    step = history.iloc[1]["n_labelled"] - first["n_labelled"] if len(history) > 1 else 0
    return {"final_metric": float(last["metric"]),
            "gain_per_label": float((last["metric"] - first["metric"]) / added) if added else float("nan"),
            "first_round_gain_per_label": float((history.iloc[1]["metric"] - first["metric"]) / step)
            if step else float("nan")}
