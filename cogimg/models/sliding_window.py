"""Patch-based whole-volume inference: Gaussian-weighted sliding windows, flip TTA, AMP.

The windowing itself is MONAI's ``sliding_window_inference`` (the field's reference). What
cogimg adds is what a user otherwise forgets: no autograd (``torch.inference_mode``), the
Gaussian importance map built once per (patch, device) instead of once per call, several
windows per forward pass, windows in ``channels_last_3d`` memory format (faster for a MONAI
UNet forward on CPU, ``benchmarks/sliding_window.py`` measures it), mixed precision on GPU,
mirror test-time augmentation with the mirrored copies batched into one windowed pass
(``benchmarks/predict_speed.py`` compares it with one pass per copy), and softmax
probabilities out.

It sits in the models layer because tasks call it (``SegmentationTask.predict_volume``);
checkpoint loading and native-grid output are :mod:`cogimg.inference`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference


@lru_cache(maxsize=8)
def gaussian_importance_map(roi_size: tuple[int, ...], sigma_scale: float, device: str) -> torch.Tensor:
    """MONAI's Gaussian window weights for ``roi_size`` (voxels), cached per device."""
    return compute_importance_map(roi_size, mode="gaussian", sigma_scale=sigma_scale,
                                  device=torch.device(device))


def flip_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All mirror combinations of spatial ``axes`` (0-based over X, Y, Z), identity first."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Logits ``(B, K, X, Y, Z)`` of ``image`` ``(B, C, X, Y, Z)`` from Gaussian-weighted windows.

    The windowing of :func:`sliding_window_predict` without its inference mode, so gradients
    flow to the input (explanations score a segmentation model this way).
    """
    roi = tuple(int(s) for s in roi_size)
    weights = gaussian_importance_map(roi, float(sigma_scale), str(image.device))
    if torch.is_grad_enabled() and weights.is_inference():
        weights = weights.clone()  # a map cached under inference mode cannot be saved for backward
    return sliding_window_inference(image, roi, sw_batch_size, model, overlap=overlap, mode="gaussian",
                                    sigma_scale=sigma_scale, roi_weight_map=weights)


def sliding_window_predict(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    sigma_scale: float = 0.125,
    tta_flip_axes: Sequence[int] = (),
    amp: bool | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Class probabilities of a whole volume.

    Args:
        model: maps ``(N, C, *roi_size)`` to logits ``(N, K, *roi_size)``.
        image: ``(B, C, X, Y, Z)`` float tensor on the model's device; volumes smaller than
            ``roi_size`` are padded by MONAI and cropped back.
        roi_size: window size in voxels.
        overlap: fraction of overlap between neighbouring windows (0 ≤ overlap < 1).
        sw_batch_size: windows per forward pass.
        sigma_scale: Gaussian sigma as a fraction of the window size (nnU-Net: 1/8).
        tta_flip_axes: spatial axes (0, 1, 2 = X, Y, Z) to mirror for test-time augmentation;
            probabilities are averaged over every combination (``(0, 1, 2)`` → 8 mirrored
            copies). The copies go through one sliding-window pass as a batch of
            ``B × 2^len(axes)`` volumes (memory: that many input and output volumes), so
            each forward pass is filled with ``sw_batch_size`` windows.
        amp: autocast to float16/bfloat16; default: on for CUDA, off on CPU.
        channels_last: feed windows in ``torch.channels_last_3d`` format; use with a model
            converted by ``model.to(memory_format=torch.channels_last_3d)`` (same weights and
            results, faster convolutions for most 3D CNNs on CPU and GPU).

    Returns:
        ``(B, K, X, Y, Z)`` float32 softmax probabilities.
    """
    if image.ndim != 5:
        raise ValueError(f"image must be (B, C, X, Y, Z), got shape {tuple(image.shape)}")
    device = image.device
    amp = device.type == "cuda" if amp is None else amp
    if channels_last:
        model = _ChannelsLast(model)
    flips = flip_combinations(tuple(tta_flip_axes))
    batch = image.shape[0]
    with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
        # Every mirrored copy is one more batch element of a single sliding-window pass:
        # MONAI tiles each element on the same grid and fills each forward pass with
        # ``sw_batch_size`` windows drawn across the elements.
        copies = torch.cat([_flip(image, axes) for axes in flips]) if len(flips) > 1 else image
        logits = sliding_window_logits(model, copies, roi_size, overlap, sw_batch_size, sigma_scale)
        probs = torch.softmax(logits.float(), dim=1)
        total = None
        for axes, chunk in zip(flips, probs.split(batch)):
            chunk = _flip(chunk, axes)
            total = chunk if total is None else total + chunk
    return total / len(flips)


def _flip(volume: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """``volume`` ``(B, C, X, Y, Z)`` mirrored over spatial ``axes`` (0, 1, 2 = X, Y, Z)."""
    return torch.flip(volume, [a + 2 for a in axes]) if axes else volume


class _ChannelsLast:
    """Calls ``model`` on ``channels_last_3d`` copies of its (N, C, X, Y, Z) inputs."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last_3d))
