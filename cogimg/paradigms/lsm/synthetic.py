"""Scores generated from known regions, to check that lesion–symptom mapping recovers them.

:func:`synthetic_scores` draws a behavioural score from lesion maps (real masks such as
SOOP's, or :func:`random_lesions` on a tiny grid): ``score = Σ_r w_r · f_r + noise``, where
``f_r`` is the fraction of region ``r`` that a subject's lesion covers. The regions are the
ground truth; :func:`dice` compares them with the thresholded statistic map. Lesions are
spatially contiguous, so voxels next to a region share its lesion pattern and also reach
significance — Dice well below 1 is expected, and it says how well a map localises.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def random_lesions(n: int, shape: tuple[int, int, int], seed: int = 0,
                   radius_vox: tuple[float, float] = (1.5, 4.0)) -> np.ndarray:
    """``(n, X, Y, Z)`` bool maps, each one ellipsoid-ish blob at a uniform random centre."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    maps = np.zeros((n, *shape), dtype=bool)
    for i in range(n):
        centre = rng.uniform(0, np.array(shape) - 1)
        radii = rng.uniform(*radius_vox, size=3)
        maps[i] = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
    return maps


def pick_regions(maps: np.ndarray, n_regions: int = 2, radius_vox: float = 3.0,
                 min_count: int = 1, seed: int = 0) -> list[np.ndarray]:
    """``n_regions`` non-overlapping balls (``(X, Y, Z)`` bool), centred at random voxels that
    ≥ 20 % of the most-lesioned voxel's subjects share, so that each region is testable."""
    rng = np.random.default_rng(seed)
    count = maps.sum(axis=0)
    candidates = np.argwhere(count >= max(min_count, 0.2 * count.max()))
    if candidates.size == 0:
        raise ValueError("no lesioned voxel to centre a region on")
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in count.shape], indexing="ij"), -1)
    regions: list[np.ndarray] = []
    taken = np.zeros(count.shape, dtype=bool)
    for index in rng.permutation(len(candidates)):
        centre = candidates[index]
        ball = ((grid - centre) ** 2).sum(-1) <= radius_vox**2
        if not (ball & ndimage.binary_dilation(taken, iterations=int(2 * radius_vox))).any():
            regions.append(ball)
            taken |= ball
        if len(regions) == n_regions:
            return regions
    raise ValueError(f"could only place {len(regions)} of {n_regions} separate regions")


def synthetic_scores(maps: np.ndarray, regions: list[np.ndarray], weights=None,
                     noise_sd: float = 1.0, seed: int = 0) -> np.ndarray:
    """``(N,)`` score: ``Σ_r w_r · (fraction of region r lesioned) + N(0, noise_sd²)``.

    ``weights`` default 10 per region (a region fully destroyed adds 10 points).
    """
    weights = np.full(len(regions), 10.0) if weights is None else np.asarray(weights, float)
    if len(weights) != len(regions):
        raise ValueError(f"{len(weights)} weights for {len(regions)} regions")
    flat = maps.reshape(maps.shape[0], -1).astype(np.float32)
    fractions = np.stack([flat[:, r.ravel()].mean(axis=1) for r in regions], axis=1)
    rng = np.random.default_rng(seed)
    return fractions @ weights + rng.normal(0.0, noise_sd, maps.shape[0])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean volumes (1 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def recovery(t: np.ndarray, significant: np.ndarray, regions: list[np.ndarray],
             voxel_mm: float = 1.0) -> dict:
    """How well a map recovers the generating regions (all volumes ``(X, Y, Z)``).

    Returns ``dice`` (significant vs the union of regions), ``sensitivity`` per region
    (fraction of its voxels significant), ``peak_distance_mm`` (from the largest t to the
    nearest region voxel) and ``top_dice`` (Dice of the |truth| highest-t voxels: localisation
    independent of how far significance spreads along correlated lesion patterns).
    """
    truth = np.logical_or.reduce(regions)
    peak = np.unravel_index(int(np.argmax(t)), t.shape)
    distance = ndimage.distance_transform_edt(~truth)[peak] * voxel_mm
    k = int(truth.sum())
    top = np.zeros(t.shape, dtype=bool)
    top.flat[np.argsort(t, axis=None)[-k:]] = True
    return {"dice": dice(significant, truth), "truth_voxels": k,
            "significant_voxels": int(np.count_nonzero(significant)),
            "sensitivity": [float((significant & r).sum() / r.sum()) for r in regions],
            "peak_distance_mm": float(distance), "top_dice": dice(top, truth)}
