"""Connectome models: BrainNetCNN filters against hand computation, learning, task hook."""

from __future__ import annotations

import pytest
import torch

from cogimg import models
from cogimg.models.connectome import EdgeToEdge, build_connectome_model
from cogimg.tasks.classification import ClassificationTask
from cogimg.tasks.regression import RegressionTask

R = 8


def _toy(n=160, seed=0):
    """Correlation-like matrices; class 1 has a strong (2, 5) edge."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, R, R, generator=g) * 0.3
    x = (x + x.transpose(1, 2)) / 2
    y = torch.arange(n) % 2
    x[:, 2, 5] += y * 1.0
    x[:, 5, 2] += y * 1.0
    x[:, range(R), range(R)] = 1.0
    return x, y


def test_edge_to_edge_matches_hand_computation():
    torch.manual_seed(0)
    layer = EdgeToEdge(1, 1, R)
    x = torch.randn(2, 1, R, R)
    w_row = layer.row.weight[0, 0, 0]  # (R,) over columns k of row i
    w_col = layer.col.weight[0, 0, :, 0]  # (R,) over rows k of column j
    expected = (torch.einsum("bik,k->bi", x[:, 0], w_row)[:, :, None]
                + torch.einsum("bkj,k->bj", x[:, 0], w_col)[:, None, :]
                + layer.row.bias + layer.col.bias)
    torch.testing.assert_close(layer(x)[:, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kwargs,matrix", [
    ("connectome_mlp", {"hidden": [32, 16], "dropout": 0.0}, False),
    ("brainnetcnn", {"e2e": [8], "e2n": 16, "n2g": 16, "hidden": 16, "dropout": 0.0}, True),
    ("connectome_gnn", {"conv": "gcn", "hidden": 16, "top_k": 3, "dropout": 0.0}, True),
])
def test_models_learn_an_edge_signal(name, kwargs, matrix):
    torch.manual_seed(0)
    x, y = _toy()
    rows, cols = torch.triu_indices(R, R, 1)
    inputs = x if matrix else x[:, rows, cols]
    net = models.get(name, num_nodes=R, num_outputs=2, **kwargs)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs[:128]), y[:128]).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(inputs[128:]).argmax(1) == y[128:]).float().mean().item()
    assert accuracy >= 0.9, f"{name}: held-out accuracy {accuracy}"
    net.reset_classifier(0)
    assert net(inputs[:3]).shape == (3, net.num_features)


def test_gat_and_clear_errors():
    x, _ = _toy(4)
    for conv in ("gat", "sage"):  # gcn learns above; the other convolutions run
        gnn = models.get("connectome_gnn", num_nodes=R, num_outputs=3, conv=conv, hidden=8)
        assert gnn(x).shape == (4, 3)
    rows, cols = torch.triu_indices(R, R, 1)
    with pytest.raises(ValueError, match=r"brainnetcnn reads connectome matrices .*output: matrix"):
        models.get("brainnetcnn", num_nodes=R)(x[:, rows, cols])
    with pytest.raises(ValueError, match="conv='gin'"):
        models.get("connectome_gnn", num_nodes=R, conv="gin")
    with pytest.raises(ValueError, match="does not read connectomes"):
        build_connectome_model("resnet10_3d", num_outputs=2, model_kwargs={})
    assert {"brainnetcnn", "connectome_gnn", "connectome_mlp"} <= set(models.available("connectome"))


def test_tasks_read_the_connectome_key():
    x, y = _toy(6)
    rows, cols = torch.triu_indices(R, R, 1)
    batch = {"connectome": x[:, rows, cols], "label": y, "target": y.float() * 10,
             "subject_id": [f"sub-{i}" for i in range(6)]}
    task = ClassificationTask(model="connectome_mlp", classes=("CN", "AD"), input_key="connectome",
                              model_kwargs={"num_nodes": R})
    assert task.logits(batch).shape == (6, 2)
    with torch.no_grad():
        rows_ = task.evaluate_batch(batch, "val")
    assert [r["subject_id"] for r in rows_] == batch["subject_id"]
    reg = RegressionTask(model="brainnetcnn", input_key="connectome",
                         model_kwargs={"num_nodes": R, "e2e": [4], "e2n": 4, "n2g": 4})
    reg.fit_target_scaling(batch["target"].numpy())
    with torch.no_grad():
        out = reg.evaluate_batch({**batch, "connectome": x}, "val")
    assert len(out) == 6 and all(isinstance(r["pred"], float) for r in out)
    with pytest.raises(ValueError, match="input_key='voxels'"):
        ClassificationTask(model="connectome_mlp", input_key="voxels")
