"""Federated learning across sites: clients hold their own data; only weights and aggregate
metrics travel (:mod:`.messages`).

- :mod:`.strategies`: FedAvg, FedProx, FedBN, SiloBN; client sampling.
- :mod:`.client`: :class:`SiteClient` — local training of any task on one site's datamodule.
- :mod:`.server`: :class:`FederatedServer` — rounds and aggregation, no data access.
- :mod:`.simulation`: :func:`simulate` — everything in one process.
- :mod:`.flower`: the same client and strategy under Flower (``flwr``) for deployment.
"""

from cogimg.paradigms.federated.messages import ClientEvaluation, ClientUpdate, GlobalModel
from cogimg.paradigms.federated.server import FederatedServer, RoundRecord, weighted_metrics
from cogimg.paradigms.federated.strategies import (
    STRATEGIES,
    FedAvg,
    FedBN,
    FedProx,
    SiloBN,
    Strategy,
    get_strategy,
    sample_clients,
)

__all__ = ["STRATEGIES", "ClientEvaluation", "ClientUpdate", "FedAvg", "FedBN", "FedProx",
           "FederatedServer", "GlobalModel", "RoundRecord", "SiloBN", "Strategy", "get_strategy",
           "sample_clients", "weighted_metrics"]
