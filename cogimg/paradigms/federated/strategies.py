"""FedAvg, FedProx, FedBN and SiloBN as Flower strategies.

- :class:`FedAvg` (McMahan et al. 2017) is Flower's ``flwr.server.strategy.FedAvg``: the new
  global weights are the clients' weights averaged with weights ``n_k / Σ n`` (``n_k`` = client
  ``k``'s training examples); integer entries (``num_batches_tracked``) come back as floats and
  clients round them.
- :class:`FedProx` (Li et al. 2020) is Flower's ``FedProx``: FedAvg aggregation, and every
  client adds ``μ/2 ‖w − w_global‖²`` to its local loss (``proximal_mu`` in the fit config;
  :class:`~.client.ProximalTerm`), which limits client drift on heterogeneous sites.
- :class:`FedBN` (Li et al. 2021, "FedBN: Federated learning on non-IID features via local batch
  normalization"): every batch-norm layer — affine ``weight``/``bias`` *and* running statistics —
  stays on its client; everything else is FedAvg'd. Each site keeps its own feature
  normalisation (scanner differences).
- :class:`SiloBN` (Andreux et al. 2020, "Siloed federated learning for multi-centric
  histopathology datasets"): only the batch-norm running statistics (``running_mean``,
  ``running_var``, ``num_batches_tracked``) stay local; the affine ``weight``/``bias`` are
  shared and FedAvg'd with the rest.

The server holds the *whole* state dict (state-dict order) as its global model; FedBN and SiloBN
send clients only the shared entries and fill the local ones in the global model with their
initial values, which they keep (so the global model's batch norm never moves). Client and
server agree on what is shared through one function, :func:`shared_keys`, and the fit/evaluate
config's ``keep-local`` entry.

Every strategy here records, per round, the aggregated training and evaluation metrics
(:attr:`Recorder.history`) and, with ``out_dir``, writes them to ``history.json``, the global
model after each round to ``global-round<R>.npz`` and — with ``record_updates`` — the updates it
received to ``updates-round<R>.npz`` (for audits and tests; arrays ``c<i>_<j>`` = client ``i``'s
``j``-th array, ``num_examples`` and ``clients``). This module needs no data, no Lightning and no
task: the server never reaches a client's data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg as FlowerFedAvg
from flwr.server.strategy import FedProx as FlowerFedProx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cogimg.io import atomic_write_text

#: ``keep-local`` rules: state-dict entries a client keeps to itself.
NOTHING, BATCHNORM, BATCHNORM_STATISTICS = "", "batchnorm", "batchnorm-statistics"
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def batchnorm_keys(model: nn.Module) -> set[str]:
    """State-dict keys of ``model``'s batch-norm layers (affine weights and running statistics)."""
    return {f"{name}.{key}" if name else key
            for name, module in model.named_modules() if isinstance(module, _BatchNorm)
            for key in module.state_dict()}


def shared_keys(model: nn.Module, keep_local: str = NOTHING) -> list[str]:
    """State-dict keys of ``model`` exchanged with the server, in state-dict order.

    Args:
        model: the task module (the same architecture on every client and the server).
        keep_local: ``""`` (FedAvg, FedProx: everything shared), ``"batchnorm"`` (FedBN) or
            ``"batchnorm-statistics"`` (SiloBN).
    """
    keys = list(model.state_dict())
    if keep_local == NOTHING:
        return keys
    if keep_local not in (BATCHNORM, BATCHNORM_STATISTICS):
        raise ValueError(f"unknown keep-local rule {keep_local!r}; choose '', {BATCHNORM!r} or "
                         f"{BATCHNORM_STATISTICS!r}")
    local = batchnorm_keys(model)
    if not local:
        raise ValueError(f"keep-local {keep_local!r} keeps batch-norm layers local, but the model has "
                         "none; use FedAvg")
    if keep_local == BATCHNORM_STATISTICS:
        local = {k for k in local if k.endswith(_STATISTICS)}
    return [k for k in keys if k not in local]


def weighted_metrics(pairs: Sequence[tuple[int, Mapping[str, Scalar]]]) -> dict[str, Scalar]:
    """Example-weighted mean of every numeric metric the clients report (Flower's
    ``*_metrics_aggregation_fn``): ``Σ n_k m_k / Σ n_k`` over the clients that report ``m``."""
    keys = sorted({k for _, m in pairs for k, v in m.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)})
    out: dict[str, Scalar] = {}
    for key in keys:
        have = [(n, float(m[key])) for n, m in pairs if key in m]
        out[key] = sum(n * v for n, v in have) / sum(n for n, _ in have)
    return out


def by_site(results: list) -> list:
    """Flower's ``(proxy, FitRes)`` results in order of the ``site`` each client reports: replies
    arrive in any order, and the floating-point sum of the average depends on it (a last-digit
    difference that later rounds can amplify), so a run is only reproducible in a fixed order."""
    return sorted(results, key=lambda pr: str(pr[1].metrics.get("site", getattr(pr[0], "cid", ""))))


class Recorder:
    """Mixin for Flower strategies: per-round history (and files, see the module docstring).

    Args:
        out_dir: folder for ``history.json``, ``global-round<R>.npz`` (``None``: memory only).
        record_updates: also write the received client updates (``updates-round<R>.npz``).
    """

    keep_local = NOTHING

    def _init_recorder(self, out_dir: str | Path | None, record_updates: bool) -> None:
        # Flower's in-place aggregation casts each client's weight n_k / Σ n to an integer
        # array's dtype (0 for num_batches_tracked); its other path averages those exactly.
        self.inplace = False
        self.out_dir = Path(out_dir) if out_dir else None
        self.record_updates = bool(record_updates)
        self.history: list[dict[str, Any]] = []
        self.parameters: list[np.ndarray] | None = None  # the latest global model
        self._started = time.perf_counter()
        if self.out_dir:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def _record_fit(self, server_round: int, results, failures, aggregated: list[np.ndarray] | None,
                    metrics: Mapping[str, Scalar]) -> None:
        if aggregated is not None:
            self.parameters = aggregated
        self.history.append({"round": server_round, "train": dict(metrics), "val": {},
                             "failures": len(failures),
                             "clients": sorted(str(r.metrics.get("site", getattr(p, "cid", "")))
                                             for p, r in results),
                             "seconds": self._lap()})
        self._write_history()
        if self.out_dir is None:
            return
        if aggregated is not None:
            np.savez(self.out_dir / f"global-round{server_round}.npz",
                     *[np.asarray(a) for a in aggregated])
        if self.record_updates:
            arrays = {f"c{i}_{j}": a for i, (_, res) in enumerate(results)
                      for j, a in enumerate(parameters_to_ndarrays(res.parameters))}
            np.savez(self.out_dir / f"updates-round{server_round}.npz", **arrays,
                     num_examples=np.array([res.num_examples for _, res in results]),
                     clients=np.array([str(res.metrics.get("site", "")) for _, res in results]))

    def _record_evaluate(self, server_round: int, loss: float | None, metrics: Mapping[str, Scalar]) -> None:
        row = next((h for h in self.history if h["round"] == server_round), None)
        if row is None:
            row = {"round": server_round, "train": {}, "val": {}, "clients": []}
            self.history.append(row)
        row["val"] = {**({"loss": float(loss)} if loss is not None else {}), **metrics}
        row["seconds"] = row.get("seconds", 0.0) + self._lap()  # the round: fit + evaluation
        self._write_history()

    def _lap(self) -> float:
        """Seconds since the previous lap (or the start)."""
        now = time.perf_counter()
        seconds, self._started = now - self._started, now
        return seconds

    def _write_history(self) -> None:
        if self.out_dir is not None:
            atomic_write_text(self.out_dir / "history.json", json.dumps(self.history, indent=1))

    def aggregate_fit(self, server_round, results, failures):
        results = by_site(results)
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        self._record_fit(server_round, results, failures,
                         parameters_to_ndarrays(parameters) if parameters is not None else None, metrics)
        return parameters, metrics

    def aggregate_evaluate(self, server_round, results, failures):
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        self._record_evaluate(server_round, loss, metrics)
        return loss, metrics


def _config_fn(keep_local: str, extra: Mapping[str, Scalar]) -> Callable[[int], dict[str, Scalar]]:
    def config(server_round: int) -> dict[str, Scalar]:
        return {"server-round": server_round, "keep-local": keep_local, **extra}
    return config


def _flower_kwargs(initial_parameters: Sequence[np.ndarray] | None, min_clients: int, fraction: float,
                   keep_local: str, client_config: Mapping[str, Scalar], kwargs: dict) -> dict:
    """Flower FedAvg arguments shared by every strategy here."""
    return {"fraction_fit": fraction, "fraction_evaluate": 1.0, "min_fit_clients": min_clients,
            "min_evaluate_clients": min_clients, "min_available_clients": min_clients,
            "on_fit_config_fn": _config_fn(keep_local, client_config),
            "on_evaluate_config_fn": _config_fn(keep_local, client_config),
            "initial_parameters": (ndarrays_to_parameters([np.asarray(a) for a in initial_parameters])
                                   if initial_parameters is not None else None),
            "fit_metrics_aggregation_fn": weighted_metrics,
            "evaluate_metrics_aggregation_fn": weighted_metrics, **kwargs}


class FedAvg(Recorder, FlowerFedAvg):
    """Flower's FedAvg (aggregation untouched) with cogimg's client config and recording.

    Args:
        initial_parameters: the global model at round 0, the whole state dict in order
            (``None``: Flower asks one client).
        min_clients: clients needed for a round (training and evaluation).
        fraction: fraction of available clients trained per round.
        client_config: extra scalars sent to every client (e.g. ``local-epochs``).
        out_dir, record_updates: see :class:`Recorder`.
        **kwargs: further ``flwr.server.strategy.FedAvg`` arguments.
    """

    name = "fedavg"

    def __init__(self, initial_parameters: Sequence[np.ndarray] | None = None, min_clients: int = 2,
                 fraction: float = 1.0, client_config: Mapping[str, Scalar] | None = None,
                 out_dir: str | Path | None = None, record_updates: bool = False, **kwargs) -> None:
        FlowerFedAvg.__init__(self, **_flower_kwargs(initial_parameters, min_clients, fraction,
                                                     self.keep_local, client_config or {}, kwargs))
        self._init_recorder(out_dir, record_updates)


class FedProx(Recorder, FlowerFedProx):
    """Flower's FedProx (sends ``proximal_mu`` with every fit) with cogimg's config and recording.

    Args:
        proximal_mu: μ of the proximal term (≥ 0; 0 is FedAvg).
        Others: as :class:`FedAvg`.
    """

    name = "fedprox"

    def __init__(self, proximal_mu: float = 0.01, initial_parameters: Sequence[np.ndarray] | None = None,
                 min_clients: int = 2, fraction: float = 1.0, client_config: Mapping[str, Scalar] | None = None,
                 out_dir: str | Path | None = None, record_updates: bool = False, **kwargs) -> None:
        if proximal_mu < 0:
            raise ValueError(f"FedProx proximal_mu must be ≥ 0, got {proximal_mu}")
        FlowerFedProx.__init__(self, proximal_mu=float(proximal_mu), **_flower_kwargs(
            initial_parameters, min_clients, fraction, self.keep_local, client_config or {}, kwargs))
        self._init_recorder(out_dir, record_updates)


class FedBN(FedAvg):
    """FedAvg of the shared entries only; batch-norm layers stay on the clients.

    Args:
        shared: one flag per global state-dict entry (``True`` = exchanged), from
            :func:`shared_mask` on the task module.
        Others: as :class:`FedAvg` (``initial_parameters`` required: the whole state dict).
    """

    name = "fedbn"
    keep_local = BATCHNORM

    def __init__(self, shared: Sequence[bool], initial_parameters: Sequence[np.ndarray], **kwargs) -> None:
        if len(shared) != len(initial_parameters):
            raise ValueError(f"{len(shared)} shared flags for {len(initial_parameters)} global arrays")
        if all(shared):
            raise ValueError(f"{self.name}: nothing stays local; use FedAvg")
        self.shared = [bool(s) for s in shared]
        self._global = [np.asarray(a) for a in initial_parameters]
        super().__init__(initial_parameters=initial_parameters, **kwargs)

    def _subset(self, parameters: Parameters) -> Parameters:
        self._global = parameters_to_ndarrays(parameters)
        return ndarrays_to_parameters([a for a, s in zip(self._global, self.shared) if s])

    def configure_fit(self, server_round, parameters, client_manager):
        return super().configure_fit(server_round, self._subset(parameters), client_manager)

    def configure_evaluate(self, server_round, parameters, client_manager):
        return super().configure_evaluate(server_round, self._subset(parameters), client_manager)

    def aggregate_fit(self, server_round, results, failures):
        # Flower's FedAvg averages the shared entries; the local ones keep the global values.
        results = by_site(results)
        parameters, metrics = FlowerFedAvg.aggregate_fit(self, server_round, results, failures)
        full = None
        if parameters is not None:
            averaged = iter(parameters_to_ndarrays(parameters))
            full = [next(averaged) if s else g for g, s in zip(self._global, self.shared)]
        self._record_fit(server_round, results, failures, full, metrics)
        return (ndarrays_to_parameters(full) if full is not None else None), metrics


class SiloBN(FedBN):
    """FedAvg of everything but batch-norm running statistics (kept on the clients)."""

    name = "silobn"
    keep_local = BATCHNORM_STATISTICS


STRATEGIES = {"fedavg": FedAvg, "fedprox": FedProx, "fedbn": FedBN, "silobn": SiloBN}


def shared_mask(model: nn.Module, keep_local: str) -> list[bool]:
    """One flag per state-dict entry of ``model``: exchanged under ``keep_local``."""
    shared = set(shared_keys(model, keep_local))
    return [k in shared for k in model.state_dict()]


def make_strategy(name: str, model: nn.Module, proximal_mu: float = 0.01, **kwargs):
    """The strategy ``name`` (``fedavg``, ``fedprox``, ``fedbn``, ``silobn``) starting from
    ``model``'s whole state dict; ``kwargs`` as :class:`FedAvg`."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown federated strategy {name!r}; choose one of {list(STRATEGIES)}")
    initial = [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]
    cls = STRATEGIES[name]
    if cls is FedProx:
        return cls(proximal_mu, initial_parameters=initial, **kwargs)
    if issubclass(cls, FedBN):
        return cls(shared_mask(model, cls.keep_local), initial, **kwargs)
    return cls(initial_parameters=initial, **kwargs)
