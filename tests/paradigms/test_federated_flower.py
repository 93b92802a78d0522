"""The same SiteClient and strategy under Flower: two clients on a loopback gRPC server."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from cogimg.paradigms.federated import ClientEvaluation, ClientUpdate, FedAvg, FedProx
from cogimg.paradigms.federated.flower import run_loopback
from tests.paradigms.test_federated import _dm, _task, two_sites  # noqa: F401


class _Echo:
    """A client whose update is the global weights + its own offset (checks the wiring)."""

    def __init__(self, name: str, offset: float, examples: int) -> None:
        self.name, self.offset, self.examples = name, offset, examples
        self.configs = []

    def get_parameters(self):
        return [np.zeros(3, np.float32)]

    def fit(self, model):
        self.configs.append(dict(model.config))
        return ClientUpdate(self.name, [model.parameters[0] + self.offset], self.examples, {"train_loss": 1.0})

    def evaluate(self, model):
        return ClientEvaluation(self.name, 5, {"loss": float(model.parameters[0].mean()), "score": self.offset})


def test_flower_loopback_aggregates_like_the_simulation():
    a, b = _Echo("a", 1.0, 10), _Echo("b", 2.0, 30)
    _, strategy = run_loopback([a, b], FedProx(mu=0.1), rounds=2, initial_parameters=[np.zeros(3, np.float32)])
    # round 1: (10·1 + 30·2) / 40 = 1.75; round 2: 1.75 + 1.75 = 3.5
    assert [h["loss"] for h in strategy.history] == pytest.approx([1.75, 3.5])
    assert strategy.history[0]["score"] == pytest.approx(1.5)  # equal-weighted evaluation
    assert a.configs[0]["proximal_mu"] == pytest.approx(0.1) and a.configs[1]["round"] == 2


def test_flower_runs_site_clients_end_to_end(two_sites):  # noqa: F811  (fixture)
    from cogimg.paradigms.federated.client import SiteClient

    clients = [SiteClient(site, _task, _dm(two_sites, site), FedAvg(), local_epochs=1,
                          trainer_kwargs={"limit_train_batches": 1}) for site in ("site-1", "site-2")]
    _, strategy = run_loopback(clients, FedAvg(), rounds=1,
                                     initial_parameters=clients[0].get_parameters())
    assert len(strategy.history) == 1 and "balanced_accuracy" in strategy.history[0]
    # both clients now hold the same aggregated weights
    for x, y in zip(clients[0].get_parameters(), clients[1].get_parameters()):
        np.testing.assert_array_equal(x, y)


def test_client_and_server_apps_build_from_the_same_code():
    from flwr.client import ClientApp
    from flwr.server import ServerApp

    from cogimg.paradigms.federated.flower import client_app, server_app

    assert isinstance(client_app(lambda context: _Echo("a", 1.0, 10)), ClientApp)
    assert isinstance(server_app(lambda context: FedProx(0.1), rounds=3), ServerApp)
