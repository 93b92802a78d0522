"""Regression metrics equal scipy / scikit-learn; bootstrap intervals resample subjects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from cogimg.metrics.regression import (
    bootstrap_ci,
    mae,
    pearson_r,
    r2,
    regression_report,
    spearman_rho,
)


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 30, 80).astype(float)  # NIHSS-like, with ties
    return y, 0.6 * y + rng.normal(0, 4, y.size)


def test_metrics_equal_scipy_and_sklearn(scores):
    y, p = scores
    assert pearson_r(y, p) == pytest.approx(stats.pearsonr(y, p).statistic, abs=1e-12)
    assert spearman_rho(y, p) == pytest.approx(stats.spearmanr(y, p).statistic, abs=1e-12)
    assert mae(y, p) == pytest.approx(skm.mean_absolute_error(y, p), abs=1e-12)
    assert r2(y, p) == pytest.approx(skm.r2_score(y, p), abs=1e-12)


def test_hand_computed_values():
    y, p = [1.0, 2.0, 3.0], [2.0, 2.0, 5.0]
    assert mae(y, p) == pytest.approx(1.0)           # (1 + 0 + 2) / 3
    assert r2(y, p) == pytest.approx(1 - 5 / 2)      # SS_res = 1 + 0 + 4, SS_tot = 2
    assert pearson_r(y, p) == pytest.approx(np.sqrt(3) / 2)
    assert spearman_rho([1, 2, 3, 4], [10, 20, 30, 25]) == pytest.approx(0.8)


def test_degenerate_inputs_give_nan_not_errors():
    assert np.isnan(pearson_r([1, 2, 3], [5, 5, 5]))
    assert np.isnan(r2([4, 4, 4], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        mae([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        mae([1, np.nan], [1, 2])


def test_report_and_bootstrap_interval(scores):
    y, p = scores
    report = regression_report(y, p)
    assert report["n"] == 80 and set(report) == {"pearson_r", "spearman_rho", "mae", "r2", "n"}
    low, high = bootstrap_ci(y, p, "pearson_r", n_boot=300, seed=1)
    assert low < report["pearson_r"] < high < 1
    assert bootstrap_ci(y, p, "pearson_r", n_boot=300, seed=1) == (low, high)  # seeded
    # Large-sample check: the interval is close to Fisher's z interval.
    z, se = np.arctanh(report["pearson_r"]), 1 / np.sqrt(y.size - 3)
    assert low == pytest.approx(np.tanh(z - 1.96 * se), abs=0.06)
    assert high == pytest.approx(np.tanh(z + 1.96 * se), abs=0.06)


def test_cluster_bootstrap_keeps_a_participants_entries_together():
    y = np.repeat(np.arange(20.0), 2)  # two entries (sessions) per participant
    p = y + 1.0
    groups = np.repeat([f"sub-{i}" for i in range(20)], 2)

    def both_entries_drawn(t, _):  # 1 when every drawn participant came with both entries
        return float(np.all(np.bincount(t.astype(int)) % 2 == 0))

    assert bootstrap_ci(y, p, both_entries_drawn, n_boot=200, groups=groups) == (1.0, 1.0)
    assert bootstrap_ci(y, p, both_entries_drawn, n_boot=200)[0] == 0.0  # entries split apart
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(y, p, "mae", groups=groups[:5])
    with pytest.raises(KeyError, match="unknown metric"):
        bootstrap_ci(y, p, "rmse")
