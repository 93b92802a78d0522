"""Model size and compute: parameter counts and multiply-accumulates of one forward pass.

Compute is counted with ``torch.utils.flop_counter.FlopCounterMode`` (part of torch):
it counts convolutions (transposed included), matrix products and attention, not
element-wise ops, norms or activations (the same scope as fvcore / ptflops). Convention:
one multiply-accumulate (MAC) = 2 floating-point operations, so ``flops = 2 * macs``.
The forward pass runs on the ``meta`` device by default, so profiling allocates no
activation memory and takes no compute time.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypedDict

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (shared parameters counted once).

    Args:
        module: any ``nn.Module`` (a network, a LightningModule).
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class Profile(TypedDict):
    """Result of :func:`profile`; ``macs`` / ``flops`` are ``None`` without an input shape."""

    params: int
    trainable_params: int
    macs: int | None
    flops: int | None


def count_flops(model: nn.Module, input_shape: Sequence[int], device: str = "meta") -> int:
    """FLOPs (2 x MACs) of one inference-mode forward pass on a zero input of ``input_shape``.

    Args:
        model: any module taking one tensor ``(B, C, *spatial)``; it is not modified
            (a copy is moved to ``device``; ``device="cpu"`` runs a real forward pass
            for the rare op without a meta kernel).
        input_shape: full input shape including the batch axis, e.g. ``(1, 2, 64, 64, 64)``.
        device: ``"meta"`` (default, no compute) or a real device.
    """
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"input_shape must be positive ints (B, C, *spatial), got {tuple(input_shape)}")
    # A copy so that moving to meta, eval mode and BatchNorm buffers leave the caller's
    # model untouched; eval mode because inference cost is what "FLOPs of a model" means
    # (and DynUNet's deep-supervision heads only run in training).
    probe = copy.deepcopy(model).to(device).eval()
    first = next(probe.parameters(), None)
    dtype = first.dtype if first is not None else torch.float32
    inputs = torch.zeros(tuple(int(s) for s in input_shape), device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        probe(inputs)
    return int(counter.get_total_flops())


def profile(
    model: nn.Module, input_shape: Sequence[int] | None = None, device: str = "meta"
) -> Profile:
    """Parameter counts and, given ``input_shape`` ``(B, C, *spatial)``, MACs and FLOPs.

    Returns:
        ``{"params": int, "trainable_params": int, "macs": int | None, "flops": int | None}``
        with ``flops = 2 * macs`` counted as described in the module docstring.
    """
    params = count_parameters(model)
    trainable = count_parameters(model, trainable_only=True)
    flops = None if input_shape is None else count_flops(model, input_shape, device)
    return Profile(
        params=params,
        trainable_params=trainable,
        macs=None if flops is None else flops // 2,
        flops=flops,
    )
