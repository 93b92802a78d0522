"""Saliency methods against models with known answers; saliency maps keep the input's affine."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from torch import nn

from cogimg import models
from cogimg.data.cache import VolumeCache, read_meta
from cogimg.data.transforms import PreprocessingConfig
from cogimg.paradigms.explain import (
    ClassificationScore,
    SegmentationScore,
    explain,
    gradcam,
    integrated_gradients,
    last_conv_stage,
    occlusion,
)
from cogimg.paradigms.explain.export import save_overlay_png, save_saliency_nifti
from cogimg.paradigms.explain.rollout import attention_rollout, rollout_matrix
from cogimg.paradigms.explain.targets import predicted_region


class LinearScore(nn.Module):
    """Two "class" scores, ``Σ w_k · x``: attributions of a linear model are known exactly."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight  # (2, C, X, Y, Z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bcxyz,kcxyz->bk", x, self.weight)


class BlockCNN(nn.Module):
    """Conv (2³ block sums, stride 2) → ReLU → global sum: Grad-CAM = ReLU(block sums)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage = nn.Sequential(nn.Conv3d(1, 1, 2, stride=2, bias=False), nn.ReLU())
        nn.init.ones_(self.stage[0].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(x).flatten(1).sum(dim=1, keepdim=True)


def blob_image(shape=(8, 8, 8), corner=(4, 2, 0)) -> torch.Tensor:
    x = torch.zeros(1, 1, *shape)
    x[0, 0, corner[0]:corner[0] + 2, corner[1]:corner[1] + 2, corner[2]:corner[2] + 2] = 1.0
    return x


# --------------------------------------------------------------------------- methods
def test_integrated_gradients_of_a_linear_model_is_weight_times_input():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 2, 4, 4, 4, generator=g)
    image = torch.randn(1, 2, 4, 4, 4, generator=g)
    sal = integrated_gradients(LinearScore(weight), image, target=1, n_steps=4)
    expected = (weight[1] * image[0]).sum(dim=0).clamp_min(0)
    torch.testing.assert_close(sal, expected, rtol=1e-4, atol=1e-5)


def test_occlusion_with_one_voxel_windows_is_weight_times_input():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(2, 1, 3, 3, 3, generator=g)
    image = torch.randn(1, 1, 3, 3, 3, generator=g)
    sal = occlusion(LinearScore(weight), image, target=0, window_vox=1, stride_vox=1,
                    perturbations_per_eval=27)
    torch.testing.assert_close(sal, (weight[0, 0] * image[0, 0]).clamp_min(0), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="stride"):
        occlusion(LinearScore(weight), image, target=0, window_vox=2, stride_vox=3)


def test_gradcam_finds_the_stage_and_peaks_on_the_evidence():
    net = BlockCNN()
    image = blob_image()
    name, _ = last_conv_stage(net, image)
    assert name == "stage"  # the stage holding the strided convolution, not the bare conv
    sal = gradcam(net, image, target=0)
    assert sal.shape == (8, 8, 8) and sal.min() >= 0
    peak = np.unravel_index(int(sal.argmax()), sal.shape)
    assert 4 <= peak[0] < 6 and 2 <= peak[1] < 4 and 0 <= peak[2] < 2
    assert sal[:, 5:, 4:].max() == 0  # far from the blob: no activation, no evidence


def test_gradcam_on_a_registry_resnet_and_bad_inputs():
    torch.manual_seed(0)
    net = models.get("resnet10_3d", in_channels=1, num_classes=2, input_shape=(16, 16, 16),
                     block_inplanes=(4, 4, 8, 8)).eval()
    scorer = ClassificationScore(net, fusion=False).eval()
    image = torch.randn(1, 1, 16, 16, 16)
    assert last_conv_stage(scorer, image)[0] == "model.encoder.layer4"
    assert explain(scorer, image, "gradcam", 1).shape == (16, 16, 16)
    with pytest.raises(ValueError, match="one volume"):
        explain(scorer, image.repeat(2, 1, 1, 1, 1), "gradcam", 0)
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain(scorer, image, "lime", 0)


def test_segmentation_score_pads_crops_and_sums_the_predicted_lesion():
    net = nn.Conv3d(1, 2, 1)  # lesion logit = x, background = -x
    with torch.no_grad():
        net.weight[:] = torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1, 1)
        net.bias.zero_()
    scorer = SegmentationScore(net, pad_multiple=4)
    image = blob_image((6, 7, 5), corner=(1, 1, 1)) * 2.0 - 0.5  # blob 1.5, elsewhere -0.5
    assert scorer.logits(image).shape == (1, 2, 6, 7, 5)
    region = predicted_region(scorer, image)
    assert int(region.sum()) == 8
    scorer.set_region(region)
    assert float(scorer(image).detach()) == pytest.approx(8 * 1.5)
    sal = integrated_gradients(scorer, image, target=0, n_steps=2)
    assert bool((sal > 0).eq(region[0]).all())  # evidence exactly on the predicted lesion
    with pytest.warns(UserWarning, match="no lesion"):
        assert predicted_region(scorer, -image.abs()) is None


def test_windowed_segmentation_score_is_the_sliding_window_prediction_and_has_gradients():
    """Scored by windows, a segmentation model is explained on the prediction
    ``cogimg predict`` makes (Gaussian-weighted windows), not on a whole-volume pass that
    instance normalisation changes; Grad-CAM, which needs the whole pass, says so."""
    from cogimg.models.sliding_window import sliding_window_predict

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.ReLU(),
                        nn.Conv3d(4, 2, 1)).eval()
    image = blob_image((20, 24, 20), corner=(6, 8, 6)) + 0.1 * torch.randn(1, 1, 20, 24, 20)
    windowed = SegmentationScore(net, roi_size=(12, 12, 12), overlap=0.5)
    whole = SegmentationScore(net, pad_multiple=1)
    expected = sliding_window_predict(net, image, (12, 12, 12), overlap=0.5)
    assert torch.allclose(windowed.logits(image).softmax(dim=1), expected, atol=1e-5)
    assert not torch.allclose(whole.logits(image).softmax(dim=1), expected, atol=1e-3)
    windowed.set_region(torch.ones(20, 24, 20, dtype=torch.bool))
    sal = integrated_gradients(windowed, image, target=0, n_steps=2)
    assert sal.shape == (20, 24, 20) and float(sal.sum()) > 0
    with pytest.raises(ValueError, match="whole volume"):
        gradcam(windowed, image, 0)


def test_attention_rollout_on_vit_3d():
    torch.manual_seed(0)
    vit = models.get("vit_3d", in_channels=1, num_classes=2, input_shape=(16, 16, 16), patch_size=8,
                     hidden_size=16, mlp_dim=32, num_layers=2, num_heads=2).eval()
    scorer = ClassificationScore(vit, fusion=False).eval()
    sal = attention_rollout(scorer, torch.randn(1, 1, 16, 16, 16))
    assert sal.shape == (16, 16, 16) and sal.min() >= 0
    # Mean pooling over 8 tokens and row-stochastic rollout: relevances average to 1/8.
    assert float(sal.mean()) == pytest.approx(1 / 8, rel=0.05)
    with pytest.raises(ValueError, match="rollout"):
        gradcam(scorer, torch.randn(1, 1, 16, 16, 16), 0)
    with pytest.raises(ValueError, match="MONAI ViT"):
        attention_rollout(BlockCNN(), blob_image())


def test_rollout_matrix_hand_computed():
    n = 3
    to_first = torch.zeros(1, 1, n, n)
    to_first[..., 0] = 1.0  # every token attends to token 0
    # (A + I) / 2 row-normalised: row 0 = [1, 0, 0]; rows 1, 2 = ½ on token 0 and ½ on itself.
    expected = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]])
    torch.testing.assert_close(rollout_matrix([to_first])[0], expected)
    torch.testing.assert_close(rollout_matrix([to_first, to_first])[0], expected @ expected)


# --------------------------------------------------------------------------- native grid
OBLIQUE_SHAPE = (30, 34, 14)


def oblique_affine() -> np.ndarray:
    """LPS-like, rotated 20° about z and 10° about x, 1.5 × 1.8 × 4 mm voxels."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.5, -1.8, 4.0])
    affine[:3, 3] = [20.0, 30.0, -25.0]
    return affine


def test_saliency_maps_keep_the_input_affine(tmp_path):
    affine = oblique_affine()
    rng = np.random.default_rng(0)
    data = rng.normal(100, 10, OBLIQUE_SHAPE).astype(np.float32)
    path = tmp_path / "sub-01_dwi.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    subject = tio.Subject(dwi=tio.ScalarImage(path), subject_id="sub-01")
    cache = VolumeCache(tmp_path / "cache", PreprocessingConfig(spacing_mm=3.0, reference="dwi"))
    processed = cache.get(subject)
    meta = read_meta(processed["cache_entry"])
    grid = tuple(meta["preprocessed"]["shape"])
    # A saliency map peaking at one known world point (the native voxel (15, 17, 7)).
    world = nib.affines.apply_affine(affine, (15, 17, 7))
    vox = np.rint(nib.affines.apply_affine(np.linalg.inv(meta["preprocessed"]["affine"]), world))
    sal = np.zeros(grid, np.float32)
    sal[tuple(int(v) for v in vox)] = 5.0

    out = save_saliency_nifti(sal, meta, tmp_path / "out" / "sal.nii.gz")
    written = nib.load(tmp_path / "out" / "sal.nii.gz")
    for image in (out, written):
        np.testing.assert_allclose(image.affine, affine, atol=1e-5)
        assert image.shape == OBLIQUE_SHAPE
    values = np.asarray(written.dataobj)
    assert values.max() == pytest.approx(1.0) and values.min() >= 0  # max-normalised
    peak = np.unravel_index(int(values.argmax()), values.shape)
    distance_mm = np.linalg.norm(nib.affines.apply_affine(affine, peak) - world)
    assert distance_mm <= 3.0 * np.sqrt(3)  # within one preprocessed voxel of the point

    png = save_overlay_png(written, path, tmp_path / "out" / "sal.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic writes left no temporaries
