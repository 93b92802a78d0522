"""Faithfulness of saliency maps: localisation against ground truth, and perturbation curves.

Localisation (needs a ground-truth region, e.g. the synthetic cohort's lesion mask, atrophy
or PD map; saliency and region on the same grid):

- :func:`pointing_game` (Zhang et al. 2018): does the saliency maximum fall inside the region
  (optionally dilated by ``tolerance_vox``)? Averaged over subjects it is the hit rate.
- :func:`relevance_mass` (Arras et al. 2022): the fraction of the total positive saliency
  that lies inside the region (1 = all relevance on the ground truth; a uniform map scores
  the region's share of the volume).

Perturbation (no ground truth; the model judges):

- :func:`deletion_curve` / :func:`insertion_curve` (Petsiuk et al. 2018, RISE): the model's
  score as the most salient voxels are removed from the input (set to a baseline) or
  inserted into the baseline, in equal fractions. A faithful map makes the score fall fast
  under deletion (low AUC) and rise fast under insertion (high AUC); :func:`curve_auc`
  integrates a curve over the fraction of voxels, in [0, 1] for scores in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _check_pair(saliency, region) -> tuple[np.ndarray, np.ndarray]:
    sal, reg = _as_numpy(saliency).astype(np.float64), _as_numpy(region).astype(bool)
    if sal.shape != reg.shape:
        raise ValueError(f"saliency {sal.shape} and region {reg.shape} must be on the same grid")
    if not np.isfinite(sal).all():
        raise ValueError("saliency has non-finite values")
    if not reg.any():
        raise ValueError("the ground-truth region is empty; localisation is undefined")
    return sal, reg


def pointing_game(saliency, region, tolerance_vox: float = 0.0) -> bool:
    """Whether the saliency maximum ``(X, Y, Z)`` lies in ``region`` (bool, same shape).

    Args:
        tolerance_vox: a hit may be this many voxels (Euclidean) outside the region, as the
            original's 15-pixel tolerance; 0 = strictly inside.

    Ties: the maximum counts as a hit if any of the tied voxels hits; an all-zero map (no
    evidence anywhere) is a miss.
    """
    sal, reg = _check_pair(saliency, region)
    peak = sal.max()
    if peak <= 0:
        return False
    if tolerance_vox > 0:
        from scipy.ndimage import distance_transform_edt

        reg = distance_transform_edt(~reg) <= tolerance_vox
    return bool(reg[sal == peak].any())


def relevance_mass(saliency, region) -> float:
    """Share of the positive saliency inside ``region``: ``Σ_region s⁺ / Σ s⁺`` in [0, 1].

    An all-zero map has no relevance to place and returns NaN.
    """
    sal, reg = _check_pair(saliency, region)
    positive = np.clip(sal, 0.0, None)
    total = positive.sum()
    return float(positive[reg].sum() / total) if total > 0 else float("nan")


def _perturbation_curve(score_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                        saliency, start: torch.Tensor, end: torch.Tensor, steps: int,
                        batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, C, X, Y, Z), got {tuple(image.shape)}")
    sal = torch.as_tensor(_as_numpy(saliency), dtype=torch.float32)
    if tuple(sal.shape) != tuple(image.shape[2:]):
        raise ValueError(f"saliency {tuple(sal.shape)} is not on the image grid {tuple(image.shape[2:])}")
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    n = sal.numel()
    # Most salient first; ties in index order (stable) so the curve is deterministic.
    order = torch.argsort(sal.flatten(), descending=True, stable=True)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    rank = rank.reshape(sal.shape).to(image.device)
    counts = [round(k * n / steps) for k in range(steps + 1)]
    scores: list[float] = []
    with torch.no_grad():
        for first in range(0, len(counts), batch_size):
            chunk = counts[first:first + batch_size]
            # Voxels ranked below `count` come from `end`, the rest from `start`.
            switched = torch.stack([rank < c for c in chunk])[:, None]  # (b, 1, X, Y, Z)
            batch = torch.where(switched, end, start)
            scores.extend(float(v) for v in score_fn(batch).reshape(-1))
    return np.asarray(counts, dtype=np.float64) / n, np.asarray(scores)


def deletion_curve(score_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, saliency,
                   baseline: float | torch.Tensor = 0.0, steps: int = 20,
                   batch_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Scores as the most salient voxels (all channels) of ``image`` are set to ``baseline``.

    Args:
        score_fn: ``(B, C, X, Y, Z)`` → ``(B,)`` score, e.g. the target-class probability.
        image: ``(1, C, X, Y, Z)``.
        saliency: ``(X, Y, Z)``.
        steps: the curve has ``steps + 1`` points at fractions ``0, 1/steps, …, 1``.
        batch_size: perturbed volumes per ``score_fn`` call.

    Returns ``(fractions, scores)``, each ``(steps + 1,)``.
    """
    end = torch.as_tensor(baseline, dtype=image.dtype, device=image.device).expand_as(image)
    return _perturbation_curve(score_fn, image, saliency, image, end, steps, batch_size)


def insertion_curve(score_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, saliency,
                    baseline: float | torch.Tensor = 0.0, steps: int = 20,
                    batch_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Scores as the most salient voxels of ``image`` are inserted into ``baseline``
    (arguments and return as :func:`deletion_curve`)."""
    start = torch.as_tensor(baseline, dtype=image.dtype, device=image.device).expand_as(image)
    return _perturbation_curve(score_fn, image, saliency, start, image, steps, batch_size)


def curve_auc(fractions: np.ndarray, scores: np.ndarray) -> float:
    """Trapezoidal area under a perturbation curve over the voxel fraction in [0, 1]."""
    fractions, scores = np.asarray(fractions, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if fractions.shape != scores.shape or fractions.ndim != 1 or len(fractions) < 2:
        raise ValueError("need matching 1-D fractions and scores with at least two points")
    return float(np.trapezoid(scores, fractions))
