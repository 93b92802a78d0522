"""What crosses the client/server boundary — and nothing else.

A client sends a :class:`ClientUpdate` (model weights as numpy arrays, the number of its
training examples, and *aggregate* scalar metrics); the server sends a
:class:`GlobalModel` (weights, round number, scalar training options). Both validate their
contents on construction, so per-subject output (a list of predictions, a tensor of
probabilities) cannot be smuggled through a metrics field by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

Scalar = bool | int | float | str


def _check_scalars(values: Mapping[str, object], what: str) -> dict[str, Scalar]:
    out = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (bool, int, float, str)):
            raise TypeError(f"{what}[{key!r}] must be a scalar (aggregate only), got "
                            f"{type(value).__name__}: per-subject output never leaves a client")
        out[str(key)] = value
    return out


def _check_arrays(arrays, what: str) -> list[np.ndarray]:
    out = []
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what}[{i}] must be a numpy array (a weight tensor), got {type(a).__name__}")
        out.append(a)
    return out


@dataclass(frozen=True)
class GlobalModel:
    """Server → client: shared weights (in the strategy's key order), round, options."""

    parameters: list[np.ndarray]
    round: int
    config: dict[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", _check_arrays(self.parameters, "GlobalModel.parameters"))
        object.__setattr__(self, "config", _check_scalars(self.config, "GlobalModel.config"))


@dataclass(frozen=True)
class ClientUpdate:
    """Client → server: locally trained shared weights, example count, aggregate metrics."""

    client: str
    parameters: list[np.ndarray]
    num_examples: int
    metrics: dict[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.num_examples) < 1:
            raise ValueError(f"client {self.client!r} reports {self.num_examples} training examples")
        object.__setattr__(self, "parameters", _check_arrays(self.parameters, "ClientUpdate.parameters"))
        object.__setattr__(self, "metrics", _check_scalars(self.metrics, "ClientUpdate.metrics"))


@dataclass(frozen=True)
class ClientEvaluation:
    """Client → server: aggregate evaluation metrics of the global model on local data."""

    client: str
    num_examples: int
    metrics: dict[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", _check_scalars(self.metrics, "ClientEvaluation.metrics"))
