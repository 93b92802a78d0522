"""cogimg's Flower app: the ``ServerApp`` and ``ClientApp`` of a federation, and its one-machine
simulation through Flower's simulation engine (Ray).

A federation is described by a **spec** (a JSON-able dict; :func:`write_spec`)::

    {"task": {"class_path": "cogimg.tasks.classification.ClassificationTask", "init_args": {…}},
     "data": {"class_path": "cogimg.data.datamodules.VolumeDataModule", "init_args": {…}},
     "sites": {"site-1": {"split_file": "…"}, …},   # per-site datamodule arguments
     "strategy": "fedavg" | "fedprox" | "fedbn" | "silobn", "proximal_mu": 0.01,
     "rounds": 10, "local_epochs": 1, "seed": 0, "trainer": {…},   # extra Trainer arguments
     "evaluate": true,        # every site evaluates the global model each round (false: none)
     "out_dir": "…",          # server: history.json, global-round<R>.npz (optional)
     "record_updates": false, # server: also updates-round<R>.npz
     "model_dir": "…"}        # clients: <model_dir>/<site>.pt, the last evaluated model (optional)

The server builds the task from ``task`` alone (the initial global model, seeded by ``seed``;
it never builds a datamodule). A client is site ``node_config["site"]`` (deployment) or the
``partition-id``-th of the sorted ``sites`` (simulation); its datamodule is ``data`` updated
with its site's entry and with ``data-root`` / ``split-file`` from its node config, which is how
a hospital points its SuperNode at its own data.

- :func:`simulate` runs a spec through ``flwr.simulation.run_simulation`` (the ``flwr[simulation]``
  extra, Ray) on this machine.
- :data:`server_app` / :data:`client_app` are the components of the Flower app in
  ``flower_app/pyproject.toml`` (run config ``spec`` = path of the spec's JSON file), for
  ``flwr run`` against a SuperLink; :mod:`.deployment` starts SuperLink and SuperNodes on one
  machine and documents TLS.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from flwr.app import Context
from flwr.client import ClientApp
from flwr.server import ServerApp, ServerAppComponents, ServerConfig

from cogimg.paradigms.federated.client import SiteClient
from cogimg.paradigms.federated.strategies import make_strategy

#: Datamodules set up in this process, by their arguments (a simulation's actor serves every
#: site and every round; a deployment's ``flwr-clientapp`` process serves one message).
_DATAMODULES: dict[str, Any] = {}


def _class(path: str) -> type:
    module, _, name = path.rpartition(".")
    if not module.startswith("cogimg."):
        raise ValueError(f"federated spec: class_path {path!r} must name a class inside cogimg")
    return getattr(importlib.import_module(module), name)


def read_spec(spec: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """A spec as a dict (from a dict or a JSON file), checked for what every run needs."""
    out = dict(spec) if isinstance(spec, Mapping) else json.loads(Path(spec).read_text(encoding="utf-8"))
    missing = {"task", "data", "sites", "strategy", "rounds"} - set(out)
    if missing:
        raise ValueError(f"federated spec lacks {sorted(missing)}")
    if len(out["sites"]) < 2:
        raise ValueError(f"federated training needs ≥ 2 sites, got {list(out['sites'])}")
    if int(out["rounds"]) < 1 or int(out.get("local_epochs", 1)) < 1:
        raise ValueError(f"rounds and local_epochs must be ≥ 1, got {out['rounds']}, {out.get('local_epochs')}")
    if not isinstance(out.get("evaluate", True), bool):
        raise TypeError(f"federated spec: evaluate must be true or false, got {out['evaluate']!r}")
    return out


def write_spec(spec: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Check ``spec`` and write it as JSON (the ``spec`` run config of ``flwr run``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(read_spec(spec), indent=1, default=str), encoding="utf-8")
    return path


def build_task(spec: Mapping[str, Any]) -> L.LightningModule:
    """The spec's task module (not seeded here)."""
    return _class(spec["task"]["class_path"])(**spec["task"].get("init_args", {}))


def site_of(spec: Mapping[str, Any], node_config: Mapping[str, Any]) -> str:
    """The site a node serves: ``node_config["site"]``, else the ``partition-id``-th sorted site."""
    if "site" in node_config:
        site = str(node_config["site"])
        if site not in spec["sites"]:
            raise ValueError(f"node config site {site!r} is not in the spec's sites {sorted(spec['sites'])}")
        return site
    if "partition-id" not in node_config:
        raise ValueError("node config needs 'site' (deployment) or 'partition-id' (simulation)")
    return sorted(spec["sites"])[int(node_config["partition-id"])]


def site_datamodule(spec: Mapping[str, Any], site: str, node_config: Mapping[str, Any] | None = None):
    """The site's datamodule, prepared and set up once per process and argument set."""
    node_config = node_config or {}
    args = {**spec["data"].get("init_args", {}), **spec["sites"][site]}
    if "data-root" in node_config:
        args["data_root"] = str(node_config["data-root"])
    if "split-file" in node_config:
        args["split_file"] = str(node_config["split-file"])
    key = json.dumps([spec["data"]["class_path"], args], sort_keys=True, default=str)
    if key not in _DATAMODULES:
        dm = _class(spec["data"]["class_path"])(**args)
        dm.prepare_data()
        dm.setup("fit")
        dm.prepare_data = lambda: None  # Lightning would re-read the tree at every round's fit
        _DATAMODULES[key] = dm
    return _DATAMODULES[key]


def make_client(spec: Mapping[str, Any], context: Context) -> SiteClient:
    """The node's :class:`~.client.SiteClient` under ``spec``."""
    site = site_of(spec, context.node_config)
    model_dir = spec.get("model_dir")
    return SiteClient(site, lambda: build_task(spec), site_datamodule(spec, site, context.node_config),
                      context, seed=int(spec.get("seed", 0)), trainer_kwargs=spec.get("trainer"),
                      model_out=Path(model_dir) / f"{site}.pt" if model_dir else None)


def make_server(spec: Mapping[str, Any]):
    """``(strategy, ServerConfig)`` of ``spec``: the initial global model is the task built
    with ``seed`` (the model every client builds before its first round)."""
    L.seed_everything(int(spec.get("seed", 0)), verbose=False)
    strategy = make_strategy(
        spec["strategy"], build_task(spec), proximal_mu=float(spec.get("proximal_mu", 0.01)),
        min_clients=len(spec["sites"]), client_config={"local-epochs": int(spec.get("local_epochs", 1))},
        out_dir=spec.get("out_dir"), record_updates=bool(spec.get("record_updates", False)),
        fraction_evaluate=1.0 if spec.get("evaluate", True) else 0.0)
    return strategy, ServerConfig(num_rounds=int(spec["rounds"]))


def _run_spec(context: Context) -> dict[str, Any]:
    path = context.run_config.get("spec")
    if not path:
        raise ValueError("run config 'spec' (path of the federation's JSON spec) is empty; "
                         "flwr run … --run-config \"spec='/path/spec.json'\"")
    return read_spec(str(path))


def _server_fn(context: Context) -> ServerAppComponents:
    strategy, config = make_server(_run_spec(context))
    return ServerAppComponents(strategy=strategy, config=config)


#: Deployment components (``flower_app/pyproject.toml``): the spec comes from the run config.
server_app = ServerApp(server_fn=_server_fn)
client_app = ClientApp(client_fn=lambda context: make_client(_run_spec(context), context).to_client())


def simulate(spec: Mapping[str, Any] | str | os.PathLike, num_cpus: int = 1, num_gpus: float = 0.0,
             verbose: bool = False):
    """Run ``spec`` through Flower's simulation engine (Ray) on this machine.

    Every site is a virtual SuperNode; the ServerApp runs in this process and the ClientApps in
    Ray actors (``num_cpus`` CPUs for Ray, one actor taking them all, so sites run one after the
    other and every round of a site sees the same process); ``num_gpus`` GPUs for that actor
    (``1.0`` when the spec's ``trainer`` trains on a GPU: Ray hides GPUs from an actor given none).

    Returns:
        The strategy after the run: ``history`` (per round: aggregated train and validation
        metrics, wall s) and ``parameters`` (the final global model, state-dict order).
    """
    from flwr.simulation import run_simulation

    spec = read_spec(spec)
    holder: list = []

    def server_fn(context: Context) -> ServerAppComponents:
        strategy, config = make_server(spec)
        holder.append(strategy)
        return ServerAppComponents(strategy=strategy, config=config)

    backend = {"client_resources": {"num_cpus": num_cpus, "num_gpus": float(num_gpus)},
               "init_args": {"num_cpus": num_cpus, "num_gpus": math.ceil(num_gpus),
                             "include_dashboard": False}}
    run_simulation(ServerApp(server_fn=server_fn),
                   ClientApp(client_fn=lambda context: make_client(spec, context).to_client()),
                   num_supernodes=len(spec["sites"]), backend_config=backend, verbose_logging=verbose)
    history = holder[0].history if holder else []
    failed = [h["round"] for h in history if h.get("failures")]
    if len(history) < int(spec["rounds"]) or failed or holder[0].parameters is None:
        raise RuntimeError(f"the Flower simulation completed {len(history)} of {spec['rounds']} rounds, "
                           f"clients failed in rounds {failed}; see Flower's log above")
    return holder[0]
