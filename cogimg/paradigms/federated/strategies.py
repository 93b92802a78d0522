"""Aggregation strategies: FedAvg, FedProx, FedBN and SiloBN.

- :class:`FedAvg` (McMahan et al. 2017): the new global weights are the average of the
  clients' weights, weighted by their number of training examples.
- :class:`FedProx` (Li et al. 2020): FedAvg aggregation; clients add the proximal term
  ``μ/2 ‖w − w_global‖²`` to their local loss (``proximal_mu`` in the round's config), which
  limits client drift on heterogeneous sites.
- :class:`FedBN` (Li et al. 2021): FedAvg over every weight *except* batch-norm layers'
  (affine weights and running statistics stay local), so each site keeps its own feature
  normalisation — suited to scanner differences.
- :class:`SiloBN` (Andreux et al. 2020): FedAvg over every weight *except* batch-norm running
  statistics; the batch-norm affine weights are shared. Each site keeps its own feature
  statistics while the learned scale and shift see every site's data.

A strategy decides which state-dict entries are shared (:meth:`Strategy.shared_keys`), what
options clients get each round (:meth:`Strategy.client_config`) and how updates combine
(:meth:`Strategy.aggregate`). It sees only :class:`~.messages.ClientUpdate` objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cogimg.paradigms.federated.messages import ClientUpdate, Scalar


class Strategy:
    """FedAvg-style weighted averaging of shared weights (base for the three strategies)."""

    name = "fedavg"

    def shared_keys(self, model: nn.Module) -> list[str]:
        """State-dict keys exchanged with the server (all of them for FedAvg)."""
        return list(model.state_dict())

    def client_config(self, server_round: int) -> dict[str, Scalar]:
        """Options sent to clients with the global model."""
        return {}

    def aggregate(self, updates: Sequence[ClientUpdate]) -> list[np.ndarray]:
        """Example-weighted mean of the updates' arrays (integer arrays rounded back)."""
        if not updates:
            raise ValueError(f"{self.name}: no client update to aggregate")
        shapes = [tuple(a.shape) for a in updates[0].parameters]
        for u in updates[1:]:
            if [tuple(a.shape) for a in u.parameters] != shapes:
                raise ValueError(f"{self.name}: client {u.client!r} sent weights of other shapes "
                                 f"than {updates[0].client!r}; do all clients run the same model?")
        total = float(sum(u.num_examples for u in updates))
        out = []
        for i, first in enumerate(updates[0].parameters):
            mean = sum(u.parameters[i].astype(np.float64) * (u.num_examples / total) for u in updates)
            mean = np.rint(mean) if np.issubdtype(first.dtype, np.integer) else mean
            out.append(np.asarray(mean, dtype=first.dtype))  # 0-d stays an array, not a scalar
        return out


class FedAvg(Strategy):
    """McMahan et al. 2017 (see module docstring)."""


class FedProx(Strategy):
    """FedAvg aggregation + a proximal term of strength ``mu`` in the clients' local loss."""

    name = "fedprox"

    def __init__(self, mu: float = 0.01) -> None:
        if mu < 0:
            raise ValueError(f"FedProx mu must be ≥ 0, got {mu}")
        self.mu = float(mu)

    def client_config(self, server_round: int) -> dict[str, Scalar]:
        return {"proximal_mu": self.mu}


def batchnorm_keys(model: nn.Module, strategy: str) -> set[str]:
    """State-dict keys of ``model``'s batch-norm layers (affine weights and running statistics)."""
    keys = {f"{name}.{key}" if name else key
            for name, module in model.named_modules() if isinstance(module, _BatchNorm)
            for key in module.state_dict()}
    if not keys:
        raise ValueError(f"{strategy} keeps batch-norm layers local, but the model has none; use FedAvg")
    return keys


class FedBN(Strategy):
    """FedAvg of everything except batch-norm layers (kept local to each site)."""

    name = "fedbn"

    def shared_keys(self, model: nn.Module) -> list[str]:
        local = batchnorm_keys(model, self.name)
        return [k for k in model.state_dict() if k not in local]


class SiloBN(Strategy):
    """FedAvg of everything except batch-norm running statistics (kept local to each site)."""

    name = "silobn"
    #: Batch-norm state-dict entries that stay local (the affine ``weight``/``bias`` travel).
    local_buffers = ("running_mean", "running_var", "num_batches_tracked")

    def shared_keys(self, model: nn.Module) -> list[str]:
        local = {k for k in batchnorm_keys(model, self.name) if k.endswith(self.local_buffers)}
        return [k for k in model.state_dict() if k not in local]


STRATEGIES = {"fedavg": FedAvg, "fedprox": FedProx, "fedbn": FedBN, "silobn": SiloBN}


def get_strategy(name: str, **kwargs) -> Strategy:
    """``fedavg``, ``fedprox`` (``mu``), ``fedbn`` or ``silobn`` by name."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown federated strategy {name!r}; choose one of {list(STRATEGIES)}")
    return STRATEGIES[name](**kwargs)


def sample_clients(names: Sequence[str], fraction: float, min_clients: int,
                   rng: np.random.Generator) -> list[str]:
    """``max(min_clients, round(fraction · n))`` distinct client names, drawn without
    replacement (all of them when ``fraction = 1``), in their original order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"client fraction must be in (0, 1], got {fraction}")
    n = len(names)
    k = min(n, max(int(min_clients), round(fraction * n)))
    chosen = set(rng.choice(n, size=k, replace=False).tolist())
    return [name for i, name in enumerate(names) if i in chosen]
