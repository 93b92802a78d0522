"""Leaderboard rows equal a hand computation on fabricated run directories."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cogimg.tracking.leaderboard import (
    bootstrap_mean_ci,
    leaderboard,
    load_runs,
    to_markdown,
    write_leaderboard,
)


def fake_run(folder, name, dice, params=2_000_000):
    folder.mkdir(parents=True)
    result = {"name": name, "model": name, "params": params, "train_s": 100.0, "latency_s": 1.5,
              "peak_rss_gb": 1.2, "metrics": {}, "curve": []}
    (folder / "result.json").write_text(json.dumps(result))
    pd.DataFrame({"subject_id": [f"s{i}" for i in range(len(dice))], "dice": dice,
                  "lesion_f1": [0.5] * len(dice), "hausdorff95_mm": [np.nan] + [2.0] * (len(dice) - 1)}
                 ).to_csv(folder / "subjects.csv", index=False)
    return folder


def test_rows_ranked_with_hand_computed_statistics(tmp_path):
    a = fake_run(tmp_path / "a", "unet", [0.9, 0.7, 0.8])
    b = fake_run(tmp_path / "b", "unetr", [0.95, 0.85, 0.9, 0.9])
    (tmp_path / "incomplete").mkdir()  # no result.json: not a finished run, not listed
    table = leaderboard(load_runs([a, b, tmp_path / "incomplete"]))
    assert table["model"].tolist() == ["unetr", "unet"] and table["rank"].tolist() == [1, 2]
    unet = table.set_index("model").loc["unet"]
    assert unet["dice_mean"] == pytest.approx(0.8)
    assert unet["dice_std"] == pytest.approx(0.1)  # sample std of 0.9, 0.7, 0.8
    assert unet["hausdorff95_mm"] == pytest.approx(2.0)  # undefined (nan) subjects ignored
    assert unet["params_M"] == 2.0 and unet["n_subjects"] == 3
    assert unet["dice_ci_low"] <= 0.8 <= unet["dice_ci_high"]
    write_leaderboard(table, tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| 1 | unetr | 2.00 | 0.900 ± 0.041" in md and md == to_markdown(table)
    assert pd.read_csv(tmp_path / "leaderboard.csv")["model"].tolist() == ["unetr", "unet"]


def test_bootstrap_ci():
    low, high = bootstrap_mean_ci(np.array([0.5] * 10))
    assert low == high == 0.5
    low, high = bootstrap_mean_ci(np.random.default_rng(0).normal(0.7, 0.1, 200))
    assert 0.67 < low < 0.7 < high < 0.73
    assert all(np.isnan(bootstrap_mean_ci(np.array([np.nan]))))
