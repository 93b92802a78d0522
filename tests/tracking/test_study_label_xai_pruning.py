"""Wave-2 studies (label efficiency, pruning, XAI faithfulness): the recovery-share statistic
against a hand computation and the bootstrap functions directly; the pruning summary against a
hand count; the explain runner's ground truth, checkpoint choice and option errors; and the
shipped tiny presets end to end through ``cogimg study`` (a rerun trains nothing)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cogimg.cli import main
from cogimg.metrics.bootstrap import bootstrap_distribution, percentile_interval
from cogimg.tracking import study as study_module
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.run import write_run
from cogimg.tracking.study_explain import explain_runner, last_checkpoint, truth_region
from cogimg.tracking.study_figures_lowlabel import recovery_share, recovery_table
from cogimg.tracking.study_spec import load_study
from cogimg.tracking.study_sweep import epochs_to_reach, floor_to_reach, pruning_table
from tests.tracking.study_checks import assert_rerun_runs_nothing

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name: str, monkeypatch):
    """``benchmarks/<name>.py`` as a module."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def _runs(out: Path, arm: str, values_by_seed: dict[int, dict[str, float]]) -> None:
    for seed, values in values_by_seed.items():
        write_run(out / "runs" / arm / f"seed{seed}", None, experiment=arm, variant="default",
                  seed=seed, task="cogimg.tasks.segmentation.SegmentationTask", kind="segmentation",
                  model="unet", subjects={"test": [{"subject_id": s, "dice": v} for s, v in values.items()]},
                  metrics={"test": {"test/dice": float(np.mean(list(values.values())))}})


def test_recovery_share_from_run_directories_matches_a_hand_computation(tmp_path):
    assert recovery_share(0.2, 0.35, 0.5) == pytest.approx(0.5)
    assert recovery_share(0.2, 0.1, 0.5) == pytest.approx(-1 / 3)
    assert np.isnan(recovery_share(0.4, 0.5, 0.4))  # no gap to recover
    rng = np.random.default_rng(0)
    # seed 0 holds out s0-s4, seed 1 s3-s7: s3, s4 are one cluster each across seeds
    held_out = {0: [f"s{i}" for i in range(5)], 1: [f"s{i}" for i in range(3, 8)]}
    values = {arm: {seed: {s: float(rng.uniform(lo, lo + 0.2)) for s in subjects}
                    for seed, subjects in held_out.items()}
              for arm, lo in (("sup_low", 0.2), ("mt_low", 0.3), ("sup_full", 0.6))}
    values["mt_low"][1].pop("s7")  # an entry one arm lacks is left out of all three
    for arm, by_seed in values.items():
        _runs(tmp_path, arm, by_seed)
    study = {"arms": [{"name": "sup_low", "options": {"label_fraction": 0.1, "method": "supervised"}},
                      {"name": "mt_low", "options": {"label_fraction": 0.1, "method": "mean_teacher"}},
                      {"name": "sup_full", "options": {"label_fraction": 1.0}},  # supervised by default
                      {"name": "other"}],
             "comparisons": [{"a": "sup_low", "b": "mt_low", "metric": "dice", "stage": "test"}],
             "n_boot": 300}
    table = recovery_table(tmp_path, study)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["arm"], row["supervised_low"], row["supervised_full"]) == ("mt_low", "sup_low", "sup_full")

    entries = [(seed, s) for seed, subjects in held_out.items() for s in subjects if (seed, s) != (1, "s7")]
    entries.sort(key=lambda e: f"{e[0]}:{e[1]}")
    v = {arm: np.array([values[arm][seed][s] for seed, s in entries]) for arm in values}
    share = (v["mt_low"].mean() - v["sup_low"].mean()) / (v["sup_full"].mean() - v["sup_low"].mean())
    assert row["share"] == pytest.approx(share)
    assert row["mean_arm"] == pytest.approx(v["mt_low"].mean())
    assert row["n_entries"] == 9 and row["n_subjects"] == 7 and row["seeds"] == "0,1"
    seed1 = np.array([e[0] == 1 for e in entries])
    per_seed_1 = ((v["mt_low"][seed1].mean() - v["sup_low"][seed1].mean())
                  / (v["sup_full"][seed1].mean() - v["sup_low"][seed1].mean()))
    assert row["per_seed"].split()[1] == f"1:{per_seed_1:+.3f}"
    clusters = np.array([s for _, s in entries])
    resampled = bootstrap_distribution(
        lambda i: (v["mt_low"][i].mean() - v["sup_low"][i].mean())
        / (v["sup_full"][i].mean() - v["sup_low"][i].mean()), len(entries), 300, 0, groups=clusters)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(percentile_interval(resampled))
    # no supervised arm: nothing to recover towards
    assert recovery_table(tmp_path, {**study, "arms": study["arms"][1:2]}).empty


def _sweep_summary(out: Path, arm: str, trials: list[tuple[str, float, int]]) -> None:
    folder = out / "runs" / arm / "seed0" / "summary"
    folder.mkdir(parents=True)
    rows = [{"trial": i, "state": state, "value": value, "epochs": epochs, "seconds": 10.0 * epochs}
            for i, (state, value, epochs) in enumerate(trials)]
    best = max(r["value"] for r in rows if r["state"] == "COMPLETE")
    pruner = {"type": "none" if arm == "plain" else "median"}
    (folder / "metrics.json").write_text(json.dumps({"summary": {"best_value": best, "pruner": pruner}}))
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)


def test_pruning_table_counts_epochs_to_the_unpruned_best_in_trial_order(tmp_path):
    # unpruned: the best (0.9) is trial 2 after 3 × 10 epochs
    _sweep_summary(tmp_path, "plain", [("COMPLETE", 0.7, 10), ("COMPLETE", 0.8, 10), ("COMPLETE", 0.9, 10),
                                       ("COMPLETE", 0.6, 10)])
    # pruned: trials 1 and 3 stopped after 2 epochs, the best kept: 10 + 2 + 10 = 22 epochs
    _sweep_summary(tmp_path, "pruned", [("COMPLETE", 0.7, 10), ("PRUNED", float("nan"), 2),
                                        ("COMPLETE", 0.9, 10), ("PRUNED", float("nan"), 2)])
    # the best trial pruned: never reached
    _sweep_summary(tmp_path, "lost", [("COMPLETE", 0.7, 10), ("PRUNED", float("nan"), 2),
                                      ("PRUNED", float("nan"), 2), ("PRUNED", float("nan"), 2)])
    study = {"seeds": [0], "arms": [
        {"name": n, "runner": "sweep", "options": {"pruner": {"type": "none" if n == "plain" else "median"}}}
        for n in ("plain", "pruned", "lost")] + [{"name": "fit_arm", "runner": "fit"}]}
    table = pruning_table(tmp_path, study).set_index("arm")
    assert list(table.index) == ["plain", "pruned", "lost"]
    assert table.loc["plain", "epochs_to_best"] == 30 and table.loc["plain", "ratio"] == 1.0
    assert table.loc["pruned", "epochs"] == 24 and table.loc["pruned", "pruned"] == 2
    assert table.loc["pruned", "epochs_to_best"] == 22
    assert table.loc["pruned", "ratio"] == pytest.approx(22 / 30)
    assert table.loc["pruned", "seconds_to_best"] == pytest.approx(220.0)
    assert table.loc["lost", "ratio"] == np.inf and np.isnan(table.loc["lost", "epochs_to_best"])
    # floor: trial 0 in full, trial 1 one epoch, the best in full: 21 of 30
    assert table.loc["pruned", "floor"] == pytest.approx(21 / 30)
    assert floor_to_reach([{"state": "COMPLETE", "value": 1.0, "epochs": 5}], 1.0) == 5
    assert epochs_to_reach([{"state": "PRUNED", "value": np.nan, "epochs": 3}], 0.5) == (3, False)


def test_explain_truth_regions_checkpoints_and_option_errors(tmp_path):
    import os

    import nibabel as nib

    atrophy = np.array([0.0, 0.05, 0.1, 0.2, 0.7], dtype=np.float32).reshape(5, 1, 1)
    folder = tmp_path / "derivatives" / "truth" / "sub-01"
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(atrophy, np.eye(4)), folder / "sub-01_desc-atrophy_map.nii.gz")
    lesion = tmp_path / "derivatives" / "lesions" / "sub-01" / "anat"
    lesion.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.array([0, 1, 0, 2, 0], dtype=np.uint8).reshape(5, 1, 1), np.eye(4)),
             lesion / "sub-01_msk.nii.gz")
    assert truth_region(tmp_path, "sub-01", "atrophy")[:, 0, 0].tolist() == [False, False, False, True, True]
    assert truth_region(tmp_path, "sub-01", "atrophy", 0.01)[:, 0, 0].sum() == 4
    assert truth_region(tmp_path, "sub-01", "lesion")[:, 0, 0].tolist() == [False, True, False, True, False]
    with pytest.raises(FileNotFoundError, match="sub-02_desc-atrophy_map"):
        truth_region(tmp_path, "sub-02", "atrophy")
    with pytest.raises(ValueError, match="options.truth"):
        truth_region(tmp_path, "sub-01", "amyloid")

    ckpts = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints"
    ckpts.mkdir(parents=True)
    for i, name in enumerate(["last-v1.ckpt", "last.ckpt", "epoch=3.ckpt"]):
        (ckpts / name).write_bytes(b"x")
        os.utime(ckpts / name, (1000 + i, 1000 + i))
    assert last_checkpoint(tmp_path / "runs").name == "last.ckpt"  # the newest last*.ckpt
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.ckpt"):
        last_checkpoint(tmp_path / "derivatives")

    context = study_module.StudyContext(data=tmp_path, cache=tmp_path / "cache", stages=("test",),
                                        trainer_overrides=[], out=tmp_path)
    arm = {"name": "x", "config": "c.yaml", "overrides": [], "options": {"method": "lime"}}
    with pytest.raises(ValueError, match="arm 'x': options.method 'lime'"):
        explain_runner(arm, 0, tmp_path / "x", context)
    arm["options"] = {"method": "ig", "model_from": "absent"}
    with pytest.raises(FileNotFoundError, match="model_from 'absent' has no run for seed 0"):
        explain_runner(arm, 0, tmp_path / "x", context)


STUDIES = ("label_efficiency", "pruning", "xai_faithfulness")


@pytest.mark.study
@pytest.mark.slow  # tiny cohorts, a few two-step fits each: ~25 s per study on one idle core
@pytest.mark.parametrize("name", STUDIES)
def test_tiny_study_runs_end_to_end_and_resumes(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COGIMG_WANDB", "off")
    path, out = ROOT / "studies" / f"{name}.yaml", tmp_path / name
    study = load_study(path, "tiny")
    assert main(["study", str(path), "--out", str(out), "--preset", "tiny", "--accelerator", "cpu",
                 "--workers", "1"]) == 0
    assert "| arm a | arm b | metric |" in capsys.readouterr().out
    for arm in study["arms"]:
        stage = study["comparisons"][0]["stage"]
        runs, skipped = find_runs(out / "runs" / arm["name"] / "seed0", stage=stage)
        assert len(runs) == 1 and not skipped, (arm["name"], skipped)
    table = pd.read_csv(out / "comparisons.csv")
    assert len(table) == len(study["comparisons"]) and table["note"].isna().all()
    assert list(table["arm_b"]) == [c["b"] for c in study["comparisons"]]
    for figure in study["figures"]:
        assert (out / "figures" / f"{figure}.png").is_file(), figure
    if name == "pruning":
        pruning = pd.read_csv(out / "figures" / "pruning.csv")
        assert list(pruning["arm"]) == ["unpruned", "successive_halving"]
        assert (pruning["trials"] == 2).all() and pruning.loc[0, "ratio"] == 1.0
    if name == "xai_faithfulness":
        runs, _ = find_runs(out / "runs", stage="test")
        explained = {r.manifest["experiment"]: r.subjects for r in runs if r.kind == "explanation"}
        assert sorted(explained) == ["gradcam", "ig", "occlusion", "random"]
        ids = [sorted(rows["subject_id"]) for rows in explained.values()]
        assert all(i == ids[0] for i in ids) and len(ids[0]) >= 1  # the same AD test subjects
        for rows in explained.values():
            assert set(rows["target"]) == {"AD"} and rows["pointing_game"].isin([0.0, 1.0]).all()
            assert rows["relevance_mass"].between(0, 1).all() and rows["insertion_auc"].between(0, 1).all()
        assert main(["leaderboard", str(out), "--stage", "test", "--n-boot", "20"]) == 0
        assert "### explanation (ranked by pointing game)" in capsys.readouterr().out
    if name == "label_efficiency":
        recovery = pd.read_csv(out / "figures" / "recovery_share.csv")
        assert list(recovery["arm"]) == ["mean_teacher_010", "pseudo_label_010"]
        assert set(recovery["supervised_low"]) == {"supervised_010"}
        assert set(recovery["supervised_full"]) == {"supervised_100"}
        assert np.allclose(recovery["mean_low"], table.loc[0, "mean_a"])

    assert_rerun_runs_nothing(out, yaml.safe_load((out / "study.yaml").read_text(encoding="utf-8")),
                              monkeypatch)

    # benchmarks/study_results.py: the finished folder's numbers as a result file, nothing rerun
    study_results = load_benchmark("study_results", monkeypatch)
    assert study_results.main([str(out), "--results-dir", str(tmp_path / "results")]) == 0
    record = json.loads((tmp_path / "results" / f"{name}_tiny.json").read_text(encoding="utf-8"))
    assert [r["difference"] for r in record["comparisons"]] == pytest.approx(list(table["difference"]))
    first = table.iloc[0]
    assert record["headline"][first["comparison"]] == (
        f"{first['difference']:+.3f} [{first['ci_low']:+.3f}, {first['ci_high']:+.3f}]")
    assert record["leaderboard_stage"] == study["comparisons"][0]["stage"]
    assert {r["experiment"] for r in record["leaderboard"]} <= {a["name"] for a in study["arms"]}
    for figure_table in (out / "figures").glob("*.csv"):
        assert len(record["tables"][figure_table.stem]) == len(pd.read_csv(figure_table))


def test_study_results_names_a_folder_without_a_study(tmp_path, monkeypatch):
    study_results = load_benchmark("study_results", monkeypatch)
    with pytest.raises(FileNotFoundError, match=r"study\.yaml not found: run `cogimg study STUDY"):
        study_results.main([str(tmp_path)])
