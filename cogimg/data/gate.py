"""One input gate: an image an inference command computes on passes ``cogimg check``'s rules first.

:func:`checked_image` is called on every image ``predict``, ``explain``, ``annotate`` and
``clinical`` read (through :func:`cogimg.data.inputs.find_cases` and
:func:`cogimg.inference.subjects_from_input`), before any preprocessing or model runs. It
refuses, with one :class:`GateError` naming the file:

- a file whose header declares more voxel bytes than the file can hold (a truncated file, or a
  corrupt header that would allocate gigabytes): checked before any voxel is read;
- a file that cannot be decoded whole (truncated ``.nii.gz``), NaN or Inf voxels;
- a 2D image (a spatial dimension below 2 voxels) or a 4D one with several volumes (one 3D
  volume per modality is needed);
- a singular voxel-to-world matrix (zero voxel size: no geometry to resample or write).

**One geometry.** A NIfTI's world geometry is nibabel's: the sform when it is set, else the
qform (:func:`cogimg.data.nifti.inspect_nifti`, which ``cogimg check`` validates; a
disagreeing qform is a warning there). The image returned reads the file with nibabel
(:func:`read_nifti`), so the preprocessing resamples with that affine and the predicted mask
is written on it. SimpleITK, TorchIO's default reader, would prefer the qform. ITK files
(``.mha``, ``.nrrd``) and DICOM series have one geometry, read by SimpleITK.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from cogimg.data.nifti import MAX_GZIP_RATIO, MIN_VOXEL_VOLUME_MM3, inspect_nifti

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: single-file ITK formats read by SimpleITK (the ISLES'22 container format among them)
ITK_SUFFIXES = (".mha", ".nrrd")
#: header bytes an ITK file may hold besides its voxels
_ITK_HEADER_BYTES = 1 << 16


class GateError(ValueError):
    """An input image that fails the gate (the message names the file and the rule)."""


def image_suffix(path: str | Path) -> str:
    """The image suffix of ``path`` in lower case (``.nii.gz``, ``.nii``, ``.mha``, ``.nrrd``),
    whatever case the file uses; ``""`` for any other file."""
    name = Path(path).name.lower()
    return next((s for s in (*NIFTI_SUFFIXES, *ITK_SUFFIXES) if name.endswith(s)), "")


def read_nifti(path: str | Path) -> tuple[torch.Tensor, np.ndarray]:
    """TorchIO reader of a NIfTI file with nibabel's geometry: ``(C, X, Y, Z)`` float32 voxels
    (scaled by the header's slope/intercept) and nibabel's affine (sform, else qform)."""
    image = nib.load(str(path))
    data = np.asarray(image.get_fdata(dtype=np.float32))
    data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(data)), np.asarray(image.affine, dtype=float)


def checked_image(source: str | Path | tio.Image, cls: type = tio.ScalarImage) -> tio.Image:
    """``source`` (a NIfTI or ITK file, or a loaded image such as a DICOM series) after the
    gate's checks, as an image of type ``cls`` that reads it with the geometry the checks saw.
    Raises :class:`GateError` naming the file."""
    if isinstance(source, tio.Image):
        if source.path is None or source.path.is_dir() or source._loaded:
            _check_loaded(source, str(source.path))
            return source
        source = source.path
    path = Path(source)
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        _check_nifti(path)
        return cls(path, reader=read_nifti)
    if suffix in ITK_SUFFIXES:
        _check_itk_header(path)
        image = cls(path)
        try:
            image.load()
        except Exception as exc:  # SimpleITK raises RuntimeError (or worse) for any bad file
            raise GateError(f"{path}: cannot read the image (truncated or corrupt file?): "
                            f"{_first_line(exc)}") from exc
        _check_loaded(image, str(path))
        return image
    raise GateError(f"{path}: not an image file cogimg reads (.nii, .nii.gz, .mha, .nrrd, or a "
                    "DICOM series folder)")


def _check_nifti(path: Path) -> None:
    summary = inspect_nifti(path)
    if summary.error:
        raise GateError(f"{path}: {summary.error}")
    if summary.nan_voxels or summary.inf_voxels:
        raise GateError(f"{path}: {summary.nan_voxels} NaN and {summary.inf_voxels} Inf voxels")
    if len(summary.shape) == 4 and summary.shape[3] > 1:
        raise GateError(f"{path}: a 4D image of {summary.shape[3]} volumes (shape "
                        f"{summary.shape}); one 3D volume per modality is needed")


def _check_itk_header(path: Path) -> None:
    """Dimensionality and declared voxel bytes against the file size, before any voxel is read."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise GateError(f"{path}: cannot read the image header: {_first_line(exc)}") from exc
    size = tuple(int(s) for s in reader.GetSize())
    if len(size) < 3 or min(size[:3]) < 2:
        raise GateError(f"{path}: a 2D image (size {size}): a 3D volume (X, Y, Z) is needed")
    if len(size) > 3 and int(np.prod(size[3:])) > 1:
        raise GateError(f"{path}: a {len(size)}D image (size {size}); one 3D volume per modality "
                        "is needed")
    pixel_bytes = sitk.Image(1, 1, 1, reader.GetPixelID()).GetSizeOfPixelComponent()
    declared = int(np.prod(size, dtype=np.float64)) * pixel_bytes * reader.GetNumberOfComponents()
    on_disk = path.stat().st_size
    if declared > MAX_GZIP_RATIO * on_disk + _ITK_HEADER_BYTES:
        raise GateError(f"{path}: header declares {size} voxels ({declared:,} bytes), more than "
                        f"a {on_disk:,}-byte file can hold: corrupt header or truncated file")


def _check_loaded(image: tio.Image, where: str) -> None:
    """Voxel checks of a loaded image ``(C, X, Y, Z)``."""
    data = image.data
    if data.shape[0] > 1:
        raise GateError(f"{where}: {data.shape[0]} volumes (4D); one 3D volume per modality is "
                        "needed")
    if min(data.shape[1:]) < 2:
        raise GateError(f"{where}: a 2D image (shape {tuple(data.shape[1:])}): a 3D volume "
                        "(X, Y, Z) is needed")
    if data.is_floating_point():
        bad = int((~torch.isfinite(data)).sum())
        if bad:
            raise GateError(f"{where}: {bad} NaN or Inf voxels")
    affine = np.asarray(image.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < MIN_VOXEL_VOLUME_MM3:
        raise GateError(f"{where}: singular affine (voxel size {tuple(image.spacing)} mm): no "
                        "usable geometry")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


__all__ = ["ITK_SUFFIXES", "NIFTI_SUFFIXES", "GateError", "checked_image", "image_suffix",
           "read_nifti"]
