"""3D classification backbones from MONAI, registered under short names.

Every builder takes the same core kwargs, all required so that a config states them:

* ``in_channels``: image modalities stacked as channels (T1w only: 1; T1w + PET: 2),
* ``num_classes``: diagnoses (CN/MCI/AD: 3),
* ``input_shape``: the whole-volume shape ``(X, Y, Z)`` in voxels that the datamodule
  produces (``VolumeDataModule`` default: (48, 56, 48) at 4 mm). The CNNs pool globally and
  take any shape; the ViT's position embedding is built for exactly this shape.

and returns a :class:`ClassifierNet`: ``(B, in_channels, X, Y, Z)`` → logits
``(B, num_classes)``, with ``forward_features`` → ``(B, num_features)`` so that fusion
(:mod:`cogimg.models.fusion`) can reuse any backbone as a per-modality encoder.

**Defaults are sized for CPU**: MONAI's ResNet-10 with its published widths (64, 128, 256,
512) and a stride-1 first convolution is far too slow per training step on a few CPU cores.
Here the first convolution has stride 2 and the widths are a quarter (16, 32, 64, 128);
with 4 mm input (48 × 56 × 48) an epoch of 120 subjects fits in the issue's 60 s target.
``benchmarks/cls_epoch_time.py`` measures the epoch time and the step times of the default
and published sizes side by side (``results/cls_epoch_time.json``). The
kwargs restore the published sizes on a GPU (``block_inplanes=(64, 128, 256, 512),
conv1_stride=1``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cogimg.models.registry import register

CLASSIFICATION = "classification"


class ClassifierNet(nn.Module):
    """A feature encoder plus a linear head: the interface every classification model has.

    Args:
        encoder: module mapping ``(B, in_channels, X, Y, Z)`` to features ``(B, num_features)``.
        num_features: the encoder's feature size ``D``.
        num_classes: logits per sample; 0 = no head (``forward`` returns the features).
        in_channels: expected input channels (checked, so a config that feeds the wrong
            number of modalities fails with both numbers instead of inside a convolution).
        name: registry name, for error messages.
        drop_rate: dropout before the head.
    """

    def __init__(self, encoder: nn.Module, num_features: int, num_classes: int, in_channels: int,
                 name: str, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_features = int(num_features)
        self.in_channels = int(in_channels)
        self.name = name
        self.dropout = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (timm's convention): ``num_classes=0`` leaves only the encoder."""
        self.num_classes = int(num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.name}: expected input (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` → ``(B, num_features)``."""
        self.check_input(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, X, Y, Z)`` → logits ``(B, num_classes)``."""
        return self.head(self.dropout(self.forward_features(x)))


def check_core(name: str, in_channels, num_classes, input_shape) -> tuple[int, int, int]:
    """Validate the core kwargs; returns ``input_shape`` as a tuple."""
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive int, got {value!r}")
    if (
        isinstance(input_shape, (str, bytes))
        or not isinstance(input_shape, Sequence)
        or len(input_shape) != 3
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_shape)
    ):
        raise ValueError(f"{name}: input_shape must be three positive ints (X, Y, Z), got {input_shape!r}")
    return tuple(input_shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------- ResNet
_RESNET_LAYERS = {"resnet10_3d": ("basic", (1, 1, 1, 1)),
                  "resnet18_3d": ("basic", (2, 2, 2, 2)),
                  "resnet50_3d": ("bottleneck", (3, 4, 6, 3))}


def _resnet(name: str, in_channels: int, num_classes: int, input_shape, block_inplanes,
            conv1_stride: int, conv1_size: int, no_max_pool: bool, drop_rate: float) -> ClassifierNet:
    from monai.networks.nets import ResNet

    check_core(name, in_channels, num_classes, input_shape)
    if len(block_inplanes) != 4 or any(int(w) < 1 for w in block_inplanes):
        raise ValueError(f"{name}: block_inplanes needs 4 positive widths, got {tuple(block_inplanes)}")
    block, layers = _RESNET_LAYERS[name]
    net = ResNet(block=block, layers=list(layers), block_inplanes=[int(w) for w in block_inplanes],
                 spatial_dims=3, n_input_channels=in_channels, conv1_t_size=conv1_size,
                 conv1_t_stride=conv1_stride, no_max_pool=no_max_pool, feed_forward=False)
    expansion = 4 if block == "bottleneck" else 1
    return ClassifierNet(net, int(block_inplanes[-1]) * expansion, num_classes, in_channels, name, drop_rate)


@register("resnet10_3d", task=CLASSIFICATION)
def resnet10_3d(
    *,
    in_channels: int,
    num_classes: int,
    input_shape: Sequence[int],
    block_inplanes: Sequence[int] = (16, 32, 64, 128),
    conv1_stride: int = 2,
    conv1_size: int = 7,
    no_max_pool: bool = False,
    drop_rate: float = 0.0,
) -> ClassifierNet:
    """3D ResNet-10 (monai.networks.nets.ResNet, one basic block per stage), CPU-sized widths.

    Defaults: widths (16, 32, 64, 128) — a quarter of the published ones — and a stride-2
    7³ first convolution: 0.9 M parameters (published widths: 14.4 M), total stride 32,
    global average pooling, so any ``input_shape`` works. The cogimg default 3D CNN for
    classification.
    """
    return _resnet("resnet10_3d", in_channels, num_classes, input_shape, block_inplanes,
                   conv1_stride, conv1_size, no_max_pool, drop_rate)


@register("resnet18_3d", task=CLASSIFICATION)
def resnet18_3d(
    *,
    in_channels: int,
    num_classes: int,
    input_shape: Sequence[int],
    block_inplanes: Sequence[int] = (16, 32, 64, 128),
    conv1_stride: int = 2,
    conv1_size: int = 7,
    no_max_pool: bool = False,
    drop_rate: float = 0.0,
) -> ClassifierNet:
    """3D ResNet-18 (MONAI, two basic blocks per stage), CPU-sized widths (16, 32, 64, 128)."""
    return _resnet("resnet18_3d", in_channels, num_classes, input_shape, block_inplanes,
                   conv1_stride, conv1_size, no_max_pool, drop_rate)


@register("resnet50_3d", task=CLASSIFICATION)
def resnet50_3d(
    *,
    in_channels: int,
    num_classes: int,
    input_shape: Sequence[int],
    block_inplanes: Sequence[int] = (16, 32, 64, 128),
    conv1_stride: int = 2,
    conv1_size: int = 7,
    no_max_pool: bool = False,
    drop_rate: float = 0.0,
) -> ClassifierNet:
    """3D ResNet-50 (MONAI, bottleneck blocks 3-4-6-3), CPU-sized widths; 512 features."""
    return _resnet("resnet50_3d", in_channels, num_classes, input_shape, block_inplanes,
                   conv1_stride, conv1_size, no_max_pool, drop_rate)


# --------------------------------------------------------------------------- DenseNet
@register("densenet121_3d", task=CLASSIFICATION)
def densenet121_3d(
    *,
    in_channels: int,
    num_classes: int,
    input_shape: Sequence[int],
    init_features: int = 16,
    growth_rate: int = 8,
    block_config: Sequence[int] = (6, 12, 24, 16),
    drop_rate: float = 0.0,
) -> ClassifierNet:
    """3D DenseNet-121 (monai.networks.nets.DenseNet121), CPU-sized growth rate.

    Defaults: 16 initial features and growth rate 8 (published: 64 and 32), the published
    block layout (6, 12, 24, 16). Its stem (7³ stride-2 convolution + max-pool) and three
    transitions give total stride 32, so ``input_shape`` needs ≥ 32 voxels per axis.
    """
    from monai.networks.nets import DenseNet121

    shape = check_core("densenet121_3d", in_channels, num_classes, input_shape)
    if min(shape) < 32:
        raise ValueError(f"densenet121_3d: input_shape {shape} must be at least 32 voxels on every "
                         "axis (a 4× stem and three 2× average-pool transitions); at 4 mm use the "
                         "default (48, 56, 48) or a resnet*_3d, which takes any shape")
    net = DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=1,
                      init_features=init_features, growth_rate=growth_rate,
                      block_config=tuple(block_config))
    # class_layers = relu → global pool → flatten → linear: keep all but the linear.
    num_features = net.class_layers.out.in_features
    encoder = nn.Sequential(net.features, *list(net.class_layers.children())[:-1])
    return ClassifierNet(encoder, num_features, num_classes, in_channels, "densenet121_3d", drop_rate)


# --------------------------------------------------------------------------- ViT
class _ViTEncoder(nn.Module):
    """MONAI ViT without its classification token: mean of the final (normed) patch tokens."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.vit(x)  # (B, N, hidden), after the final LayerNorm
        return tokens.mean(dim=1)


@register("vit_3d", task=CLASSIFICATION)
def vit_3d(
    *,
    in_channels: int,
    num_classes: int,
    input_shape: Sequence[int],
    patch_size: int | Sequence[int] = 8,
    hidden_size: int = 192,
    mlp_dim: int = 768,
    num_layers: int = 6,
    num_heads: int = 3,
    dropout_rate: float = 0.0,
    drop_rate: float = 0.0,
) -> ClassifierNet:
    """3D Vision Transformer (monai.networks.nets.ViT) on cubic patches, mean-pooled tokens.

    Defaults: 8³-voxel patches (32 mm at 4 mm spacing: 6 × 7 × 6 = 252 tokens for the
    default (48, 56, 48) volume), ViT-Tiny widths (hidden 192, MLP 768, 3 heads) and 6
    layers: 2.9 M parameters. The position embedding is learnt for ``input_shape``, which
    must be divisible by ``patch_size`` on every axis.
    """
    from monai.networks.nets import ViT

    shape = check_core("vit_3d", in_channels, num_classes, input_shape)
    patch = (patch_size,) * 3 if isinstance(patch_size, int) else tuple(patch_size)
    if len(patch) != 3 or any(s % p for s, p in zip(shape, patch)):
        nearest = tuple(-(-s // p) * p for s, p in zip(shape, patch))
        raise ValueError(
            f"vit_3d: input_shape {shape} must be divisible by patch_size {patch} on every axis "
            f"(the patch grid is fixed by the position embedding); nearest valid shape: {nearest}"
        )
    if hidden_size % num_heads:
        raise ValueError(f"vit_3d: hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
    vit = ViT(in_channels=in_channels, img_size=shape, patch_size=patch, hidden_size=hidden_size,
              mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, classification=False,
              dropout_rate=dropout_rate, spatial_dims=3)
    for block in vit.blocks:
        if not block.with_cross_attention:
            # MONAI builds this LayerNorm even without cross-attention; unused parameters
            # would make DDP (find_unused_parameters=False) fail.
            block.norm_cross_attn = nn.Identity()
    return ClassifierNet(_ViTEncoder(vit), hidden_size, num_classes, in_channels, "vit_3d", drop_rate)
