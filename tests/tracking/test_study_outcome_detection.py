"""The study runners ``outcome`` (cross-validated lesion → score models, one run directory per
arm × split seed) and ``seg_detect`` (detection from segmentation scored like a detector)
against hand computations and the reference libraries (scipy's Pearson r)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats

from cogimg.tracking import study as study_module
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.study_detection import DEFAULTS, score_scans
from cogimg.tracking.study_outcome import cached_cohort, outcome_config
from cogimg.tracking.study_registry import StudyContext
from cogimg.tracking.study_stats import comparison_table

ROOT = Path(__file__).resolve().parents[2]


def context(tmp_path: Path, data: Path | None = None) -> StudyContext:
    return StudyContext(data=data or tmp_path / "data", cache=tmp_path / "cache", stages=("val",),
                        trainer_overrides=[], out=tmp_path)


def test_outcome_arguments_set_keys_size_only_the_cnn_and_share_the_seed_split(tmp_path):
    from cogimg.paradigms.outcome import load_config

    ctx = context(tmp_path)
    args = ["--data.layout", "bids", "--data.atlas", "{data}/atlas.nii.gz", "--cv.n_folds", "3",
            "--model.features", "[covariates, log_volume]", "--cnn.max_epochs", "2",
            "--bootstrap", "50"]
    svr = outcome_config(load_config(ROOT / "experiments/outcome/svr.yaml"), args, 4, "svr",
                         tmp_path / "runs/svr/seed4", ctx)
    cnn = outcome_config(load_config(ROOT / "experiments/outcome/cnn.yaml"), args, 4, "cnn",
                         tmp_path / "runs/cnn/seed4", ctx)
    assert svr["cv"] == cnn["cv"] == {"n_folds": 3, "seed": 4,
                                      "split": str(tmp_path / "splits" / "seed4.json")}
    assert svr["data"]["root"] == str(ctx.data) and "mask_dir" not in svr["data"]
    assert svr["data"]["atlas"] == f"{ctx.data}/atlas.nii.gz"
    assert svr["model"]["features"] == ["covariates", "log_volume"] and svr["bootstrap"] == 50
    assert svr["model"]["params"] == {} and cnn["model"]["params"]["max_epochs"] == 2
    assert "reference" not in svr and "reference" not in cnn  # the study compares arms
    assert (svr["out"], svr["experiment"]) == (str(tmp_path / "runs/svr/seed4"), "svr")
    with pytest.raises(ValueError, match="CNN keys"):
        outcome_config(svr, ["--cnn.epochs", "2"], 0, "svr", tmp_path, ctx)
    with pytest.raises(ValueError, match="pairs"):
        outcome_config(svr, ["--cv.n_folds"], 0, "svr", tmp_path, ctx)


def write_cohort(root: Path, n: int = 16) -> np.ndarray:
    """A BIDS tree of ``n`` stroke subjects with box lesions of growing size on an 8³ grid at
    4 mm and NIHSS = lesion voxels + noise; returns the scores."""
    rng = np.random.default_rng(0)
    scores = []
    for i in range(n):
        mask = np.zeros((8, 8, 8), np.uint8)
        size = 1 + i % 5
        x = int(rng.integers(0, 8 - size))
        mask[x:x + size, 2:2 + size, 3:5] = 1
        folder = root / "derivatives" / "lesions" / f"sub-{i:02d}" / "anat"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(mask, np.diag([4.0, 4.0, 4.0, 1.0])), folder / f"sub-{i:02d}_msk.nii.gz")
        scores.append(float(mask.sum()) / 4 + float(rng.normal(0, 0.5)))
    pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(n)], "diagnosis": "stroke",
                  "age": rng.uniform(50, 80, n).round(1), "NIHSS": np.round(scores, 2)}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    return np.round(scores, 2)


def test_outcome_runner_writes_one_run_per_arm_and_seed_and_the_comparison_is_scipys_r(tmp_path):
    scores = write_cohort(tmp_path / "data")
    data = {"layout": "bids", "root": str(tmp_path / "data"), "derivative": "lesions",
            "score": "NIHSS", "covariates": ["age"], "downsample": 1}
    cohort, cached = cached_cohort(data, tmp_path / "cache")
    again, cached_again = cached_cohort(data, tmp_path / "cache")
    assert (cached, cached_again) == (False, True) and again.ids == cohort.ids
    np.testing.assert_array_equal(again.maps, cohort.maps)
    np.testing.assert_allclose(cohort.scores, scores)

    common = ["--data.layout", "bids", "--data.derivative", "lesions", "--data.score", "NIHSS",
              "--data.atlas", "null", "--data.downsample", "1", "--cv.n_folds", "2",
              "--bootstrap", "20"]
    study = {"name": "t", "seeds": [0, 1], "comparisons": [
        {"name": "svr vs soop", "a": "soop_svr", "b": "svr", "metric": "pearson_r", "stage": "val"}],
        "n_boot": 100, "arms": [
            {"name": n, "config": str(ROOT / f"experiments/outcome/{n}.yaml"), "runner": "outcome",
             "options": {}, "overrides": ["--model.features", f"[{features}]", *common]}
            for n, features in (("soop_svr", "covariates, volume_ml"), ("svr", "covariates, log_volume"))]}
    wall = study_module.run_arms(study, tmp_path, tmp_path / "data")
    assert set(wall) == {"soop_svr", "svr"}
    for arm in ("soop_svr", "svr"):
        for seed in (0, 1):
            runs, _ = find_runs(tmp_path / "runs" / arm / f"seed{seed}", stage="val")
            assert len(runs) == 1 and runs[0].kind == "regression"
            assert sorted(runs[0].subjects["subject_id"]) == sorted(cohort.ids)  # out of fold
    assert {p.name for p in (tmp_path / "splits").glob("*.json")} == {"seed0.json", "seed1.json"}
    svr0 = pd.read_csv(tmp_path / "runs/svr/seed0/subjects_val.csv")
    svr1 = pd.read_csv(tmp_path / "runs/svr/seed1/subjects_val.csv")
    assert not np.allclose(svr0.sort_values("subject_id")["pred"],
                           svr1.sort_values("subject_id")["pred"])  # another split, another fit

    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    row = comparison_table(tmp_path, study).iloc[0]
    pooled = {arm: pd.concat([pd.read_csv(tmp_path / f"runs/{arm}/seed{s}/subjects_val.csv")
                              for s in (0, 1)]) for arm in ("soop_svr", "svr")}
    expected = {arm: stats.pearsonr(t["target"], t["pred"])[0] for arm, t in pooled.items()}
    assert row["mean_a"] == pytest.approx(expected["soop_svr"])
    assert row["mean_b"] == pytest.approx(expected["svr"])
    assert (row["n_subjects"], row["n_entries"]) == (16, 32)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]


class ProbabilityTask:
    """Stands in for a fitted SegmentationTask: ``predict_volume`` gives a fixed softmax."""

    device = torch.device("cpu")

    def __init__(self, foreground: np.ndarray) -> None:
        self.foreground = torch.as_tensor(foreground, dtype=torch.float32)

    def eval(self):
        return self

    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        fg = self.foreground.expand(image.shape[0], *self.foreground.shape)
        return torch.stack([1 - fg, fg], dim=1)


def test_segmentation_components_are_scored_as_detections_by_peak_probability():
    label = np.zeros((1, 1, 16, 16, 16), np.int64)
    label[0, 0, 2:4, 2:4, 2:4] = 1       # lesion 1: found (component peak 0.9)
    label[0, 0, 12, 12, 12] = 1          # lesion 2: missed
    foreground = np.zeros((16, 16, 16), np.float32)
    foreground[2:4, 2:4, 2:4] = 0.6
    foreground[3, 3, 3] = 0.9
    foreground[8:10, 12:14, 2:4] = 0.3   # a false positive component, peak 0.3
    foreground[6, 6, 12] = 0.05          # below the threshold: no component
    batch = {"image": torch.zeros(1, 1, 16, 16, 16), "label": torch.as_tensor(label),
             "subject_id": ["sub-01"], "spacing_mm": torch.tensor([[2.0, 2.0, 2.0]])}
    rows, summary = score_scans(ProbabilityTask(foreground), [batch], {**DEFAULTS, "threshold": 0.1})
    (row,) = rows
    assert row["subject_id"] == "sub-01"
    assert sorted(yaml.safe_load(row["scores"])) == pytest.approx([0.3, 0.9])
    assert yaml.safe_load(row["target_scores"]) in ([0.9, None], [None, 0.9])
    # at the 0.5 operating point: one detection, one of two lesions found, no false positive
    assert (row["n_detections"], row["n_false_positives"], row["sensitivity"]) == (1, 0, 0.5)
    # FROC: the 0.9 hit comes before the 0.3 false positive, lesion 2 is never found
    assert summary["cpm"] == pytest.approx(0.5)
    rows_high, summary_high = score_scans(ProbabilityTask(foreground), [batch],
                                          {**DEFAULTS, "threshold": 0.5})
    assert yaml.safe_load(rows_high[0]["scores"]) == pytest.approx([0.9])
    assert summary_high["cpm"] == pytest.approx(0.5)


def test_froc_table_pools_the_scans_of_all_seeds_per_stage_and_arm(tmp_path):
    from cogimg.metrics.detection import FROC_FP_RATES, match_scan, scan_row
    from cogimg.tracking.study_figures import froc_markdown
    from cogimg.tracking.study_registry import FIGURES
    from tests.tracking.test_leaderboard import fake_run

    lesion, elsewhere = np.array([[0, 0, 0, 4, 4, 4.0]]), np.array([[20, 20, 20, 24, 24, 24.0]])
    nothing = (np.zeros((0, 6)), np.zeros(0))
    task = "cogimg.tasks.detection.DetectionTask"

    def detection_run(arm, seed, scans):
        rows = [scan_row(f"m{i}", match_scan(*pred, lesion)) for i, pred in enumerate(scans)]
        fake_run(tmp_path / "runs" / arm / f"seed{seed}", arm, arm, seed,
                 pd.DataFrame(rows).to_dict("list"), task=task)

    # 'good', pooled: 3 lesions; a false positive at 0.95 comes before hits at 0.9 and 0.8, so
    # the curve is (0, 0) → (1/3 FP, 0) → (1/3, 1/3) → (1/3, 2/3): 0 at 1/8 and 1/4 FP per
    # scan, 2/3 from 1/2 FP on
    detection_run("good", 0, [(lesion, np.array([0.9])), nothing])
    detection_run("good", 1, [(np.concatenate([lesion, elsewhere]), np.array([0.8, 0.95]))])
    detection_run("poor", 0, [nothing])
    fake_run(tmp_path / "runs" / "seg" / "seed0", "seg", "unet", 0,
             {"subject_id": ["m0"], "dice": [0.5]})  # not a detection run: left out
    study = {"arms": [{"name": n} for n in ("good", "poor", "seg")],
             "comparisons": [{"a": "poor", "b": "good", "metric": "cpm", "stage": "val"}]}

    written = FIGURES["froc"](tmp_path, study, tmp_path / "figures")
    assert [p.name for p in written] == ["froc.png"]
    table = pd.read_csv(tmp_path / "figures" / "froc.csv")
    rates = [f"sens_{r:g}fp" for r in FROC_FP_RATES]
    assert list(table.columns) == ["arm", "stage", "seeds", "scans", "lesions", *rates, "cpm"]
    good, poor = (table.set_index("arm").loc[a] for a in ("good", "poor"))
    assert list(table["arm"]) == ["good", "poor"] and set(table["stage"]) == {"val"}
    assert (good["seeds"], good["scans"], good["lesions"]) == (2, 3, 3)
    assert [good[r] for r in rates] == pytest.approx([0, 0, *[2 / 3] * 5])
    assert good["cpm"] == pytest.approx(10 / 21)
    assert (poor["seeds"], poor["scans"], poor["lesions"], poor["cpm"]) == (1, 1, 1, 0.0)
    markdown = (tmp_path / "figures" / "froc.md").read_text(encoding="utf-8")
    assert markdown == froc_markdown(table)
    assert "| good | val | 2 | 3 | 3 | 0.000 | 0.000 | 0.667 |" in markdown
