"""Federated learning on Flower, unit level: the strategies' aggregation against hand-computed
means, FedBN/SiloBN's shared entries, FedProx's proximal gradient, weight loading, the client's
round-to-round training stream kept in Flower's ``Context``, and the server side's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from torch import nn

from cogimg.data.datamodules import VolumeDataModule
from cogimg.data.splits import save_split
from cogimg.paradigms.federated import FedAvg, FedBN, FedProx, SiloBN, make_strategy, shared_keys
from cogimg.paradigms.federated.client import ProximalTerm, SiteClient, get_weights, set_weights
from cogimg.paradigms.federated.splits import pooled_split, site_splits
from cogimg.tasks.classification import ClassificationTask
from tests.classification_tree import build_classification_tree

SHAPE = (16, 16, 16)
TINY = {"block_inplanes": [4, 8, 8, 8]}


def _fit_res(arrays, n, site):
    return None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {"site": site, "train_loss": n})


def _model():
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.Linear(2, 2))


# ------------------------------------------------------------------ strategies
def test_fedavg_is_flowers_example_weighted_mean(tmp_path):
    a = [np.array([1.0, 2.0], np.float32), np.array(10)]
    b = [np.array([4.0, 8.0], np.float32), np.array(20)]
    strategy = FedAvg(initial_parameters=[np.zeros(2, np.float32), np.array(0)], out_dir=tmp_path,
                      record_updates=True)
    params, metrics = strategy.aggregate_fit(1, [_fit_res(a, 1, "a"), _fit_res(b, 3, "b")], [])
    weights, count = parameters_to_ndarrays(params)
    np.testing.assert_allclose(weights, [(1 + 3 * 4) / 4, (2 + 3 * 8) / 4], rtol=1e-6)
    assert float(count) == pytest.approx((10 + 3 * 20) / 4)
    assert metrics["train_loss"] == pytest.approx((1 * 1 + 3 * 3) / 4)  # example-weighted
    saved = np.load(tmp_path / "updates-round1.npz")
    assert saved["num_examples"].tolist() == [1, 3] and saved["clients"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(np.load(tmp_path / "global-round1.npz")["arr_0"], weights)
    assert strategy.history[0]["clients"] == ["a", "b"]


def test_fedbn_and_silobn_share_all_but_batchnorm():
    model = _model()
    assert shared_keys(model, "batchnorm") == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert shared_keys(model, "batchnorm-statistics") == ["0.weight", "0.bias", "1.weight", "1.bias",
                                                          "2.weight", "2.bias"]
    assert shared_keys(model) == list(model.state_dict())
    with pytest.raises(ValueError, match="has none"):
        shared_keys(nn.Linear(2, 2), "batchnorm")
    with pytest.raises(ValueError, match="unknown keep-local"):
        shared_keys(model, "bn")
    with pytest.raises(ValueError, match="unknown federated strategy"):
        make_strategy("fedsgd", model)
    assert isinstance(make_strategy("silobn", model), SiloBN)
    prox = make_strategy("fedprox", model, proximal_mu=0.1)
    assert isinstance(prox, FedProx) and prox.proximal_mu == pytest.approx(0.1)


def test_fedbn_averages_shared_entries_and_leaves_global_batchnorm_alone():
    model = _model()
    initial = [v.numpy().copy() for v in model.state_dict().values()]
    strategy = make_strategy("fedbn", model)
    assert isinstance(strategy, FedBN)
    sent = parameters_to_ndarrays(strategy._subset(ndarrays_to_parameters(initial)))
    assert len(sent) == 4  # conv weight, conv bias, linear weight, linear bias
    updates = [[s + 1.0 for s in sent], [s + 3.0 for s in sent]]
    params, _ = strategy.aggregate_fit(1, [_fit_res(updates[0], 2, "a"), _fit_res(updates[1], 6, "b")], [])
    full = parameters_to_ndarrays(params)
    keys = list(model.state_dict())
    for key, got, start in zip(keys, full, initial):
        if key.startswith("1."):  # batch norm: the global model keeps its initial entries
            np.testing.assert_array_equal(got, start)
        else:  # (2·(w+1) + 6·(w+3)) / 8 = w + 2.5
            np.testing.assert_allclose(got, start + 2.5, rtol=1e-6)
    with pytest.raises(ValueError, match="shared flags"):
        FedBN([True], initial)


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


def test_set_weights_rounds_integer_entries_and_checks_shapes():
    model = _model()
    keys = ["1.num_batches_tracked", "2.bias"]
    set_weights(model, keys, [np.array(17.6), np.array([0.5, -0.5])])
    assert model.state_dict()["1.num_batches_tracked"].item() == 18
    assert get_weights(model, ["2.bias"])[0].tolist() == [0.5, -0.5]
    with pytest.raises(ValueError, match="shape"):
        set_weights(model, ["2.bias"], [np.zeros(3)])
    with pytest.raises(ValueError, match="weight arrays"):
        set_weights(model, keys, [np.zeros(2)])


def _imports(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def test_server_side_cannot_reach_data():
    from cogimg.paradigms.federated import strategies

    forbidden = {n for n in _imports(strategies)
                 if n.startswith(("cogimg.data", "cogimg.tasks", "lightning", "torch.utils.data",
                                  "cogimg.paradigms.federated.client", "torchio"))}
    assert not forbidden


# ------------------------------------------------------------------ the client
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
    dm = VolumeDataModule(root, preset="ad_binary", split_file=paths[split_name], cache_dir=cache,
                          spacing_mm=4.0, target_shape=SHAPE, batch_size=4, modalities=["T1w"],
                          augmentation="none")
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _task():
    return ClassificationTask(model="resnet10_3d", classes=("CN", "AD"), modalities=("T1w",),
                              input_shape=SHAPE, model_kwargs=TINY, scheduler="constant", lr=1e-2)


def test_client_rounds_continue_one_training_stream_through_the_context(two_sites, monkeypatch, tmp_path):
    """A new SiteClient per message (as Flower makes them) with the node's Context: R rounds of one
    local epoch see the subject order of one R-epoch fit, and the local model persists."""
    seen = []
    original = ClassificationTask.training_step

    def spy(self, batch, batch_idx):
        seen.append(tuple(batch["subject_id"]))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationTask, "training_step", spy)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    dm = _dm(two_sites, "pooled")
    config = {"keep-local": "batchnorm", "local-epochs": 1}
    params = SiteClient("pooled", _task, dm, context).get_parameters(config)
    for r in (1, 2, 3):
        params, n, metrics = SiteClient("pooled", _task, dm, context).fit(params, {**config, "server-round": r})
    assert n == len(dm.subjects["train"]) and metrics["site"] == "pooled" and "train_loss" in metrics
    local = SiteClient("pooled", _task, dm, context).task.state_dict()
    bn = next(k for k in local if k.endswith("running_mean"))
    assert not torch.equal(local[bn], _task().state_dict()[bn])  # the local batch norm persisted
    rounds = list(seen)
    seen.clear()
    L.seed_everything(0, verbose=False)
    L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              num_sanity_val_steps=0, default_root_dir=tmp_path).fit(_task(), datamodule=_dm(two_sites, "pooled"))
    assert rounds == seen
    per_epoch = len(seen) // 3
    assert seen[:per_epoch] != seen[per_epoch:2 * per_epoch]  # the stream does move on
