"""Leaderboard rows equal a hand computation on fabricated run directories."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest

from cogimg.commands import leaderboard as command
from cogimg.tracking.leaderboard import find_runs, leaderboard
from cogimg.tracking.tables import to_html, to_latex, to_markdown

SEG_TASK = "cogimg.tasks.segmentation.SegmentationTask"
CLS_TASK = "cogimg.tasks.classification.ClassificationTask"


def fake_run(folder, experiment, model, seed, subjects: dict, task=SEG_TASK, params=2_000_000,
             wall_s=100.0, latency_s=1.5, peak=1.2, variant="default"):
    folder.mkdir(parents=True)
    manifest = {"run_id": folder.name, "experiment": experiment, "model": model, "variant": variant,
                "task": task, "seed": seed, "params": params, "wall_s": wall_s, "peak_memory_gb": peak}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "metrics.json").write_text(json.dumps({"val": {}, "extra": {"latency_s": latency_s}}), encoding="utf-8")
    pd.DataFrame(subjects).to_csv(folder / "subjects_val.csv", index=False)
    return folder


def seg_subjects(dice, hd95=(np.nan, 2.0, 4.0)):
    return {"subject_id": [f"s{i}" for i in range(len(dice))], "dice": dice, "lesion_f1": [0.5] * len(dice),
            "hausdorff95_mm": list(hd95)}


def cls_subjects(prob_ad):
    return {"subject_id": ["c0", "c1", "c2", "c3"], "label": ["CN", "CN", "AD", "AD"],
            "pred": ["CN" if p < 0.5 else "AD" for p in prob_ad],
            "prob_CN": [1 - p for p in prob_ad], "prob_AD": prob_ad}


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    fake_run(root / "unet_s0", "seg_unet", "unet", 0, seg_subjects([0.9, 0.7, 0.8]), wall_s=100, peak=1.0)
    fake_run(root / "unet_s1", "seg_unet", "unet", 1, seg_subjects([0.8, 0.6, 0.7]), wall_s=120, peak=1.4)
    fake_run(root / "unetr_s0", "seg_unetr", "unetr", 0, seg_subjects([0.95, 0.85, 0.9]), params=5_000_000)
    # Classification, two seeds: seed 0 calls c1 AD (BA 0.75), seed 1 is right everywhere (BA 1).
    fake_run(root / "cls_s0", "cls_resnet10", "resnet10_3d", 0, cls_subjects([0.2, 0.6, 0.7, 0.9]), task=CLS_TASK)
    fake_run(root / "cls_s1", "cls_resnet10", "resnet10_3d", 1, cls_subjects([0.1, 0.3, 0.6, 0.8]), task=CLS_TASK)
    (root / "unfinished").mkdir()
    (root / "unfinished" / "manifest.json").write_text(json.dumps({"task": SEG_TASK}), encoding="utf-8")
    return root


def test_rows_equal_hand_computation(runs_dir):
    runs, skipped = find_runs(runs_dir)
    assert [s[0].name for s in skipped] == ["unfinished"] and "unfinished" in skipped[0][1]
    table = leaderboard(runs)
    assert table[["kind", "experiment", "rank"]].values.tolist() == [
        ["segmentation", "seg_unetr", 1], ["segmentation", "seg_unet", 2], ["classification", "cls_resnet10", 1]]
    unet = table.set_index("experiment").loc["seg_unet"]
    assert unet["dice_mean"] == pytest.approx(0.75)  # seed means 0.8 and 0.7
    assert unet["dice_std"] == pytest.approx(math.sqrt(2 * 0.05**2))  # sample std of 0.8, 0.7
    assert unet["hausdorff95_mm_mean"] == pytest.approx(3.0)  # the undefined subject is left out
    assert unet["n_seeds"] == 2 and unet["seeds"] == "0,1" and unet["n_subjects"] == 3
    assert unet["params_M"] == 2.0 and unet["train_s"] == 110.0 and unet["peak_memory_gb"] == 1.4
    assert unet["latency_s"] == 1.5
    # CI: percentile bootstrap of the per-subject seed averages (0.85, 0.65, 0.75).
    rng = np.random.default_rng(0)
    averages = np.array([0.85, 0.65, 0.75])
    boot = [averages[rng.choice(np.arange(3), size=3, replace=True)].mean() for _ in range(1000)]
    assert unet["dice_ci_low"] == pytest.approx(np.percentile(boot, 2.5))
    assert unet["dice_ci_high"] == pytest.approx(np.percentile(boot, 97.5))
    unetr = table.set_index("experiment").loc["seg_unetr"]
    assert unetr["dice_mean"] == pytest.approx(0.9) and np.isnan(unetr["dice_std"])
    cls = table.set_index("experiment").loc["cls_resnet10"]
    assert cls["balanced_accuracy_mean"] == pytest.approx(0.875)
    assert cls["balanced_accuracy_std"] == pytest.approx(math.sqrt(2 * 0.125**2))
    assert cls["accuracy_mean"] == pytest.approx(0.875) and cls["auroc_mean"] == pytest.approx(1.0)
    assert 0.5 <= cls["balanced_accuracy_ci_low"] <= 0.875 <= cls["balanced_accuracy_ci_high"] <= 1.0


def test_renderings(runs_dir):
    table = leaderboard(find_runs(runs_dir)[0], n_boot=200)
    md = to_markdown(table)
    assert "### segmentation (ranked by Dice)" in md and "### classification (ranked by BA)" in md
    assert "| 2 | seg_unet | unet | default | 2 | 0.750 ± 0.071 [" in md
    assert "| 1 | seg_unetr | unetr | default | 1 | 0.900 [" in md  # one seed: no std
    tex = to_latex(table)
    assert tex.count(r"\toprule") == 2 and r"0.750 $\pm$ 0.071" in tex and r"seg\_unet" in tex
    page = to_html(table)
    assert page.count('<table class="leaderboard">') == 2 and 'data-sort="0.75"' in page and "<script>" in page


def test_command_writes_all_formats(runs_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args([str(runs_dir), "--out", str(tmp_path / "lb"), "--n-boot", "100"])) == 0
    assert {p.name for p in (tmp_path / "lb").iterdir()} == {f"leaderboard.{e}" for e in ("md", "csv", "tex", "html")}
    csv = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert csv["experiment"].tolist() == ["seg_unetr", "seg_unet", "cls_resnet10"]
    assert "skipped" in capsys.readouterr().err
    assert command.run(parser.parse_args([str(tmp_path / "lb")])) == 1  # no runs there


def test_missing_runs_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_runs(tmp_path / "nope")


def test_a_corrupt_run_is_skipped_with_its_reason(runs_dir):
    (runs_dir / "unet_s1" / "manifest.json").write_text("{not json", encoding="utf-8")
    (runs_dir / "cls_s1" / "subjects_val.csv").write_text("x\n1\n", encoding="utf-8")
    runs, skipped = find_runs(runs_dir)
    reasons = {folder.name: reason for folder, reason in skipped}
    assert "not valid JSON" in reasons["unet_s1"] and "no subject_id column" in reasons["cls_s1"]
    assert len(leaderboard(runs)) == 3  # the others still ranked


def test_every_task_kind_reaches_the_leaderboard_ranked_in_its_mode(tmp_path):
    """Regression, brain age (MAE: lower is better) and detection runs, by their manifest
    ``kind``; each metric recomputed from the per-subject rows by the kind's scorer."""
    from cogimg.metrics.detection import froc, match_from_row, match_scan, scan_row
    from cogimg.metrics.regression import pearson_r

    root = tmp_path / "runs"
    target = [60.0, 70.0, 80.0, 75.0]
    for name, pred in (("good", [61.0, 69.0, 82.0, 75.0]), ("poor", [70.0, 60.0, 70.0, 80.0])):
        fake_run(root / name, "brain_age", "resnet10_3d", 0,
                 {"subject_id": ["a", "b", "c", "d"], "target": target, "pred": pred}, task="x",
                 variant=name)
        manifest = json.loads((root / name / "manifest.json").read_text())
        (root / name / "manifest.json").write_text(json.dumps({**manifest, "kind": "brain_age"}))
    fake_run(root / "nihss", "outcome_svr", "svr", 0,
             {"subject_id": ["a", "b", "c"], "target": [2.0, 8.0, 15.0], "pred": [3.0, 7.0, 12.0]},
             task="cogimg.tasks.regression.RegressionTask")  # no kind: found by its task path
    box = np.array([[0, 0, 0, 4, 4, 4.0]])
    rows = [scan_row("m0", match_scan(box, np.array([0.9]), box)),
            scan_row("m1", match_scan(np.zeros((0, 6)), np.zeros(0), box))]
    fake_run(root / "det", "det_centernet", "centernet_3d", 0, pd.DataFrame(rows).to_dict("list"),
             task="cogimg.tasks.detection.DetectionTask")
    runs, skipped = find_runs(root)
    assert not skipped
    table = leaderboard(runs, n_boot=50).set_index("experiment", drop=False)
    brain = table[table["kind"] == "brain_age"]
    assert list(brain["variant"]) == ["good", "poor"] and list(brain["rank"]) == [1, 2]
    assert brain.iloc[0]["mae_mean"] == pytest.approx(1.0)  # |1| + |1| + |2| + 0, over 4
    assert brain.iloc[1]["mae_mean"] == pytest.approx(8.75)
    assert table.loc["outcome_svr", "pearson_r_mean"] == pytest.approx(
        pearson_r([2.0, 8.0, 15.0], [3.0, 7.0, 12.0]))
    expected_cpm = froc([match_from_row(r) for r in rows])["cpm"]
    assert table.loc["det_centernet", "cpm_mean"] == pytest.approx(expected_cpm)
    assert table.loc["det_centernet", "sensitivity_mean"] == pytest.approx(0.5)


def test_seeds_with_their_own_splits_are_each_scored_on_their_own_subjects(tmp_path):
    # one split per seed (as studies make them): the seeds share no evaluation subject
    root = tmp_path / "runs"
    first = seg_subjects([0.9, 0.7, 0.8])
    second = {**seg_subjects([0.6, 0.4]), "subject_id": ["t0", "t1"], "hausdorff95_mm": [1.0, 3.0]}
    fake_run(root / "s0", "seg_unet", "unet", 0, first)
    fake_run(root / "s1", "seg_unet", "unet", 1, second)
    row = leaderboard(find_runs(root)[0]).iloc[0]
    assert row["dice_mean"] == pytest.approx((0.8 + 0.5) / 2) and row["n_subjects"] == 5
    # CI: each seed's subjects resampled on their own (seeds 0 and 1 of the bootstrap), averaged
    draws = [np.random.default_rng(s).choice(np.arange(n), size=(1000, n), replace=True)
             for s, n in ((0, 3), (1, 2))]
    boot = (np.array([0.9, 0.7, 0.8])[draws[0]].mean(1) + np.array([0.6, 0.4])[draws[1]].mean(1)) / 2
    assert row["dice_ci_low"] == pytest.approx(np.percentile(boot, 2.5))
    assert row["dice_ci_high"] == pytest.approx(np.percentile(boot, 97.5))


def test_seeds_whose_splits_overlap_by_chance_are_each_scored_on_their_own_subjects(tmp_path):
    # the bug of results/connectome.json: three seeds' splits shared one validation subject
    # by chance, and every seed was scored on that one subject (n_subjects 1)
    root = tmp_path / "runs"
    first = seg_subjects([0.9, 0.7, 0.8])  # subjects s0, s1, s2
    second = {**seg_subjects([0.6, 0.4, 0.2]), "subject_id": ["s0", "t1", "t2"]}
    fake_run(root / "s0", "seg_unet", "unet", 0, first)
    fake_run(root / "s1", "seg_unet", "unet", 1, second)
    row = leaderboard(find_runs(root)[0]).iloc[0]
    assert row["n_subjects"] == 5
    assert row["dice_mean"] == pytest.approx((0.8 + 0.4) / 2)
