"""3D segmentation networks from MONAI, registered under short names.

Every builder takes the same core kwargs, all required so that a config states them:

* ``in_channels``: input modalities (e.g. 2 for DWI + ADC),
* ``out_channels``: classes including background (2 for lesion vs. background),
* ``patch_size``: the training / sliding-window patch ``(X, Y, Z)`` in voxels. UNETR's
  position embedding is built for exactly this size; every other network only needs
  it to be divisible by its total downsampling, which is checked here so a bad size
  fails at build time with the nearest valid size instead of as a shape mismatch
  inside a skip connection.

All networks map ``(B, in_channels, X, Y, Z)`` to logits ``(B, out_channels, X, Y, Z)``
(DynUNet with deep supervision in training mode excepted, see :func:`dynunet`).

**Defaults are sized for CPU**: one training step (forward + backward + SGD) at batch
2 x 2 channels x 64^3 takes on the order of a second on 2 CPU cores, so every architecture
can be compared on a laptop in minutes; the kwargs scale them up on a GPU (e.g.
``unetr(hidden_size=768, mlp_dim=3072, num_heads=12, feature_size=16)`` or
``swinunetr(feature_size=48, window_size=7)`` are the published sizes), which are several
times slower per step on CPU. ``benchmarks/model_step_time.py`` measures every model's step
time (``--reference`` times the published sizes beside the defaults, ``--variants`` the
memory formats and bf16) and writes them to ``results/model_step_time.json``. Parameter
counts and GFLOPs quoted below are properties of the default sizes (``cogimg.models.profile``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cogimg.models.registry import register
from cogimg.models.validation import check_channels, check_patch_size

if TYPE_CHECKING:
    import torch
    from torch import nn

SEGMENTATION = "segmentation"


def _check_core(
    name: str, in_channels, out_channels, patch_size, divisor, reason: str,
    single_voxel_ok: bool = False,
):
    """Check the core kwargs; ``single_voxel_ok`` for networks that do not instance- or
    batch-normalise their coarsest level (a single voxel there fails in training)."""
    check_channels(name, in_channels, out_channels)
    return check_patch_size(
        name, patch_size, divisor, reason, coarsest_above_one_voxel=not single_voxel_ok
    )


@register("unet", task=SEGMENTATION)
def unet(
    *,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
) -> nn.Module:
    """Residual 3D U-Net (monai.networks.nets.UNet, 2 residual units per level).

    Defaults: channels (16, 32, 64, 128, 256), 4 stride-2 levels (the first convolution
    already downsamples, hence its speed, the fastest default here): 4.8 M parameters,
    3.1 GFLOPs per 2 x 64^3 sample.
    ``patch_size`` must be divisible by the product of ``strides`` (16), with more than
    one voxel left at the coarsest level.
    """
    from monai.networks.nets import UNet

    _check_core(
        "unet", in_channels, out_channels, patch_size, math.prod(strides),
        f"{len(strides)} stride-{tuple(strides)} downsamplings",
    )
    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )


@register("dynunet", task=SEGMENTATION)
def dynunet(
    *,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    filters: Sequence[int] = (8, 16, 32, 64, 128),
    strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2, 2),
    res_block: bool = False,
    deep_supervision: bool = False,
    deep_supr_num: int = 2,
    dropout: float | None = None,
) -> nn.Module:
    """nnU-Net-style 3D U-Net (monai.networks.nets.DynUNet), 3^3 kernels, optional deep supervision.

    One level per entry of ``strides`` (the first is the full-resolution stem, stride 1)
    with ``filters[i]`` channels; a stride may be per axis, ``(2, 2, 1)``, for thick slices
    (as ``cogimg plan`` derives them). nnU-Net's own widths are (32, 64, 128, 256, 320); the
    default (8, 16, 32, 64, 128) keeps the full-resolution level cheap on CPU: 1.4 M
    parameters, 7.6 GFLOPs per sample (nnU-Net's widths: 16.5 M parameters, several
    times slower per step).

    With ``deep_supervision=True`` the module returns, **in training mode only**, a
    stacked tensor ``(B, 1 + deep_supr_num, out_channels, X, Y, Z)`` (index 0 the main
    output, then coarser heads upsampled to full size), as MONAI does; in eval mode it
    returns ``(B, out_channels, X, Y, Z)``. Turn the stacked tensor into a list with
    :func:`deep_supervision_outputs` and weight the heads with
    ``monai.losses.DeepSupervisionLoss(loss)(outputs, target)``.

    ``patch_size`` must be divisible by the product of ``strides`` (16), with more than
    one voxel left at the coarsest level.
    """
    from monai.networks.nets import DynUNet

    if len(filters) != len(strides):
        raise ValueError(
            f"dynunet: filters {tuple(filters)} and strides {tuple(strides)} must have the "
            "same length (one entry per level)"
        )
    if deep_supervision and not 1 <= deep_supr_num < len(strides) - 1:
        raise ValueError(
            f"dynunet: deep_supr_num must be in [1, {len(strides) - 2}] for {len(strides)} "
            f"levels, got {deep_supr_num}"
        )
    per_axis = [(s,) * 3 if isinstance(s, int) else tuple(s) for s in strides]
    divisor = tuple(math.prod(s[axis] for s in per_axis) for axis in range(3))
    _check_core(
        "dynunet", in_channels, out_channels, patch_size,
        divisor[0] if len(set(divisor)) == 1 else divisor, f"strides {tuple(strides)}",
    )
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3] * len(strides),
        strides=list(strides),
        upsample_kernel_size=list(strides[1:]),
        filters=list(filters),
        dropout=dropout,
        res_block=res_block,
        deep_supervision=deep_supervision,
        deep_supr_num=deep_supr_num,
    )


@register("segresnet", task=SEGMENTATION)
def segresnet(
    *,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    init_filters: int = 8,
    blocks_down: Sequence[int] = (1, 2, 2, 4),
    blocks_up: Sequence[int] = (1, 1, 1),
    dropout_prob: float | None = None,
) -> nn.Module:
    """3D SegResNet (Myronenko 2018; monai.networks.nets.SegResNet), residual encoder + light decoder.

    Defaults are MONAI's (init_filters 8, blocks_down (1, 2, 2, 4)): 1.2 M parameters,
    9.3 GFLOPs per sample (most of the step time is in the full-resolution level, so
    fewer blocks barely help).
    ``patch_size`` must be divisible by 2 ** (len(blocks_down) - 1) (8).
    """
    from monai.networks.nets import SegResNet

    if len(blocks_up) != len(blocks_down) - 1:
        raise ValueError(
            f"segresnet: blocks_up {tuple(blocks_up)} needs one entry fewer than blocks_down "
            f"{tuple(blocks_down)}"
        )
    _check_core(
        "segresnet", in_channels, out_channels, patch_size, 2 ** (len(blocks_down) - 1),
        f"{len(blocks_down) - 1} stride-2 downsamplings", single_voxel_ok=True,  # GroupNorm
    )
    return SegResNet(
        spatial_dims=3,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob=dropout_prob,
        blocks_down=tuple(blocks_down),
        blocks_up=tuple(blocks_up),
    )


@register("attention_unet", task=SEGMENTATION)
def attention_unet(
    *,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    channels: Sequence[int] = (8, 16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2, 2),
    dropout: float = 0.0,
) -> nn.Module:
    """3D Attention U-Net (Oktay 2018; monai.networks.nets.AttentionUnet), gated skip connections.

    Defaults: channels (8, 16, 32, 64, 128), 4 stride-2 levels: 1.5 M parameters,
    6.3 GFLOPs per sample (16 base channels make each step markedly slower).
    ``patch_size`` must be divisible by the product of ``strides`` (16), with more than one
    voxel left at the coarsest level.
    """
    from monai.networks.nets import AttentionUnet

    if len(channels) != len(strides) + 1:
        raise ValueError(
            f"attention_unet: channels {tuple(channels)} needs one entry more than strides "
            f"{tuple(strides)}"
        )
    _check_core(
        "attention_unet", in_channels, out_channels, patch_size, math.prod(strides),
        f"strides {tuple(strides)}",
    )
    return AttentionUnet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        dropout=dropout,
    )


#: MONAI's UNETR hard-codes a 16^3 ViT patch (and 12 transformer layers).
UNETR_VIT_PATCH = 16


@register("unetr", task=SEGMENTATION)
def unetr(
    *,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    feature_size: int = 8,
    hidden_size: int = 192,
    mlp_dim: int = 768,
    num_heads: int = 6,
    dropout_rate: float = 0.0,
) -> nn.Module:
    """UNETR (Hatamizadeh 2022; monai.networks.nets.UNETR): 12-layer ViT encoder on 16^3 tokens + CNN decoder.

    The ViT's position embedding is built for ``patch_size`` exactly, so inference must
    use the same window (sliding-window ``roi_size = patch_size``). The published size
    is hidden_size 768, mlp_dim 3072, 12 heads, feature_size 16 (95.8 M parameters, too
    slow per step on CPU); the default ViT-Tiny-like width (192 / 768 / 6 heads,
    feature_size 8) gives 7.8 M parameters, 8.9 GFLOPs per sample. ``patch_size`` must be
    divisible by 16 (the ViT patch).
    """
    from monai.networks.nets import UNETR
    from torch import nn

    if hidden_size % num_heads:
        raise ValueError(f"unetr: hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
    size = _check_core(
        "unetr", in_channels, out_channels, patch_size, UNETR_VIT_PATCH,
        f"UNETR's ViT cuts the patch into {UNETR_VIT_PATCH}^3 tokens",
        single_voxel_ok=True,  # the token grid is upsampled before any norm
    )
    network = UNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        img_size=size,
        feature_size=feature_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_heads=num_heads,
        dropout_rate=dropout_rate,
        spatial_dims=3,
    )
    # MONAI's TransformerBlock builds a cross-attention LayerNorm even without cross
    # attention; its parameters never get a gradient, which breaks DDP (unused
    # parameters) and weight-decay bookkeeping, so drop it.
    for block in network.vit.blocks:
        if not block.with_cross_attention:
            block.norm_cross_attn = nn.Identity()
    return network


#: SwinUNETR embeds 2^3 tokens and merges patches 4 times: 2 ** 5 = 32.
SWINUNETR_DIVISOR = 32


@register("swinunetr", task=SEGMENTATION)
def swinunetr(
    *,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    feature_size: int = 12,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 4,
    dropout_path_rate: float = 0.0,
    use_checkpoint: bool = False,
) -> nn.Module:
    """Swin UNETR (Hatamizadeh 2022; monai.networks.nets.SwinUNETR): Swin transformer encoder + CNN decoder.

    MONAI >= 1.5 no longer takes ``img_size``: the network accepts any input whose axes
    are multiples of 32 (checked here for ``patch_size``, which also needs one axis of
    at least 64 so the 1/32 bottleneck, instance-normalised, has more than one voxel).
    The published size is feature_size 48, window 7; MONAI's default (24, window 7) is
    the slowest network here on CPU. The default feature_size 12 with 4^3 windows (a 64^3
    patch starts as 32^3 tokens, where 7^3 windows dominate the cost) gives 3.9 M
    parameters, 11.9 GFLOPs per sample (feature_size 24 with 4^3 windows is still several
    times slower per step). ``feature_size`` must be a multiple of 12;
    ``use_checkpoint`` trades compute for GPU memory.
    """
    from monai.networks.nets import SwinUNETR

    if feature_size % 12:
        raise ValueError(f"swinunetr: feature_size must be a multiple of 12, got {feature_size}")
    _check_core(
        "swinunetr", in_channels, out_channels, patch_size, SWINUNETR_DIVISOR,
        "2^3 patch embedding followed by 4 patch mergings",
    )
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        window_size=window_size,
        dropout_path_rate=dropout_path_rate,
        use_checkpoint=use_checkpoint,
        spatial_dims=3,
    )


def deep_supervision_outputs(
    output: torch.Tensor | Sequence[torch.Tensor], spatial_dims: int = 3
) -> list[torch.Tensor]:
    """Split a network output into its deep-supervision heads, main output first.

    Accepts DynUNet's stacked training output ``(B, n_heads, C, X, Y, Z)``, a plain output
    ``(B, C, X, Y, Z)`` (one head) or an already split list. Feed the result to
    ``monai.losses.DeepSupervisionLoss(loss)(outputs, target)``, which by default weights
    head ``i`` by ``0.5 ** i`` (floored at 1/16), nnU-Net's scheme.
    """
    if isinstance(output, (list, tuple)):
        return list(output)
    if output.ndim == spatial_dims + 3:
        return list(output.unbind(dim=1))
    if output.ndim == spatial_dims + 2:
        return [output]
    raise ValueError(
        f"expected an output of shape (B, C, *spatial) or (B, n_heads, C, *spatial) with "
        f"{spatial_dims} spatial axes, got shape {tuple(output.shape)}"
    )
