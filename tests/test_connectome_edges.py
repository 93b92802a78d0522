"""Edge attribution (Captum IG) ranks the edges that carry the signal first; random reference."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from cogimg import models
from cogimg.paradigms.explain.edges import (
    edge_attributions,
    edge_pairs,
    random_top_k_precision,
    rank_edges,
    score_edge_attribution,
    top_k_precision,
    truth_edges,
    truth_mask,
)

R = 8
SIGNAL = [(2, 5), (0, 7), (1, 3)]


def _toy(n=160, seed=0):
    """Symmetric noise matrices; class 1 raises the SIGNAL edges by 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, R, R, generator=g) * 0.3
    x = (x + x.transpose(1, 2)) / 2
    y = torch.arange(n) % 2
    for i, j in SIGNAL:
        x[:, i, j] += y * 1.0
        x[:, j, i] += y * 1.0
    x[:, range(R), range(R)] = 0.0
    return x, y


def _train(net, inputs, y, steps=80):
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), y).backward()
        opt.step()
    return net.eval()


def test_mlp_attribution_finds_the_signal_edges():
    x, y = _toy()
    rows, cols = torch.triu_indices(R, R, 1)
    torch.manual_seed(0)
    net = _train(models.get("connectome_mlp", num_nodes=R, num_outputs=2, hidden=[32, 16],
                            dropout=0.0), x[:, rows, cols], y)
    scores = score_edge_attribution(net, x[y == 1][:20, rows, cols], 1, SIGNAL, ks=(3, 5))
    assert scores["n_edges"] == R * (R - 1) // 2 == 28 and scores["n_true"] == 3
    assert scores["precision"][3] == 1.0, scores["top_edges"][:5]
    assert scores["random"][3] == pytest.approx(3 / 28)
    assert set(scores["top_edges"][:3]) == set(SIGNAL)


def test_brainnetcnn_matrix_attribution_sums_both_entries():
    x, y = _toy(96)
    torch.manual_seed(0)
    net = _train(models.get("brainnetcnn", num_nodes=R, num_outputs=2, e2e=[8], e2n=16, n2g=16,
                            hidden=16, dropout=0.0), x, y, steps=60)
    attr = edge_attributions(net, x[y == 1][:12], target=1, n_steps=16)
    assert attr.shape == (12, 28)
    mask = truth_mask(R, SIGNAL)
    assert top_k_precision(rank_edges(attr), mask, 3) >= 2 / 3
    # completeness of IG: the edge attributions (both matrix entries) sum to f(x) - f(0)
    with torch.no_grad():
        gap = net(x[y == 1][:12])[:, 1] - net(torch.zeros(12, R, R))[:, 1]
    torch.testing.assert_close(attr.sum(1), gap, rtol=0.05, atol=0.05)


def test_random_precision_is_exact_and_helpers():
    # enumerate every k-subset of 6 edges with 2 true: mean precision = 2/6 for every k
    mask = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    for k in (1, 2, 3, 5):
        exact = np.mean([mask[list(c)].mean() for c in itertools.combinations(range(6), k)])
        assert random_top_k_precision(6, 2, k) == pytest.approx(exact, abs=1e-12)
    assert edge_pairs(4).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert truth_mask(4, [(3, 1)]).tolist() == [False, False, False, False, True, False]
    table = pd.DataFrame({"region_a": ["PCC", "Put"], "region_b": ["Hip", "M1"],
                          "effect": ["ad", "pd"], "magnitude": [0.2, 0.1]})
    names = ["Hip", "M1", "PCC", "Put"]
    assert truth_edges([table], names) == {(0, 2), (1, 3)}
    assert truth_edges([table], names, effect="pd") == {(1, 3)}
    with pytest.raises(ValueError, match="not in the parcellation"):
        truth_edges([table], names[:3])
    with pytest.raises(ValueError, match="k=9"):
        top_k_precision(np.arange(6), mask, 9)
    with pytest.raises(ValueError, match="must hold the 6 edges"):
        edge_attributions(torch.nn.Linear(5, 2), torch.zeros(2, 5), num_nodes=4)
