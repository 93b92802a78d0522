"""The ``real_cases`` study runner (cogimg/tracking/study_real_cases.py) and
``studies/sim2real.yaml``: a case's row against cogimg's segmentation metrics and a hand count,
the clear errors of a missing cases folder or model, and the tiny preset end to end (fit arms,
real-case arms with leave-one-case-out fine-tuning, comparisons, a rerun that runs nothing,
the result file benchmarks/sim2real.py writes from the runs), then a hand-made ISLES'22-layout case scored from the files the inference path wrote."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cogimg.cli import main
from cogimg.metrics.segmentation import detection_by_volume, dice, segmentation_report
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.study_real_cases import (
    REPO,
    case_row,
    cases_folder,
    evaluate_cases,
    real_cases_runner,
)
from cogimg.tracking.study_registry import StudyContext
from cogimg.tracking.study_spec import load_study
from tests.tracking.study_checks import assert_rerun_runs_nothing

STUDY = REPO / "studies" / "sim2real.yaml"


def test_case_row_adds_volume_ratio_and_ood_to_the_segmentation_metrics():
    truth = np.zeros((10, 10, 10), bool)
    truth[2:4, 2:4, 2:4] = True                        # 8 voxels
    pred = np.zeros_like(truth)
    pred[3:5, 2:4, 2:4] = True                         # 8 voxels, 4 shared
    pred[8, 8, 8] = True                               # a false-positive lesion: 9 voxels
    metrics = segmentation_report(pred, truth, (2.0, 2.0, 2.0), subject_id="sub-x")
    errors = detection_by_volume(pred, truth, (2.0, 2.0, 2.0))
    row = case_row({"subject_id": "sub-x", "metrics": metrics, "detection_by_volume": errors},
                   {"score": 7.5, "flag": True})
    assert row["false_positive_ml"] == pytest.approx(5 * 8 / 1000)
    assert (row["true_lesions_under_0.1ml"], row["found_lesions_under_0.1ml"]) == (1, 1)
    assert row["dice"] == pytest.approx(2 * 4 / (9 + 8)) == pytest.approx(dice(pred, truth))
    assert row["volume_pred_ml"] == pytest.approx(9 * 8 / 1000)  # 2 mm voxels: 8 µL each
    assert row["volume_ratio"] == pytest.approx(9 / 8)
    assert row["lesion_f1"] == pytest.approx(1 / (1 + 1 / 2))   # tp 1, fp 1, fn 0
    assert (row["ood_score"], row["ood_flag"]) == (7.5, 1.0)
    no_summary = case_row({"subject_id": "sub-x", "metrics": metrics}, None)
    assert math.isnan(no_summary["ood_score"]) and math.isnan(no_summary["ood_flag"])
    empty = segmentation_report(pred, np.zeros_like(truth), (1.0, 1.0, 1.0))
    assert math.isnan(case_row({"metrics": empty}, None)["volume_ratio"])
    with pytest.raises(ValueError, match="sub-y: no ground-truth mask"):
        case_row({"subject_id": "sub-y", "total_volume_ml": 1.0}, None)


def test_a_missing_cases_folder_or_model_stops_the_arm_naming_it(tmp_path):
    context = StudyContext(data=tmp_path / "data", cache=tmp_path / "cache", stages=("test",),
                           trainer_overrides=[], out=tmp_path)
    arm = {"name": "randomised_real", "runner": "real_cases",
           "options": {"model_from": "randomised", "cases": str(tmp_path / "isles22")}}
    with pytest.raises(FileNotFoundError, match=r"options.cases: real cases folder .*isles22 does "
                                                r"not exist"):
        real_cases_runner(arm, 0, tmp_path / "run", context)
    (tmp_path / "isles22").mkdir()
    with pytest.raises(FileNotFoundError, match="model_from 'randomised' has no run for seed 0"):
        real_cases_runner(arm, 0, tmp_path / "run", context)
    with pytest.raises(ValueError, match="options.model_from: name the fit arm"):
        real_cases_runner({**arm, "options": {"cases": "x"}}, 0, tmp_path / "run", context)
    assert cases_folder("{data}", tmp_path / "isles22") == tmp_path / "isles22"
    assert not (tmp_path / "run").exists()  # nothing half-written


def _isles_case(root: Path, source: Path, pid: str = "sub-strokecase0099") -> Path:
    """One ISLES'22-layout case: a synthetic subject's DWI/ADC and a hand-made lesion mask."""
    dwi = root / "rawdata" / pid / "ses-0001" / "dwi"
    dwi.mkdir(parents=True)
    for key in ("dwi", "adc"):
        shutil.copy(source / "sub-0001" / "dwi" / f"sub-0001_{key}.nii.gz",
                    dwi / f"{pid}_ses-0001_{key}.nii.gz")
    ref = nib.load(dwi / f"{pid}_ses-0001_dwi.nii.gz")
    mask = np.zeros(ref.shape, np.uint8)
    centre = [s // 2 for s in ref.shape]
    mask[centre[0] - 3:centre[0] + 3, centre[1] - 3:centre[1] + 3, centre[2] - 2:centre[2] + 2] = 1
    truth = root / "derivatives" / pid / "ses-0001" / f"{pid}_ses-0001_msk.nii.gz"
    truth.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(mask, ref.affine), truth)
    (root / "participants.tsv").write_text(f"participant_id\tdiagnosis\tsite\n{pid}\tstroke\tisles22\n",
                                           encoding="utf-8")
    return truth


@pytest.mark.study
@pytest.mark.slow  # 8 subjects synthesised, two two-step fits, two real-case arms: ~25 s idle core
def test_tiny_preset_end_to_end_resumes_and_scores_an_isles22_case(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COGIMG_WANDB", "off")
    out = tmp_path / "sim2real"
    study = load_study(STUDY, "tiny")
    assert main(["study", str(STUDY), "--out", str(out), "--preset", "tiny",
                 "--accelerator", "cpu", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| arm a | arm b | metric |" in printed
    for arm in study["arms"]:
        runs, skipped = find_runs(out / "runs" / arm["name"] / "seed0", stage="test")
        assert len(runs) == 1 and not skipped, (arm["name"], skipped)
        assert runs[0].kind == "segmentation"
    real = find_runs(out / "runs" / "randomised_real" / "seed0", stage="test")[0][0]
    rows = real.subjects
    assert len(rows) == 2  # options.presets.tiny: the first two cases with a lesion mask
    assert {"dice", "lesion_f1", "absolute_volume_difference_ml", "volume_ratio", "ood_score",
            "finetuned_dice", "finetuned_volume_ratio"} <= set(rows.columns)
    np.testing.assert_allclose(rows["volume_ratio"], rows["volume_pred_ml"] / rows["volume_truth_ml"])
    assert real.manifest["finetune"] == {"possible": True, "steps": 2, "n_cases": 2,
                                         "protocol": "leave-one-case-out"}
    assert real.metrics["test"]["test/dice"] == pytest.approx(rows["dice"].mean())
    for sid, value in zip(rows["subject_id"], rows["dice"]):  # the masks the inference path wrote
        pred = np.asarray(nib.load(real.path / "predictions" / f"{sid}_pred_msk.nii.gz").dataobj)
        truth = nib.load(out / "data" / "derivatives" / "lesions" / sid / "anat" / f"{sid}_msk.nii.gz")
        assert value == pytest.approx(dice(pred > 0, np.asarray(truth.dataobj) > 0))
        row = rows.set_index("subject_id").loc[sid]
        errors = detection_by_volume(pred > 0, np.asarray(truth.dataobj) > 0, truth.header.get_zooms())
        assert {k: row[k] for k in errors} == pytest.approx(errors)
        assert sum(v for k, v in errors.items() if k.startswith("true_")) == row["n_lesions_truth"]

    table = pd.read_csv(out / "comparisons.csv")
    assert len(table) == len(study["comparisons"]) == 2
    assert table["note"].isna().all(), table["note"].tolist()
    assert table[["mean_a", "mean_b", "difference", "n_subjects"]].notna().all().all()
    assert list(table["arm_b"]) == ["randomised", "randomised_real"]

    assert_rerun_runs_nothing(out, yaml.safe_load((out / "study.yaml").read_text(encoding="utf-8")),
                              monkeypatch)

    # benchmarks/sim2real.py on the same folder (runners still refuse): the result file's rows
    # are the run directories' rows
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("sim2real", None)
    import sim2real

    results = tmp_path / "results"
    assert sim2real.main(["--preset", "tiny", "--out", str(out), "--results-dir", str(results)]) == 0
    record = json.loads((results / "sim2real_tiny.json").read_text(encoding="utf-8"))
    recorded = [r for r in record["real_cases"] if r["arm"] == "randomised_real"]
    assert [r["subject_id"] for r in recorded] == list(rows["subject_id"])
    assert [r["dice"] for r in recorded] == pytest.approx(list(rows["dice"]))
    assert [r["missed_ml"] for r in recorded] == pytest.approx(list(rows["missed_ml"]))
    assert record["headline"]["real Dice (randomised)"] == pytest.approx(rows["dice"].mean(), abs=5e-4)
    assert {"real Dice (conventional)", "synthetic test Dice (randomised)",
            "synthetic test Dice (conventional)"} <= set(record["headline"])
    assert {r["experiment"] for r in record["leaderboard"]} == {a["name"] for a in study["arms"]}
    assert len(record["comparisons"]) == 2

    # one hand-made ISLES'22-layout case: scored from the written files; fine-tuning impossible
    truth = _isles_case(tmp_path / "isles22", out / "data")
    ckpt = Path(real.manifest["checkpoint"])
    rows, info = evaluate_cases(ckpt, tmp_path / "isles22", tmp_path / "pred", finetune_steps=3)
    assert [r["subject_id"] for r in rows] == ["sub-strokecase0099_ses-0001"]
    assert not info["finetune"]["possible"] and "at least 2 real cases" in info["finetune"]["reason"]
    assert not any(k.startswith("finetuned_") for k in rows[0])
    pred = nib.load(tmp_path / "pred" / "sub-strokecase0099_ses-0001_pred_msk.nii.gz")
    p, t = np.asarray(pred.dataobj) > 0, np.asarray(nib.load(truth).dataobj) > 0
    assert rows[0]["dice"] == pytest.approx(dice(p, t))
    assert rows[0]["volume_ratio"] == pytest.approx(p.sum() / t.sum())
    report = json.loads((tmp_path / "pred" / "sub-strokecase0099_ses-0001_pred.json").read_text())
    assert report["metrics"]["dice"] == pytest.approx(rows[0]["dice"])


@pytest.mark.parametrize("preset", [None, "tiny", "full"])
def test_sulci_follow_up_pairs_each_recipe_with_its_folded_twin(preset):
    """``studies/sim2real_sulci.yaml``: every fit arm trains a recipe the datamodule knows,
    every real arm applies a fit arm of the study, and each comparison pairs a recipe with the
    same recipe plus one setting (``_sulci``: folded cortex, ``_skullbase``: bright skull base,
    ``_blobs``: blob mimics),
    on the synthetic test set or on the real cases alike."""
    from cogimg.data.randomise import RECIPES

    study = load_study(REPO / "studies" / "sim2real_sulci.yaml", preset)
    arms = {a["name"]: a for a in study["arms"]}
    fits = {n for n, a in arms.items() if a.get("runner") != "real_cases"}
    for name in fits:
        overrides = arms[name]["overrides"]
        recipe = overrides[overrides.index("--data.init_args.randomise") + 1]
        assert recipe == name.replace("randomised", "synthstroke") and recipe in RECIPES
    assert {arms[n]["options"]["model_from"] for n in arms if n not in fits} == fits
    for comparison in study["comparisons"]:
        a, b = comparison["a"], comparison["b"]
        assert a.endswith("_real") == b.endswith("_real")
        added = b.removesuffix("_real").removeprefix(a.removesuffix("_real"))
        assert added in ("_sulci", "_skullbase", "_blobs") and b.startswith(a.removesuffix("_real")), comparison
    assert len(study["comparisons"]) == (2 if preset == "tiny" else 8)


@pytest.mark.study
@pytest.mark.slow  # 8 subjects synthesised, four two-step fits, ten real-case arms: ~40 s idle core
def test_seeds_follow_up_scores_recipe_and_seed_ensembles(tmp_path, monkeypatch):
    """``studies/sim2real_seeds.yaml``'s tiny preset: a real arm of two fit arms scores their
    same-seed ensemble, ``ensemble_seeds`` the ensemble of every seed (the same rows under each
    seed), ``tta`` is recorded, and each Dice is that of the mask the ensemble wrote."""
    from cogimg.inference import predict_dataset

    monkeypatch.setenv("COGIMG_WANDB", "off")
    path, out = REPO / "studies" / "sim2real_seeds.yaml", tmp_path / "seeds"
    assert main(["study", str(path), "--out", str(out), "--preset", "tiny",
                 "--accelerator", "cpu", "--workers", "1"]) == 0

    def run(arm, seed):
        (found,), _ = find_runs(out / "runs" / arm / f"seed{seed}", stage="test")
        return found

    fits = ("randomised_dwi", "randomised_dwi_sulci")
    last = {(arm, seed): run(f"{arm}_real", seed).manifest["checkpoint"]
            for arm in fits for seed in (0, 1)}
    for seed in (0, 1):
        pair = run("recipe_ensemble_real", seed)
        assert pair.manifest["checkpoint"] == [last[arm, seed] for arm in fits]
        assert pair.manifest["tta"] is None and run("recipe_ensemble_flip_real", seed).manifest["tta"] == "flip"
        assert run("seed_ensemble_real", seed).manifest["checkpoint"] == [
            last[arm, s] for arm in fits for s in (0, 1)]
    pd.testing.assert_frame_equal(run("seed_ensemble_real", 0).subjects,
                                  run("seed_ensemble_real", 1).subjects)
    pair = run("recipe_ensemble_real", 1)
    reports = predict_dataset(pair.manifest["checkpoint"], out / "data", tmp_path / "again")
    by_id = {r["subject_id"]: r for r in reports}
    for sid, value in zip(pair.subjects["subject_id"], pair.subjects["dice"]):
        assert by_id[sid]["metrics"]["dice"] == pytest.approx(value)
        written = nib.load(pair.path / "predictions" / f"{sid}_pred_msk.nii.gz").get_fdata()
        again = nib.load(tmp_path / "again" / f"{sid}_pred_msk.nii.gz").get_fdata()
        np.testing.assert_array_equal(written, again)
    table = pd.read_csv(out / "comparisons.csv")
    assert len(table) == 6 and table["note"].isna().all(), table["note"].tolist()
    with pytest.raises(ValueError, match="not an ensemble of 2"):
        evaluate_cases([Path(c) for c in pair.manifest["checkpoint"]], out / "data",
                       tmp_path / "tuned", finetune_steps=2)

    # benchmarks/sim2real_seeds.py on the same folder: each model's per-seed range
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("sim2real_seeds", None)
    import sim2real_seeds

    results = tmp_path / "results"
    assert sim2real_seeds.main(["--preset", "tiny", "--out", str(out),
                                "--results-dir", str(results)]) == 0
    headline = json.loads((results / "sim2real_seeds_tiny.json").read_text())["headline"]
    means = [run("randomised_dwi_real", s).subjects["dice"].mean() for s in (0, 1)]
    assert headline["real Dice seed range (randomised_dwi)"] == pytest.approx(
        [min(means), max(means)], abs=5e-4)
    assert headline["real Dice (randomised_dwi)"] == pytest.approx(np.mean(means), abs=5e-4)
    assert "real Dice seed range (seed_ensemble)" in headline


@pytest.mark.parametrize("preset", [None, "full"])
def test_seeds_follow_up_trains_three_seeds_of_the_two_dwi_recipes(preset):
    """``studies/sim2real_seeds.yaml``: three seeds; its fit arms are sim2real_sulci's DWI-defined
    pair, unchanged (so seed 0 reproduces those runs); every real arm applies fit arms of the
    study."""
    study = load_study(REPO / "studies" / "sim2real_seeds.yaml", preset)
    sulci = {a["name"]: a for a in load_study(REPO / "studies" / "sim2real_sulci.yaml", preset)["arms"]}
    assert study["seeds"] == [0, 1, 2]
    fits = [a for a in study["arms"] if a["runner"] == "fit"]
    assert [a["name"] for a in fits] == ["randomised_dwi", "randomised_dwi_sulci"]
    assert all(a == sulci[a["name"]] for a in fits)
    for arm in study["arms"]:
        if arm["runner"] == "real_cases":
            source = arm["options"]["model_from"]
            assert set([source] if isinstance(source, str) else source) <= {a["name"] for a in fits}


@pytest.mark.parametrize("preset", [None, "full"])
def test_cohort_follow_up_changes_only_the_number_of_label_maps(preset):
    """``studies/sim2real_cohort.yaml``: sim2real_seeds' fit arms and training settings,
    unchanged, on a cohort four times as large (otherwise the same), with the same seeds and
    real arms that it has too, so that the two result files compare like with like."""
    study = load_study(REPO / "studies" / "sim2real_cohort.yaml", preset)
    seeds = load_study(REPO / "studies" / "sim2real_seeds.yaml", preset)
    fits = [a for a in study["arms"] if a["runner"] == "fit"]
    assert fits == [a for a in seeds["arms"] if a["runner"] == "fit"]
    assert study["seeds"] == seeds["seeds"]
    assert study["cohort"] == {**seeds["cohort"], "subjects": 4 * seeds["cohort"]["subjects"]}
    real = [a for a in study["arms"] if a["runner"] == "real_cases"]
    assert len(real) == 4 and all(a in seeds["arms"] for a in real)


def _settings(overrides: list[str]) -> dict[str, str]:
    """The value each ``--key value`` pair of ``overrides`` leaves (the last one wins)."""
    return dict(zip(overrides[::2], overrides[1::2]))


@pytest.mark.parametrize("preset", [None, "tiny", "full"])
def test_steps_follow_up_changes_only_the_training_budget(preset):
    """``studies/sim2real_steps.yaml``: its 2000-step arm trains what sim2real_cohort's
    folded-cortex arm trains (every setting equal, so the same runs), its long arm differs in
    ``max_steps`` alone (4000, or the preset's size, which wins over both arms'), and each
    comparison pairs the two budgets."""
    study = load_study(REPO / "studies" / "sim2real_steps.yaml", preset)
    cohort = load_study(REPO / "studies" / "sim2real_cohort.yaml", preset)
    arms = {a["name"]: a for a in study["arms"]}
    short, long = (_settings(arms[n]["overrides"]) for n in
                   ("randomised_dwi_sulci", "randomised_dwi_sulci_long"))
    reference = next(a for a in cohort["arms"] if a["name"] == "randomised_dwi_sulci")
    if preset != "full":  # the full presets differ on purpose: here both arms keep their steps
        assert short == _settings(reference["overrides"])
        assert arms["randomised_dwi_sulci"]["config"] == reference["config"]
    assert study["cohort"] == cohort["cohort"]
    assert set(study["seeds"]) <= set(cohort["seeds"])
    steps = {"tiny": ("2", "2"), "full": ("2000", "4000"), None: ("2000", "4000")}[preset]
    assert (short.pop("--trainer.max_steps"), long.pop("--trainer.max_steps")) == steps
    assert short == long
    for comparison in study["comparisons"]:
        assert comparison["b"] == comparison["a"].replace("_real", "_long_real") \
            if comparison["a"].endswith("_real") else comparison["b"] == comparison["a"] + "_long"


@pytest.mark.parametrize("preset", [None, "tiny", "full"])
def test_components_follow_up_changes_only_the_lesion_sampling(preset):
    """``studies/sim2real_components.yaml``: its per-voxel arm is sim2real_steps' 4000-step arm
    (every setting equal, so the same runs), its balanced arm differs in ``balance_components``
    alone, and each comparison pairs the two samplings, real arms with real arms."""
    study = load_study(REPO / "studies" / "sim2real_components.yaml", preset)
    steps = load_study(REPO / "studies" / "sim2real_steps.yaml", preset)
    arms = {a["name"]: a for a in study["arms"]}
    reference = next(a for a in steps["arms"] if a["name"] == "randomised_dwi_sulci_long")
    assert arms["randomised_dwi_sulci_long"] == reference
    assert (study["cohort"], study["seeds"]) == (steps["cohort"], steps["seeds"])
    voxel, balanced = (_settings(arms[n]["overrides"]) for n in
                       ("randomised_dwi_sulci_long", "balanced_components"))
    assert balanced.pop("--data.init_args.balance_components") == "true"
    assert balanced == voxel and arms["balanced_components"]["config"] == reference["config"]
    pairs = {(c["a"], c["b"]) for c in study["comparisons"]}
    assert pairs == {("randomised_dwi_sulci_long", "balanced_components"),
                     ("randomised_dwi_sulci_long_real", "balanced_components_real"),
                     ("seed_ensemble_long_real", "seed_ensemble_balanced_real")}
    for name in ("balanced_components_real", "seed_ensemble_balanced_real"):
        assert arms[name]["options"]["model_from"] == "balanced_components"
