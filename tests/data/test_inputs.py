"""Inference inputs: DICOM series (oblique, anisotropic) read onto the right RAS grid, case
folders, batch folders that list every unusable entry, and ``cogimg predict`` on DICOM."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from cogimg.cli import main
from cogimg.data.inputs import InputError, find_cases, read_dicom_series
from cogimg.data.transforms import PreprocessingConfig
from cogimg.tasks.segmentation import SegmentationTask
from tests.paradigms.test_explain_command import save_checkpoint

#: RAS affine of the test series: rotated 15° about z, 1.5 × 1.2 × 3 mm voxels (right-handed,
#: so DICOM's slice normal is the third axis).
SHAPE = (24, 20, 10)


def ras_affine() -> np.ndarray:
    a = np.deg2rad(15)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.5, 1.2, 3.0])
    affine[:3, 3] = [-18.0, -12.0, -15.0]
    return affine


def write_dicom_series(folder, volume: np.ndarray, affine: np.ndarray, series: str = "1",
                       description: str = "DWI b1000") -> None:
    """One MR series, one file per slice, from ``volume`` ``(X, Y, Z)`` (stored as int16) on
    the RAS grid ``affine``, with the geometry tags SimpleITK/GDCM read back."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3]  # DICOM patient space is LPS
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    direction = lps[:, :3] / spacing
    image = sitk.GetImageFromArray(np.asarray(volume).transpose(2, 1, 0).astype(np.int16))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in lps[:, 3]])
    image.SetDirection([float(v) for v in direction.flatten()])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.7"
    orientation = [*direction[:, 0], *direction[:, 1]]
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        tags = {"0010|0020": "PAT-7", "0008|0060": "MR", "0008|103e": description,
                "0020|000d": f"{uid}.1", "0020|000e": f"{uid}.2.{series}", "0020|0013": str(k + 1),
                "0020|0037": "\\".join(f"{v:.6f}" for v in orientation),
                "0020|0032": "\\".join(f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
                "0018|0050": f"{spacing[2]:.4f}"}
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{series}_{k:03d}.dcm"))
        writer.Execute(plane)


def blob_volume(seed: int = 0, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    head = np.linalg.norm((grid - (np.array(shape) - 1) / 2) / (np.array(shape) / 2.4), axis=-1) < 1
    return np.round(head * 600 + rng.normal(0, 20, shape)).clip(0, None)


def test_dicom_series_reads_onto_its_ras_grid(tmp_path):
    volume = blob_volume()
    write_dicom_series(tmp_path / "dwi", volume, ras_affine())
    image = read_dicom_series(tmp_path / "dwi")
    assert image.spatial_shape == SHAPE
    np.testing.assert_allclose(image.affine, ras_affine(), atol=1e-3)
    np.testing.assert_array_equal(image.numpy()[0], volume.astype(np.int16))


def test_dicom_folder_with_two_series_is_refused(tmp_path):
    write_dicom_series(tmp_path / "mixed", blob_volume(), ras_affine(), series="1")
    write_dicom_series(tmp_path / "mixed", blob_volume(1), ras_affine(), series="2")
    with pytest.raises(InputError, match="2 DICOM series"):
        read_dicom_series(tmp_path / "mixed")


def test_batch_folder_lists_cases_and_every_unusable_entry(tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    nib.save(nib.Nifti1Image(blob_volume().astype(np.float32), ras_affine()), batch / "p1.nii.gz")
    write_dicom_series(batch / "p2 dicom", blob_volume(2), ras_affine())
    case = batch / "p3"
    write_dicom_series(case / "DWI", blob_volume(3), ras_affine())
    nib.save(nib.Nifti1Image(blob_volume(4).astype(np.float32), ras_affine()), case / "adc.nii.gz")
    (batch / "notes.txt").write_text("not an image", encoding="utf-8")
    (batch / "empty").mkdir()
    (batch / ".DS_Store").write_text("hidden", encoding="utf-8")
    cases, errors = find_cases(batch)
    assert [c.case_id for c in cases] == ["p1", "p2_dicom", "p3"]
    assert set(cases[2].images) == {"dwi", "adc"}
    assert sorted(e[0].rsplit("/", 1)[1] for e in errors) == ["empty", "notes.txt"]
    assert all("not a NIfTI file, a DICOM series folder or a case folder" in e[1] for e in errors)
    subject = cases[2].subject_for(("dwi", "adc"))
    assert subject["subject_id"] == "p3" and subject["dwi"].spatial_shape == SHAPE
    with pytest.raises(InputError, match="one image, but the model reads"):
        cases[1].subject_for(("dwi", "adc"))
    with pytest.raises(InputError, match="no T1w image"):
        cases[2].subject_for(("T1w",))


def test_predict_on_a_dicom_series_equals_predict_on_the_same_nifti(tmp_path, capsys):
    torch.manual_seed(0)
    task = SegmentationTask("unet", in_channels=1, num_classes=2, patch_size=(16, 16, 16),
                            model_kwargs={"channels": [4, 8], "strides": [2], "num_res_units": 0}).eval()
    config = PreprocessingConfig(spacing_mm=2.0, reference="dwi")
    ckpt = save_checkpoint(task, tmp_path / "seg.ckpt", "stroke", ["dwi"], config)
    volume = blob_volume()
    write_dicom_series(tmp_path / "series", volume, ras_affine())
    # The same voxels as NIfTI with the affine the DICOM reader derives: the reference result.
    nifti = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.int16), read_dicom_series(tmp_path / "series").affine), nifti)
    for source, out in ((tmp_path / "series", "dcm"), (nifti, "nii")):
        assert main(["predict", "--ckpt", str(ckpt), "--input", str(source), "--out",
                     str(tmp_path / out), "--device", "cpu"]) == 0
    from_dicom = nib.load(tmp_path / "dcm" / "series_pred_msk.nii.gz")
    from_nifti = nib.load(tmp_path / "nii" / "series_pred_msk.nii.gz")
    assert from_dicom.shape == SHAPE
    np.testing.assert_allclose(from_dicom.affine, ras_affine(), atol=1e-3)
    mask = np.asarray(from_dicom.dataobj)
    assert 0 < mask.sum() < mask.size  # a real prediction, not a constant
    # NIfTI stores the affine in float32: a few boundary voxels may resample differently.
    assert (mask != np.asarray(from_nifti.dataobj)).mean() < 0.002
    report = json.loads((tmp_path / "dcm" / "series_pred.json").read_text(encoding="utf-8"))
    assert report["n_lesions"] >= 1 and "series: " in capsys.readouterr().out
