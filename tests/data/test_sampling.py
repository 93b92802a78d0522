"""Patch sampling (cogimg.data.sampling)."""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

from cogimg.data.sampling import LabelPatchSampler


def test_label_patch_sampler_matches_torchio_label_sampler():
    label = torch.zeros(1, 40, 40, 40, dtype=torch.uint8)
    label[0, 5:9, 30:34, 10:13] = 1  # rare, near the border: only part of it can be a centre
    label[0, 15:35, 5:35, 5:35] = 2  # common
    image = torch.randn(2, 40, 40, 40)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    subject = tio.Subject(img=tio.ScalarImage(tensor=image, affine=affine),
                          lab=tio.LabelMap(tensor=label, affine=affine), subject_id="x")
    probabilities = {0: 0.2, 1: 0.5, 2: 0.3}
    shares = []
    for cls in (tio.LabelSampler, LabelPatchSampler):
        torch.manual_seed(0)
        patches = list(cls((12, 12, 12), "lab", probabilities)(subject, 2000))
        centres = [int(p.lab.data[0, 6, 6, 6]) for p in patches]
        shares.append(np.bincount(centres, minlength=3) / len(centres))
        locations = torch.stack([p[tio.LOCATION] for p in patches])
        assert locations[:, :3].min() >= 0 and locations[:, 3:].max() <= 40
    np.testing.assert_allclose(shares[1], shares[0], atol=0.04)
    np.testing.assert_allclose(shares[1], [0.2, 0.5, 0.3], atol=0.04)
    patch = patches[0]  # cut by slicing: same voxels, affine moved to the patch origin
    i, j, k = patch[tio.LOCATION][:3].tolist()
    assert torch.equal(patch.img.data, image[:, i:i + 12, j:j + 12, k:k + 12])
    np.testing.assert_allclose(patch.img.affine[:3, 3], [2 * i, 2 * j, 2 * k])
