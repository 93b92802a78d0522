"""Connectome figures: group means (hand-checked), glass brain, and the ``cogimg figures`` hook."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cogimg.data import func
from cogimg.tracking import figure_set
from cogimg.tracking.connectome_figures import (
    glass_brain_figure,
    group_matrices_figure,
    preset_group_matrices,
)
from cogimg.tracking.outcome import run_outcome_experiment

R, T = 6, 80


@pytest.fixture()
def cohort(tmp_path, monkeypatch):
    """participants.tsv + series in which AD subjects couple regions 0 and 1; the func loader
    and the parcellation are replaced by them (the synthetic BOLD tree is tested elsewhere)."""
    rng = np.random.default_rng(0)
    rows, series = [], {}
    for dx in ("CN", "MCI", "AD"):
        for i in range(6):
            pid = f"sub-{dx}{i}"
            cov = np.eye(R)
            cov[0, 1] = cov[1, 0] = 0.8 if dx == "AD" else 0.0
            series[pid] = rng.multivariate_normal(np.zeros(R), cov, size=T)
            rows.append({"participant_id": pid, "diagnosis": dx, "age": 70, "sex": "F"})
    pd.DataFrame(rows).to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    dataset = SimpleNamespace(subjects=sorted(series), series=series, motion=None,
                              region_names=[f"r{i}" for i in range(R)])
    coords = np.array([[-40, -20, 50], [40, -20, 50], [0, -50, 30], [0, 50, 0], [-25, 0, 0],
                       [25, 0, 0]], dtype=float)
    monkeypatch.setattr(func, "load_func_dataset", lambda root, **kw: dataset)
    monkeypatch.setattr(func, "default_parcellation",
                        lambda root: SimpleNamespace(centroids_mm=lambda: coords))
    return tmp_path, dataset, coords


def test_group_means_are_the_mean_pearson_matrices(cohort):
    root, dataset, _ = cohort
    groups, names = preset_group_matrices(root, "ad")
    assert list(groups) == ["CN", "MCI", "AD"] and names == dataset.region_names
    by_hand = np.mean([np.corrcoef(dataset.series[f"sub-AD{i}"].T) for i in range(6)], axis=0)
    np.testing.assert_allclose(groups["AD"], by_hand, atol=1e-6)
    assert groups["AD"][0, 1] - groups["CN"][0, 1] > 0.5  # the coupled edge differs


def test_cogimg_figures_makes_them_for_a_connectome_run(cohort, monkeypatch):
    root, dataset, _ = cohort
    for other in ("leaderboard_figures", "classification_figures"):  # tested elsewhere; slow
        monkeypatch.setattr(figure_set, other, lambda *a, **k: [])
    config = {"kind": "outcome", "data": {"layout": "connectome", "root": str(root),
                                           "preset": "ad", "connectivity": "tangent",
                                           "test_fraction": 0.25},
              "cv": {"n_folds": 2, "seed": 0, "fold": 0}, "model": {"name": "logistic"},
              "out": str(root / "runs" / "ad_tangent_logistic"), "bootstrap": 20,
              "experiment": "ad_tangent_logistic"}
    run_outcome_experiment(config, dataset)
    written, skipped = figure_set.make_figures(root / "runs", root / "figures", n_boot=20)
    names = {p.name for p in written}
    assert {"connectome_groups_ad.png", "connectome_glass_ad.png"} <= names, skipped
    assert (root / "figures" / "connectome_glass_ad.pdf").is_file()
    with pytest.raises(ValueError, match=r"needs \(6, 3\) centroids"):
        glass_brain_figure(np.eye(R), np.zeros((4, 3)), root / "bad")
    with pytest.raises(ValueError, match="no group"):
        group_matrices_figure({}, root / "empty")
