"""Pooled arm comparison (centralised / local / federated) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cogimg.paradigms.federated.comparison import arm_comparison

LABELS = [0, 0, 0, 0, 1, 1, 1, 1]
# Predictions per (arm, seed) for subjects s0..s7 (labels above).
PREDS = {
    ("centralised", 0): [0, 0, 0, 0, 1, 1, 1, 1],   # BA 1.0
    ("centralised", 1): [0, 0, 0, 1, 1, 1, 1, 1],   # BA (0.75 + 1) / 2 = 0.875
    ("local:a", 0): [0, 0, 1, 1, 1, 1, 0, 0],       # BA 0.5
    ("local:a", 1): [0, 0, 1, 1, 1, 1, 0, 0],       # 0.5
    ("local:b", 0): [0, 0, 0, 1, 1, 1, 1, 0],       # (0.75 + 0.75) / 2 = 0.75
    ("local:b", 1): [0, 0, 0, 0, 1, 1, 0, 0],       # (1 + 0.5) / 2 = 0.75
    ("fedavg", 0): [0, 0, 0, 0, 1, 1, 1, 0],        # (1 + 0.75) / 2 = 0.875
    ("fedavg", 1): [0, 0, 0, 1, 1, 1, 1, 1],        # 0.875
}


def _rows(preds=PREDS):
    return pd.DataFrame([{"arm": arm, "seed": seed, "subject_id": f"s{i}", "label": y, "pred": p}
                         for (arm, seed), ps in preds.items() for i, (y, p) in enumerate(zip(LABELS, ps))])


def test_pooled_means_shares_and_differences_match_hand_computation():
    table = arm_comparison(_rows(), n_boot=200, seed=0).set_index("arm")
    assert list(table.index) == ["centralised", "local:a", "local:b", "fedavg"]
    np.testing.assert_allclose(table["score"], [0.9375, 0.5, 0.75, 0.875])
    np.testing.assert_allclose(table["score_seed_0"], [1.0, 0.5, 0.75, 0.875])
    np.testing.assert_allclose(table["score_seed_1"], [0.875, 0.5, 0.75, 0.875])
    np.testing.assert_allclose(table.loc["centralised", "score_sd"], np.std([1.0, 0.875], ddof=1))
    assert table.loc["local:a", "score_sd"] == 0
    np.testing.assert_allclose(table.loc["fedavg", "of_central"], 0.875 / 0.9375)
    # best local = local:b (0.75), chosen on all subjects
    np.testing.assert_allclose(table["vs_best_local"], [0.1875, -0.25, 0.0, 0.125])
    assert table.loc["local:b", "vs_best_local_low"] == table.loc["local:b", "vs_best_local_high"] == 0
    for arm, row in table.iterrows():
        assert row.score_low <= row.score <= row.score_high or np.isclose(row.score_low, row.score_high), arm
    # an arm always right on every subject has a degenerate interval at 1
    assert table.loc["centralised", "score_high"] == 1.0


def test_paired_interval_is_narrower_than_the_unpaired_one():
    """Two arms that differ on one subject: the paired CI of the difference is far tighter
    than what the arms' own intervals would suggest."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    base = np.where(rng.random(60) < 0.7, labels, 1 - labels)
    better = base.copy()
    better[np.flatnonzero(base != labels)[0]] = labels[np.flatnonzero(base != labels)[0]]
    rows = pd.DataFrame([{"arm": arm, "seed": 0, "subject_id": i, "label": y, "pred": p}
                         for arm, preds in (("local:a", base), ("fedbn", better))
                         for i, (y, p) in enumerate(zip(labels, preds))])
    table = arm_comparison(rows, n_boot=300, seed=1).set_index("arm")
    width = table.loc["fedbn", "vs_best_local_high"] - table.loc["fedbn", "vs_best_local_low"]
    assert table.loc["fedbn", "vs_best_local"] > 0
    assert table.loc["fedbn", "vs_best_local_low"] >= 0
    assert width < 0.5 * (table.loc["fedbn", "score_high"] - table.loc["fedbn", "score_low"])
    assert np.isnan(table.loc["fedbn", "of_central"])


def test_arms_must_score_the_same_subjects_and_seeds():
    rows = _rows()
    with pytest.raises(ValueError, match="'fedavg', seed 1: scored 7 subjects"):
        arm_comparison(rows.drop(rows.index[-1]), n_boot=10)
    preds = {k: v for k, v in PREDS.items() if k != ("local:a", 1)}
    with pytest.raises(ValueError, match=r"arm 'local:a' has no results for seeds \[1\]"):
        arm_comparison(_rows(preds), n_boot=10)
    with pytest.raises(ValueError, match="lack columns"):
        arm_comparison(rows.drop(columns="pred"))


def test_per_subject_score_metric_is_the_mean_over_subjects():
    """A per-subject score (Dice): the arm's score is its mean over subjects and seeds; no labels needed."""
    dice = {("centralised", 0): [0.8, 0.6, 0.7], ("centralised", 1): [0.6, 0.6, 0.9],   # 0.7, 0.7
            ("local:a", 0): [0.5, 0.4, 0.6], ("local:a", 1): [0.5, 0.5, 0.5],           # 0.5, 0.5
            ("fedbn", 0): [0.7, 0.5, 0.6], ("fedbn", 1): [0.7, 0.7, 0.7]}               # 0.6, 0.7
    rows = pd.DataFrame([{"arm": arm, "seed": seed, "subject_id": f"s{i}", "dice": d}
                         for (arm, seed), ds in dice.items() for i, d in enumerate(ds)])
    table = arm_comparison(rows, "dice", n_boot=200, seed=0).set_index("arm")
    np.testing.assert_allclose(table["score"], [0.7, 0.5, 0.65])
    np.testing.assert_allclose(table["score_seed_0"], [0.7, 0.5, 0.6])
    np.testing.assert_allclose(table.loc["fedbn", "of_central"], 0.65 / 0.7)
    np.testing.assert_allclose(table["vs_best_local"], [0.2, 0.0, 0.15])
    # every subject gains 0.15 on average over seeds (0.2, 0.15, 0.1): the paired CI stays above 0
    low, high = table.loc["fedbn", ["vs_best_local_low", "vs_best_local_high"]]
    assert 0.1 - 1e-9 <= low < high <= 0.2 + 1e-9
    with pytest.raises(ValueError, match=r"lack columns \['dice'\]"):
        arm_comparison(rows.drop(columns="dice"), "dice")
