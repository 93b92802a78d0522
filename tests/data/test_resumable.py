"""Exact resume of the data streams: a queue, sampler or loader rebuilt from scratch and given
the state of one interrupted at any point hands out exactly what the original goes on to hand
out; random states survive a weights-only checkpoint."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
import torchio as tio
from torch.utils.data import RandomSampler

from cogimg.data.resumable import ResumableLoader, per_rank, rng_states, set_rng_states, this_rank
from cogimg.data.sampling import SeededSampler, SeededSubjectsDataset, SubjectCollate
from cogimg.data.streams import PatchStream
from tests.data.test_datamodules import build_tree, patch_dm, volume_dm
from tests.data.test_sampling import _queue


def _key(patch: tio.Subject) -> tuple:
    return patch["subject_id"], tuple(patch[tio.LOCATION].tolist()), float(patch.img.data.sum())


def _roundtrip(state):
    """``state`` through a checkpoint file read with ``weights_only=True``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("stop", [0, 4, 18, 25, 36])  # start, mid-refill, pass end, mid-pass 2
def test_queue_restored_mid_stream_continues_exactly(stop):
    original = _queue(0, seed=2)
    assert len(original) == 18 and original.max_length == 6  # 5 rounded up to 2 subjects × 3
    before = [_key(original[i]) for i in range(stop)]
    state = _roundtrip(original.state_dict())
    after = [_key(original[i]) for i in range(30)]
    restored = _queue(0, seed=2)
    restored.load_state_dict(state)
    assert [_key(restored[i]) for i in range(30)] == after
    fresh = _queue(0, seed=2)
    assert [_key(fresh[i]) for i in range(stop + 30)] == before + after  # one stream
    with pytest.raises(RuntimeError, match="before drawing"):
        fresh.load_state_dict(state)


def test_queue_with_workers_restores_the_same_stream():
    original = _queue(2, seed=3)
    [original[i] for i in range(7)]
    state = original.state_dict()
    after = [_key(original[i]) for i in range(20)]
    restored = _queue(0, seed=3)  # the worker count does not change the stream
    restored.load_state_dict(state)
    assert [_key(restored[i]) for i in range(20)] == after


def _sampler(seed=0, n=7):
    generator = torch.Generator().manual_seed(seed)
    return SeededSampler(RandomSampler(range(n), generator=generator), generator)


def test_sampler_resumes_its_pass_or_starts_the_next():
    original = _sampler()
    first = list(original)
    second = iter(original)
    head = [next(second) for _ in range(3)]
    state = _roundtrip(original.state_dict())
    tail = list(second)
    third = list(original)
    assert head + tail != first and sorted(i for i, _ in head + tail) == list(range(7))

    mid = _sampler(seed=9)  # another seed: everything must come from the state
    mid.load_state_dict(state)
    mid.resume_at(3)
    assert list(mid) == tail and list(mid) == third

    ended = _sampler()
    list(ended)
    state = _roundtrip(ended.state_dict())  # at a pass end
    nxt = _sampler(seed=9)  # without resume_at: the next pass
    nxt.load_state_dict(state)
    assert list(nxt) == list(ended)
    with pytest.raises(RuntimeError, match="no pass was in progress"):
        _sampler().resume_at(2)


def _patch_loader(seed=1, batch_size=4):
    queue = _queue(0, seed=seed)
    return ResumableLoader(PatchStream(queue), batch_size=batch_size,
                           collate_fn=SubjectCollate(["img"], label_key="lab"))


def _ids(batches):
    return [(tuple(b["subject_id"]), b["location"].tolist()) for b in batches]


def test_patch_loader_resumes_mid_epoch_at_the_right_batch():
    original = _patch_loader()
    assert len(original) == 5  # 18 patches in batches of 4
    epoch = iter(original)
    done = [next(epoch) for _ in range(2)]
    loader_state, stream_state = original.state_dict(), original.dataset.state_dict()
    assert loader_state == {"batches": 2}
    rest = list(epoch)
    nxt = list(original)
    assert len(done) + len(rest) == 5

    resumed = _patch_loader()
    resumed.dataset.load_state_dict(stream_state)  # the datamodule's part
    resumed.load_state_dict(loader_state)  # Lightning's part, mid-epoch only
    assert _ids(resumed) == _ids(rest)  # the rest of the interrupted epoch …
    assert _ids(resumed) == _ids(nxt)  # … then whole epochs as before

    boundary = _patch_loader()  # at an epoch end Lightning gives no position
    boundary.dataset.load_state_dict(original.dataset.state_dict())
    boundary.load_state_dict(original.state_dict())  # batches == len: a new pass
    continued = list(original)
    assert _ids(boundary) == _ids(continued)


def test_volume_loader_resumes_mid_epoch_without_loading_the_skipped_items():
    subjects = [tio.Subject(img=tio.ScalarImage(tensor=torch.full((1, 2, 2, 2), float(i))),
                            subject_id=f"s{i}") for i in range(10)]
    loaded = []

    class Counting(SeededSubjectsDataset):
        def _load_and_transform(self, index):
            loaded.append(int(index))
            return super()._load_and_transform(index)

    def loader(seed=0):
        generator = torch.Generator().manual_seed(seed)
        dataset = Counting(subjects, transform=tio.RandomNoise(std=(0, 1)))
        return ResumableLoader(dataset, batch_size=3, generator=generator,
                               sampler=SeededSampler(RandomSampler(dataset, generator=generator),
                                                     generator),
                               collate_fn=SubjectCollate(["img"]))

    original = loader()
    list(original)
    epoch = iter(original)
    next(epoch)
    states = original.sampler.state_dict(), original.state_dict()
    rest = [b["image"] for b in epoch]
    resumed = loader(seed=5)
    resumed.sampler.load_state_dict(states[0])
    resumed.load_state_dict(states[1])
    loaded.clear()
    again = [b["image"] for b in resumed]
    assert len(loaded) == 7  # the 3 items of the first batch are skipped, not loaded
    assert all(torch.equal(a, b) for a, b in zip(again, rest, strict=True))


def test_random_states_roundtrip_through_a_weights_only_checkpoint():
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    np.random.normal()  # a cached Gaussian is part of NumPy's state
    state = _roundtrip(rng_states())
    expected = torch.rand(3), np.random.normal(size=3), random.random()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    set_rng_states(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.normal(size=3), expected[1])
    assert random.random() == expected[2]


def test_per_rank_states_in_one_process():
    assert per_rank({"a": 1}) == [{"a": 1}]
    assert this_rank([{"a": 1}]) == {"a": 1} and this_rank(None) is None
    with pytest.warns(UserWarning, match="of 2 process"):
        assert this_rank([{"a": 1}, {"a": 2}]) is None


# --------------------------------------------------------------------------- datamodules
def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple:
    """(BIDS tree, cache folder) shared by the datamodule tests."""
    return build_tree(tmp_path_factory.mktemp("bids")), tmp_path_factory.mktemp("cache")


def _batches(items) -> list:
    """Batches of a loader, or of a CombinedLoader (its ``(batch, batch_idx, loader_idx)``)."""
    return [item[0] if isinstance(item, tuple) else item for item in items]


def _remaining(iterator) -> list:
    out = []
    while True:
        try:
            out.append(next(iterator))
        except StopIteration:
            return out


def _datamodule(kind, tree, cache_dir):
    if kind == "volume":
        return volume_dm(tree, cache_dir, augmentation="light")
    dm = patch_dm(tree, cache_dir, label_fraction=0.5)  # + the cycled unlabelled stream
    dm.request_streams({"unlabelled": None})
    return dm


@pytest.mark.parametrize("kind", ["volume", "patch_with_stream"])
@pytest.mark.parametrize("mid_epoch", [True, False])
def test_datamodule_state_resumes_the_training_streams(cohort, kind, mid_epoch):
    tree, cache_dir = cohort
    original = _datamodule(kind, tree, cache_dir)
    loader = original.train_dataloader()
    assert len(list(loader)) >= 2  # epoch 0
    if mid_epoch:
        epoch = iter(loader)  # (a CombinedLoader is its own iterator: list() would restart it)
        next(epoch)
    state = _roundtrip(original.state_dict())
    assert state["preset"] == original.preset.name and len(state["training_streams"]) == 1
    rest = _batches(_remaining(epoch) if mid_epoch else list(loader))
    after = _batches(list(loader))

    resumed = _datamodule(kind, tree, cache_dir)  # rebuilt from the config, then restored
    resumed.load_state_dict(state)
    again = resumed.train_dataloader()
    assert _same(_batches(list(again)), rest)  # the rest of the interrupted epoch (or the next)
    assert _same(_batches(list(again)), after)
    fresh = _datamodule(kind, tree, cache_dir).train_dataloader()
    assert not _same(_batches(list(fresh)), rest)  # restoring nothing would differ
