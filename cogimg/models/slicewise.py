"""2.5D U-Net with any timm encoder, applied slice by slice to 3D patches.

Slice axis: the last array axis ``Z``, which is axial (inferior -> superior) in the
RAS+ arrays cogimg's preprocessing produces. For every axial slice ``z`` the network
sees the ``context_slices`` slices ``z - k .. z + k`` (``k = context_slices // 2``) of
every modality stacked as channels and predicts slice ``z``; the volume's first and last
slices get their context by repeating the edge slice. Because the module maps a 3D
patch ``(B, C, X, Y, Z)`` to ``(B, out_channels, X, Y, Z)``, it trains on the same 3D
patches and runs in the same sliding-window inference as the 3D networks.

The encoder is ``timm.create_model(encoder, features_only=True)``; the decoder and head
are MONAI's (``UNetDecoder`` / ``SegmentationHead`` from FlexibleUNet, themselves after
segmentation_models_pytorch), so no network code is written here: neither MONAI's
FlexibleUNet (own ResNet/EfficientNet encoders only) nor timm ships a U-Net on timm
encoders, and segmentation-models-pytorch is not a dependency.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cogimg.models.registry import register
from cogimg.models.validation import check_channels, check_patch_size


def _create_encoder(name: str, in_chans: int, pretrained: bool) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unet2d_timm: unknown timm encoder {name!r}{hint}")
    return timm.create_model(name, features_only=True, pretrained=pretrained, in_chans=in_chans)


class SliceWiseUNet(nn.Module):
    """U-Net on 2D slices with a timm encoder, wrapped to take and return 3D patches.

    Args:
        in_channels: modalities ``C`` of the 3D input.
        out_channels: classes including background.
        encoder: any timm model name with ``features_only`` support whose feature maps
            halve in size level by level (CNNs: resnet*, efficientnet*, convnext*, ...).
        context_slices: odd number of neighbouring axial slices stacked per modality; the
            encoder sees ``in_channels * context_slices`` channels, ordered modality-major
            (channel ``c * context_slices + j`` is modality ``c`` at slice ``z - k + j``).
        decoder_channels: width of each decoder level, one per encoder feature map.
        pretrained: load timm's ImageNet weights (downloads; off by default). timm adapts
            the first convolution to ``in_channels * context_slices`` channels.

    Shapes: ``(B, C, X, Y, Z)`` -> logits ``(B, out_channels, X, Y, Z)``, for any sizes;
    ``X`` and ``Y`` are edge-padded internally to a multiple of the encoder's stride.

    Note: all ``B * Z`` slices go through the 2D network as one batch, so in training mode
    BatchNorm statistics mix slices; in eval mode slice ``z``'s output depends only on
    input slices ``z - k .. z + k``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        encoder: str = "resnet18",
        context_slices: int = 3,
        decoder_channels: Sequence[int] = (128, 64, 32, 16, 16),
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder

        check_channels("unet2d_timm", in_channels, out_channels)
        if isinstance(context_slices, bool) or not isinstance(context_slices, int) or (
            context_slices < 1 or context_slices % 2 == 0
        ):
            raise ValueError(
                f"unet2d_timm: context_slices must be a positive odd int (the centre slice plus "
                f"k on each side), got {context_slices!r}"
            )
        self.in_channels = in_channels
        self.context_slices = context_slices
        self.encoder = _create_encoder(encoder, in_channels * context_slices, pretrained)
        reductions = list(self.encoder.feature_info.reduction())
        channels = list(self.encoder.feature_info.channels())
        if reductions[0] < 2 or any(b != 2 * a for a, b in itertools.pairwise(reductions)):
            raise ValueError(
                f"unet2d_timm: encoder {encoder!r} gives feature maps at strides {reductions}; "
                "a U-Net decoder needs strides >= 2 that double level by level (CNN backbones)"
            )
        if len(decoder_channels) != len(channels):
            raise ValueError(
                f"unet2d_timm: encoder {encoder!r} has {len(channels)} feature levels, so "
                f"decoder_channels needs {len(channels)} entries, got {tuple(decoder_channels)}"
            )
        self.size_multiple = reductions[-1]
        self.decoder = UNetDecoder(
            spatial_dims=2,
            encoder_channels=[in_channels * context_slices, *channels],
            decoder_channels=list(decoder_channels),
            act=("relu", {"inplace": True}),
            norm="batch",
            dropout=0.0,
            bias=False,
            upsample="nontrainable",
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=False,
        )
        # The decoder's last level (no skip) upsamples the shallowest map (stride
        # reductions[0]) by 2; the head brings the rest of the way to full resolution.
        self.head = SegmentationHead(
            spatial_dims=2,
            in_channels=decoder_channels[-1],
            out_channels=out_channels,
            kernel_size=3,
            scale_factor=reductions[0] / 2,
        )

    def forward_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """2D U-Net: ``(N, C * context_slices, X, Y)`` -> ``(N, out_channels, X, Y)``."""
        size_x, size_y = slices.shape[-2:]
        pad_x, pad_y = -size_x % self.size_multiple, -size_y % self.size_multiple
        if pad_x or pad_y:
            slices = F.pad(slices, (0, pad_y, 0, pad_x), mode="replicate")
        features = self.encoder(slices)
        logits = self.head(self.decoder(features, len(features) - 1))
        return logits[..., :size_x, :size_y]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` -> ``(B, out_channels, X, Y, Z)``, one 2D pass per axial slice."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"unet2d_timm: expected input (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}"
            )
        batch, channels, size_x, size_y, size_z = x.shape
        half = self.context_slices // 2
        if half:
            x = F.pad(x, (half, half, 0, 0, 0, 0), mode="replicate")
        # (B, C, X, Y, Z, S): window j of slice z is input slice z - half + j
        windows = x.unfold(4, self.context_slices, 1)
        slices = windows.permute(0, 4, 1, 5, 2, 3).reshape(
            batch * size_z, channels * self.context_slices, size_x, size_y
        )
        logits = self.forward_slices(slices)
        return logits.reshape(batch, size_z, -1, size_x, size_y).permute(0, 2, 3, 4, 1)


@register("unet2d_timm", task="segmentation")
def unet2d_timm(
    *,
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    encoder: str = "resnet18",
    context_slices: int = 3,
    decoder_channels: Sequence[int] = (128, 64, 32, 16, 16),
    pretrained: bool = False,
) -> nn.Module:
    """2.5D U-Net, any timm encoder (default resnet18), run slice by slice along Z on 3D patches.

    See :class:`SliceWiseUNet`. Any ``patch_size`` works (X, Y are padded internally); it
    is only validated. Defaults: resnet18 encoder, 3 context slices, decoder widths
    (128, 64, 32, 16, 16): 12.3 M parameters, 28.6 GFLOPs per 2 x 64^3 sample (70 % in
    the encoder; a batch of 2 x 64^3 is 128 slices of 64^2 per step); ``encoder="resnet10t"``
    is a cheaper encoder. ``benchmarks/model_step_time.py`` measures the step time.
    """
    check_patch_size("unet2d_timm", patch_size, 1, "any size")
    return SliceWiseUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        encoder=encoder,
        context_slices=context_slices,
        decoder_channels=decoder_channels,
        pretrained=pretrained,
    )
