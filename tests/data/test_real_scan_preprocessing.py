"""Real-scan preprocessing (cogimg.data.real_scan): head found with skull, background, any
intensity scale and anisotropic voxels; the output returns to the scan's native grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio

from cogimg.data.real_scan import HEAD_KEY, head_mask, normalise_in_mask
from cogimg.data.transforms import PreprocessingConfig
from cogimg.inference import preprocessed_subjects, to_native

#: 1 × 1 × 5 mm voxels (thick axial slices), oblique-free LAS-like affine.
SHAPE = (96, 96, 20)
AFFINE = np.array([[-1.0, 0, 0, 48.0], [0, 1.0, 0, -50.0], [0, 0, 5.0, -45.0], [0, 0, 0, 1]])


def head_phantom(scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DWI-like head (X, Y, Z) in arbitrary units × ``scale``: brain (1000) with a dark
    ventricle (150), dark skull (60), bright scalp (1300), Rician-like background noise (≈ 25).
    Returns ``(image, brain, head)`` with the true brain and head (scalp outline) masks."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(SHAPE, (1, 1, 5))],
                          indexing="ij")
    r = np.sqrt((x / 38) ** 2 + (y / 44) ** 2 + (z / 40) ** 2)
    brain, skull, head = r < 0.85, (r >= 0.85) & (r < 0.93), r < 1.0
    image = np.zeros(SHAPE)
    image[brain] = 1000.0
    image[brain & (np.abs(x) < 8) & (np.abs(y) < 15) & (np.abs(z) < 10)] = 150.0
    image[skull] = 60.0
    image[head & ~brain & ~skull] = 1300.0
    noisy = np.abs(image + rng.normal(0, 25, SHAPE) + 1j * rng.normal(0, 25, SHAPE))
    return noisy * scale, brain, head


def test_head_mask_finds_the_head_at_any_scale():
    image, brain, head = head_phantom(1.0)
    mask = head_mask(image)
    assert mask[brain].mean() > 0.99  # ventricle and dark skull filled in
    assert mask[~head].mean() < 0.01  # background noise left out
    dice = 2 * (mask & head).sum() / (mask.sum() + head.sum())
    assert dice > 0.95
    scaled, _, _ = head_phantom(1e-3)  # e.g. ADC in 10⁻³ instead of 10⁻⁶ mm²/s
    np.testing.assert_array_equal(head_mask(scaled), mask)
    assert not head_mask(np.zeros(SHAPE)).any()
    with pytest.raises(ValueError, match="3D"):
        head_mask(np.zeros((4, 4)))


def test_normalise_in_mask_is_a_zscore_inside():
    rng = np.random.default_rng(0)
    volume = torch.from_numpy(rng.normal(5.0, 3.0, (2, 10, 10, 10))).float()
    mask = torch.zeros(10, 10, 10, dtype=torch.bool)
    mask[2:8, 2:8, 2:8] = True
    out = normalise_in_mask(volume, mask, clip_percentiles=None)
    for c in range(2):
        values = volume[c][mask]
        expected = (volume[c] - values.mean()) / values.std()
        torch.testing.assert_close(out[c], expected)
    with pytest.raises(ValueError, match="empty"):
        normalise_in_mask(volume, torch.zeros_like(mask))


def _subject(scale: float, sid: str) -> tio.Subject:
    image, _, _ = head_phantom(scale)
    lesion = np.zeros(SHAPE, np.uint8)
    lesion[40:50, 40:50, 8:11] = 1
    return tio.Subject(dwi=tio.ScalarImage(tensor=torch.from_numpy(image)[None].float(), affine=AFFINE),
                       adc=tio.ScalarImage(tensor=torch.from_numpy(image[::-1].copy())[None].float() * 0.8,
                                           affine=AFFINE),
                       subject_id=sid)


def test_preprocessing_is_scale_free_and_returns_to_the_native_grid():
    config = PreprocessingConfig(spacing_mm=2.0, foreground=HEAD_KEY, reference="dwi")
    subjects = [_subject(1.0, "a"), _subject(1e-3, "b")]
    outputs = []
    for subject, processed, image in preprocessed_subjects(subjects, config, ("dwi", "adc")):
        assert image.shape[:2] == (1, 2) and image.shape[2:] == (48, 48, 50)  # 2 mm isotropic
        assert HEAD_KEY not in processed  # used for the statistics, not cached
        head = torch.from_numpy(head_mask(image[0, 0]))
        inside = image[0, 0][head]
        assert abs(float(inside.mean())) < 0.1 and abs(float(inside.std()) - 1.0) < 0.1
        # A "prediction" on the preprocessed grid goes back onto the scan's own grid.
        prediction = (image[0, 0] > 0.5).to(torch.uint8)
        native = to_native(prediction, processed, is_label=True)
        assert native.shape == SHAPE
        np.testing.assert_allclose(native.affine, subject["dwi"].affine, atol=1e-5)
        outputs.append(image)
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-3, rtol=1e-3)  # units removed
