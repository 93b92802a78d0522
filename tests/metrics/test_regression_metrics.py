"""Regression metrics equal scipy / scikit-learn; bootstrap intervals resample subjects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from cogimg.metrics.regression import (
    bootstrap_ci,
    mae,
    paired_bootstrap_delta,
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


def test_paired_delta_hand_computed_cases():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # Perfect vs perfectly reversed: R = 1 vs −1 on every resample (constant resamples,
    # where R is undefined, are left out), so ΔR = 2 with a zero-width interval.
    out = paired_bootstrap_delta(y, y, -y, n_boot=200, seed=0)
    assert (out["delta"], out["ci_low"], out["ci_high"], out["p_le_0"]) == (2.0, 2.0, 2.0, 0.0)
    # A model against itself (or a positive affine copy, same R): ΔR = 0 on every resample.
    p = y + np.array([0.5, -1.0, 0.3, 0.0, 2.0])
    same = paired_bootstrap_delta(y, p, 3 * p + 1, n_boot=200, seed=0)
    assert same["delta"] == pytest.approx(0, abs=1e-12)
    assert same["ci_low"] == pytest.approx(0, abs=1e-12)
    assert same["ci_high"] == pytest.approx(0, abs=1e-12)
    # MAE: a constant offset of 1 vs 3 points → ΔMAE = −2 on every resample.
    mae_out = paired_bootstrap_delta(y, y + 1, y + 3, "mae", n_boot=50)
    assert (mae_out["delta"], mae_out["ci_low"], mae_out["ci_high"]) == (-2.0, -2.0, -2.0)


def test_paired_delta_equals_a_naive_loop_and_is_narrower_than_unpaired(scores):
    y, p = scores
    rng = np.random.default_rng(3)
    ref = p + rng.normal(0, 2, y.size)  # a correlated, worse reference
    out = paired_bootstrap_delta(y, p, ref, n_boot=300, seed=7)
    draws = np.random.default_rng(7)
    naive = []
    for _ in range(300):
        idx = draws.integers(0, y.size, y.size)
        naive.append(stats.pearsonr(y[idx], p[idx]).statistic
                     - stats.pearsonr(y[idx], ref[idx]).statistic)
    assert out["ci_low"] == pytest.approx(np.percentile(naive, 2.5), abs=1e-9)
    assert out["ci_high"] == pytest.approx(np.percentile(naive, 97.5), abs=1e-9)
    assert out["p_le_0"] == pytest.approx(np.mean(np.array(naive) <= 0))
    assert out["delta"] == pytest.approx(pearson_r(y, p) - pearson_r(y, ref))
    # Pairing cancels the subject-sampling noise the two models share.
    lo_p, hi_p = bootstrap_ci(y, p, n_boot=300, seed=7)
    lo_r, hi_r = bootstrap_ci(y, ref, n_boot=300, seed=7)
    assert out["ci_high"] - out["ci_low"] < 0.5 * ((hi_p - lo_p) + (hi_r - lo_r))
