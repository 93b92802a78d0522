"""Segmentation losses by name, all from MONAI.

Every loss takes logits ``(B, C, X, Y, Z)`` and integer targets ``(B, 1, X, Y, Z)`` and
applies softmax over C; the background channel is included in the Dice term only where
MONAI's defaults for nnU-Net-style training do so (``include_background=False`` for Dice
terms, which keeps the foreground signal from being swamped by background voxels).
"""

from __future__ import annotations

from monai.losses import DiceCELoss, DiceFocalLoss, TverskyLoss
from torch import nn

LOSSES = ("dice_ce", "dice_focal", "tversky")


def segmentation_loss(name: str = "dice_ce", **kwargs) -> nn.Module:
    """Build a segmentation loss.

    Args:
        name: ``dice_ce`` (Dice + cross-entropy), ``dice_focal`` (Dice + focal, gamma 2) or
            ``tversky`` (alpha 0.3 / beta 0.7 — weighs false negatives more, for small lesions).
        **kwargs: passed to the MONAI class (e.g. ``lambda_ce``, ``alpha``).
    """
    common = {"to_onehot_y": True, "softmax": True, "include_background": False, "batch": True}
    if name == "dice_ce":
        return DiceCELoss(**{**common, **kwargs})
    if name == "dice_focal":
        return DiceFocalLoss(**{**common, "gamma": 2.0, **kwargs})
    if name == "tversky":
        return TverskyLoss(**{**common, "alpha": 0.3, "beta": 0.7, **kwargs})
    raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
