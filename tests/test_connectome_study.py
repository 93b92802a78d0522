"""The connectome study's tiny preset end to end (benchmarks/connectome.py → studies/connectome.yaml):
synthetic cohort with BOLD, every arm on one split per seed, comparisons, edge attribution."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.study
@pytest.mark.slow
def test_connectome_study_tiny_preset(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("connectome", None)
    import connectome

    from cogimg.tracking import figure_set

    # the standard figures of the runs are tested elsewhere (tests/test_connectome_figures.py)
    monkeypatch.setattr(figure_set, "make_figures", lambda *a, **k: ([], []))
    out, results = tmp_path / "study", tmp_path / "results"
    assert connectome.main(["--preset", "tiny", "--out", str(out),
                            "--results-dir", str(results)]) == 0
    record = json.loads((results / "connectome_tiny.json").read_text(encoding="utf-8"))
    names = {c["comparison"] for c in record["comparisons"]}
    for task, model in [(t, m) for t in ("ad", "pd", "stroke") for m in ("mlp", "brainnetcnn",
                                                                          "gnn")]:
        metric = "pearson_r" if task == "stroke" else "balanced_accuracy"
        assert f"{task} {model} vs tangent ({metric})" in names
    for task in ("ad", "pd", "stroke"):
        assert f"{task} fusion vs best single modality" in names
    assert {"ad coupling vs tangent (balanced_accuracy)",
            "pd coupling vs tangent (balanced_accuracy)"} <= names
    assert record["leaderboard_stage"] == "test"
    leaderboard_test = pd.read_csv(out / "leaderboard_test.csv")
    tested_pd = pd.concat(pd.read_csv(p) for p in (out / "runs" / "pd_mlp").rglob(
        "subjects_test.csv"))
    row = leaderboard_test.set_index("experiment").loc["pd_mlp"]
    assert row["n_subjects"] == tested_pd["subject_id"].nunique()
    models = {(r["kind"], r["model"]) for r in record["leaderboard"]}
    assert {("classification", "tangent_logistic"), ("classification", "connectome_mlp"),
            ("regression", "tangent_ridge"), ("classification", "structure_function_fusion"),
            ("regression", "structure_function_fusion"), ("classification", "coupling_logistic")
            } <= models
    # one split per seed: the baseline and each deep arm tested the same subjects
    tested = {arm: set(pd.read_csv(next((out / "runs" / arm).rglob("subjects_test.csv")))
                       ["subject_id"]) for arm in ("ad_tangent", "ad_mlp", "ad_t1_connectome")}
    assert tested["ad_tangent"] == tested["ad_mlp"] == tested["ad_t1_connectome"]
    for row in record["edge_attribution"]:
        assert row["random"]["5"] == pytest.approx(row["n_true"] / row["n_edges"])
        assert 0.0 <= row["precision"]["5"] <= 1.0
    assert record["edge_attribution"]
