"""Federated learning through Flower's own runtimes: a deployment (SuperLink + 3 SuperNodes as
processes on 127.0.0.1) whose global model equals a FedAvg computed by hand from the updates the
clients sent, a simulation (Flower's simulation engine, Ray) that reproduces the deployment's
aggregation on the same seeds, and FedBN keeping batch norm on the clients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning import seed_everything

from cogimg.data.splits import save_split
from cogimg.paradigms.federated.app import build_task, read_spec, simulate
from cogimg.paradigms.federated.deployment import LocalFederation
from cogimg.paradigms.federated.splits import site_splits
from tests.classification_tree import build_classification_tree

SHAPE = (16, 16, 16)
SITES = ("site-1", "site-2", "site-3")


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory):
    """12 CN + 12 AD subjects over three sites (4 + 4 each), one split file per site."""
    tmp = tmp_path_factory.mktemp("flower")
    root = build_classification_tree(tmp / "bids", n_per_class=12, diagnoses=("CN", "AD"))
    table = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    table["site"] = [f"site-{1 + i % 3}" for i in range(len(table))]
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    paths = {}
    for site, split in site_splits(root / "participants.tsv", test_fraction=0.25, n_folds=2, seed=0).items():
        paths[site] = tmp / f"{site}.json"
        save_split(split, paths[site])
    assert sorted(paths) == list(SITES)
    return root, paths, tmp


def _spec(three_sites, strategy: str, out: str, rounds: int = 2, evaluate: bool = True) -> dict:
    root, paths, tmp = three_sites
    return {
        "task": {"class_path": "cogimg.tasks.classification.ClassificationTask",
                 "init_args": {"model": "resnet10_3d", "classes": ["CN", "AD"], "modalities": ["T1w"],
                               "input_shape": list(SHAPE), "model_kwargs": {"block_inplanes": [4, 8, 8, 8]},
                               "scheduler": "constant", "lr": 1e-2}},
        "data": {"class_path": "cogimg.data.datamodules.VolumeDataModule",
                 "init_args": {"data_root": str(root), "preset": "ad_binary", "cache_dir": str(tmp / "cache"),
                               "spacing_mm": 4.0, "target_shape": list(SHAPE), "batch_size": 4,
                               "modalities": ["T1w"], "augmentation": "none", "num_workers": 0}},
        "sites": {s: {"split_file": str(paths[s])} for s in SITES},
        "strategy": strategy, "rounds": rounds, "local_epochs": 1, "seed": 0, "evaluate": evaluate,
        "out_dir": str(tmp / out / "server"), "model_dir": str(tmp / out / "clients"), "record_updates": True,
    }


def _npz(path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _hand_fedavg(path, n_arrays: int) -> list[np.ndarray]:
    """Σ n_k w_k / Σ n_k over the updates saved in ``path``, in float64."""
    with np.load(path) as f:
        counts = f["num_examples"].astype(np.float64)
        return [sum(counts[i] * f[f"c{i}_{j}"].astype(np.float64) for i in range(len(counts))) / counts.sum()
                for j in range(n_arrays)]


@pytest.fixture(scope="module")
def deployed(three_sites):
    """A 2-round FedAvg run on real Flower processes: SuperLink and one SuperNode per site.
    Without federated evaluation: every evaluation round would start one more ClientApp process
    per site, and the simulation below evaluates through the same client code."""
    spec = _spec(three_sites, "fedavg", "deployed", evaluate=False)
    # One thread per client process in both engines (here and in the simulation test, whatever
    # the caller's environment): they then run the same float operations, so their models can
    # be compared closely.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        with LocalFederation({s: {} for s in SITES}, workdir=three_sites[2] / "federation",
                             timeout_s=300) as fed:
            fed.run(spec)
    return spec


@pytest.mark.slow
@pytest.mark.timeout(900)  # includes the deployment fixture: 7 app processes import torch
def test_deployment_global_model_is_fedavg_of_the_client_updates(deployed):
    server = Path(deployed["out_dir"])
    history = json.loads((server / "history.json").read_text(encoding="utf-8"))
    assert [(h["round"], h["val"], h["failures"]) for h in history] == [(1, {}, 0), (2, {}, 0)]
    assert all(h["clients"] == list(SITES) and h["seconds"] > 0 for h in history)
    keys = list(build_task(deployed).state_dict())
    n = len(keys)
    for r in (1, 2):
        with np.load(server / f"updates-round{r}.npz") as f:
            assert sorted(f["clients"].tolist()) == list(SITES)  # all three SuperNodes trained
            assert f["num_examples"].min() >= 1
        got = _npz(server / f"global-round{r}.npz")
        assert len(got) == n
        for g, want in zip(got, _hand_fedavg(server / f"updates-round{r}.npz", n)):
            np.testing.assert_allclose(g.astype(np.float64), want, rtol=1e-5, atol=1e-6)
    # the updates differ from site to site (each trained on its own data)
    conv = next(j for j, k in enumerate(keys) if k.endswith("conv1.weight"))
    with np.load(server / "updates-round2.npz") as f:
        assert not np.allclose(f[f"c0_{conv}"], f[f"c1_{conv}"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_simulation_reproduces_the_deployment(deployed, three_sites, monkeypatch):
    spec = _spec(three_sites, "fedavg", "simulated", evaluate=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # Ray's workers: one thread, as the deployment's
    strategy = simulate(spec)
    assert [(h["round"], h["val"]) for h in strategy.history] == [(1, {}), (2, {})]
    for r in (1, 2):
        sim = _npz(f"{spec['out_dir']}/global-round{r}.npz")
        dep = _npz(f"{deployed['out_dir']}/global-round{r}.npz")
        for a, b in zip(sim, dep):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_spec_evaluate_must_be_a_boolean(three_sites):
    with pytest.raises(TypeError, match="evaluate must be true or false, got 'no'"):
        read_spec({**_spec(three_sites, "fedavg", "x"), "evaluate": "no"})


def test_fedbn_simulation_keeps_batchnorm_on_the_clients(three_sites):
    spec = _spec(three_sites, "fedbn", "fedbn", rounds=1)
    strategy = simulate(spec)
    assert {"loss", "balanced_accuracy"} <= set(strategy.history[-1]["val"])  # federated evaluation ran
    seed_everything(0, verbose=False)
    start = build_task(spec).state_dict()  # the initial global model (seed 0)
    keys = list(start)
    final = dict(zip(keys, strategy.parameters))
    clients = {s: torch.load(f"{spec['model_dir']}/{s}.pt", weights_only=True) for s in SITES}
    bn = [k for k in keys if "bn" in k and k.endswith(("weight", "running_mean"))]
    assert bn
    for key in keys:
        if key in bn:  # the global model's batch norm never moves; the clients' differ
            np.testing.assert_array_equal(final[key], start[key].numpy())
            assert not torch.equal(clients["site-1"][key], clients["site-2"][key])
        elif key.endswith("conv1.weight"):  # shared entries: every client holds the global ones
            for s in SITES:
                np.testing.assert_allclose(clients[s][key].numpy(), final[key], rtol=1e-6)
            assert not np.array_equal(final[key], start[key].numpy())  # and they were trained
