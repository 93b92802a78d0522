"""Small synthetic subjects shared by the data tests (``from tests.data.helpers import …``)."""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

#: LAS, anisotropic 2 × 2 × 4 mm, 40 × 44 × 16 voxels (80 × 88 × 64 mm).
LAS_AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -44.0], [0, 0, 4.0, -32.0], [0, 0, 0, 1]])
SHAPE = (40, 44, 16)


def ellipsoid(shape, centre, radii) -> np.ndarray:
    """Boolean mask (X, Y, Z) of the ellipsoid with ``centre`` and ``radii`` in voxels."""
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1


def make_subject(seed: int = 0, affine: np.ndarray = LAS_AFFINE, shape=SHAPE) -> tio.Subject:
    """A ``dwi`` image (noisy ellipsoidal brain, mean 100) and its ``brain`` mask, ``sub-SEED``."""
    rng = np.random.default_rng(seed)
    brain = ellipsoid(shape, [(n - 1) / 2 for n in shape], [n * 0.4 for n in shape])
    dwi = np.where(brain, rng.normal(100.0, 15.0, shape), 0.0).astype(np.float32)
    mask = brain.astype(np.uint8)
    return tio.Subject(
        dwi=tio.ScalarImage(tensor=torch.from_numpy(dwi[None]), affine=affine),
        brain=tio.LabelMap(tensor=torch.from_numpy(mask[None]), affine=affine),
        subject_id=f"sub-{seed:02d}",
    )
