"""Preprocessed-volume cache (cogimg.data.cache)."""

from __future__ import annotations

import json
import math
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio

from cogimg.data.cache import CacheError, VolumeCache, invert_to_native, read_meta
from cogimg.data.transforms import PreprocessingConfig

#: LAS, 1.5 × 1.5 × 3 mm native grid; the cache resamples it to 2 mm RAS.
NATIVE_AFFINE = np.array([[-1.5, 0, 0, 45.0], [0, 1.5, 0, -50.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])
SHAPE = (60, 66, 24)
CONFIG = PreprocessingConfig(spacing_mm=2.0, foreground="nonzero")


def ellipsoid(centre, radii, shape=SHAPE) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1


def write_subject(folder, name="sub-01", seed=0) -> tio.Subject:
    """dwi + adc + lesion mask NIfTIs on the native grid, as the BIDS loader would give them."""
    rng = np.random.default_rng(seed)
    brain = ellipsoid([29.5, 32.5, 11.5], [24, 26, 10])
    lesion = ellipsoid([22, 30, 12], [7, 7, 3.5])  # ≈ 10 × 10 × 10 mm blob
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, values in {"dwi": brain * rng.normal(100, 10, SHAPE) * (1 + lesion),
                        "adc": brain * rng.normal(800, 50, SHAPE) * (1 - 0.5 * lesion),
                        "msk": lesion}.items():
        files[key] = folder / f"{name}_{key}.nii.gz"
        dtype = np.uint8 if key == "msk" else np.float32
        nib.save(nib.Nifti1Image(values.astype(dtype), NATIVE_AFFINE), files[key])
    return tio.Subject(dwi=tio.ScalarImage(files["dwi"]), adc=tio.ScalarImage(files["adc"]),
                       msk=tio.LabelMap(files["msk"]), subject_id=name, participant_id=name,
                       diagnosis="stroke", site="A", age=61.0, NIHSS=math.nan,
                       modalities=("dwi", "adc"), files={"boxes": ""})


@pytest.fixture
def subject(tmp_path):
    return write_subject(tmp_path / "raw")


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the (expensive) preprocessing."""
    calls = []
    original = VolumeCache.preprocess

    def preprocess(self, subject):
        calls.append(subject["subject_id"])
        return original(self, subject)

    monkeypatch.setattr(VolumeCache, "preprocess", preprocess)
    return calls


def test_miss_computes_once_then_hits(tmp_path, subject, counted):
    cache = VolumeCache(tmp_path / "cache", CONFIG)
    first = cache.get(subject)
    second = cache.get(subject)
    assert counted == ["sub-01"] and (cache.hits, cache.misses) == (1, 1)
    assert first["cache_entry"] == second["cache_entry"]
    entry = cache.dir / "sub-01"
    assert sorted(p.name for p in entry.iterdir()) == ["adc.npy", "dwi.npy", "meta.json", "msk.npy"]
    # A fresh cache object on the same folder hits too (nothing lives only in memory).
    VolumeCache(tmp_path / "cache", CONFIG).get(subject)
    assert counted == ["sub-01"]


def test_a_miss_leaves_the_global_rng_alone(tmp_path, subject):
    # TorchIO draws from torch's generator at every transform call: a run's random stream
    # must not depend on whether the cache was warm.
    state = torch.random.get_rng_state()
    VolumeCache(tmp_path / "cache", CONFIG).get(subject)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_cached_arrays_are_memory_mappable_float16_and_uint8(tmp_path, subject):
    cached = VolumeCache(tmp_path, CONFIG).get(subject)
    entry = cached["cache_entry"]
    dwi = np.load(os.path.join(entry, "dwi.npy"), mmap_mode="r")
    msk = np.load(os.path.join(entry, "msk.npy"), mmap_mode="r")
    assert isinstance(dwi, np.memmap) and dwi.dtype == np.float16 and msk.dtype == np.uint8
    assert dwi.shape == (1, 45, 49, 36)  # floor(90 × 99 × 72 mm / 2 mm)
    # Loaded for TorchIO as float32 (SimpleITK and the models want it) on the 2 mm RAS grid.
    assert cached.dwi.data.dtype == torch.float32 and cached.msk.data.dtype == torch.uint8
    assert cached.dwi.orientation == ("R", "A", "S")
    np.testing.assert_allclose(cached.dwi.spacing, (2.0, 2.0, 2.0))


def test_float16_round_trip_within_precision(tmp_path, subject):
    cache = VolumeCache(tmp_path, CONFIG)
    reference = cache.preprocess(subject).dwi.data.numpy()
    cached = cache.get(subject).dwi.data.numpy()
    # float16 keeps 11 significant bits: relative error ≤ 2**-11 (plus subnormals near 0).
    np.testing.assert_allclose(cached, reference, rtol=2.0**-11, atol=2.0**-14)


def test_values_beyond_float16_are_refused_not_stored_as_inf(tmp_path, subject):
    subject.dwi.set_data(subject.dwi.data * 1e4)  # raw intensities up to ~2e6
    with pytest.raises(CacheError, match="exceeds float16"):
        VolumeCache(tmp_path, PreprocessingConfig(normalization="none")).get(subject)
    assert not list((tmp_path).rglob("meta.json"))


def test_config_change_gives_new_entry(tmp_path, subject, counted):
    a = VolumeCache(tmp_path, CONFIG)
    b = VolumeCache(tmp_path, PreprocessingConfig(spacing_mm=3.0, foreground="nonzero"))
    assert a.dir != b.dir
    a.get(subject)
    cached = b.get(subject)
    assert len(counted) == 2 and cached.dwi.spacing == (3.0, 3.0, 3.0)
    assert json.loads((b.dir / "config.json").read_text(encoding="utf-8"))["spacing_mm"] == [3.0, 3.0, 3.0]


def test_half_written_entries_are_ignored_and_recomputed(tmp_path, subject, counted):
    cache = VolumeCache(tmp_path, CONFIG)
    cache.get(subject)
    entry = cache.dir / "sub-01"
    # Crash 1: a writer died before publishing — its temp folder is never read.
    leftover = cache.dir / ".tmp-sub-01-deadbeef"
    shutil.copytree(entry, leftover)
    (leftover / "dwi.npy").write_bytes(b"garbage")
    # Crash 2: an entry without its completeness marker (e.g. copied by hand, interrupted).
    (entry / "meta.json").unlink()
    assert read_meta(entry) is None
    cached = cache.get(subject)
    assert counted == ["sub-01", "sub-01"]
    assert read_meta(entry) is not None and np.isfinite(cached.dwi.data.numpy()).all()
    os.utime(leftover, (0, 0))  # old enough to belong to no running writer
    assert cache.remove_leftovers() == [leftover] and not leftover.exists()


def test_changed_source_file_is_recomputed(tmp_path, subject, counted):
    cache = VolumeCache(tmp_path, CONFIG)
    before = cache.get(subject).dwi.data.clone()
    write_subject(tmp_path / "raw", seed=1)  # same paths, new content
    stat = os.stat(subject.dwi.path)
    os.utime(subject.dwi.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = cache.get(subject).dwi.data
    assert len(counted) == 2 and not torch.equal(before, after)


def test_concurrent_writer_that_publishes_first_wins(tmp_path, subject, monkeypatch):
    """Another worker publishes the same entry while we compute: we keep theirs, no error."""
    cache = VolumeCache(tmp_path, CONFIG)
    other = VolumeCache(tmp_path, CONFIG)
    original = VolumeCache.preprocess

    def racing(self, s):
        if self is cache:
            other.get(s)  # the rival finishes first
        return original(self, s)

    monkeypatch.setattr(VolumeCache, "preprocess", racing)
    cached = cache.get(subject)
    assert read_meta(cached["cache_entry"]) is not None
    assert not list(cache.dir.glob(".tmp-*"))


def test_warm_with_worker_processes(tmp_path):
    subjects = [write_subject(tmp_path / "raw", f"sub-{i:02d}", seed=i) for i in range(3)]
    cache = VolumeCache(tmp_path / "cache", CONFIG)
    cached = cache.warm(subjects, workers=2)
    assert [s["subject_id"] for s in cached] == ["sub-00", "sub-01", "sub-02"]
    assert cache.hits == 3 and cache.misses == 0  # computed in the workers, read here
    with pytest.raises(CacheError, match="duplicate subject_id"):
        cache.warm([subjects[0], subjects[0]])


def test_metadata_round_trips(tmp_path, subject):
    cached = VolumeCache(tmp_path, CONFIG).get(subject)
    assert cached["diagnosis"] == "stroke" and cached["age"] == 61.0
    assert math.isnan(cached["NIHSS"]) and cached["modalities"] == ["dwi", "adc"]
    assert cached["files"] == {"boxes": ""}
    meta = read_meta(cached["cache_entry"])
    assert meta["reference"] == "dwi" and meta["config_hash"] == CONFIG.config_hash()
    assert meta["images"]["msk"]["native"]["shape"] == list(SHAPE)


def test_unsafe_subject_id_is_refused(tmp_path, subject):
    subject["subject_id"] = "../escape"
    with pytest.raises(CacheError, match="cannot name a cache entry"):
        VolumeCache(tmp_path, CONFIG).get(subject)
    del subject["subject_id"]
    with pytest.raises(CacheError, match="no 'subject_id'"):
        VolumeCache(tmp_path, CONFIG).get(subject)


def test_invert_label_to_native_grid(tmp_path, subject):
    cached = VolumeCache(tmp_path, CONFIG).get(subject)
    meta = read_meta(cached["cache_entry"])
    native = invert_to_native(cached.msk.data, meta, is_label=True)
    assert native.shape == SHAPE
    np.testing.assert_allclose(native.affine, NATIVE_AFFINE)
    assert native.get_data_dtype() == np.uint8
    original = np.asarray(nib.load(subject.msk.path).dataobj) > 0
    restored = np.asarray(native.dataobj) > 0
    dice = 2 * (original & restored).sum() / (original.sum() + restored.sum())
    assert dice > 0.9
    # The native header travels with it (e.g. units), the entry folder works as `meta` too.
    again = invert_to_native(cached.msk.data.numpy()[0], cached["cache_entry"], is_label=True)
    assert again.header.get_xyzt_units() == nib.load(subject.msk.path).header.get_xyzt_units()


def test_invert_probabilities_linear_and_multichannel(tmp_path, subject):
    cached = VolumeCache(tmp_path, CONFIG).get(subject)
    meta = read_meta(cached["cache_entry"])
    lesion = cached.msk.data.float()
    probs = torch.cat([1 - lesion, lesion])  # (2, X, Y, Z) softmax-like
    native = invert_to_native(probs, meta, is_label=False)
    assert native.shape == (*SHAPE, 2) and native.get_data_dtype() == np.float32
    data = np.asarray(native.dataobj)
    inside = ellipsoid([29.5, 32.5, 11.5], [22, 24, 8])  # away from the field-of-view edge
    np.testing.assert_allclose(data[inside].sum(-1), 1.0, atol=1e-5)
    assert 0 < data[..., 1].max() <= 1 and len(np.unique(data[..., 1])) > 2  # interpolated
    with pytest.raises(ValueError, match="not on the preprocessed grid"):
        invert_to_native(np.zeros((10, 10, 10)), meta, is_label=True)
    with pytest.raises(KeyError, match="no native grid for 'FLAIR'"):
        invert_to_native(lesion, meta, is_label=True, modality="FLAIR")
