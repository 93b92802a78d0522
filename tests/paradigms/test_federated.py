"""Federated learning: aggregation against hand-computed means, FedBN's local batch norm,
client sampling, FedProx's proximal gradient, identical clients = centralised training,
rounds that continue one training stream, and the structural guarantee that only weights and aggregate scalars reach the server."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from cogimg.data.datamodules import VolumeDataModule
from cogimg.data.splits import save_split
from cogimg.paradigms import federated
from cogimg.paradigms.federated import (
    ClientEvaluation,
    ClientUpdate,
    FedAvg,
    FedBN,
    FedProx,
    GlobalModel,
    SiloBN,
    get_strategy,
    sample_clients,
)
from cogimg.paradigms.federated.client import ProximalTerm, SiteClient, get_weights
from cogimg.paradigms.federated.simulation import simulate
from cogimg.paradigms.federated.splits import pooled_split, site_splits
from cogimg.tasks.classification import ClassificationTask
from tests.classification_tree import build_classification_tree

SHAPE = (16, 16, 16)
TINY = {"block_inplanes": [4, 8, 8, 8]}


# ------------------------------------------------------------------ strategies
def test_fedavg_is_the_example_weighted_mean():
    a = ClientUpdate("a", [np.array([1.0, 2.0], np.float32), np.array(10)], num_examples=1)
    b = ClientUpdate("b", [np.array([4.0, 8.0], np.float32), np.array(20)], num_examples=3)
    weights, count = FedAvg().aggregate([a, b])
    np.testing.assert_allclose(weights, [(1 + 3 * 4) / 4, (2 + 3 * 8) / 4])
    assert weights.dtype == np.float32
    assert count == 18 and count.dtype == np.array(10).dtype  # integer buffers stay integers (17.5 -> 18)
    with pytest.raises(ValueError, match="other shapes"):
        FedAvg().aggregate([a, ClientUpdate("c", [np.zeros(3, np.float32), np.array(1)], 1)])
    with pytest.raises(ValueError, match="no client update"):
        FedAvg().aggregate([])


def test_fedbn_keeps_batchnorm_local_and_fedprox_sends_mu():
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.Linear(2, 2))
    shared = FedBN().shared_keys(model)
    assert shared == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert FedAvg().shared_keys(model) == list(model.state_dict())
    # SiloBN shares the batch-norm affine weights, keeps the running statistics local
    assert SiloBN().shared_keys(model) == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]
    assert isinstance(get_strategy("silobn"), SiloBN)
    with pytest.raises(ValueError, match="has none"):
        SiloBN().shared_keys(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="has none"):
        FedBN().shared_keys(nn.Linear(2, 2))
    assert FedProx(0.1).client_config(3) == {"proximal_mu": 0.1}
    assert isinstance(get_strategy("fedbn"), FedBN)
    with pytest.raises(ValueError, match="unknown federated strategy"):
        get_strategy("fedsgd")


def test_sample_clients_is_seeded_and_respects_minimum():
    names = ["s1", "s2", "s3", "s4"]
    picked = sample_clients(names, 0.5, 1, np.random.default_rng(0))
    assert len(picked) == 2 and picked == sample_clients(names, 0.5, 1, np.random.default_rng(0))
    assert sample_clients(names, 0.25, 3, np.random.default_rng(0)).__len__() == 3
    assert sample_clients(names, 1.0, 1, np.random.default_rng(1)) == names
    with pytest.raises(ValueError, match="fraction"):
        sample_clients(names, 0.0, 1, np.random.default_rng(0))


def test_proximal_term_adds_mu_times_drift_to_gradients():
    layer = nn.Linear(2, 1, bias=False)
    module = nn.Module()
    module.layer = layer
    term = ProximalTerm(0.5, ["layer.weight"])
    term.on_train_start(None, module)
    with torch.no_grad():
        layer.weight += 2.0  # drift from the global weights
    layer.weight.grad = torch.zeros_like(layer.weight)
    term.on_after_backward(None, module)
    assert torch.allclose(layer.weight.grad, torch.full_like(layer.weight, 1.0))  # 0.5 * 2


# ------------------------------------------------------------------ messages and structure
def test_messages_carry_only_weights_and_scalars():
    with pytest.raises(TypeError, match="per-subject output never leaves a client"):
        ClientUpdate("a", [np.zeros(2)], 4, {"predictions": [0.1, 0.9]})
    with pytest.raises(TypeError, match="numpy array"):
        ClientUpdate("a", [torch.zeros(2)], 4)
    with pytest.raises(TypeError, match="scalar"):
        ClientEvaluation("a", 4, {"prob": np.zeros(4)})
    assert GlobalModel([np.zeros(1)], 1, {"proximal_mu": np.float32(0.1)}).config["proximal_mu"] == pytest.approx(0.1)


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def test_server_side_modules_cannot_reach_data():
    from cogimg.paradigms.federated import messages, server, strategies

    for module in (server, strategies, messages):
        forbidden = {n for n in _imports(module)
                     if n.startswith(("cogimg.data", "cogimg.tasks", "lightning", "torch.utils.data",
                                      "cogimg.paradigms.federated.client", "torchio"))}
        assert not forbidden, f"{module.__name__} imports {forbidden}"


# ------------------------------------------------------------------ simulation
@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fed")
    root = build_classification_tree(tmp / "bids", n_per_class=8, diagnoses=("CN", "AD"))
    splits = site_splits(root / "participants.tsv", test_fraction=0.25, n_folds=2, seed=0)
    paths = {}
    for site, split in {**splits, "pooled": pooled_split(splits)}.items():
        paths[site] = tmp / f"{site}.json"
        save_split(split, paths[site])
    return root, paths, tmp / "cache"


def _dm(two_sites, split_name):
    root, paths, cache = two_sites
    return VolumeDataModule(root, preset="ad_binary", split_file=paths[split_name], cache_dir=cache,
                            spacing_mm=4.0, target_shape=SHAPE, batch_size=4, modalities=["T1w"],
                            augmentation="none")


def _task():
    return ClassificationTask(model="resnet10_3d", classes=("CN", "AD"), modalities=("T1w",),
                              input_shape=SHAPE, model_kwargs=TINY, scheduler="constant", lr=1e-2)


def test_fedavg_of_identical_clients_equals_centralised_training(two_sites, tmp_path):
    history, server, _ = simulate(_task, {"a": _dm(two_sites, "site-1"), "b": _dm(two_sites, "site-1")},
                                        FedAvg(), rounds=1, local_epochs=1, seed=0)
    L.seed_everything(0, verbose=False)
    central = _task()  # same seed, same initial weights as every client
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(central, datamodule=_dm(two_sites, "site-1"))
    expected = get_weights(central, list(central.state_dict()))
    assert len(server.parameters) == len(expected)
    for got, want in zip(server.parameters, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert history[0].clients == ["a", "b"] and "balanced_accuracy" in history[0].metrics


def test_rounds_continue_the_training_stream_like_one_long_fit(two_sites, monkeypatch, tmp_path):
    """Each round's Trainer.fit must not restart the site's training loader: R rounds of one
    local epoch see the subject order (and augmentation seeds) of one R-epoch fit, not the
    first epoch's batches R times over."""
    seen = []
    original = ClassificationTask.training_step

    def spy(self, batch, batch_idx):
        seen.append(tuple(batch["subject_id"]))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationTask, "training_step", spy)
    client = SiteClient("pooled", _task, _dm(two_sites, "pooled"), FedAvg(), local_epochs=1)
    for r in (1, 2, 3):
        client.fit(GlobalModel(client.get_parameters(), r))
    rounds = list(seen)
    seen.clear()
    L.seed_everything(0, verbose=False)
    L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              num_sanity_val_steps=0, default_root_dir=tmp_path).fit(_task(), datamodule=_dm(two_sites, "pooled"))
    assert rounds == seen
    per_epoch = len(seen) // 3
    assert seen[:per_epoch] != seen[per_epoch:2 * per_epoch]  # the stream does move on


def test_server_receives_only_weight_shaped_arrays_and_scalars(two_sites, monkeypatch):
    received = []
    original = FedBN.aggregate

    def spy(self, updates):
        received.extend(updates)
        return original(self, updates)

    monkeypatch.setattr(FedBN, "aggregate", spy)
    history, _, clients = simulate(_task, {"site-1": _dm(two_sites, "site-1"),
                                                "site-2": _dm(two_sites, "site-2")},
                                        FedBN(), rounds=2, local_epochs=1, seed=0,
                                        trainer_kwargs={"limit_train_batches": 1})
    model = clients["site-1"].task
    shapes = [tuple(v.shape) for k, v in model.state_dict().items() if k in clients["site-1"].keys]
    assert len(received) == 4
    for update in received:
        assert type(update) is ClientUpdate
        assert [a.shape for a in update.parameters] == shapes
        assert all(isinstance(v, (int, float, str, bool)) for v in update.metrics.values())
        assert update.num_examples == len(clients[update.client].datamodule.subjects["train"])
    # FedBN: batch-norm statistics differ between sites, shared weights are equal
    bn = "model.encoder.bn1.running_mean"
    if bn in model.state_dict():
        assert not torch.equal(clients["site-1"].task.state_dict()[bn], clients["site-2"].task.state_dict()[bn])
    assert len(history) == 2 and all(np.isfinite(r.train_loss) for r in history)
    assert hasattr(federated, "FederatedServer")
