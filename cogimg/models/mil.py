"""2.5D classification: any timm 2D backbone on axial slice stacks, attention-MIL pooled.

A volume is a bag of instances (Ilse, Tomczak & Welling 2018, "Attention-based deep
multiple instance learning"): instance ``n`` is the stack of ``context_slices`` neighbouring
axial slices around centre slice ``z_n`` (every ``slice_stride``-th slice along the last
array axis ``Z``, inferior → superior in cogimg's RAS+ arrays), all modalities stacked as
channels — so the 2D backbone sees ``in_chans = modalities × context_slices`` channels,
ordered modality-major as in :mod:`cogimg.models.slicewise`. Each instance becomes a
feature vector ``h_n`` (timm ``num_classes=0``: globally pooled features), and gated
attention weights them:

    a_n = softmax_n( w^T (tanh(V h_n) ⊙ sigmoid(U h_n)) ),    z = Σ_n a_n h_n.

Subtle, localised changes (PD's substantia nigra, AD's hippocampi) live in a few slices;
attention lets those slices dominate instead of being averaged away, and the weights
(``last_attention``) show which slices drove a prediction.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cogimg.models.classification import CLASSIFICATION, ClassifierNet, check_core
from cogimg.models.registry import register


class GatedAttentionPooling(nn.Module):
    """Gated attention pooling over a set: ``(B, N, D)`` (+ mask ``(B, N)``) → ``(B, D)``.

    Ilse et al. 2018, eq. 9. ``mask`` marks the members that exist (e.g. available
    modalities); the others get zero weight. A row with no member left pools to zeros.

    Args:
        in_features: ``D``.
        hidden: width ``L`` of the attention MLP (``V``, ``U``: ``L × D``).
    """

    def __init__(self, in_features: int, hidden: int = 128) -> None:
        super().__init__()
        self.value = nn.Linear(in_features, hidden)  # V
        self.gate = nn.Linear(in_features, hidden)  # U
        self.score = nn.Linear(hidden, 1)  # w

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(pooled (B, D), weights (B, N))``; weights sum to 1 over present members."""
        scores = self.score(torch.tanh(self.value(h)) * torch.sigmoid(self.gate(h))).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), float("-inf"))
        weights = torch.softmax(scores, dim=1)
        weights = torch.nan_to_num(weights, nan=0.0)  # all members masked: softmax of all -inf
        return torch.einsum("bn,bnd->bd", weights, h), weights


def create_timm_backbone(name: str, in_chans: int, slice_shape: tuple[int, int], pretrained: bool,
                         backbone_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` for ``(N, in_chans, X, Y)`` slices.

    Transformers get ``img_size=slice_shape`` with dynamic padding/position embeddings so
    that slices of any size work; CNNs (which take no ``img_size``) are built plainly.
    ``backbone_kwargs`` go to ``timm.create_model`` on top of these (e.g. ``{"patch_size": 8,
    "global_pool": "avg"}`` for a ViT on small slices). A dry run on one slice turns an
    architecture that cannot take this size into one clear error.
    """
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"timm_2p5d: unknown timm backbone {name!r}{hint}")
    user = dict(backbone_kwargs or {})
    fixed = {"pretrained": pretrained, "in_chans": in_chans, "num_classes": 0}
    if clash := sorted(set(user) & set(fixed)):
        raise ValueError(f"timm_2p5d: backbone_kwargs may not set {clash}; they follow from the task")
    attempts = ({"img_size": slice_shape, "dynamic_img_size": True, "dynamic_img_pad": True},
                {"img_size": slice_shape}, {})
    for extra in attempts:
        try:
            model = timm.create_model(name, **fixed, **{**extra, **user})
            break
        except TypeError as error:  # the architecture does not take these kwargs: try the next set
            last_error = error
    else:
        raise ValueError(f"timm_2p5d: could not build timm model {name!r} with backbone_kwargs {user} "
                         f"({last_error})")
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, *slice_shape))
    except Exception as error:
        raise ValueError(
            f"timm_2p5d: timm backbone {name!r} cannot take {slice_shape} slices ({error}); "
            "choose a CNN (resnet18, convnext_tiny, efficientnet_b0) or a ViT (vit_tiny_patch16_224)"
        ) from error
    model.train(was_training)
    return model


class SliceMILEncoder(nn.Module):
    """Volume ``(B, C, X, Y, Z)`` → attention-pooled slice-stack features ``(B, D)``.

    Args:
        backbone: a 2D module ``(N, C × context_slices, X, Y)`` → ``(N, D)``.
        num_features: ``D``.
        in_channels: modalities ``C``.
        context_slices: odd number of neighbouring slices per instance; the volume's first
            and last slices get their context by repeating the edge slice.
        slice_stride: distance in slices between instance centres (1 = every slice).
        attention_dim: width of the gated-attention MLP.

    After each forward, ``last_attention`` holds the weights ``(B, N)`` (detached) and
    ``last_centres`` the centre slice index of each instance.
    """

    def __init__(self, backbone: nn.Module, num_features: int, in_channels: int,
                 context_slices: int = 3, slice_stride: int = 2, attention_dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.in_channels, self.context_slices, self.slice_stride = in_channels, context_slices, slice_stride
        self.pool = GatedAttentionPooling(num_features, attention_dim)
        self.last_attention: torch.Tensor | None = None
        self.last_centres: torch.Tensor | None = None

    def instances(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` → ``(B, N, C × context_slices, X, Y)`` slice stacks."""
        batch, channels, size_x, size_y, size_z = x.shape
        half = self.context_slices // 2
        if half:
            x = F.pad(x, (half, half, 0, 0, 0, 0), mode="replicate")
        centres = torch.arange(0, size_z, self.slice_stride, device=x.device)
        self.last_centres = centres
        windows = x.unfold(4, self.context_slices, 1)[:, :, :, :, centres]  # (B, C, X, Y, N, S)
        return windows.permute(0, 4, 1, 5, 2, 3).reshape(
            batch, centres.numel(), channels * self.context_slices, size_x, size_y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacks = self.instances(x)
        batch, n = stacks.shape[:2]
        h = self.backbone(stacks.flatten(0, 1)).reshape(batch, n, -1)
        pooled, weights = self.pool(h)
        self.last_attention = weights.detach()
        return pooled


@register("timm_2p5d", task=CLASSIFICATION)
def timm_2p5d(
    *,
    in_channels: int,
    num_classes: int,
    input_shape: Sequence[int],
    backbone: str = "resnet18",
    context_slices: int = 3,
    slice_stride: int = 2,
    attention_dim: int = 128,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    backbone_kwargs: Mapping[str, Any] | None = None,
) -> ClassifierNet:
    """2.5D: any timm backbone on axial slice stacks, gated-attention MIL over slices.

    ``backbone`` is any timm model name (``resnet18``, ``convnext_tiny``,
    ``vit_tiny_patch16_224`` …) with ``in_chans = in_channels × context_slices``;
    ``pretrained=False`` by default (ImageNet weights need a download; timm adapts the first
    layer to the channel count when they are used). Defaults: resnet18, 3-slice stacks
    every 2nd slice (24 instances of a 48-slice volume), 11.2 M parameters.
    ``backbone_kwargs`` pass through to ``timm.create_model`` (see
    :func:`~cogimg.models.mil.create_timm_backbone`).
    See :mod:`cogimg.models.mil`.
    """
    shape = check_core("timm_2p5d", in_channels, num_classes, input_shape)
    if isinstance(context_slices, bool) or not isinstance(context_slices, int) or (
        context_slices < 1 or context_slices % 2 == 0
    ):
        raise ValueError(f"timm_2p5d: context_slices must be a positive odd int, got {context_slices!r}")
    if isinstance(slice_stride, bool) or not isinstance(slice_stride, int) or slice_stride < 1:
        raise ValueError(f"timm_2p5d: slice_stride must be a positive int, got {slice_stride!r}")
    net2d = create_timm_backbone(backbone, in_channels * context_slices, shape[:2], pretrained,
                                 backbone_kwargs)
    encoder = SliceMILEncoder(net2d, net2d.num_features, in_channels, context_slices, slice_stride,
                              attention_dim)
    return ClassifierNet(encoder, net2d.num_features, num_classes, in_channels, "timm_2p5d", drop_rate)
