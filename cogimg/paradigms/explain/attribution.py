"""Saliency maps for 3D networks: Grad-CAM, integrated gradients, occlusion (Captum).

Each method takes a score module (:mod:`cogimg.paradigms.explain.targets`: input
``(1, C, X, Y, Z)`` → scores ``(1, K)``), the input and a target column, and returns a
non-negative saliency map ``(X, Y, Z)`` on the input's (preprocessed) grid:

- ``gradcam``: Captum's ``LayerGradCam`` (forward/backward hooks) on the network's last
  convolutional stage (found by :func:`last_conv_stage`: the output of the stage holding the
  last strided-resolution ``Conv3d`` to run), ReLU'd and trilinearly upsampled to the input.
- ``ig``: Captum's ``IntegratedGradients`` from an all-zero baseline (the mean of a z-scored
  image), ``n_steps`` Riemann steps.
- ``occlusion``: Captum's ``Occlusion``: the score drop when a ``window_vox`` cube (all
  channels) is set to zero, slid with ``stride_vox``.

Attributions of several channels are summed and the positive part kept: saliency is
*evidence for the target* (for IG and occlusion the sign says for or against).
Attention rollout for ViTs lives in :mod:`cogimg.paradigms.explain.rollout`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("gradcam", "ig", "occlusion", "rollout")


def _check_input(image: torch.Tensor) -> None:
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"explain one volume at a time: expected (1, C, X, Y, Z), got {tuple(image.shape)}")


def to_saliency(attribution: torch.Tensor) -> torch.Tensor:
    """``(1, C, X, Y, Z)`` attributions → ``(X, Y, Z)``: channel sum, positive part, float32."""
    return attribution.detach().float().sum(dim=(0, 1)).clamp_min(0.0).cpu()


def _upsample(cam: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(1, 1, x, y, z)`` → ``(X, Y, Z)`` by trilinear interpolation (corner-aligned off, as
    the feature map's voxel centres cover the input's field of view)."""
    return F.interpolate(cam.float(), size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]


# --------------------------------------------------------------------------- Grad-CAM
def last_conv_stage(scorer: nn.Module, image: torch.Tensor) -> tuple[str, nn.Module]:
    """The module whose output Grad-CAM uses: the outermost module that returns the same
    feature map as the last downsampled ``Conv3d`` of a forward pass.

    "Downsampled": its output is smaller than the input on some axis (so a segmentation
    network's full-resolution output convolution is skipped). Walking up from that
    convolution while the parent returns a tensor of the same shape gives the stage output
    (e.g. ``layer4`` of a ResNet, after its residual additions). Raises ``ValueError`` for
    networks without such a convolution (ViTs: use attention rollout).
    """
    names = {module: name for name, module in scorer.named_modules()}
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []
    spatial = tuple(image.shape[2:])

    def record(module, _inputs, output):
        name = names.get(module)
        if name is not None and isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape)
            if isinstance(module, nn.Conv3d) and output.ndim == 5 and tuple(output.shape[2:]) != spatial \
                    and all(o <= s for o, s in zip(output.shape[2:], spatial)):
                order.append(name)

    hooks = [m.register_forward_hook(record) for m in names]
    try:
        with torch.no_grad():
            scorer(image)
    finally:
        for hook in hooks:
            hook.remove()
    if not order:
        raise ValueError(f"{type(scorer).__name__}: no downsampled 3D convolution found for Grad-CAM "
                         "(a ViT? use method 'rollout', 'ig' or 'occlusion')")
    best = order[-1]
    parts = best.split(".")
    if any("PatchEmbed" in type(scorer.get_submodule(".".join(parts[:cut]))).__name__
           for cut in range(1, len(parts) + 1)):
        raise ValueError(f"{type(scorer).__name__}: the last convolution is a ViT patch embedding, "
                         "which has no class-specific feature map; use method 'rollout', 'ig' or 'occlusion'")
    for cut in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:cut])
        if shapes.get(parent) != shapes[best]:
            break
        best = parent
    return best, scorer.get_submodule(best)


def gradcam(scorer: nn.Module, image: torch.Tensor, target: int, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) in 3D: ``(X, Y, Z)`` ≥ 0 on the input grid.

    Args:
        layer: dotted module name inside ``scorer`` (default: :func:`last_conv_stage`).
    """
    from captum.attr import LayerGradCam

    _check_input(image)
    if getattr(scorer, "roi_size", None) is not None:
        raise ValueError("Grad-CAM needs one forward pass of the whole volume, not sliding windows: "
                         "score with SegmentationScore(..., roi_size=None)")
    module = scorer.get_submodule(layer) if layer else last_conv_stage(scorer, image)[1]
    cam = LayerGradCam(scorer, module).attribute(image, target=target, relu_attributions=True)
    if cam.ndim != 5:
        raise ValueError(f"Grad-CAM layer {layer!r} returns {tuple(cam.shape)}, not a 3D feature map")
    return _upsample(cam.detach(), image.shape[2:]).clamp_min(0.0).cpu()


# --------------------------------------------------------------------------- IG, occlusion
def integrated_gradients(scorer: nn.Module, image: torch.Tensor, target: int, n_steps: int = 16,
                         internal_batch_size: int = 2) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al. 2017) from a zero baseline: ``(X, Y, Z)`` ≥ 0.

    ``n_steps`` forward/backward passes (``internal_batch_size`` at a time, to bound memory).
    """
    from captum.attr import IntegratedGradients

    _check_input(image)
    if n_steps < 1:
        raise ValueError(f"n_steps must be ≥ 1, got {n_steps}")
    attr = IntegratedGradients(scorer).attribute(
        image, baselines=torch.zeros_like(image), target=target, n_steps=n_steps,
        internal_batch_size=internal_batch_size, method="gausslegendre")
    return to_saliency(attr)


def occlusion(scorer: nn.Module, image: torch.Tensor, target: int, window_vox: int = 8,
              stride_vox: int = 4, perturbations_per_eval: int = 4) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): score drop when a ``window_vox``³ cube of all
    channels is zeroed, slid by ``stride_vox``; ``(X, Y, Z)`` ≥ 0.

    Cost: one forward pass per window position, about ``∏ (X_i - window) / stride + 1``.
    """
    from captum.attr import Occlusion

    _check_input(image)
    if not 1 <= stride_vox <= window_vox:
        raise ValueError(f"need 1 ≤ stride_vox ≤ window_vox, got stride {stride_vox}, window {window_vox}")
    channels = image.shape[1]
    window = (channels, *(min(window_vox, s) for s in image.shape[2:]))
    strides = (channels, *(min(stride_vox, s) for s in image.shape[2:]))
    with torch.no_grad():
        attr = Occlusion(scorer).attribute(image, sliding_window_shapes=window, strides=strides,
                                           baselines=0.0, target=target,
                                           perturbations_per_eval=perturbations_per_eval)
    return to_saliency(attr)


def explain(scorer: nn.Module, image: torch.Tensor, method: str, target: int = 0,
            **options) -> torch.Tensor:
    """Saliency ``(X, Y, Z)`` ≥ 0 of ``scorer``'s ``target`` score for ``image`` ``(1, C, X, Y, Z)``.

    ``method``: ``gradcam`` (option ``layer``), ``ig`` (``n_steps``, ``internal_batch_size``),
    ``occlusion`` (``window_vox``, ``stride_vox``, ``perturbations_per_eval``) or
    ``rollout`` (ViTs; explains the representation, so ``target`` is ignored).
    """
    if method == "gradcam":
        return gradcam(scorer, image, target, **options)
    if method == "ig":
        return integrated_gradients(scorer, image, target, **options)
    if method == "occlusion":
        return occlusion(scorer, image, target, **options)
    if method == "rollout":
        from cogimg.paradigms.explain.rollout import attention_rollout

        return attention_rollout(scorer, image, **options)
    raise ValueError(f"unknown explanation method {method!r}; choose one of {list(METHODS)}")
