"""Outcome regression runner (:mod:`cogimg.paradigms.outcome`), its run directory
(:mod:`cogimg.tracking.outcome`) and ``cogimg outcome``: every experiments/outcome YAML runs
(2 folds, 1 epoch) on a tiny generated cohort."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cogimg.cli import main
from cogimg.data.splits import check_leakage, load_split
from cogimg.metrics.regression import paired_bootstrap_delta
from cogimg.paradigms.outcome import cross_validate, load_cohort, load_config
from cogimg.tracking.leaderboard import find_runs, leaderboard
from cogimg.tracking.outcome import run_outcome_experiment

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "outcome")
                     .glob("*.yaml"))
def ridge_config(tiny_soop: Path, tmp_path: Path, **cv) -> dict:
    return {"experiment": "tiny_ridge", "out": str(tmp_path / "run"),
            "data": {"layout": "soop", "mask_dir": str(tiny_soop / "lesions"),
                     "scores": str(tiny_soop / "scores.tsv"),
                     "atlas": str(tiny_soop / "atlas.nii.gz"),
                     "score": "nihss", "covariates": ["age"], "downsample": 2,
                     "unmatched": "exclude"},
            "cv": {"n_folds": 4, "seed": 0, **cv}, "bootstrap": 200,
            "model": {"name": "ridge", "features": ["territories", "covariates", "log_volume"]}}


def test_cross_validate_predicts_every_subject_once_and_scores_the_table(tiny_soop, tmp_path):
    config = ridge_config(tiny_soop, tmp_path)
    cv = cross_validate(config)
    table, result = cv.table, cv.result
    assert sorted(table["subject_id"]) == sorted(f"sub-{i}" for i in range(1, 21))
    assert table["fold"].nunique() == 4 and result["n_folds"] == 4 and result["n_subjects"] == 20
    # targets are the TSV's scores, subject by subject
    scores = pd.read_csv(tiny_soop / "scores.tsv", sep="\t").set_index("participant_id")["nihss"]
    np.testing.assert_array_equal(table["target"], scores.loc[table["subject_id"]].to_numpy())
    # pooled and per-fold R are scipy's Pearson R of the out-of-fold table
    pooled_r = stats.pearsonr(table["target"], table["pred"])[0]
    assert result["pooled"]["pearson_r"] == pytest.approx(pooled_r)
    per_fold = [stats.pearsonr(g["target"], g["pred"])[0]
                for _, g in table.groupby("fold", sort=False)]
    assert result["pearson_r_folds"] == pytest.approx(per_fold)
    assert result["pearson_r_mean"] == pytest.approx(np.mean(per_fold))
    mae = np.mean(np.abs(table["target"] - table["pred"]))
    assert result["pooled"]["mae"] == pytest.approx(mae)
    low, high = result["pooled"]["pearson_r_ci"]
    assert low <= result["pooled"]["pearson_r"] <= high
    # the same seed gives the same folds and predictions; a preloaded cohort changes nothing
    again = cross_validate(config, cohort=load_cohort(config["data"]))
    pd.testing.assert_frame_equal(again.table, table)


def test_outcome_run_directory_is_a_regression_run(tiny_soop, tmp_path):
    config = ridge_config(tiny_soop, tmp_path)
    result = run_outcome_experiment(config)
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "regression" and manifest["status"] == "finished"
    assert (manifest["experiment"], manifest["model"], manifest["variant"], manifest["seed"],
            manifest["task"]) == ("tiny_ridge", "ridge", "default", 0, "sklearn:ridge")
    assert manifest["split"] == str(run / "split.json") and (run / "split.json").is_file()
    subjects = pd.read_csv(run / "subjects_val.csv")
    assert {"subject_id", "target", "pred"} <= set(subjects.columns)
    assert len(subjects) == subjects["subject_id"].nunique() == 20
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["val"]["val/pearson_r"] == pytest.approx(result["pooled"]["pearson_r"])
    assert metrics["val"]["val/pearson_r"] == pytest.approx(
        stats.pearsonr(subjects["target"], subjects["pred"])[0])
    assert "params" not in manifest  # fitted per fold: no single model to count
    # cogimg leaderboard reads it as a regression run
    runs, skipped = find_runs(tmp_path)
    assert len(runs) == 1 and not skipped
    assert leaderboard(runs).iloc[0]["pearson_r_mean"] == pytest.approx(
        stats.pearsonr(subjects["target"], subjects["pred"])[0])
    # an existing run is kept unless overwrite
    with pytest.raises(FileExistsError, match="already records a run"):
        run_outcome_experiment(config)
    run_outcome_experiment(config, overwrite=True)


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_outcome_experiment_runs_and_its_split_does_not_leak(config, tiny_soop, tmp_path):
    assert main([
        "outcome", "--config", str(config), "--out", str(tmp_path / "run"),
        "--mask-dir", str(tiny_soop / "lesions"), "--scores", str(tiny_soop / "scores.tsv"),
        "--atlas", str(tiny_soop / "atlas.nii.gz"), "--split", str(tmp_path / "split.json"),
        "--n-folds", "2", "--max-epochs", "1"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_subjects"] == 20 and len(metrics["pearson_r_folds"]) == 2
    assert len(metrics["pooled"]["pearson_r_ci"]) == 2
    assert (tmp_path / "run" / "predicted_vs_observed.png").stat().st_size > 0
    if config.stem != "soop_svr":  # every other model is compared with the reference, paired
        table = pd.read_csv(tmp_path / "run" / "subjects_val.csv")
        expected = paired_bootstrap_delta(table["target"], table["pred"], table["reference_pred"],
                                          "pearson_r", metrics.get("bootstrap", 1000), 0)
        assert metrics["delta_vs_reference"]["pearson_r"] == pytest.approx(expected)
        assert metrics["reference"]["model"] == "soop_svr"
    split = load_split(tmp_path / "split.json")
    check_leakage(split)
    val = [i for k in range(2) for i in split.fold(k)["val"]]
    assert sorted(val) == sorted(f"sub-{i}" for i in range(1, 21))  # each subject once


def test_config_with_an_unknown_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {layout: soop, mask_dir: x, scores: y}\nmodel: {name: svr, C: 3}\n",
                   encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml: model\.C: unknown key\(s\) \['C'\]"):
        load_config(bad)


SVR = (EXPERIMENTS[0].parent / "svr.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(("old", "new", "message"), [
    # one unknown key and one wrong type in every section
    ("bootstrap: 1000", "bootstraps: 1000", r"bootstraps: unknown key"),
    ("bootstrap: 1000", "bootstrap: many", r"bootstrap: Expected a <class 'int'>\. Got value: many"),
    ("  downsample: 2", "  down_sample: 2", r"data\.down_sample: unknown key"),
    ("  downsample: 2", "  downsample: half", r"data\.downsample: Expected a <class 'int'>"),
    ("  unmatched: exclude", "  unmatched: drop", r"data\.unmatched: .*drop"),
    ("  n_folds: 5", "  folds: 5", r"cv\.folds: unknown key"),
    ("  n_folds: 5", "  n_folds: five", r"cv\.n_folds: Expected a <class 'int'>"),
    ("  map_coarsen: 1", "  coarsen: 1", r"model\.coarsen: unknown key"),
    ("  map_coarsen: 1", "  map_coarsen: [3]", r"model\.map_coarsen: Expected a <class 'int'>"),
    ("  features: [territories, covariates, volume_ml]",
     "  features: [territories, covariates, volume_ml]\n  map_coarsen: 3",
     r"reference\.map_coarsen: unknown key"),
    ("  name: soop_svr", "  name: [soop_svr]", r"reference\.name: Expected a <class 'str'>"),
    ("  name: soop_svr", "  features: []", r"reference\.name: required"),
    ("cv:\n  n_folds: 5\n  seed: 0\n  split: runs/outcome/soop_nihss_kfold5_seed0.json\n",
     "cv: 5\n", r"cv: .*Expected a <class 'dict'>.* Given value: 5"),
    # the checks a type cannot express
    ("  name: svr", "  name: svm", r"model\.name: 'svm' is not one of \['soop_svr', "),
    ("  features: [territories, covariates, log_volume]", "  features: [territory]",
     r"model\.features: unknown group\(s\) \['territory'\]"),
    ("  n_folds: 5", "  n_folds: 1", r"cv\.n_folds: must be at least 2, got 1"),
])
def test_config_errors_name_the_file_and_key(tmp_path, old, new, message):
    assert old in SVR
    bad = tmp_path / "bad.yaml"
    bad.write_text(SVR.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}: {message}") as error:
        load_config(bad)
    assert "\n" not in str(error.value)


def test_config_keeps_the_keys_the_file_sets_with_their_types(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(SVR.replace("  n_folds: 5", "  n_folds: '3'"), encoding="utf-8")
    config = load_config(good)
    assert config["cv"] == {"n_folds": 3, "seed": 0,
                            "split": "runs/outcome/soop_nihss_kfold5_seed0.json"}
    assert config["model"] == {"name": "svr", "map_coarsen": 1, "params": {},
                               "features": ["territories", "covariates", "log_volume"]}
    assert (config["out"], config["experiment"], config["bootstrap"]) == (
        "runs/outcome/svr", "good", 1000)
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text("kind: outcome\ndata: {}\nmodel: {name: ridge}\n", encoding="utf-8")
    assert load_config(minimal) == {"kind": "outcome", "data": {}, "model": {"name": "ridge"},
                                    "cv": {}, "out": "runs/outcome/minimal",
                                    "experiment": "minimal"}


def test_outcome_command_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {layout: soop}\nmodel: {name: svr, C: 3}\n", encoding="utf-8")
    assert main(["outcome", "--config", str(bad)]) == 2  # a config that cannot be used
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key(s) ['C']" in err and "Traceback" not in err
    assert main(["outcome", "--config", str(bad), "--n-folds", "1"]) == 2
    assert "--n-folds 1" in capsys.readouterr().err


@pytest.mark.parametrize("kind", [None, "lightning"])
def test_config_must_say_kind_outcome(tmp_path, kind):
    body = "data: {layout: soop}\nmodel: {name: svr}\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(("" if kind is None else f"kind: {kind}\n") + body, encoding="utf-8")
    with pytest.raises(ValueError, match=f"top level needs 'kind: outcome' \\(got {kind!r}\\)"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("kind: outcome\n" + body, encoding="utf-8")
    assert load_config(good)["kind"] == "outcome"
