"""Post-processing of predicted lesion masks: drop small components, and choose how small.

nnU-Net decides on its validation predictions whether a post-processing step (keeping only
the largest component) helps, and applies it only if it does. cogimg applies the same rule to a
lesion-size threshold, which suits multi-lesion stroke masks better than "largest only":

- :func:`remove_small_lesions` drops the 26-connected components of a mask smaller than
  ``min_volume_ml`` (components as in the ISLES'22 lesion metrics,
  :func:`cogimg.metrics.segmentation.lesion_components`); a label map is processed per
  foreground label value.
- :func:`choose_min_lesion_ml` scores each candidate threshold (``0`` = off) on validation
  predictions with :func:`cogimg.metrics.segmentation.segmentation_report` and keeps the one with
  the best mean Dice; ties go to the smaller threshold, so the choice moves away from ``0``
  only when removal is strictly better on Dice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from cogimg.metrics.segmentation import (
    lesion_components,
    segmentation_report,
    summarise,
    voxel_volume_ml,
)

#: Candidate thresholds (mL) tried when none are given: off, then about 1 to a few hundred
#: voxels at 1–3 mm spacing.
DEFAULT_CANDIDATES_ML: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def check_min_lesion_ml(value: Any, name: str = "min_lesion_ml") -> float:
    """``value`` as a finite float ≥ 0 (mL), or ``ValueError`` naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number of mL ≥ 0, got {value!r}") from err
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number of mL ≥ 0, got {value!r}")
    return number


def remove_small_lesions(mask: Any, spacing_mm: Sequence[float], min_volume_ml: float
                         ) -> np.ndarray:
    """``mask`` without its 26-connected components smaller than ``min_volume_ml``.

    Args:
        mask: ``(X, Y, Z)`` bool mask or integer label map (0 = background; each other label
            value is processed on its own, so a class's components are that class's voxels),
            numpy array or torch tensor.
        spacing_mm: voxel size along axes 0, 1, 2 in mm.
        min_volume_ml: components with volume ``< min_volume_ml`` (mL) are set to 0;
            ``0`` returns an unchanged copy.

    Returns:
        A numpy array of ``mask``'s shape and dtype.
    """
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ValueError(f"mask must be a 3D (X, Y, Z) array, got shape {tuple(array.shape)}")
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"mask must be bool or integer labels, got dtype {array.dtype}")
    threshold = check_min_lesion_ml(min_volume_ml, "min_volume_ml")
    out = array.copy()
    if threshold == 0:
        return out
    voxel_ml = voxel_volume_ml(spacing_mm)
    for value in np.unique(array):
        if value == 0:
            continue
        labels, n = lesion_components(array == value)
        if n == 0:
            continue
        volumes = np.bincount(labels.reshape(-1), minlength=n + 1) * voxel_ml
        small = volumes < threshold
        small[0] = False  # background
        out[small[labels]] = 0
    return out


def choose_min_lesion_ml(predictions: Sequence[Any], truths: Sequence[Any],
                         spacings: Sequence[Sequence[float]],
                         candidates: Sequence[float] = DEFAULT_CANDIDATES_ML
                         ) -> tuple[float, list[dict[str, float]]]:
    """nnU-Net's post-processing rule for a lesion-size threshold, on validation subjects.

    Args:
        predictions: binary ``(X, Y, Z)`` predicted masks, one per validation subject (or per
            subject and foreground class).
        truths: the matching binary reference masks.
        spacings: the matching voxel sizes in mm.
        candidates: thresholds in mL to try; ``0`` (off) is always tried.

    Returns:
        ``(chosen, table)``: the threshold (mL) with the best mean Dice — ties go to the smaller
        one, so it is ``0`` unless removal is strictly better — and one row per candidate,
        ascending, with ``min_lesion_ml`` and the subject mean of every
        :data:`~cogimg.metrics.segmentation.METRIC_KEYS` entry (``nan`` when undefined for
        every subject) plus ``n_subjects``.
    """
    if not (len(predictions) == len(truths) == len(spacings)):
        raise ValueError(f"{len(predictions)} predictions, {len(truths)} truths and "
                         f"{len(spacings)} spacings: need one of each per subject")
    if not predictions:
        raise ValueError("choose_min_lesion_ml needs at least one validation subject")
    thresholds = sorted({0.0, *(check_min_lesion_ml(c, "candidate") for c in candidates)})
    table = []
    for threshold in thresholds:
        rows = [segmentation_report(remove_small_lesions(p, s, threshold), t, s)
                for p, t, s in zip(predictions, truths, spacings)]
        summary = summarise(rows)
        table.append({"min_lesion_ml": threshold, "n_subjects": len(rows),
                      **{k: float(v["mean"]) for k, v in summary.items()}})
    best = max(row["dice"] for row in table)
    chosen = next(row["min_lesion_ml"] for row in table if row["dice"] >= best)
    return chosen, table
