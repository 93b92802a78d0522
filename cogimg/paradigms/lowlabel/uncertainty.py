"""Voxel-wise and per-subject uncertainty of segmentations: MC dropout and ensembles.

Both give ``S`` probability samples ``(S, K, X, Y, Z)`` of one volume — ``S`` stochastic
passes with dropout active (Gal & Ghahramani 2016), or one pass per ensemble member
(Lakshminarayanan et al. 2017) — and :func:`uncertainty_maps` summarises them:

- ``entropy``: predictive entropy of the mean probabilities, in nats (0 … ln K);
- ``mutual_information``: entropy minus the mean per-sample entropy (BALD; the part due to
  model disagreement, 0 for identical samples);
- ``variance``: variance over samples of the probabilities, averaged over classes.

:func:`subject_uncertainty` turns them into scores that rank scans for expert review.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd


def enable_mc_dropout(model: nn.Module) -> int:
    """Put every dropout layer of ``model`` in training mode (the rest stays as it is).
    Returns how many there are (0: MC dropout would give identical samples)."""
    layers = [m for m in model.modules() if isinstance(m, _DropoutNd) and m.p > 0]
    for layer in layers:
        layer.train()
    return len(layers)


def probability_samples(predict: Callable[[], torch.Tensor], samples: int,
                        seed: int = 0) -> torch.Tensor:
    """``samples`` calls of ``predict`` (→ ``(K, X, Y, Z)``) stacked to ``(S, K, X, Y, Z)``,
    under a fixed seed so that MC-dropout masks are reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([predict() for _ in range(samples)])


def uncertainty_maps(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """``mean`` ``(K, X, Y, Z)`` and ``entropy``/``mutual_information``/``variance``
    ``(X, Y, Z)`` of probability samples ``(S, K, X, Y, Z)`` (see module doc)."""
    if probs.ndim < 3:
        raise ValueError(f"expected samples (S, K, ...), got shape {tuple(probs.shape)}")
    probs = probs.float()
    mean = probs.mean(0)
    entropy = torch.special.entr(mean).sum(0)
    expected = torch.special.entr(probs).sum(1).mean(0)
    variance = probs.var(0, unbiased=False).mean(0)
    return {"mean": mean, "entropy": entropy, "mutual_information": (entropy - expected).clamp(min=0),
            "variance": variance}


def subject_uncertainty(maps: dict[str, torch.Tensor], voxel_ml: float) -> dict[str, float]:
    """Per-subject scores of :func:`uncertainty_maps` on a grid of ``voxel_ml`` mL voxels.

    ``uncertainty`` (the ranking score): mean voxel entropy in nats, i.e. how much of the
    scan the model is unsure about; ``uncertain_volume_ml``: volume whose entropy exceeds
    half its maximum ``ln K``; ``mean_variance`` and ``mean_mutual_information``: their means.
    """
    k = maps["mean"].shape[0]
    return {"uncertainty": float(maps["entropy"].mean()),
            "mean_mutual_information": float(maps["mutual_information"].mean()),
            "mean_variance": float(maps["variance"].mean()),
            "uncertain_volume_ml": float((maps["entropy"] > 0.5 * math.log(k)).sum()) * voxel_ml}
