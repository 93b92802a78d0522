"""Random augmentation presets (TorchIO) applied to whole preprocessed subjects in training.

:func:`augmentation` builds the preset for a task and strength; :class:`RandomBiasFieldSeparable`
and :class:`RandomElasticDeformationCoarse` are TorchIO's bias-field and elastic transforms
(same parameters, same random draws) computed faster.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchio as tio

TASKS = ("segmentation", "detection", "classification")
STRENGTHS = ("none", "light", "default", "strong")


# --------------------------------------------------------------------------- faster smooth fields
class RandomBiasFieldSeparable(tio.RandomBiasField):
    """``tio.RandomBiasField`` with the same parameters and the same field, computed fast.

    The field ``exp(Σ c_ijk x^i y^j z^k)`` (x, y, z in [-1, 1] across the volume) is a sum
    of separable terms: three small matrix products instead of evaluating 20 monomials at
    every voxel (``benchmarks/transform_speed.py`` times both).
    """

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        for image in self.get_images(subject):
            coefficients = self.get_params(self.order, self.coefficients_range)
            field = separable_bias_field(image.spatial_shape, self.order, coefficients)
            image.set_data(image.data * field)
        return subject


def separable_bias_field(shape: Sequence[int], order: int, coefficients: Sequence[float]) -> torch.Tensor:
    """``tio.BiasField.generate_bias_field`` (same coefficient order), ``(X, Y, Z)`` float32."""
    axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
            for n in shape]
    powers = [a[:, None] ** torch.arange(order + 1, dtype=torch.float64) for a in axes]  # (n, order+1)
    c = torch.zeros((order + 1,) * 3, dtype=torch.float64)
    index = 0
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for k in range(order + 1 - i - j):
                c[i, j, k] = coefficients[index]
                index += 1
    field = torch.einsum("ai,ijk->ajk", powers[0], c)
    field = torch.einsum("bj,ajk->abk", powers[1], field)
    field = field @ powers[2].T  # (X, Y, order+1) @ (order+1, Z)
    return torch.exp(field).float()


class RandomElasticDeformationCoarse(tio.RandomElasticDeformation):
    """``tio.RandomElasticDeformation`` (same random B-spline) with the displacement evaluated
    once on a grid ``field_step_vox`` voxels apart and interpolated linearly.

    TorchIO evaluates the cubic B-spline at every voxel of every image; the displacement is
    smooth on the scale of the knot spacing (the field of view / (control points − 3), ≈ 50 mm
    for 7 points over a brain), so a grid of 1/8 of that spacing (``field_step_vox=None``)
    reproduces it closely while resampling much faster (``benchmarks/transform_speed.py``
    times both).
    """

    def __init__(self, *args, field_step_vox: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.field_step_vox = field_step_vox

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        import SimpleITK as sitk
        from torchio.data.io import nib_to_sitk, sitk_to_nib
        from torchio.transforms.augmentation.spatial.random_elastic_deformation import (
            ElasticDeformation,
        )

        subject.check_consistent_spatial_shape()
        control_points = self.get_params(self.num_control_points, self.max_displacement,
                                          self.num_locked_borders)
        first = subject.get_first_image()
        grid = nib_to_sitk(first.data[:1], first.affine, force_3d=True)
        bspline = ElasticDeformation(control_points, self.max_displacement).get_bspline_transform(grid)
        knots_vox = min(n / (c - 3) for n, c in zip(grid.GetSize(), self.num_control_points))
        step = self.field_step_vox or max(1, int(knots_vox // 8))
        size = [int(np.ceil((n - 1) / step)) + 1 for n in grid.GetSize()]
        spacing = [s * step for s in grid.GetSpacing()]
        field = sitk.TransformToDisplacementField(bspline, sitk.sitkVectorFloat64, size, grid.GetOrigin(),
                                                  spacing, grid.GetDirection())
        displacement = sitk.DisplacementFieldTransform(field)  # linear interpolation of the field
        for image in self.get_images(subject):
            is_label = not isinstance(image, tio.ScalarImage)
            interpolator = self.get_sitk_interpolator(self.label_interpolation if is_label
                                                      else self.image_interpolation)
            channels = []
            for component in image.data:
                floating = nib_to_sitk(component[None], image.affine, force_3d=True)
                resampled = sitk.Resample(floating, floating, displacement, interpolator,
                                          component.min().item(), sitk.sitkFloat32)
                channels.append(torch.as_tensor(sitk_to_nib(resampled)[0]))
            image.set_data(torch.cat(channels).to(image.data.dtype))
        return subject


# --------------------------------------------------------------------------- augmentation
#: Magnitudes of the default preset; ``light`` scales them by 0.5, ``strong`` by 1.5.
#: Angles in degrees, scales as fractions (0.1 = ±10 %), displacements in mm, noise std in
#: z-score units, gamma as log(γ).
_SCALE = {"light": 0.5, "default": 1.0, "strong": 1.5}


def augmentation(task: str, strength: str = "default") -> tio.Compose:
    """Random augmentation preset for a task, applied to whole preprocessed subjects.

    - ``segmentation``: L-R flip (p 0.5), RandomAffine (±10° rotation, ±10 % scale,
      p 0.5), RandomElasticDeformation (7 control points/axis, ≤ 5 mm displacement, p 0.2),
      RandomBiasField (coefficients 0.3, p 0.3), RandomMotion (≤ 5°, ≤ 5 mm, p 0.1),
      RandomGhosting (p 0.1), RandomGamma (log γ ±0.3, p 0.3), RandomNoise (std ≤ 0.1, p 0.25).
    - ``detection``: as segmentation without the elastic deformation (keeps small lesions and
      their boxes intact).
    - ``classification``: milder — L-R flip, RandomAffine (±5°, ±5 %, p 0.5), bias field,
      gamma and noise; no elastic/motion/ghosting (atrophy patterns are subtle).

    Elastic deformation and bias field use :class:`RandomElasticDeformationCoarse` and
    :class:`RandomBiasFieldSeparable`: TorchIO's transforms, computed faster.

    ``strength``: ``"none"`` (identity), ``"light"`` (magnitudes × 0.5, no elastic, motion or
    ghosting), ``"default"``, ``"strong"`` (magnitudes × 1.5, probabilities × 1.5, capped at 1).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if strength not in STRENGTHS:
        raise ValueError(f"unknown augmentation strength {strength!r}; expected one of {STRENGTHS}")
    if strength == "none":
        return tio.Compose([])
    s = _SCALE[strength]

    def p(value: float) -> float:
        return min(1.0, value * (1.5 if strength == "strong" else 1.0))

    mild = task == "classification"
    degrees, scales = (5.0, 0.05) if mild else (10.0, 0.1)
    steps: list[tio.Transform] = [
        tio.RandomFlip(axes=("LR",), flip_probability=0.5),
        tio.RandomAffine(scales=scales * s, degrees=degrees * s, default_pad_value="minimum",
                         p=p(0.5)),
    ]
    if task == "segmentation" and strength != "light":
        steps.append(RandomElasticDeformationCoarse(num_control_points=7, max_displacement=5.0 * s,
                                                    p=p(0.2)))
    steps.append(RandomBiasFieldSeparable(coefficients=0.3 * s, p=p(0.3)))
    if not mild and strength != "light":
        steps += [
            tio.RandomMotion(degrees=5.0 * s, translation=5.0 * s, num_transforms=2, p=p(0.1)),
            tio.RandomGhosting(num_ghosts=(2, 6), intensity=(0.2, 0.5 * s), p=p(0.1)),
        ]
    steps += [
        tio.RandomGamma(log_gamma=0.3 * s, p=p(0.3)),
        tio.RandomNoise(std=(0.0, 0.1 * s), p=p(0.25)),
    ]
    return tio.Compose(steps)
