"""The same client and strategy under Flower (``flwr``), for training across institutions.

:class:`FlowerSiteClient` wraps a :class:`~.client.SiteClient` as a Flower ``NumPyClient``;
:class:`FlowerStrategy` is Flower's FedAvg machinery (client sampling, rounds, failures)
with cogimg's aggregation (:meth:`~.strategies.Strategy.aggregate` — FedAvg, FedProx or
FedBN) and round options. Only weights, example counts and aggregate scalar metrics cross
the wire, validated by :mod:`.messages` on both ends.

Deployment (one server, one process per site; see Flower's docs for TLS and
authentication)::

    # server machine
    flower-superlink --insecure
    # each site's machine, pointing at its own data
    flower-supernode --insecure --superlink SERVER:9092 \\
        --node-config "site='site-1' data-root='/data/site-1' split-file='/data/site-1/split.json'"
    # from the project folder (a Flower app whose ClientApp/ServerApp are built with
    # cogimg.paradigms.federated.flower.client_app / server_app)
    flwr run . --run-config "num-server-rounds=20 strategy='fedbn'"

On one machine (tests, demos) :func:`run_loopback` starts a gRPC server on 127.0.0.1 and
each client in its own thread with Flower's compatibility API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg as _FlowerFedAvg

from cogimg.paradigms.federated.messages import ClientEvaluation, ClientUpdate, GlobalModel
from cogimg.paradigms.federated.server import weighted_metrics
from cogimg.paradigms.federated.strategies import Strategy


class FlowerSiteClient(NumPyClient):
    """Flower ``NumPyClient`` around a :class:`~.client.SiteClient` (or anything with
    ``name``, ``get_parameters()``, ``fit(GlobalModel)`` and ``evaluate(GlobalModel)``)."""

    def __init__(self, site) -> None:
        self.site = site

    def get_parameters(self, config) -> list[np.ndarray]:
        return self.site.get_parameters()

    def fit(self, parameters, config):
        update = self.site.fit(GlobalModel(list(parameters), int(config.get("round", 0)), dict(config)))
        return update.parameters, update.num_examples, {**update.metrics, "client": update.client}

    def evaluate(self, parameters, config):
        ev = self.site.evaluate(GlobalModel(list(parameters), int(config.get("round", 0)), dict(config)))
        return float(ev.metrics.get("loss", 0.0)), ev.num_examples, {**ev.metrics, "client": ev.client}


class FlowerStrategy(_FlowerFedAvg):
    """Flower FedAvg driving a cogimg :class:`~.strategies.Strategy`.

    Args:
        strategy: cogimg FedAvg / FedProx / FedBN (aggregation and client options).
        min_clients: clients needed to start a round (all of them by default in tests).
        fraction: fraction of available clients trained per round.
        initial_parameters: starting weights (``None`` = Flower asks one client).
    """

    def __init__(self, strategy: Strategy, min_clients: int = 2, fraction: float = 1.0,
                 initial_parameters: Sequence[np.ndarray] | None = None) -> None:
        def config(server_round: int) -> dict:
            return {"round": server_round, **strategy.client_config(server_round)}

        super().__init__(
            fraction_fit=fraction, fraction_evaluate=1.0, min_fit_clients=min_clients,
            min_evaluate_clients=min_clients, min_available_clients=min_clients,
            on_fit_config_fn=config, on_evaluate_config_fn=config,
            initial_parameters=ndarrays_to_parameters(list(initial_parameters))
            if initial_parameters is not None else None,
            evaluate_metrics_aggregation_fn=_weighted, fit_metrics_aggregation_fn=_weighted)
        self.strategy = strategy
        self.history: list[dict[str, float]] = []

    def aggregate_fit(self, server_round, results, failures):
        if not results or (failures and not self.accept_failures):
            return None, {}
        updates = [ClientUpdate(str(res.metrics.get("client", proxy.cid)), parameters_to_ndarrays(res.parameters),
                                res.num_examples, {k: v for k, v in res.metrics.items() if k != "client"})
                   for proxy, res in results]
        aggregated = self.strategy.aggregate(updates)
        return ndarrays_to_parameters(aggregated), _weighted([(r.num_examples, r.metrics) for _, r in results])

    def aggregate_evaluate(self, server_round, results, failures):
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        self.history.append({"round": server_round, **metrics})
        return loss, metrics


def _weighted(pairs: list[tuple[int, Mapping[str, Any]]]) -> dict[str, float]:
    evaluations = [ClientEvaluation(str(m.get("client", i)), n, {k: v for k, v in m.items() if k != "client"})
                   for i, (n, m) in enumerate(pairs)]
    return weighted_metrics(evaluations)


def client_app(make_site_client: Callable[[Context], Any]) -> ClientApp:
    """A Flower ``ClientApp`` whose client is ``make_site_client(context)`` (read the site's
    data location from ``context.node_config``)."""
    return ClientApp(client_fn=lambda context: FlowerSiteClient(make_site_client(context)).to_client())


def server_app(make_strategy: Callable[[Context], Strategy], rounds: int, min_clients: int = 2) -> ServerApp:
    """A Flower ``ServerApp`` running ``rounds`` rounds of ``make_strategy(context)``."""
    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(strategy=FlowerStrategy(make_strategy(context), min_clients),
                                   config=ServerConfig(num_rounds=rounds))
    return ServerApp(server_fn=server_fn)


def run_loopback(sites: Sequence[Any], strategy: Strategy, rounds: int = 1, port: int = 0,
                 initial_parameters: Sequence[np.ndarray] | None = None,
                 timeout_s: float = 300.0) -> tuple[Any, FlowerStrategy]:
    """Run a Flower gRPC server on 127.0.0.1 in this thread and each site's client in its own
    thread (Flower's compatibility API); returns Flower's ``History`` and the strategy."""
    import socket

    from flwr.compat.client.app import start_client
    from flwr.compat.server.app import start_server

    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    flower_strategy = FlowerStrategy(strategy, min_clients=len(sites), initial_parameters=initial_parameters)
    errors: list[BaseException] = []

    def client(site) -> None:
        try:
            _wait_for_port(port, timeout_s)  # a client that dials too early may never retry
            start_client(server_address=address, client=FlowerSiteClient(site).to_client(),
                         insecure=True, transport="grpc-bidi", max_retries=50, max_wait_time=timeout_s)
        except Exception as err:  # noqa: BLE001  (re-raised after the server returns)
            errors.append(err)

    # Flower's server installs signal handlers, so it must run in this (main) thread.
    threads = [threading.Thread(target=client, args=(site,), daemon=True) for site in sites]
    for t in threads:
        t.start()
    history = start_server(server_address=address, config=ServerConfig(num_rounds=rounds,
                           round_timeout=timeout_s), strategy=flower_strategy)
    for t in threads:
        t.join(timeout=timeout_s)
    if errors:
        raise RuntimeError(f"a Flower client failed: {errors[0]!r}") from errors[0]
    return history, flower_strategy


def _wait_for_port(port: int, timeout_s: float) -> None:
    """Block until something listens on 127.0.0.1:``port`` (the server), or time out."""
    import socket
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Flower server on 127.0.0.1:{port} after {timeout_s} s") from None
            time.sleep(0.2)
