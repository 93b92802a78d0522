"""Federated learning across sites on Flower: clients hold their own data; only weights and
aggregate scalar metrics travel.

- :mod:`.strategies`: FedAvg and FedProx (Flower's own), FedBN and SiloBN (Flower FedAvg
  subclasses that keep batch-norm entries on the clients); round recording.
- :mod:`.client`: :class:`~.client.SiteClient` — a Flower ``NumPyClient`` training any task on
  one site's datamodule, its state kept in the node's ``Context``.
- :mod:`.app`: the ``ServerApp``/``ClientApp`` built from a federation spec, and
  :func:`~.app.simulate` through Flower's simulation engine (Ray).
- :mod:`.deployment`: SuperLink + SuperNodes as processes (TLS documented there).
- :mod:`.splits`, :mod:`.comparison`: per-site splits; arms compared with paired CIs.
"""

from cogimg.paradigms.federated.strategies import (
    STRATEGIES,
    FedAvg,
    FedBN,
    FedProx,
    SiloBN,
    make_strategy,
    shared_keys,
    weighted_metrics,
)

__all__ = ["STRATEGIES", "FedAvg", "FedBN", "FedProx", "SiloBN", "make_strategy", "shared_keys",
           "weighted_metrics"]
