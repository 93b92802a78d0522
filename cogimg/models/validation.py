"""Checks of the core kwargs every segmentation builder shares.

A wrong ``patch_size`` would otherwise fail deep inside a forward pass (a shape mismatch
at a skip connection) or, worse, during sliding-window inference hours into a run; the
builders call these checks so the error names the model, the size and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_channels(model: str, in_channels: object, out_channels: object) -> None:
    """Raise ``ValueError`` unless both channel counts are positive ints."""
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{model}: {key} must be a positive int, got {value!r}")


def check_patch_size(
    model: str,
    patch_size: object,
    divisor: int | Sequence[int],
    reason: str,
    *,
    coarsest_above_one_voxel: bool = False,
) -> tuple[int, int, int]:
    """Validate a 3D training patch size ``(X, Y, Z)`` in voxels and return it as a tuple.

    Args:
        model: registry name, used in the error message.
        patch_size: three positive ints.
        divisor: every axis (or axis ``i`` for a sequence) must be a multiple of it.
        reason: why the architecture needs that multiple (shown in the error).
        coarsest_above_one_voxel: the coarsest level, ``patch_size / divisor``, must hold
            more than one voxel, for networks that instance- or batch-normalise it
            (training on a single voxel fails inside the norm).

    Raises:
        ValueError: not three positive ints, or an axis not divisible by ``divisor``; the
            message gives the nearest larger valid size.
    """
    if (
        isinstance(patch_size, (str, bytes))
        or not isinstance(patch_size, Sequence)
        or len(patch_size) != 3
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in patch_size)
    ):
        raise ValueError(f"{model}: patch_size must be three positive ints (X, Y, Z), got {patch_size!r}")
    divisors = (divisor,) * 3 if isinstance(divisor, int) else tuple(divisor)
    bad_axes = [axis for axis, (s, d) in enumerate(zip(patch_size, divisors)) if s % d]
    if bad_axes:
        suggestion = tuple(math.ceil(s / d) * d for s, d in zip(patch_size, divisors))
        raise ValueError(
            f"{model}: patch_size {tuple(patch_size)} must be divisible by {divisor} on every "
            f"axis ({reason}); axes {bad_axes} are not. Nearest valid size: {suggestion}"
        )
    coarsest = tuple(s // d for s, d in zip(patch_size, divisors))
    if coarsest_above_one_voxel and math.prod(coarsest) == 1:
        suggestion = tuple(2 * d for d in divisors)
        raise ValueError(
            f"{model}: patch_size {tuple(patch_size)} leaves a single voxel at the coarsest "
            f"level (patch_size / {divisor}), which its normalisation layers cannot train "
            f"on; make at least one axis twice as large, e.g. {suggestion}"
        )
    return tuple(patch_size)  # type: ignore[return-value]
