"""Gradient reversal (Ganin & Lempitsky 2015, DANN): identity forward, ``-λ ·`` gradient backward.

Placed between an encoder and a site classifier, it lets the classifier learn to tell sites
apart while the encoder receives the *opposite* gradient, i.e. learns features from which
the site cannot be predicted.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; its gradient is multiplied by ``-coeff`` on the way back."""
    return _ReverseGradient.apply(x, float(coeff))


class GradientReversal(nn.Module):
    """Module form of :func:`reverse_gradient`; ``coeff`` (λ ≥ 0) may be changed during training."""

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        if coeff < 0:
            raise ValueError(f"gradient reversal coefficient must be ≥ 0, got {coeff}")
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


def dann_coefficient(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule ``2 / (1 + exp(-γ p)) - 1`` for training progress ``p`` in [0, 1]:
    0 at the start (the site classifier is still random), rising to ≈ 1."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0
