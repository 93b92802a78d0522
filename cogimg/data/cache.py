"""Cache of preprocessed volumes: computed once per (subject, preprocessing config).

Layout (one directory per config hash, one entry per subject)::

    <root>/<config_hash>/config.json                 the PreprocessingConfig parameters
    <root>/<config_hash>/<subject_id>/<key>.npy      (C, X, Y, Z): images float16, labels uint8/int16
    <root>/<config_hash>/<subject_id>/meta.json      written last: the entry's completeness marker

Arrays are uncompressed ``.npy`` (memory-mappable with ``np.load(mmap_mode="r")``), the way
nnU-Net caches preprocessed data, so training never decodes ``.nii.gz``. ``meta.json`` holds
what :func:`invert_to_native` needs to put a prediction back on the native grid (native
affine, shape and file per image, the reference modality, the preprocessed affine and shape)
plus the subject's metadata (diagnosis, site, clinical columns …).

**Validity.** An entry is built in a hidden temporary directory and published with one
``os.rename`` of that directory, so a reader never sees a half-written entry; leftovers of a
crash (``.tmp-*``) are never read. If two workers compute the same subject at once, the first
rename wins and the other discards its copy. An entry whose sources changed (file size or
mtime, image keys) is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from cogimg.data.transforms import PreprocessingConfig, reference_key
from cogimg.io import atomic_write_text

META_FILE = "meta.json"
FORMAT_VERSION = 1
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Metadata that describes files of the raw dataset; kept in meta.json but not needed again.
_IMAGE_TYPES = {tio.INTENSITY: "intensity", tio.LABEL: "label"}


class CacheError(RuntimeError):
    """A cache entry or input that cannot be cached (names the subject and the problem)."""


def read_cached_array(path: str | Path, affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """TorchIO reader for a cached ``.npy``: ``(C, X, Y, Z)`` tensor (float16 → float32) and affine.

    Reads the whole array (TorchIO transforms need whole volumes); torch converts float16
    faster than numpy (``benchmarks/transform_speed.py``).
    """
    tensor = torch.from_numpy(np.load(path))
    return (tensor.float() if tensor.dtype == torch.float16 else tensor), affine


def load_subject(subject: tio.Subject) -> tio.Subject:
    """Load every image of ``subject`` in place: cached arrays with one read each (TorchIO's
    ``Image.load`` would copy them once more), other images with ``Image.load``."""
    for image in subject.get_images(intensity_only=False):
        if image.get(tio.DATA) is not None:
            continue
        reader = image.reader
        if isinstance(reader, partial) and reader.func is read_cached_array:
            tensor, affine = reader(image.path)
            image.set_data(tensor)
            image.affine = affine
        else:
            image.load()
    return subject


class VolumeCache:
    """Preprocessed subjects cached under ``root/<config.config_hash()>/``.

    Args:
        root: cache folder (created on demand).
        config: the preprocessing to apply.

    ``get(subject)`` returns the cached, preprocessed ``tio.Subject`` (computing it on a
    miss). Its images read their ``.npy`` lazily (in a DataLoader worker, not in the main
    process) and it carries the input's metadata plus ``cache_entry`` (entry folder, for
    :func:`invert_to_native`).
    """

    def __init__(self, root: str | Path, config: PreprocessingConfig):
        self.root = Path(root).expanduser()
        self.config = config
        self.dir = self.root / config.config_hash()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"VolumeCache({str(self.dir)!r})"

    def entry_dir(self, subject_id: str) -> Path:
        if not isinstance(subject_id, str) or not _SAFE_ID.match(subject_id):
            raise CacheError(
                f"subject_id {subject_id!r} cannot name a cache entry: use letters, digits, '.', "
                "'_' or '-', not starting with a separator"
            )
        return self.dir / subject_id

    # ----------------------------------------------------------------- reading
    def get(self, subject: tio.Subject) -> tio.Subject:
        """The preprocessed subject, from the cache or computed and stored now."""
        sid = _subject_id(subject)
        entry = self.entry_dir(sid)
        sources = _fingerprint(subject)
        meta = read_meta(entry)
        if meta is not None and meta.get("sources") == sources and meta.get("config_hash") == self.dir.name:
            self.hits += 1
            return load_entry(entry, meta)
        self.misses += 1
        self._publish(subject, entry, sources, stale=entry.exists())
        meta = read_meta(entry)
        if meta is None:
            raise CacheError(f"cache entry {entry} vanished right after it was written")
        return load_entry(entry, meta)

    def warm(self, subjects: Sequence[tio.Subject], workers: int = 0) -> list[tio.Subject]:
        """Make sure every subject is cached (``workers`` > 0: in that many processes) and
        return the cached subjects, in input order."""
        self.remove_leftovers()
        ids = [_subject_id(s) for s in subjects]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise CacheError(f"duplicate subject_id(s) {dup}: each cache entry needs its own id")
        todo = [s for s in subjects if not self._is_fresh(s)]
        if workers > 0 and len(todo) > 1:
            # spawn, not fork: SimpleITK and torch thread pools do not survive a fork.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
                list(pool.map(partial(_warm_one, self.root, self.config), todo))
        return [self.get(s) for s in subjects]

    def _is_fresh(self, subject: tio.Subject) -> bool:
        meta = read_meta(self.entry_dir(_subject_id(subject)))
        return meta is not None and meta.get("sources") == _fingerprint(subject)

    def remove_leftovers(self, older_than_s: float = 3600.0) -> list[Path]:
        """Delete temporary folders of crashed writers older than ``older_than_s`` seconds
        (younger ones may belong to a writer still running). Returns what was removed."""
        removed = []
        if self.dir.is_dir():
            now = time.time()
            for path in self.dir.glob(".tmp-*"):
                try:
                    if now - path.stat().st_mtime > older_than_s:
                        shutil.rmtree(path, ignore_errors=True)
                        removed.append(path)
                except FileNotFoundError:
                    pass
        return removed

    # ----------------------------------------------------------------- writing
    def preprocess(self, subject: tio.Subject) -> tio.Subject:
        """Run the preprocessing on ``subject`` (reads its files); no caching. The caller's
        torch random state is left alone: TorchIO draws a number at every transform call, even
        a deterministic one, and a run's random stream must not depend on whether the cache
        was warm."""
        with torch.random.fork_rng(devices=[]):
            return self.config.build()(subject)

    def _publish(self, subject: tio.Subject, entry: Path, sources: dict, stale: bool) -> None:
        sid = entry.name
        self.dir.mkdir(parents=True, exist_ok=True)
        config_file = self.dir / "config.json"
        if not config_file.exists():
            atomic_write_text(config_file, json.dumps(self.config.to_dict(), indent=1))
        tmp = self.dir / f".tmp-{sid}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            native = _native_grids(subject)
            processed = self.preprocess(subject)
            meta = _write_arrays(processed, tmp, native, sid)
            meta.update(format=FORMAT_VERSION, subject_id=sid, config_hash=self.dir.name,
                        reference=reference_key(subject, self.config.reference),
                        config=self.config.to_dict(), sources=sources,
                        metadata=_json_metadata(subject))
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1, allow_nan=False), encoding="utf-8")
            if stale:
                # Move the outdated or incomplete entry aside first; a reader in between sees
                # a miss and computes the same thing, which the rename below tolerates.
                try:
                    os.rename(entry, self.dir / f".tmp-stale-{sid}-{uuid.uuid4().hex}")
                except FileNotFoundError:
                    pass
            try:
                os.rename(tmp, entry)
            except OSError:
                if read_meta(entry) is None:  # not another writer's complete entry: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            for path in self.dir.glob(f".tmp-stale-{sid}-*"):
                shutil.rmtree(path, ignore_errors=True)


def _warm_one(root: Path, config: PreprocessingConfig, subject: tio.Subject) -> None:
    torch.set_num_threads(1)
    VolumeCache(root, config).get(subject)


# --------------------------------------------------------------------------- entries
def read_meta(entry: str | Path) -> dict | None:
    """The ``meta.json`` of a complete entry, or ``None`` (missing, or not a complete entry)."""
    try:
        return json.loads((Path(entry) / META_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def load_entry(entry: str | Path, meta: dict | None = None) -> tio.Subject:
    """A ``tio.Subject`` reading the entry's arrays lazily, with the cached metadata."""
    entry = Path(entry)
    meta = meta if meta is not None else read_meta(entry)
    if meta is None:
        raise CacheError(f"{entry} is not a complete cache entry (no readable {META_FILE})")
    affine = np.asarray(meta["preprocessed"]["affine"], dtype=float)
    images = {}
    for key, info in meta["images"].items():
        cls = tio.LabelMap if info["type"] == "label" else tio.ScalarImage
        images[key] = cls(entry / info["file"], reader=partial(read_cached_array, affine=affine))
    metadata = {k: (math.nan if v is None else v) for k, v in meta["metadata"].items()}
    return tio.Subject(**images, **metadata, cache_entry=str(entry))


def _subject_id(subject: tio.Subject) -> str:
    if "subject_id" not in subject:
        raise CacheError("subject has no 'subject_id' metadata; the cache keys entries by it")
    return str(subject["subject_id"])


def _fingerprint(subject: tio.Subject) -> dict:
    """What the entry was computed from: file path, size, mtime per image (or a hash of the
    in-memory tensor) — a change means the cached entry is stale."""
    out = {}
    for key, image in sorted(subject.get_images_dict(intensity_only=False).items()):
        if image.path is not None:
            stat = Path(image.path).stat()
            out[key] = [str(image.path), stat.st_size, stat.st_mtime_ns]
        else:
            digest = hashlib.sha1(image.data.contiguous().numpy().tobytes())
            digest.update(np.asarray(image.affine, dtype=float).tobytes())
            out[key] = ["tensor", digest.hexdigest()]
    return out


def _native_grids(subject: tio.Subject) -> dict:
    """Native affine/shape/file per image, read from headers only."""
    out = {}
    for key, image in subject.get_images_dict(intensity_only=False).items():
        out[key] = {
            "affine": np.asarray(image.affine, dtype=float).tolist(),
            "shape": [int(s) for s in image.spatial_shape],
            "path": str(image.path) if image.path is not None else None,
        }
    return out


def _write_arrays(processed: tio.Subject, folder: Path, native: dict, sid: str) -> dict:
    images = processed.get_images_dict(intensity_only=False)
    first = next(iter(images.values()))
    shape = [int(s) for s in first.spatial_shape]
    affine = np.asarray(first.affine, dtype=float)
    out: dict = {"images": {}}
    for key, image in images.items():
        if not _SAFE_ID.match(key):  # the key names a file of the entry: never a path
            raise CacheError(f"{sid}: image key {key!r} cannot name a file (letters, digits, "
                             "'.', '_' or '-' only)")
        if list(image.spatial_shape) != shape or not np.allclose(image.affine, affine, atol=1e-4):
            raise CacheError(f"{sid}: preprocessed {key!r} is not on the reference grid")
        array = image.data.numpy()
        if image.type == tio.LABEL:
            array = _label_array(array, f"{sid} {key!r}")
        else:
            array = _float16_array(array, f"{sid} {key!r}")
        np.save(folder / f"{key}.npy", array)
        out["images"][key] = {"type": _IMAGE_TYPES[image.type], "file": f"{key}.npy",
                              "dtype": str(array.dtype), "channels": int(array.shape[0]),
                              "native": native[key]}
    out["preprocessed"] = {"affine": affine.tolist(), "shape": shape}
    return out


def _float16_array(array: np.ndarray, what: str) -> np.ndarray:
    """Cast to float16, refusing non-finite or out-of-range values instead of storing inf."""
    if not np.isfinite(array).all():
        raise CacheError(f"{what}: non-finite values after preprocessing")
    peak = float(np.abs(array).max()) if array.size else 0.0
    if peak > FLOAT16_MAX:
        raise CacheError(
            f"{what}: |value| up to {peak:.4g} exceeds float16's range ({FLOAT16_MAX:g});"
            " use normalization='zscore' or 'minmax'"
        )
    return array.astype(np.float16)


def _label_array(array: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(array)
    if values.size and not np.array_equal(values, np.round(values)):
        raise CacheError(f"{what}: label map has non-integer values after preprocessing")
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return values.astype(dtype)
    raise CacheError(f"{what}: label values {lo}..{hi} do not fit int32")


def _json_metadata(subject: tio.Subject) -> dict:
    """Non-image entries of the subject, JSON-safe (NaN → null, tuples → lists, paths → str)."""

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, (np.integer, np.floating)):
            return clean(value.item())
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        return str(value)

    images = subject.get_images_dict(intensity_only=False)
    return {k: clean(v) for k, v in subject.items() if k not in images and k != "cache_entry"}


# --------------------------------------------------------------------------- inversion
def invert_to_native(
    array: np.ndarray | torch.Tensor,
    meta: dict | str | Path,
    is_label: bool,
    modality: str | None = None,
) -> nib.Nifti1Image:
    """Resample a prediction from the preprocessed grid back onto a native image grid.

    Args:
        array: ``(X, Y, Z)``, ``(1, X, Y, Z)`` or ``(C, X, Y, Z)`` (e.g. class probabilities)
            on the preprocessed grid ``meta["preprocessed"]["shape"]``.
        meta: an entry's ``meta.json`` as a dict, the entry folder or the file.
        is_label: nearest-neighbour interpolation and an integer dtype (labels) instead of
            linear interpolation and float32 (probabilities, maps).
        modality: whose native grid to return to; ``None`` = the reference modality.

    Returns a NIfTI with the native affine and (when the native file is readable) its header;
    ``(X, Y, Z)`` or, for C > 1 channels, ``(X, Y, Z, C)``. Voxels outside the preprocessed
    field of view get 0.
    """
    from scipy.ndimage import affine_transform

    if not isinstance(meta, dict):
        path = Path(meta)
        meta = read_meta(path if path.is_dir() else path.parent)
        if meta is None:
            raise CacheError(f"no readable {META_FILE} at {path}")
    data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    shape = tuple(meta["preprocessed"]["shape"])
    data = data[None] if data.ndim == 3 else data
    if data.ndim != 4 or tuple(data.shape[1:]) != shape:
        raise ValueError(f"array of shape {tuple(np.shape(array))} is not on the preprocessed "
                         f"grid {shape} of {meta.get('subject_id')!r}")
    key = modality or meta["reference"]
    if key not in meta["images"]:
        raise KeyError(f"no native grid for {key!r}; entry has {sorted(meta['images'])}")
    native = meta["images"][key]["native"]
    native_affine = np.asarray(native["affine"], dtype=float)
    # Native voxel → world → preprocessed voxel: one matrix covers reorientation and resampling.
    vox2vox = np.linalg.inv(np.asarray(meta["preprocessed"]["affine"], dtype=float)) @ native_affine
    order = 0 if is_label else 1
    out_dtype = np.int16 if is_label else np.float32
    channels = [
        affine_transform(c.astype(np.float32), vox2vox[:3, :3], vox2vox[:3, 3],
                         output_shape=tuple(native["shape"]), order=order, mode="constant", cval=0.0)
        for c in data
    ]
    out = np.stack(channels, axis=-1) if len(channels) > 1 else channels[0]
    if is_label:
        out = np.rint(out)
        lo, hi = (out.min(), out.max()) if out.size else (0, 0)
        out_dtype = np.uint8 if lo >= 0 and hi <= 255 else np.int16
    out = out.astype(out_dtype)
    header = None
    native_path = Path(native["path"]) if native.get("path") else None
    if native_path is not None and native_path.name.lower().endswith((".nii", ".nii.gz")) \
            and native_path.is_file():  # an ITK or DICOM input has no NIfTI header to keep
        header = nib.load(native["path"]).header.copy()
        header.set_data_dtype(out_dtype)
        header.set_slope_inter(1.0, 0.0)
    image = nib.Nifti1Image(out, native_affine, header=header)
    image.header.set_data_dtype(out_dtype)
    return image
