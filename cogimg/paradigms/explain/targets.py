"""What an explanation explains, for any task: :func:`scorer_for_task` asks the task's protocol
(``explanation_target``) for its score module; the modules live with the tasks
(:mod:`cogimg.tasks.explanation`) and are re-exported here."""

from __future__ import annotations

import torch
from torch import nn

from cogimg.tasks.explanation import ClassificationScore, SegmentationScore, predicted_region


def scorer_for_task(task: nn.Module, image: torch.Tensor, availability: torch.Tensor | None = None,
                    tabular: torch.Tensor | None = None, region: str = "predicted",
                    windowed: bool = True) -> tuple[nn.Module, int]:
    """The score module and default target index for ``task`` explaining ``image``.

    Args:
        task: a cogimg task in eval mode (its ``explanation_target``), or a bare
            classification network ``(B, C, X, Y, Z) → (B, K)``.
        image: ``(1, C, X, Y, Z)`` preprocessed input.
        availability, tabular: classification inputs held fixed while the image is explained.
        region: dense tasks: ``"predicted"`` (sum over predicted lesion voxels) or ``"all"``.
        windowed: dense tasks: score by sliding windows of the task's patch, as it predicts
            (``False``: one whole-volume forward pass, for Grad-CAM).

    Returns ``(scorer, target)``: classification targets the predicted class.
    """
    if region not in ("predicted", "all"):
        raise ValueError(f"region={region!r}; choose 'predicted' or 'all'")
    if hasattr(task, "explanation_target"):
        return task.explanation_target(image, availability=availability, tabular=tabular,
                                       region=region, windowed=windowed)
    scorer = ClassificationScore(task, fusion=False).eval()
    with torch.no_grad():
        target = int(scorer(image).argmax(dim=1)[0])
    return scorer, target


__all__ = ["ClassificationScore", "SegmentationScore", "predicted_region", "scorer_for_task"]
