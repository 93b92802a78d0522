"""Preprocessing pipeline and its config (cogimg.data.transforms)."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio

from cogimg.data.transforms import (
    PreprocessingConfig,
    fit_histogram_landmarks,
    grid_at_spacing,
    load_landmarks,
    parse_spacing,
    preprocessing,
)
from tests.data.helpers import LAS_AFFINE, SHAPE, make_subject


def test_canonical_ras_and_resampled_spacing():
    out = preprocessing(spacing_mm=2.0)(make_subject())
    for image in out.get_images(intensity_only=False):
        assert image.orientation == ("R", "A", "S")
        np.testing.assert_allclose(image.spacing, (2.0, 2.0, 2.0))
        # Same field of view: z extent 16 × 4 mm = 64 mm → 32 voxels of 2 mm.
        assert image.spatial_shape == (40, 44, 32)
    # The centre of the field of view stays where it was (in mm).
    centre_in = LAS_AFFINE @ np.r_[(np.array(SHAPE) - 1) / 2, 1]
    centre_out = out.dwi.affine @ np.r_[(np.array(out.dwi.spatial_shape) - 1) / 2, 1]
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-6)


def test_grid_at_spacing_matches_torchio_resample():
    shape, affine = grid_at_spacing(SHAPE, LAS_AFFINE, (3.0, 3.0, 3.0))
    reference = tio.Resample(3.0)(make_subject().dwi)
    assert shape == reference.spatial_shape
    np.testing.assert_allclose(affine, reference.affine, atol=1e-6)


def test_modalities_on_different_grids_end_on_the_reference_grid():
    subject = make_subject()
    # A second modality on its own coarse, oblique-free grid (like ISLES'22 FLAIR).
    flair_affine = np.diag([1.0, 1.0, 5.0, 1.0])
    flair_affine[:3, 3] = [-45.0, -50.0, -35.0]
    subject.add_image(tio.ScalarImage(tensor=torch.rand(1, 90, 100, 14) * 100, affine=flair_affine), "FLAIR")
    out = preprocessing(spacing_mm=2.0, reference="dwi")(subject)
    assert out.FLAIR.spatial_shape == out.dwi.spatial_shape
    np.testing.assert_allclose(out.FLAIR.affine, out.dwi.affine)
    with pytest.raises(KeyError, match="reference modality 'T1w'"):
        preprocessing(spacing_mm=2.0, reference="T1w")(make_subject())


def test_zscore_inside_the_mask_and_percentile_clip():
    subject = make_subject()
    subject.dwi.data[0, 20, 22, 8] = 1e5  # one hot voxel must not dominate the statistics
    out = preprocessing(spacing_mm=2.0, foreground="brain", clip_percentiles=(1, 99))(subject)
    inside = out.dwi.data[out.brain.data.bool()]
    assert abs(float(inside.mean())) < 1e-4
    assert float(inside.std()) == pytest.approx(1.0, abs=1e-3)
    # Clipped at the 99th percentile of the brain: nothing near 1e5 survives.
    assert float(out.dwi.data.max()) < 4.0


def test_no_clip_keeps_dark_foci_below_the_darkest_tissue():
    # A T2*-like head: noisy tissue (mean 100) with a few very dark foci (microbleeds).
    subject = make_subject()
    foci = torch.zeros_like(subject.brain.data)
    foci[0, 20, 22, 8] = foci[0, 14, 20, 6] = foci[0, 25, 25, 9] = 1
    subject.dwi.data[foci.bool()] = 10.0
    subject.add_image(tio.LabelMap(tensor=foci, affine=subject.brain.affine), "foci")
    for foreground in ("mean", "brain"):
        for clip in (None, (0.5, 99.5)):
            out = preprocessing(spacing_mm=(2.0, 2.0, 4.0), foreground=foreground,
                                clip_percentiles=clip)(subject)
            dark = out.foci.data.bool()
            focus, tissue = out.dwi.data[dark], out.dwi.data[out.brain.data.bool() & ~dark]
            assert dark.sum() == 3
            if clip is None:
                assert float(focus.max()) < float(tissue.min()) - 1.0
            else:  # the low clip gives the foci the value of the darkest 0.5 % of tissue
                np.testing.assert_allclose(focus, float(tissue.min()), atol=1e-5)
    from cogimg.diseases import get_preset

    assert get_preset("microbleeds").clip_percentiles is None


def test_minmax_and_none_normalisations():
    subject = make_subject()
    out = preprocessing(spacing_mm=2.0, normalization="minmax", foreground="brain")(subject)
    assert float(out.dwi.data.min()) == pytest.approx(0.0) and float(out.dwi.data.max()) == pytest.approx(1.0)
    raw = preprocessing(spacing_mm=(2.0, 2.0, 4.0), normalization="none")(subject)
    np.testing.assert_allclose(raw.dwi.data.numpy()[0, ::-1], subject.dwi.data.numpy()[0], atol=1e-3)
    with pytest.raises(ValueError, match="normalization='robust'"):
        preprocessing(spacing_mm=2.0, normalization="robust")


def test_crop_to_brain_and_target_shape():
    out = preprocessing(spacing_mm=2.0, crop_to_brain=True, foreground="brain")(make_subject())
    mask = out.brain.data[0].numpy()
    # Tight box + 2 voxels margin on each side.
    for axis in range(3):
        profile = mask.any(axis=tuple(a for a in range(3) if a != axis))
        assert profile[:2].sum() == 0 and profile[2] and profile[-3] and profile[-2:].sum() == 0
    padded = preprocessing(spacing_mm=2.0, crop_to_brain=True, target_shape=(48, 48, 48),
                           foreground="brain")(make_subject())
    assert padded.dwi.spatial_shape == (48, 48, 48)
    assert int(padded.brain.data.sum()) == int(out.brain.data.sum())


def test_config_hash_is_stable_and_normalises_equal_values():
    a = PreprocessingConfig(spacing_mm=2.0, target_shape=[48, 56, 48])
    b = PreprocessingConfig(spacing_mm=(2, 2, 2), target_shape=(48, 56, 48))
    assert a == b and a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 16
    assert json.loads(json.dumps(a.to_dict()))["spacing_mm"] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("change", [
    {"spacing_mm": 1.5}, {"target_shape": (48, 56, 48)}, {"crop_to_brain": True},
    {"normalization": "minmax"}, {"clip_percentiles": (1.0, 99.0)}, {"clip_percentiles": None},
    {"reference": "adc"}, {"foreground": "nonzero"},
])
def test_config_hash_changes_with_every_parameter(change):
    base = PreprocessingConfig()
    assert dataclasses.replace(base, **change).config_hash() != base.config_hash()


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="spacing_mm"):
        PreprocessingConfig(spacing_mm=(2.0, 2.0))
    with pytest.raises(ValueError, match="normalization"):
        PreprocessingConfig(normalization="z")


def test_histogram_landmarks_fitted_on_files_enter_the_hash(tmp_path):
    subjects = []
    for seed in range(3):
        subject = make_subject(seed)
        path = tmp_path / f"sub-{seed}_dwi.nii.gz"
        nib.save(nib.Nifti1Image(subject.dwi.data[0].numpy() * (1 + seed), LAS_AFFINE), path)
        subjects.append(tio.Subject(dwi=tio.ScalarImage(path), subject_id=f"sub-{seed}"))
    out = tmp_path / "landmarks.json"
    landmarks = fit_histogram_landmarks(subjects[:2], ["dwi"], out)
    assert set(load_landmarks(out)) == {"dwi"}
    np.testing.assert_allclose(load_landmarks(out)["dwi"], landmarks["dwi"])
    assert np.all(np.diff(landmarks["dwi"]) > 0)

    # Spacing of the input: no resampling, so the mapping can be checked voxel for voxel.
    config = PreprocessingConfig(spacing_mm=(2, 2, 4), histogram_landmarks=str(out), normalization="none")
    standardised = config.build()(subjects[2]).dwi.data[0].numpy()[::-1]  # undo LAS → RAS
    raw = subjects[2].dwi.data[0].numpy()
    # Nyúl–Udupa: the 1st, 50th and 99th foreground percentiles land on the fitted landmarks.
    got = np.percentile(standardised[raw > raw.mean()], [1, 50, 99])
    np.testing.assert_allclose(got, landmarks["dwi"][[0, 6, -1]], atol=0.5)
    before = config.config_hash()
    out.write_text(json.dumps({"dwi": (landmarks["dwi"] * 2).tolist()}), encoding="utf-8")
    assert config.config_hash() != before  # same path, new landmark values → new cache
    with pytest.raises(ValueError, match="no 'adc' image file"):
        fit_histogram_landmarks(subjects, ["adc"], tmp_path / "x.json")


@pytest.mark.parametrize(("spacing", "expected"), [
    (2, (2.0, 2.0, 2.0)),
    (1.5, (1.5, 1.5, 1.5)),
    ((1, 2, 3.5), (1.0, 2.0, 3.5)),
    ([0.5, 0.5, 4.0], (0.5, 0.5, 4.0)),
    (np.array([[1.0, 2.0, 3.0]]), (1.0, 2.0, 3.0)),  # any array of 3 elements
])
def test_parse_spacing_gives_three_floats(spacing, expected):
    parsed = parse_spacing(spacing)
    assert parsed == expected and all(type(v) is float for v in parsed)


@pytest.mark.parametrize(("spacing", "message"), [
    (0, "strictly positive"), (-1.0, "strictly positive"), ((1.0, 0.0, 1.0), "strictly positive"),
    (np.array([1.0, 2.0, -3.0]), "strictly positive"), ((1.0, 2.0), "one or three values, got 2"),
    (np.ones(4), "one or three values, got 4"), ("2mm", "a positive number or three of them"),
    ((1.0, "2", 3.0), "a positive number or three of them"), (None, "a positive number"),
])
def test_parse_spacing_rejects_bad_values(spacing, message):
    with pytest.raises(ValueError, match=message):
        parse_spacing(spacing)


def test_resample_to_reference_accepts_every_spacing_form():
    for spacing in (2.0, (2, 2, 2), np.array([2.0, 2.0, 2.0])):
        out = preprocessing(spacing_mm=spacing, normalization="none")(make_subject())
        for image in out.get_images(intensity_only=False):
            np.testing.assert_allclose(image.spacing, (2.0, 2.0, 2.0))
