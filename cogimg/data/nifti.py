"""Safe NIfTI inspection: read a file once and summarise what validation needs.

:func:`inspect_nifti` never raises on a bad file: a missing, truncated or non-NIfTI file
comes back as a :class:`NiftiSummary` whose ``error`` says what went wrong, so a dataset
scan can report every bad file instead of stopping at the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

#: How many distinct label values a summary keeps (enough to name offending values).
MAX_LABEL_VALUES = 20
#: Deflate never compresses by more than about 1032:1: a ``.gz`` file whose header declares
#: more voxel bytes than that cannot be whole (checked before anything is allocated).
MAX_GZIP_RATIO = 1032
#: A voxel-to-world matrix with ``|det| <`` this (mm³) is singular: no voxel size, no geometry.
MIN_VOXEL_VOLUME_MM3 = 1e-6
#: sform and qform agree when every entry of the two affines is within this (mm).
SFORM_QFORM_ATOL_MM = 1e-3


@dataclass(frozen=True)
class NiftiSummary:
    """What one NIfTI file holds, from its header and (optionally) its voxels.

    Attributes:
        path: the file.
        shape: full array shape, ``(X, Y, Z)`` or ``(X, Y, Z, C)``; ``()`` if unreadable.
        affine: (4, 4) voxel → world (mm) as nibabel resolves it (sform, else qform).
        spacing_mm: voxel size along X, Y, Z in mm (header zooms).
        dtype: on-disk data type name (``float32``, ``uint8`` …).
        voxels_read: whether the voxel checks below ran (``validate_voxels``).
        nan_voxels / inf_voxels: counts of non-finite voxels (0 for integer types).
        intensity_range: (min, max) of the finite voxels, ``None`` if not read.
        foreground_voxels: number of non-zero voxels (label maps only, else ``None``).
        label_values: sorted distinct values (label maps only; the lowest
            :data:`MAX_LABEL_VALUES`, ``label_values_truncated`` says when more exist).
        labels_nonnegative_integers: whether every label value is an integer ≥ 0 (judged on
            all values, not only those kept in ``label_values``); ``None`` if not read.
        sform_qform_mm: when both the sform and the qform are set and disagree, the largest
            difference between their entries (mm); ``0.0`` otherwise. ``affine`` is the sform.
        error: why the file could not be read; ``""`` when it could.
    """

    path: str
    shape: tuple[int, ...] = ()
    affine: np.ndarray = field(default_factory=lambda: np.full((4, 4), np.nan))
    spacing_mm: tuple[float, float, float] = (np.nan, np.nan, np.nan)
    dtype: str = ""
    voxels_read: bool = False
    nan_voxels: int = 0
    inf_voxels: int = 0
    intensity_range: tuple[float, float] | None = None
    foreground_voxels: int | None = None
    label_values: tuple[float, ...] = ()
    label_values_truncated: bool = False
    labels_nonnegative_integers: bool | None = None
    sform_qform_mm: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The first three dimensions ``(X, Y, Z)``."""
        return tuple(self.shape[:3])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (1 mL = 1000 mm³)."""
        return float(np.prod(self.spacing_mm) / 1000.0)


def inspect_nifti(
    path: str | Path, *, is_label: bool = False, read_voxels: bool = True
) -> NiftiSummary:
    """Read ``path`` once and summarise it; problems are returned in ``error``, not raised.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        is_label: also count foreground voxels and collect the distinct label values.
        read_voxels: decode the voxel data. A truncated ``.nii.gz`` often has an intact
            header, so only a full read proves the file is whole.
    """
    path = str(path)
    try:
        img = nib.load(path)
    # nibabel raises many types for bad files (ImageFileError, OSError, EOFError, ValueError …);
    # any of them is a finding about this file, never a reason to stop scanning the dataset
    except Exception as exc:  # noqa: BLE001
        return NiftiSummary(path=path, error=f"cannot read as NIfTI: {_describe(exc)}")
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        return NiftiSummary(
            path=path, error=f"not a NIfTI image (nibabel read it as {type(img).__name__})"
        )

    shape = tuple(int(s) for s in img.shape)
    header = {
        "path": path,
        "shape": shape,
        "affine": np.asarray(img.affine, dtype=float),
        "spacing_mm": tuple(float(z) for z in img.header.get_zooms()[:3]),
        "dtype": str(img.get_data_dtype()),
    }
    if len(shape) < 3 or len(shape) > 4 or min(shape) == 0:
        return NiftiSummary(
            **header, error=f"expected a 3D (X, Y, Z) or 4D (X, Y, Z, C) image, got shape {shape}"
        )
    if min(shape[:3]) < 2:
        return NiftiSummary(
            **header, error=f"a 2D image (shape {shape}): a 3D volume (X, Y, Z) is needed"
        )
    if not np.all(np.isfinite(header["affine"])):
        return NiftiSummary(**header, error="affine holds NaN or Inf")
    if abs(np.linalg.det(header["affine"][:3, :3])) < MIN_VOXEL_VOLUME_MM3 or min(
        header["spacing_mm"]
    ) <= 0:
        return NiftiSummary(
            **header,
            error=f"singular affine (voxel size {header['spacing_mm']} mm): no usable geometry",
        )
    header["sform_qform_mm"] = _sform_qform_difference(img)
    if size_error := _size_error(path, img, shape):
        return NiftiSummary(**header, error=size_error)
    if not read_voxels:
        return NiftiSummary(**header)

    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 -- truncated gzip: EOFError, zlib.error, ValueError …
        return NiftiSummary(
            **header, error=f"cannot read voxel data (truncated or corrupt file?): {_describe(exc)}"
        )
    return NiftiSummary(**header, voxels_read=True, **_voxel_stats(data, is_label))


def _sform_qform_difference(img: nib.Nifti1Image) -> float:
    """Largest entry difference (mm) of sform and qform when both are set, else 0."""
    sform, s_code = img.header.get_sform(coded=True)
    qform, q_code = img.header.get_qform(coded=True)
    if not s_code or not q_code:
        return 0.0
    delta = float(np.max(np.abs(np.asarray(sform) - np.asarray(qform))))
    return delta if delta > SFORM_QFORM_ATOL_MM else 0.0


def _size_error(path: str, img: nib.Nifti1Image, shape: tuple[int, ...]) -> str:
    """Why the file cannot hold the voxels its header declares, or ``""`` (no voxel read)."""
    declared = int(np.prod(shape, dtype=np.float64)) * img.get_data_dtype().itemsize
    offset = int(img.header.get("vox_offset", 352))
    size = Path(path).stat().st_size
    if path.lower().endswith(".gz"):
        if declared > MAX_GZIP_RATIO * size + offset:
            return (f"header declares {shape} {img.get_data_dtype()} voxels ({declared:,} bytes), "
                    f"more than a {size:,}-byte .gz file can hold: corrupt header or truncated file")
    elif offset + declared > size:
        return (f"header declares {shape} {img.get_data_dtype()} voxels ({declared:,} bytes) "
                f"but the file holds {size - offset:,} bytes after the header: truncated file")
    return ""


def _voxel_stats(data: np.ndarray, is_label: bool) -> dict:
    stats: dict = {}
    if data.dtype.kind == "f":
        # min/max propagate NaN and reach ±Inf, so the common all-finite case costs two passes
        lo, hi = float(np.min(data)), float(np.max(data))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            stats["nan_voxels"] = int(np.count_nonzero(np.isnan(data)))
            stats["inf_voxels"] = int(np.count_nonzero(np.isinf(data)))
            finite = data[np.isfinite(data)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (np.nan, np.nan)
    elif data.dtype.kind in "uib":
        lo, hi = float(np.min(data)), float(np.max(data))
    else:
        return {"intensity_range": None}
    stats["intensity_range"] = (lo, hi)
    if is_label:
        stats["foreground_voxels"] = int(np.count_nonzero(data))
        values = _distinct_values(data, lo, hi)
        stats["label_values"] = tuple(float(v) for v in values[:MAX_LABEL_VALUES])
        stats["label_values_truncated"] = values.size > MAX_LABEL_VALUES
        stats["labels_nonnegative_integers"] = bool(
            values.size == 0 or (values[0] >= 0 and np.array_equal(values, np.round(values))))
    return stats


def _distinct_values(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Sorted distinct finite values, as float64 (``bincount`` for small non-negative integer
    ranges: far faster than ``np.unique``, which sorts)."""
    if data.dtype.kind == "f":
        finite = data[np.isfinite(data)] if not (np.isfinite(lo) and np.isfinite(hi)) else data
        small_counts = 0 <= lo and hi < 2**16 and np.array_equal(finite, np.round(finite))
        if not (finite.size and small_counts):
            return np.unique(finite).astype(np.float64)
        data = finite.astype(np.int64)
    if lo >= 0 and hi < 2**16:
        counts = np.bincount(data.ravel().astype(np.intp, copy=False), minlength=1)
        return np.flatnonzero(counts).astype(np.float64)
    return np.unique(data).astype(np.float64)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
