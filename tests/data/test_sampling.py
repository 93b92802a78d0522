"""Patch sampling (cogimg.data.sampling)."""

from __future__ import annotations

import numpy as np
import pytest
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


def _one_voxel_subject(voxel, size=40):
    label = torch.zeros(1, size, size, size, dtype=torch.uint8)
    label[(0, *voxel)] = 1
    return tio.Subject(img=tio.ScalarImage(tensor=torch.randn(1, size, size, size), affine=np.eye(4)),
                       lab=tio.LabelMap(tensor=label, affine=np.eye(4)), subject_id="x")


def _starts(sampler, subject, n, seed):
    torch.manual_seed(seed)
    return torch.stack([p[tio.LOCATION][:3] for p in sampler(subject, n)])


def test_centre_jitter_shifts_lesion_centred_patches_within_bounds():
    jitter, size = 4, 12
    sampler = LabelPatchSampler((size,) * 3, "lab", {0: 0.0, 1: 1.0}, centre_jitter=jitter)
    subject = _one_voxel_subject((20, 20, 20))
    starts = _starts(sampler, subject, 600, seed=0)
    offsets = starts - (20 - size // 2)  # without jitter every patch starts at 14 (voxel mid-patch)
    assert offsets.abs().max() <= jitter
    for axis in range(3):  # every offset in [-j, j] occurs on every axis
        assert set(offsets[:, axis].tolist()) == set(range(-jitter, jitter + 1))
    inside = (starts <= 20) & (20 < starts + size)  # the drawn voxel is in every patch
    assert inside.all()
    assert torch.equal(starts, _starts(sampler, subject, 600, seed=0))  # seeded: reproducible
    assert not torch.equal(starts, _starts(sampler, subject, 600, seed=1))
    unjittered = LabelPatchSampler((size,) * 3, "lab", {0: 0.0, 1: 1.0})
    assert (_starts(unjittered, subject, 20, seed=0) == 20 - size // 2).all()


def test_centre_jitter_is_clipped_inside_the_volume():
    jitter, size = 5, 12
    sampler = LabelPatchSampler((size,) * 3, "lab", {0: 0.0, 1: 1.0}, centre_jitter=jitter)
    for voxel in [(6, 6, 6), (33, 33, 33), (6, 33, 20)]:  # the outermost voxels a patch can centre
        starts = _starts(sampler, _one_voxel_subject(voxel), 300, seed=0)
        assert starts.min() >= 0 and (starts + size).max() <= 40
        voxel_t = torch.tensor(voxel)
        assert ((starts <= voxel_t) & (voxel_t < starts + size)).all()
        assert (starts - (voxel_t - size // 2)).abs().max() <= jitter


def test_centre_jitter_must_keep_the_voxel_in_the_patch():
    with pytest.raises(ValueError, match=r"centre_jitter=6 must be in \[0, 5\]"):
        LabelPatchSampler((12, 16, 16), "lab", {0: 0.5, 1: 0.5}, centre_jitter=6)
    with pytest.raises(ValueError, match="centre_jitter=-1"):
        LabelPatchSampler((12, 12, 12), "lab", {0: 0.5, 1: 0.5}, centre_jitter=-1)
