"""The federated server: rounds, client sampling, aggregation — and no data access.

This module deliberately imports neither the data layer nor Lightning: the server only
ever holds :class:`~.messages.GlobalModel` / :class:`~.messages.ClientUpdate` objects
(weights and aggregate scalars). Clients are anything with ``fit(GlobalModel) ->
ClientUpdate`` and ``evaluate(GlobalModel) -> ClientEvaluation`` — a
:class:`~.client.SiteClient` in the in-process simulation, a Flower client proxy in a
deployment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cogimg.paradigms.federated.messages import ClientEvaluation, ClientUpdate, GlobalModel
from cogimg.paradigms.federated.strategies import Strategy, sample_clients


class Client(Protocol):
    def fit(self, model: GlobalModel) -> ClientUpdate: ...

    def evaluate(self, model: GlobalModel) -> ClientEvaluation: ...


@dataclass
class RoundRecord:
    """One round: who trained, their mean train loss, the example-weighted evaluation
    metrics of the new global model over all clients, per-client metrics, wall time (s)."""

    round: int
    clients: list[str]
    train_loss: float
    metrics: dict[str, float]
    client_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def weighted_metrics(evaluations: Sequence[ClientEvaluation]) -> dict[str, float]:
    """Example-weighted mean of every numeric metric the clients report."""
    keys = sorted({k for e in evaluations for k, v in e.metrics.items() if isinstance(v, (int, float))})
    out = {}
    for key in keys:
        have = [e for e in evaluations if key in e.metrics]
        total = sum(e.num_examples for e in have)
        out[key] = float(sum(float(e.metrics[key]) * e.num_examples for e in have) / total)
    return out


class FederatedServer:
    """Runs ``rounds`` of: sample clients → send the global model → aggregate their updates
    → evaluate the new global model on every client (aggregate metrics only).

    Args:
        strategy: FedAvg / FedProx / FedBN.
        initial_parameters: the starting shared weights (e.g. one client's ``get_parameters()``).
        fraction: fraction of clients trained per round (≥ ``min_clients``).
        min_clients: fewest clients per round.
        seed: seeds client sampling.
    """

    def __init__(self, strategy: Strategy, initial_parameters: list[np.ndarray], fraction: float = 1.0,
                 min_clients: int = 1, seed: int = 0) -> None:
        self.strategy = strategy
        self.parameters = [np.asarray(p) for p in initial_parameters]
        self.fraction, self.min_clients = fraction, min_clients
        self.rng = np.random.default_rng(seed)
        self.history: list[RoundRecord] = []

    def global_model(self, server_round: int) -> GlobalModel:
        return GlobalModel(self.parameters, server_round, self.strategy.client_config(server_round))

    def run(self, clients: Mapping[str, Client], rounds: int,
            on_round: Callable[[RoundRecord], None] | None = None) -> list[RoundRecord]:
        if rounds < 1:
            raise ValueError(f"rounds must be ≥ 1, got {rounds}")
        names = list(clients)
        for r in range(1, rounds + 1):
            start = time.perf_counter()
            chosen = sample_clients(names, self.fraction, self.min_clients, self.rng)
            model = self.global_model(r)
            updates = [clients[n].fit(model) for n in chosen]
            self.parameters = self.strategy.aggregate(updates)
            evaluations = [clients[n].evaluate(self.global_model(r)) for n in names]
            losses = [u.metrics["train_loss"] for u in updates if "train_loss" in u.metrics]
            record = RoundRecord(r, chosen, float(np.mean(losses)) if losses else float("nan"),
                                 weighted_metrics(evaluations),
                                 {e.client: dict(e.metrics) for e in evaluations},
                                 time.perf_counter() - start)
            self.history.append(record)
            if on_round is not None:
                on_round(record)
        return self.history
