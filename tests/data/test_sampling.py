"""Patch sampling (cogimg.data.sampling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from torch.utils.data.distributed import DistributedSampler

from cogimg.data.sampling import LabelPatchSampler, SeededQueue, SeededSubjectsDataset


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


def test_balance_components_centres_each_lesion_equally_often_whatever_its_size():
    label = torch.zeros(1, 40, 40, 40, dtype=torch.uint8)
    label[0, 8:18, 8:18, 8:18] = 1  # lesion A: 1000 voxels
    label[0, 25:27, 25:27, 25:27] = 1  # lesion B: 8 voxels
    label[0, 30, 10, 10] = label[0, 31, 11, 11] = 1  # lesion C: 2 voxels touching at a corner
    subject = tio.Subject(img=tio.ScalarImage(tensor=torch.randn(1, 40, 40, 40), affine=np.eye(4)),
                          lab=tio.LabelMap(tensor=label, affine=np.eye(4)), subject_id="x")

    def lesion_shares(balance, seed=0):
        sampler = LabelPatchSampler((12, 12, 12), "lab", {0: 0.25, 1: 0.75},
                                    balance_components=balance)
        centres = _starts(sampler, subject, 3000, seed) + 6  # the drawn voxel is mid-patch
        lesion = np.array([int(label[(0, *c)]) for c in centres.tolist()])
        which = np.select([centres[:, 0] < 20, centres[:, 0] < 29], [0, 1], 2)[lesion == 1]
        return lesion.mean(), np.bincount(which, minlength=3) / len(which), centres

    lesion_share, shares, centres = lesion_shares(True)
    assert abs(lesion_share - 0.75) < 0.03  # the label probabilities are kept
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.04)  # C is one 26-connected lesion
    assert torch.equal(centres, lesion_shares(True)[2])  # seeded: reproducible
    _, voxel_shares, _ = lesion_shares(False)
    assert voxel_shares[0] > 0.97  # per voxel, the large lesion takes nearly every patch


def test_balance_components_needs_a_one_channel_label_map():
    subject = _one_voxel_subject((20, 20, 20))
    sampler = LabelPatchSampler((12, 12, 12), "lab", None, balance_components=True)
    with pytest.raises(ValueError, match="balance_components need label_probabilities"):
        next(iter(sampler(subject, 1)))


def _subjects(n=6, size=20):
    out = []
    for i in range(n):
        label = torch.zeros(1, size, size, size, dtype=torch.uint8)
        label[0, 4 + i:8 + i, 6:10, 5:9] = 1
        image = torch.arange(size**3, dtype=torch.float32).reshape(1, size, size, size) + 1000 * i
        out.append(tio.Subject(img=tio.ScalarImage(tensor=image, affine=np.eye(4)),
                               lab=tio.LabelMap(tensor=label, affine=np.eye(4)), subject_id=f"s{i}"))
    return out


def _queue(num_workers, seed=0, subject_sampler=None, subjects=None):
    dataset = SeededSubjectsDataset(subjects or _subjects(), transform=tio.RandomNoise(std=(0, 1)))
    sampler = LabelPatchSampler((8, 8, 8), "lab", {0: 0.5, 1: 0.5})
    return SeededQueue(dataset, 5, 3, sampler, subject_sampler=subject_sampler,
                       num_workers=num_workers, seed=seed)


def _drain(queue, epochs=2):
    return [queue[i] for i in range(epochs * len(queue))]


def test_queue_patches_are_the_same_for_any_worker_count_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    runs = {workers: _drain(_queue(workers, seed=4)) for workers in (0, 2)}
    assert torch.equal(torch.get_rng_state(), state)
    serial, parallel = runs[0], runs[2]
    assert len(serial) == len(parallel) == 2 * 6 * 3  # two epochs of 6 subjects × 3 patches
    for a, b in zip(serial, parallel):
        assert a["subject_id"] == b["subject_id"]
        assert torch.equal(a[tio.LOCATION], b[tio.LOCATION])
        assert torch.equal(a.img.data, b.img.data)  # same augmentation (noise) too
    ids = [p["subject_id"] for p in serial]
    assert sorted(set(ids[:18])) == [f"s{i}" for i in range(6)]  # one epoch visits every subject
    assert all(ids.count(f"s{i}") == 6 for i in range(6))
    other = _drain(_queue(0, seed=5))
    assert [p["subject_id"] for p in other] != ids  # the seed matters


def test_label_weighted_patches_through_the_queue():
    patches = _drain(_queue(0, seed=1), epochs=20)
    centre_is_lesion = np.array([int(p.lab.data[0, 4, 4, 4]) for p in patches])
    assert abs(centre_is_lesion.mean() - 0.5) < 0.1  # label_probabilities {0: 0.5, 1: 0.5}


def test_distributed_subject_sampler_gives_each_rank_its_own_subjects():
    subjects = _subjects()
    seen = []  # per rank: the subject ids of epoch 0 and of epoch 1
    for rank in (0, 1):
        order = DistributedSampler(range(len(subjects)), num_replicas=2, rank=rank, seed=3)
        queue = _queue(0, seed=3, subject_sampler=order, subjects=subjects)
        assert len(queue) == 3 * 3  # half of the 6 subjects, 3 patches each
        ids = [p["subject_id"] for p in _drain(queue, epochs=2)]
        seen.append((set(ids[:9]), set(ids[9:])))
        for epoch in (0, 1):  # the queue moved the sampler to epoch 1 for the second pass
            order.set_epoch(epoch)
            assert seen[rank][epoch] == {f"s{i}" for i in order}
    for epoch in (0, 1):
        assert seen[0][epoch].isdisjoint(seen[1][epoch])
        assert seen[0][epoch] | seen[1][epoch] == {f"s{i}" for i in range(6)}


def test_queue_needs_a_seeded_dataset():
    with pytest.raises(TypeError, match="needs a SeededSubjectsDataset.*got SubjectsDataset"):
        SeededQueue(tio.SubjectsDataset(_subjects()), 5, 3, tio.UniformSampler(8))


def test_queue_length_needs_equal_patches_per_subject():
    subjects = _subjects()
    subjects[2]["num_samples"] = 7
    with pytest.raises(ValueError, match="same number of patches from every subject"):
        len(_queue(0, subjects=subjects))
