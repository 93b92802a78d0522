"""Test-time adaptation on an unseen site, without its labels.

- :func:`adapt_batchnorm` (AdaBN, Li et al. 2016): re-estimate every batch-norm layer's
  running mean/variance on the target site's images; weights unchanged.
- :func:`tent` (Wang et al. 2021, TENT): normalise with the target batch's statistics and
  update only the batch-norm affine parameters (γ, β) to minimise the entropy of the
  predictions.

Both work on a *copy* of the model (the trained source model stays as it is) and take a
``forward(batch) -> logits`` callable, so they serve any task: classification logits
``(B, K)`` and segmentation logits ``(B, K, X, Y, Z)`` alike (softmax over dim 1).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

Forward = Callable[[nn.Module, Any], torch.Tensor]


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm1d/2d/3d (and SyncBatchNorm) of ``model``."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of ``softmax(logits, dim=1)`` over samples (and voxels)."""
    logp = logits.float().log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def _require_batchnorm(model: nn.Module, name: str) -> list[_BatchNorm]:
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(f"{name} adapts batch-norm layers, but {type(model).__name__} has none "
                         "(e.g. a ViT or an instance-norm network); choose another adaptation")
    return layers


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable[Any], forward: Forward) -> nn.Module:
    """A copy of ``model`` whose batch-norm running statistics are the target data's.

    Statistics are a cumulative average over all ``batches`` (``momentum=None``), so the
    result does not depend on batch order. Returns the copy in eval mode.
    """
    adapted = copy.deepcopy(model)
    layers = _require_batchnorm(adapted, "adapt_batchnorm")
    adapted.eval()
    saved = []
    for layer in layers:
        saved.append(layer.momentum)
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    seen = 0
    for batch in batches:
        forward(adapted, batch)
        seen += 1
    if not seen:
        raise ValueError("adapt_batchnorm got no target batches")
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
    return adapted.eval()


def tent(model: nn.Module, batches: Iterable[Any], forward: Forward, lr: float = 1e-3,
         steps: int = 1, optimizer: str = "adam") -> nn.Module:
    """A TENT-adapted copy of ``model``: ``steps`` passes over ``batches``, one entropy step each.

    As in the paper, batch-norm layers normalise with the current batch's statistics (no
    running averages) during and after adaptation, and only their affine weights are
    trainable; everything else (dropout included) stays in eval mode. The returned copy
    therefore predicts with *batch* statistics: evaluate it on target batches of a
    reasonable size (≥ 4 samples).
    """
    if steps < 1:
        raise ValueError(f"tent needs steps ≥ 1, got {steps}")
    adapted = copy.deepcopy(model)
    layers = _require_batchnorm(adapted, "tent")
    adapted.eval()
    adapted.requires_grad_(False)
    params = []
    for layer in layers:
        layer.train()
        layer.track_running_stats = False
        layer.running_mean, layer.running_var = None, None
        for p in (layer.weight, layer.bias):
            if p is not None:
                p.requires_grad_(True)
                params.append(p)
    if not params:
        raise ValueError("tent: the batch-norm layers have no affine parameters to adapt")
    opt = (torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999)) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=0.9))
    seen = 0
    with torch.enable_grad():
        for _ in range(steps):
            for batch in batches:
                loss = softmax_entropy(forward(adapted, batch))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += 1
    if not seen:
        raise ValueError("tent got no target batches")
    adapted.requires_grad_(False)
    return adapted
