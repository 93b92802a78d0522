"""BrainAgeTask, the task added through the protocol alone (its module, its line in
``cogimg.tasks.TASKS`` and its YAML): it learns age from images where atrophy shows age, and
reaches the leaderboard, the report and ``cogimg predict`` without any code of theirs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from cogimg.cli import main
from cogimg.tasks import task_class
from cogimg.tasks.brain_age import BrainAgeTask
from cogimg.tracking.leaderboard import find_runs, leaderboard
from tests.classification_tree import AFFINE, ball, build_classification_tree

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "ad" / "brain_age_resnet10_t1.yaml"
TINY = {"block_inplanes": [4, 8, 8, 8]}


def _aged_tree(root: Path) -> Path:
    """The tiny CN cohort, with each T1w brain shrinking 1 voxel of radius per 5 years of age
    from 50 to 90 (a stand-in for atrophy) and ages spread evenly."""
    build_classification_tree(root, n_per_class=40, diagnoses=("CN",), seed=3)
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    rng = np.random.default_rng(0)
    table["age"] = np.linspace(50, 90, len(table)).round().astype(int)
    for pid, age in zip(table["participant_id"], table["age"]):
        brain = ball((15.5, 15.5, 15.5), 14 - (age - 50) / 5)
        t1 = 100.0 * brain + rng.normal(0, 5, brain.shape) * brain
        nib.save(nib.Nifti1Image(t1.astype(np.float32), AFFINE),
                 str(root / pid / "anat" / f"{pid}_T1w.nii.gz"))
    table.to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


def test_brain_age_is_registered_and_needs_the_age_column():
    assert task_class("brain_age") is BrainAgeTask
    task = BrainAgeTask(input_shape=(16, 16, 16), model_kwargs=TINY)
    assert (task.kind, task.primary_metric, task.metric_mode) == ("brain_age", "mae", "min")

    no_age = type("NoAge", (), {"tabular_features": ("MMSE", "MMSE_missing")})()
    with pytest.raises(ValueError, match=r"tabular: \[age\]"):
        task.setup_task("fit", no_age)


def test_loss_skips_subjects_without_an_age_and_years_undo_the_standardisation():
    task = BrainAgeTask(input_shape=(16, 16, 16), model_kwargs=TINY, age_mean=70.0, age_std=10.0)
    batch = {"tabular": torch.tensor([[0.5, 0.0], [0.0, 1.0]])}
    output = torch.tensor([0.5, 9.0], requires_grad=True)
    assert float(task.loss(output, batch)) == 0.0  # the second subject's age is missing
    assert float(task.years(torch.tensor(0.5))) == pytest.approx(75.0)


@pytest.mark.slow  # a real fit through the CLI with the shipped YAML, then leaderboard/report/predict
def test_brain_age_end_to_end_leaderboard_report_predict(tmp_path, monkeypatch):
    monkeypatch.setenv("COGIMG_WANDB", "off")
    data = _aged_tree(tmp_path / "bids")
    runs = tmp_path / "runs"
    common = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--model.init_args.model_kwargs", json.dumps(TINY),
              "--data.init_args.data_root", str(data), "--data.init_args.cache_dir",
              str(tmp_path / "cache"), "--data.init_args.target_shape", "[16, 16, 16]",
              "--data.init_args.spacing_mm", "4.0", "--data.init_args.batch_size", "8",
              "--data.init_args.num_workers", "0", "--data.init_args.n_folds", "4",
              "--data.init_args.augmentation", "none"]
    code = main(["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(runs),
                 "--trainer.max_epochs", "25", "--trainer.log_every_n_steps", "1",
                 "--model.init_args.lr", "0.003", "--model.init_args.warmup_steps", "5", *common])
    assert code in (0, None)
    run = next(p.parent for p in runs.rglob("manifest.json"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["kind"], manifest["primary_metric"], manifest["metric_mode"]) == (
        "brain_age", "mae", "min")
    rows = pd.read_csv(run / "subjects_val.csv")
    assert {"subject_id", "target", "pred"} <= set(rows.columns) and len(rows) >= 4
    # It learned: better than predicting the validation subjects' own mean age for everyone.
    mae = float((rows["pred"] - rows["target"]).abs().mean())
    baseline = float((rows["target"] - rows["target"].mean()).abs().mean())
    assert mae < 0.75 * baseline, (mae, baseline)

    found, _ = find_runs(runs)
    table = leaderboard(found, n_boot=50)
    row = table[table["kind"] == "brain_age"].iloc[0]
    assert row["mae_mean"] == pytest.approx(mae, rel=1e-6) and row["mae_ci_low"] <= mae <= row["mae_ci_high"]
    assert main(["report", str(runs)]) == 0
    assert "MAE (years)" in (runs / "report.html").read_text(encoding="utf-8")

    # cogimg predict on a subject folder gives what validating the same checkpoint recorded.
    ckpt = run / "checkpoints" / "last.ckpt"
    assert main(["validate", "--config", str(CONFIG), "--ckpt_path", str(ckpt),
                 "--trainer.default_root_dir", str(tmp_path / "validated"), *common]) in (0, None)
    validated = pd.read_csv(next((tmp_path / "validated").rglob("subjects_val.csv")))
    subject = data / validated["subject_id"].iloc[0]
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(subject), "--out",
                 str(tmp_path / "pred")]) == 0
    report = json.loads((tmp_path / "pred" / f"{subject.name}_pred.json").read_text())
    assert report["kind"] == "brain_age"
    assert report["brain_age_years"] == pytest.approx(validated["pred"].iloc[0], abs=1e-3)
