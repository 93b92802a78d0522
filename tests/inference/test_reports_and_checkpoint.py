"""Lesion reports in mL and mm, checkpoint settings, and clear errors on non-cogimg checkpoints."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from cogimg.data.transforms import PreprocessingConfig
from cogimg.inference import CheckpointError, lesion_report, preprocessing_config, read_checkpoint


def test_lesion_report_counts_volumes_and_centroids_by_hand():
    affine = np.diag([2.0, 2.0, 3.0, 1.0])  # voxels of 2 × 2 × 3 mm = 12 mm³
    affine[:3, 3] = [-10.0, 0.0, 5.0]
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # 8 voxels, centre voxel (1.5, 1.5, 1.5)
    mask[7, 7, 4:7] = 1  # 3 voxels, centre voxel (7, 7, 5)
    report = lesion_report(nib.Nifti1Image(mask, affine))
    assert report["n_lesions"] == 2
    assert report["total_volume_ml"] == pytest.approx(11 * 12 / 1000)
    by_size = sorted(report["lesions"], key=lambda les: les["volume_ml"])
    assert [les["volume_ml"] for les in by_size] == pytest.approx([3 * 12 / 1000, 8 * 12 / 1000])
    np.testing.assert_allclose(by_size[0]["centroid_mm"], [7 * 2 - 10, 7 * 2, 5 * 3 + 5])
    np.testing.assert_allclose(by_size[1]["centroid_mm"], [1.5 * 2 - 10, 1.5 * 2, 1.5 * 3 + 5])


def test_lesion_report_of_an_empty_mask():
    report = lesion_report(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)))
    assert report == {"n_lesions": 0, "total_volume_ml": 0.0, "lesions": []}


def test_preprocessing_config_keeps_known_keys_only():
    config = preprocessing_config({"preprocessing": {"spacing_mm": 1.5, "normalization": "zscore",
                                                     "written_by_a_newer_version": True}})
    assert config == PreprocessingConfig(spacing_mm=(1.5, 1.5, 1.5), normalization="zscore")


def test_a_plain_lightning_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, path)
    with pytest.raises(CheckpointError, match=r"plain.ckpt: not a cogimg checkpoint"):
        read_checkpoint(path)
