"""In-process federated simulation on one machine: one :class:`~.client.SiteClient` per site
datamodule, one :class:`~.server.FederatedServer`, run round by round.

Example::

    from cogimg.paradigms.federated import simulate, get_strategy
    history, server, clients = simulate(
        task_factory=lambda: ClassificationTask(...),
        datamodules={"site-1": dm1, "site-2": dm2, "site-3": dm3},
        strategy=get_strategy("fedprox", mu=0.01), rounds=10, local_epochs=1)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cogimg.paradigms.federated.client import SiteClient
from cogimg.paradigms.federated.server import FederatedServer, RoundRecord
from cogimg.paradigms.federated.strategies import Strategy


def simulate(task_factory: Callable[[], Any], datamodules: Mapping[str, Any], strategy: Strategy,
             rounds: int = 5, local_epochs: int = 1, fraction: float = 1.0, min_clients: int = 1,
             seed: int = 0, trainer_kwargs: dict | None = None,
             on_round: Callable[[RoundRecord], None] | None = None,
             ) -> tuple[list[RoundRecord], FederatedServer, dict[str, SiteClient]]:
    """Run FedAvg/FedProx/FedBN over ``datamodules`` (one per site); returns the per-round
    history, the server (final global weights in ``server.parameters``) and the clients."""
    if len(datamodules) < 2:
        raise ValueError(f"federated training needs ≥ 2 sites, got {list(datamodules)}")
    # Every client starts from the same seed, hence the same initial model, as with a
    # server-provided initial model.
    clients = {name: SiteClient(name, task_factory, dm, strategy, local_epochs, trainer_kwargs, seed)
               for name, dm in datamodules.items()}
    first = next(iter(clients.values()))
    server = FederatedServer(strategy, first.get_parameters(), fraction, min_clients, seed)
    history = server.run(clients, rounds, on_round)
    return history, server, clients
