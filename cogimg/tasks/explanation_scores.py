"""The ``explanation`` kind: how leaderboards and studies read an explanation run's rows.

Not a trainable task: an explanation run (:mod:`cogimg.tracking.study_explain`) scores the
saliency maps of an already trained model, one row per explained subject, with the
faithfulness measures of :mod:`cogimg.paradigms.explain.faithfulness`:

* ``pointing_game`` — 1 where the map's maximum lies in the ground-truth region, else 0
  (its subject mean is the pointing-game accuracy);
* ``relevance_mass`` — share of the positive saliency inside the region, in [0, 1];
* ``deletion_auc`` (lower is better) / ``insertion_auc`` (higher is better) — area under the
  target score as the most salient voxels are removed / inserted;
* ``seconds`` — time to compute the map (s).

Every metric is a subject mean (:class:`~cogimg.tasks.scoring.MeanScorer`); runs are ranked
by the pointing game.
"""

from __future__ import annotations

from typing import ClassVar

from cogimg.tasks.scoring import MeanScorer


class ExplanationScores:
    """The task protocol's reporting attributes for the ``explanation`` kind (module
    docstring); there is nothing to train or instantiate."""

    kind: ClassVar[str] = "explanation"
    default_metric: ClassVar[str] = "pointing_game"
    default_mode: ClassVar[str] = "max"
    leaderboard_metrics: ClassVar[tuple[str, ...]] = ("pointing_game", "relevance_mass",
                                                       "deletion_auc", "insertion_auc", "seconds")
    metric_labels: ClassVar[dict[str, str]] = {
        "pointing_game": "pointing game", "relevance_mass": "relevance mass",
        "deletion_auc": "deletion AUC ↓", "insertion_auc": "insertion AUC ↑", "seconds": "s/map"}
    subject_scorer = MeanScorer
