"""Explanation targets: what an explanation of a task explains, as a module attribution
methods call (the task protocol's ``explanation_target``).

Every attribution method (Grad-CAM, integrated gradients, occlusion;
:mod:`cogimg.paradigms.explain`) needs one function ``image (B, C, X, Y, Z) → scores (B, K)``
and a target column ``k``:

- **classification**: :class:`ClassificationScore`, the logits ``(B, K)`` of the classes; the
  target is a class (default: the predicted one). Tabular inputs, when the model has them, are
  held fixed: the explanation is of the image only.
- **segmentation**: :class:`SegmentationScore`, the sum of the lesion-class logits over a fixed
  region of interest — by default the voxels the model labels lesion on the unperturbed input
  (Seg-Grad-CAM, Vinogradova et al. 2020), or the whole volume when it predicts none — so
  ``K = 1`` and the target is 0.

A segmentation network is scored the way it predicts: by Gaussian-weighted sliding windows
of its training patch (:func:`cogimg.models.sliding_window.sliding_window_logits`, the
windowing of ``sliding_window_predict`` with gradients), because a network trained on
patches — instance normalisation above all — predicts differently on a whole volume
(``studies/xai_faithfulness_stroke.yaml`` explains the stroke U-Net so). Grad-CAM needs one
forward pass of the whole volume; for it (``roi_size=None``) the wrapper pads the volume with
zeros (the mean of a z-scored image) to a multiple of ``pad_multiple`` and crops the logits
back.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ClassificationScore(nn.Module):
    """Logits ``(B, K)`` of a classification model for ``image`` ``(B, M, X, Y, Z)``.

    Args:
        model: a fusion model (``ClassificationTask.model``: ``forward(image, availability,
            tabular)``) or any module mapping ``(B, M, X, Y, Z)`` to ``(B, K)``.
        availability: ``(1, M)`` or ``(B, M)`` modality availability, held fixed.
        tabular: ``(1, F)`` or ``(B, F)`` clinical features, held fixed.
    """

    def __init__(self, model: nn.Module, availability: torch.Tensor | None = None,
                 tabular: torch.Tensor | None = None, fusion: bool = True) -> None:
        super().__init__()
        self.model = model
        self.fusion = fusion
        self.availability = availability
        self.tabular = tabular

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not self.fusion:
            return self.model(image)
        batch = image.shape[0]
        avail = None if self.availability is None else self.availability.expand(batch, -1)
        tab = None if self.tabular is None else self.tabular.expand(batch, -1)
        return self.model(image, avail, tab)


class SegmentationScore(nn.Module):
    """Sum of lesion-class logits over a region: ``(B, C, X, Y, Z)`` → ``(B, 1)``.

    Args:
        model: segmentation network, ``(B, C, X, Y, Z)`` → logits ``(B, K, X, Y, Z)``.
        lesion_classes: output channels summed (default: every class but background 0).
        roi_size: sliding-window size in voxels (the training patch); ``None`` = one forward
            pass of the whole, zero-padded volume.
        overlap: sliding-window overlap fraction (the task's ``sw_overlap``).
        sw_batch_size: windows per forward pass.
        pad_multiple: whole-volume mode: zero-pad each spatial axis up to a multiple of this
            (voxels).

    Call :meth:`set_region` with a boolean ``(X, Y, Z)`` (or ``(B, X, Y, Z)``) mask to sum
    over it; without one the sum runs over the whole volume.
    """

    def __init__(self, model: nn.Module, lesion_classes: Sequence[int] | None = None,
                 roi_size: Sequence[int] | None = None, overlap: float = 0.5, sw_batch_size: int = 4,
                 pad_multiple: int = 32) -> None:
        super().__init__()
        self.model = model
        self.lesion_classes = None if lesion_classes is None else [int(c) for c in lesion_classes]
        self.roi_size = None if roi_size is None else tuple(int(s) for s in roi_size)
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.pad_multiple = int(pad_multiple)
        self.region: torch.Tensor | None = None

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if out.ndim == x.ndim + 1:  # deep supervision heads: keep the full-resolution one
            out = out[:, 0]
        return out

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, X, Y, Z)`` on the input's grid (padding removed)."""
        if self.roi_size is not None:
            from cogimg.models.sliding_window import sliding_window_logits

            return sliding_window_logits(self._network, image, self.roi_size, self.overlap, self.sw_batch_size)
        shape = image.shape[2:]
        pads = [(-s) % self.pad_multiple for s in shape]
        # F.pad lists the last axis first: (Z_lo, Z_hi, Y_lo, Y_hi, X_lo, X_hi).
        padded = F.pad(image, [p for size in reversed(pads) for p in (0, size)]) if any(pads) else image
        return self._network(padded)[..., : shape[0], : shape[1], : shape[2]]

    def lesion_logit(self, logits: torch.Tensor) -> torch.Tensor:
        classes = self.lesion_classes or list(range(1, logits.shape[1]))
        return logits[:, classes].sum(dim=1)

    def set_region(self, region: torch.Tensor | None) -> None:
        self.region = None if region is None else region.bool()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        lesion = self.lesion_logit(self.logits(image))  # (B, X, Y, Z)
        if self.region is not None:
            lesion = lesion * self.region.to(lesion.device)
        return lesion.flatten(1).sum(dim=1, keepdim=True)


def predicted_region(scorer: SegmentationScore, image: torch.Tensor) -> torch.Tensor | None:
    """Voxels ``(B, X, Y, Z)`` the model labels with a lesion class, or ``None`` (and a
    warning) when it labels none: then the whole volume is explained."""
    with torch.no_grad():
        logits = scorer.logits(image)
    classes = scorer.lesion_classes or list(range(1, logits.shape[1]))
    region = torch.isin(logits.argmax(dim=1), torch.tensor(classes, device=logits.device))
    if not region.any():
        warnings.warn("the model predicts no lesion voxel; explaining the lesion-logit sum over "
                      "the whole volume instead", stacklevel=2)
        return None
    return region
