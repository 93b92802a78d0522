"""End to end on real data: a model trained on the synthetic cohort segments the real
ISLES'22 case (anisotropic-capable native grid, LAS orientation) and is scored with the
ISLES'22 metrics. The score itself is reported, not asserted: a few CPU minutes of synthetic
training are not expected to transfer well."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cogimg.cli import main
from cogimg.data.synth import generate_cohort

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def test_synthetic_model_predicts_isles22(isles22_root, tmp_path, capsys):
    data = generate_cohort(tmp_path / "synth", 8, seed=0, spacing_mm=2.0, workers=2,
                           diseases=("stroke",), proportions={"stroke": 1.0}, progress=False)
    assert main(["fit", "--config", "experiments/stroke/seg_unet.yaml",
                 "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4",
                 "--trainer.limit_val_batches", "1", "--trainer.check_val_every_n_epoch", "1",
                 "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp_path / "run"),
                 "--model.init_args.model_kwargs", "{channels: [8, 16, 32, 64], strides: [2, 2, 2]}",
                 "--data.init_args.data_root", str(data),
                 "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--data.init_args.num_workers", "0", "--data.init_args.n_folds", "2"]) == 0
    ckpt = next((tmp_path / "run").glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(isles22_root),
                 "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert "sub-strokecase0001_ses-0001" in capsys.readouterr().out
    sid = "sub-strokecase0001_ses-0001"
    pred = nib.load(tmp_path / "pred" / f"{sid}_pred_msk.nii.gz")
    dwi = nib.load(next(isles22_root.rglob("*_dwi.nii.gz")))
    assert pred.shape == dwi.shape == (112, 112, 73)
    np.testing.assert_allclose(pred.affine, dwi.affine, atol=1e-6)
    report = json.loads((tmp_path / "pred" / f"{sid}_pred.json").read_text(encoding="utf-8"))
    metrics = report["metrics"]
    assert metrics["volume_truth_ml"] == pytest.approx(6.68, abs=0.01)
    assert metrics["n_lesions_truth"] == 31
    assert 0.0 <= metrics["dice"] <= 1.0 and 0.0 <= metrics["lesion_f1"] <= 1.0
