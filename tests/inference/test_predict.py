"""``cogimg predict``: weights-only checkpoints, native-grid output on oblique anisotropic scans."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.ndimage import affine_transform

from cogimg.cli import main
from cogimg.inference import CheckpointError, load_task, predict_dataset
from cogimg.metrics.segmentation import dice
from tests.tasks.conftest import AFFINE, SHAPE, write_nifti


def oblique_scan(root, source, pid="sub-99"):
    """Resample an easy subject onto a rotated, anisotropic (1.6 × 1.6 × 3.2 mm) grid."""
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.6, 1.6, 3.2])
    shape = (56, 56, 26)
    centre_world = AFFINE[:3, :3] @ ((np.array(SHAPE) - 1) / 2) + AFFINE[:3, 3]
    affine[:3, 3] = centre_world - affine[:3, :3] @ (np.array(shape) - 1) / 2
    to_source = np.linalg.inv(AFFINE) @ affine
    out = {}
    for key, folder, order in (("dwi", "", 1), ("adc", "", 1), ("msk", "derivatives/lesions/", 0)):
        src = nib.load(next(source.glob(f"{folder}sub-01/dwi/sub-01_{key}.nii.gz"))).get_fdata()
        data = affine_transform(src, to_source[:3, :3], to_source[:3, 3], output_shape=shape,
                                order=order).astype(np.float32 if order else np.uint8)
        path = root / folder / pid / "dwi" / f"{pid}_{key}.nii.gz"
        write_nifti(path, data, affine)
        out[key] = path
    (root / "participants.tsv").write_text(f"participant_id\tdiagnosis\tsite\n{pid}\tstroke\tX\n", encoding="utf-8")
    return out, affine, shape


def test_prediction_lands_on_the_oblique_native_grid(trained, easy_stroke_tree, tmp_path):
    _, _, ckpt, _ = trained
    paths, affine, shape = oblique_scan(tmp_path / "bids", easy_stroke_tree)
    reports = predict_dataset(ckpt, tmp_path / "bids" / "sub-99", tmp_path / "out")
    pred = nib.load(tmp_path / "out" / "sub-99_pred_msk.nii.gz")
    assert pred.shape == shape
    np.testing.assert_allclose(pred.affine, affine, atol=1e-5)
    truth = np.asarray(nib.load(paths["msk"]).dataobj)
    assert dice(np.asarray(pred.dataobj) > 0, truth > 0) > 0.6
    report = json.loads((tmp_path / "out" / "sub-99_pred.json").read_text(encoding="utf-8"))
    assert report == json.loads(json.dumps(reports[0], default=float))
    assert report["n_lesions"] >= 1 and report["metrics"]["dice"] > 0.6
    assert sum(les["volume_ml"] for les in report["lesions"]) == pytest.approx(report["total_volume_ml"])


def test_cli_refuses_to_overwrite(trained, easy_stroke_tree, tmp_path, capsys):
    _, _, ckpt, _ = trained
    oblique_scan(tmp_path / "bids", easy_stroke_tree)
    args = ["predict", "--ckpt", str(ckpt), "--input", str(tmp_path / "bids"), "--out",
            str(tmp_path / "out"), "--device", "cpu"]
    assert main(args) == 0
    assert "sub-99: " in capsys.readouterr().out
    assert main(args) == 2  # outputs in the way, nothing run: one line on stderr, no traceback
    mask = tmp_path / "out" / "sub-99_pred_msk.nii.gz"
    assert capsys.readouterr().err == (f"cogimg predict: error: {mask} exists; "
                                       "pass --overwrite to replace it\n")
    assert main([*args, "--overwrite"]) == 0


def test_checkpoint_loading_is_weights_only_and_checked(trained, tmp_path):
    _, _, ckpt, _ = trained
    _, data = load_task(ckpt)
    assert data["preset"] == "stroke" and data["modalities"] == ["dwi", "adc"]
    state = torch.load(ckpt, weights_only=True)
    state["cogimg"]["task"] = "os.system"
    torch.save(state, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="outside cogimg.tasks"):
        load_task(tmp_path / "evil.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        load_task(tmp_path / "junk.ckpt")
