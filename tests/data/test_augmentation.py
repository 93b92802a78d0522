"""Augmentation presets and the fast TorchIO transform variants (cogimg.data.augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio

from cogimg.data.augmentation import (
    RandomElasticDeformationCoarse,
    augmentation,
    separable_bias_field,
)
from cogimg.data.transforms import preprocessing
from tests.data.helpers import make_subject


def test_augmentation_presets_per_task():
    def kinds(task):
        return {base.__name__ for t in augmentation(task) for base in type(t).__mro__}

    names = {task: kinds(task) for task in ("segmentation", "detection", "classification")}
    assert "RandomElasticDeformation" in names["segmentation"]
    assert "RandomElasticDeformation" not in names["detection"]
    assert {"RandomMotion", "RandomGhosting"}.isdisjoint(names["classification"])
    for expected in ("RandomFlip", "RandomAffine", "RandomBiasField", "RandomGamma", "RandomNoise"):
        assert all(expected in n for n in names.values())
    assert len(augmentation("segmentation", "none")) == 0
    strong = augmentation("segmentation", "strong")
    default = augmentation("segmentation", "default")
    affine_strong = next(t for t in strong if isinstance(t, tio.RandomAffine))
    affine_default = next(t for t in default if isinstance(t, tio.RandomAffine))
    assert affine_strong.degrees[1] == pytest.approx(1.5 * affine_default.degrees[1])
    with pytest.raises(ValueError, match="unknown task"):
        augmentation("registration")
    with pytest.raises(ValueError, match="unknown augmentation strength"):
        augmentation("segmentation", "extreme")


def test_augmentation_keeps_shapes_and_binary_labels():
    subject = preprocessing(spacing_mm=2.0, foreground="brain")(make_subject())
    torch.manual_seed(0)
    for strength in ("light", "default", "strong"):
        out = augmentation("segmentation", strength)(subject)
        assert out.dwi.spatial_shape == subject.dwi.spatial_shape
        assert set(torch.unique(out.brain.data).tolist()) <= {0, 1}
        assert torch.isfinite(out.dwi.data).all()


@pytest.mark.parametrize("shape", [(33, 40, 27), (8, 1, 5)])
def test_separable_bias_field_equals_torchio(shape):
    from torchio.transforms.augmentation.intensity.random_bias_field import BiasField

    coefficients = np.random.default_rng(0).uniform(-0.5, 0.5, 20).tolist()
    expected = BiasField.generate_bias_field(torch.zeros(1, *shape), 3, coefficients)
    np.testing.assert_allclose(separable_bias_field(shape, 3, coefficients).numpy(), expected, rtol=1e-6)


def test_coarse_elastic_matches_torchio_elastic():
    subject = preprocessing(spacing_mm=2.0, foreground="brain")(make_subject())
    outputs = []
    for cls in (tio.RandomElasticDeformation, RandomElasticDeformationCoarse):
        torch.manual_seed(7)  # same control points
        outputs.append(cls(num_control_points=7, max_displacement=4.0)(subject))
    reference, coarse = outputs
    moved = (reference.dwi.data - subject.dwi.data).abs().mean()
    error = (reference.dwi.data - coarse.dwi.data).abs().mean()
    assert moved > 0.02 and error < 0.05 * moved  # same deformation, to a few % of its effect
    a, b = reference.brain.data.bool(), coarse.brain.data.bool()
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.98
