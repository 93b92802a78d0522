"""Explainability with measured faithfulness.

- :mod:`.targets`: what is explained (class logit; lesion-logit sum for segmentation).
- :mod:`.attribution`: Grad-CAM 3D, integrated gradients, occlusion (Captum) → ``explain``.
- :mod:`.rollout`: attention rollout for MONAI 3D ViTs.
- :mod:`.export`: saliency as NIfTI on the input's native grid, PNG overlays.
- :mod:`.faithfulness`: pointing game, relevance mass, deletion/insertion curves.

Example (a trained task, one preprocessed volume ``image`` ``(1, C, X, Y, Z)``)::

    scorer, target = scorer_for_task(task, image)             # windowed=False for "gradcam"
    saliency = explain(scorer, image, "ig", target)           # (X, Y, Z) ≥ 0
    hit = pointing_game(saliency, lesion_mask)
"""

from cogimg.paradigms.explain.attribution import (
    METHODS,
    explain,
    gradcam,
    integrated_gradients,
    last_conv_stage,
    occlusion,
)
from cogimg.paradigms.explain.faithfulness import (
    curve_auc,
    deletion_curve,
    insertion_curve,
    pointing_game,
    relevance_mass,
)
from cogimg.paradigms.explain.targets import ClassificationScore, SegmentationScore, scorer_for_task

__all__ = [
    "METHODS", "ClassificationScore", "SegmentationScore", "curve_auc", "deletion_curve", "explain",
    "gradcam", "insertion_curve", "integrated_gradients", "last_conv_stage", "occlusion",
    "pointing_game", "relevance_mass", "scorer_for_task",
]
