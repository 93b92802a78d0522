"""TorchIO preprocessing: resampling, crop/pad, histogram standardisation, normalisation.

Preprocessing is deterministic and runs once per subject (its output is cached by
:mod:`cogimg.data.cache`); random augmentation, which runs in the training loop, lives in
:mod:`cogimg.data.augmentation`.

Preprocessing, in order (every step a TorchIO transform):

1. ``tio.ToCanonical``: voxel axes reordered/flipped to RAS+.
2. :class:`ResampleToReference`: the reference modality is resampled to ``spacing_mm``
   (field of view kept), every other image and label is resampled onto that one grid
   (linear for images, nearest for labels) — modalities of a session may come on
   different grids (real ISLES'22 FLAIR does).
3. Optional crop/pad: :class:`CropToForeground` (bounding box of the reference's
   foreground) and/or ``tio.CropOrPad(target_shape)``.
4. Optional ``tio.HistogramStandardization`` with landmarks fitted on training subjects
   (:func:`fit_histogram_landmarks`).
5. Percentile clip + z-score inside the foreground mask (``normalization="zscore"``), or
   percentile clip + rescale to [0, 1] (``"minmax"``), or nothing (``"none"``).

:class:`PreprocessingConfig` holds these parameters; its :meth:`~PreprocessingConfig.config_hash`
names the cache directory, so any change of a parameter (or of the landmark values) gives a
new cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchio as tio

from cogimg.data.real_scan import HEAD_KEY, DropHeadMask, HeadMask
from cogimg.io import atomic_write_text

#: Bump when the meaning of a preprocessing parameter changes, so old caches are not reused.
PREPROCESSING_VERSION = 1

NORMALIZATIONS = ("zscore", "minmax", "none")
FOREGROUND_METHODS = ("mean", "nonzero")


# --------------------------------------------------------------------------- foreground masks
def foreground_above_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Voxels brighter than the image mean: a robust head/brain mask for MRI with dark or
    noisy background (TorchIO's documented heuristic). ``(C, X, Y, Z)`` → bool, same shape."""
    return tensor > tensor.float().mean()


def foreground_nonzero(tensor: torch.Tensor) -> torch.Tensor:
    """Non-zero voxels: the brain of skull-stripped images with an exact-zero background."""
    return tensor != 0


def masking_method(foreground: str):
    """TorchIO ``masking_method`` for a foreground name: ``"mean"``, ``"nonzero"``, or the key
    of a label map in the subject (e.g. a brain mask) used as is."""
    if foreground == "mean":
        return foreground_above_mean
    if foreground == "nonzero":
        return foreground_nonzero
    return foreground


# --------------------------------------------------------------------------- grid transforms
def grid_at_spacing(
    shape: Sequence[int], affine: np.ndarray, spacing_mm: Sequence[float]
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The grid covering the same field of view as ``(shape, affine)`` at ``spacing_mm``.

    The new grid keeps the orientation and the centre of the old one; its size is
    ``floor(shape * old_spacing / spacing_mm)`` so it never extrapolates (TorchIO's rule).
    Returns ``(shape (X, Y, Z), affine (4, 4) voxel → mm)``.
    """
    shape_in = np.asarray(shape[:3], dtype=float)
    old_spacing = np.linalg.norm(affine[:3, :3], axis=0)
    new_spacing = np.asarray(spacing_mm, dtype=float)
    # The epsilon keeps e.g. 112 voxels of 1.99999998 mm (a float32 oblique affine, as in
    # ISLES'22) at 112 voxels of 2 mm instead of losing one to rounding.
    new_shape = np.maximum(np.floor(shape_in * old_spacing / new_spacing + 1e-3), 1).astype(int)
    rotation = affine[:3, :3] / old_spacing
    new_affine = np.eye(4)
    new_affine[:3, :3] = rotation * new_spacing
    centre_mm = affine[:3, :3] @ ((shape_in - 1) / 2) + affine[:3, 3]
    new_affine[:3, 3] = centre_mm - new_affine[:3, :3] @ ((new_shape - 1) / 2)
    return tuple(int(s) for s in new_shape), new_affine


def reference_key(subject: tio.Subject, reference: str | None) -> str:
    """Key of the reference modality: ``reference``, or the subject's first intensity image."""
    images = subject.get_images_dict(intensity_only=True)
    if reference is None:
        if not images:
            raise ValueError(f"subject {subject.get('subject_id')!r} has no intensity image")
        return next(iter(images))
    if reference not in images:
        raise KeyError(
            f"reference modality {reference!r} not in subject {subject.get('subject_id')!r};"
            f" its images are {sorted(images)}"
        )
    return reference


def parse_spacing(spacing: float | Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """A voxel size in mm, one number (isotropic) or three (a sequence or an array of 3
    elements), as a 3-tuple of floats; ``ValueError`` for any other form and for a value
    that is not strictly positive (the rule of ``tio.Resample``'s spacing target)."""
    if isinstance(spacing, (int, float)):
        values = [spacing] * 3
    elif isinstance(spacing, np.ndarray):
        values = list(spacing.flat)
    elif isinstance(spacing, Sequence) and all(isinstance(v, (int, float)) for v in spacing):
        values = list(spacing)
    else:
        raise ValueError(f"spacing {spacing!r}: expected a positive number or three of them")
    if len(values) != 3:
        raise ValueError(f"spacing {spacing!r}: expected one or three values, got {len(values)}")
    result = (float(values[0]), float(values[1]), float(values[2]))
    if any(value <= 0 for value in result):
        raise ValueError(f"spacing {spacing!r}: must be strictly positive")
    return result


class ResampleToReference(tio.SpatialTransform):
    """Resample the reference image to ``spacing_mm`` and every image onto its grid.

    Args:
        spacing_mm: target voxel size in mm (one value = isotropic, or three values).
        reference: key of the reference modality; ``None`` = first intensity image.
    """

    def __init__(self, spacing_mm: float | Sequence[float], reference: str | None = None, **kw):
        super().__init__(**kw)
        self.spacing_mm = spacing_mm
        self.reference = reference
        self.args_names = ["spacing_mm", "reference"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        spacing = parse_spacing(self.spacing_mm)
        ref = subject[reference_key(subject, self.reference)]
        shape, affine = grid_at_spacing(ref.spatial_shape, ref.affine, spacing)
        # Images already on the target grid are skipped: resampling them would only blur.
        off_grid = [
            key
            for key, image in subject.get_images_dict(intensity_only=False).items()
            if tuple(image.spatial_shape) != shape or not np.allclose(image.affine, affine, atol=1e-4)
        ]
        if off_grid:
            tio.Resample((shape, affine), include=off_grid).apply_transform(subject)
        return subject


class CropToForeground(tio.SpatialTransform):
    """Crop every image to the bounding box of the reference image's foreground.

    Args:
        foreground: ``"mean"``, ``"nonzero"`` or a label key (see :func:`masking_method`).
        reference: key of the reference modality; ``None`` = first intensity image.
        margin_vox: voxels kept around the bounding box on every side.
    """

    def __init__(self, foreground: str = "mean", reference: str | None = None, margin_vox: int = 2,
                 **kw):
        super().__init__(**kw)
        self.foreground, self.reference, self.margin_vox = foreground, reference, margin_vox
        self.args_names = ["foreground", "reference", "margin_vox"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        ref = subject[reference_key(subject, self.reference)]
        method = masking_method(self.foreground)
        mask = subject[method].data > 0 if isinstance(method, str) else method(ref.data)
        mask = mask.any(dim=0).numpy()
        if not mask.any():
            raise ValueError(f"subject {subject.get('subject_id')!r}: empty foreground mask")
        coords = np.argwhere(mask)
        lo = np.maximum(coords.min(axis=0) - self.margin_vox, 0)
        hi = np.minimum(coords.max(axis=0) + 1 + self.margin_vox, mask.shape)
        cropping = [int(v) for pair in zip(lo, np.asarray(mask.shape) - hi) for v in pair]
        return tio.Crop(cropping).apply_transform(subject)


# --------------------------------------------------------------------------- preprocessing
def preprocessing(
    spacing_mm: float | Sequence[float],
    target_shape: Sequence[int] | None = None,
    crop_to_brain: bool = False,
    normalization: str = "zscore",
    clip_percentiles: Sequence[float] | None = (0.5, 99.5),
    reference: str | None = None,
    histogram_landmarks: str | Path | dict | None = None,
    foreground: str = "mean",
) -> tio.Compose:
    """The deterministic preprocessing pipeline (see the module docstring for the steps).

    Args:
        spacing_mm: output voxel size in mm.
        target_shape: output shape ``(X, Y, Z)`` in voxels after crop/pad; ``None`` keeps the
            resampled field of view (or the foreground box when ``crop_to_brain``).
        crop_to_brain: crop to the reference's foreground first (then pad/crop to
            ``target_shape`` around it).
        normalization: ``"zscore"`` (mean 0, std 1 in the foreground), ``"minmax"``
            (percentile range → [0, 1]) or ``"none"``.
        clip_percentiles: ``(low, high)`` percentiles (0–100) of the foreground intensities
            the whole image is clipped to before normalisation; ``None`` = no clipping
            (``"minmax"`` still maps the foreground's range to [0, 1] and clips to it).
            Hypointense lesions need ``None``: the low clip flattens them (see the presets).
        reference: modality whose grid all images are resampled onto; ``None`` = first image.
        histogram_landmarks: ``{modality: landmarks}`` or the JSON file written by
            :func:`fit_histogram_landmarks`; ``None`` = no histogram standardisation.
        foreground: mask for the normalisation statistics and the crop: ``"mean"`` (voxels
            above the image mean), ``"nonzero"``, ``"head"`` (the reference's head mask,
            :mod:`cogimg.data.real_scan`: for real scans with skull/background) or the key of
            a label map (brain mask).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization={normalization!r}; expected one of {NORMALIZATIONS}")
    mask = masking_method(foreground)
    steps: list[tio.Transform] = [tio.ToCanonical(), ResampleToReference(spacing_mm, reference)]
    if foreground == HEAD_KEY:  # real-scan head mask (cogimg.data.real_scan), a label map
        steps.append(HeadMask(reference))
    if crop_to_brain:
        steps.append(CropToForeground(foreground, reference))
    if target_shape is not None:
        steps.append(tio.CropOrPad(tuple(int(s) for s in target_shape), padding_mode=0))
    if histogram_landmarks is not None:
        steps.append(tio.HistogramStandardization(load_landmarks(histogram_landmarks),
                                                  masking_method=mask))
    percentiles = tuple(clip_percentiles) if clip_percentiles is not None else (0.0, 100.0)
    # RescaleIntensity clips the WHOLE image to percentiles of the foreground: every voxel
    # darker than the foreground's low percentile (with foreground="mean": everything below
    # the image mean) gets one value — dark lesions (microbleeds on T2*) included. z-score is
    # invariant to the rescale, so for "zscore" the step is only that clip, skipped for None.
    if normalization == "minmax" or (normalization == "zscore" and clip_percentiles is not None):
        steps.append(tio.RescaleIntensity((0, 1), percentiles=percentiles, masking_method=mask))
    if normalization == "zscore":
        steps.append(tio.ZNormalization(masking_method=mask))
    if foreground == HEAD_KEY:
        steps.append(DropHeadMask())
    return tio.Compose(steps)


@dataclass(frozen=True)
class PreprocessingConfig:
    """Parameters of :func:`preprocessing`; hashable into a cache key.

    Attributes mirror :func:`preprocessing`; ``histogram_landmarks`` is a path to the JSON
    written by :func:`fit_histogram_landmarks` (its *content* enters the hash).
    """

    spacing_mm: float | tuple[float, float, float] = (2.0, 2.0, 2.0)
    target_shape: tuple[int, int, int] | None = None
    crop_to_brain: bool = False
    normalization: str = "zscore"
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    reference: str | None = None
    histogram_landmarks: str | None = None
    foreground: str = "mean"

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}; expected one of {NORMALIZATIONS}")
        if self.foreground in ("", None):
            raise ValueError("foreground must be 'mean', 'nonzero' or a label key")
        # Normalise so equal configs hash equally: 2 == (2, 2, 2), YAML lists == tuples.
        spacing = self.spacing_mm
        spacing = (spacing,) * 3 if isinstance(spacing, (int, float)) else tuple(spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing_mm={self.spacing_mm!r}: expected one or three positive mm")
        object.__setattr__(self, "spacing_mm", tuple(float(v) for v in spacing))
        for name in ("target_shape", "clip_percentiles"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, name, tuple(value))
        if self.histogram_landmarks is not None:
            object.__setattr__(self, "histogram_landmarks", str(self.histogram_landmarks))

    def to_dict(self) -> dict:
        """JSON-serialisable parameters (what ``meta.json`` and ``config.json`` record)."""
        data = asdict(self)
        data["version"] = PREPROCESSING_VERSION
        return data

    def config_hash(self) -> str:
        """16 hex digits identifying the parameters, the landmark values and the version."""
        data = self.to_dict()
        if self.histogram_landmarks is not None:
            landmarks = load_landmarks(self.histogram_landmarks)
            data["histogram_landmarks"] = {k: np.round(v, 6).tolist() for k, v in sorted(landmarks.items())}
        text = json.dumps(data, sort_keys=True, default=_json_number)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def build(self) -> tio.Compose:
        """The :func:`preprocessing` pipeline for these parameters."""
        return preprocessing(**{k: v for k, v in asdict(self).items()})


def _json_number(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {value!r}")


# --------------------------------------------------------------------------- histogram landmarks
def fit_histogram_landmarks(
    subjects: Sequence[tio.Subject],
    modalities: Sequence[str],
    out_path: str | Path,
    foreground: str = "mean",
) -> dict[str, np.ndarray]:
    """Fit Nyúl–Udupa histogram landmarks per modality on ``subjects`` (the TRAINING subjects
    only — fitting on validation/test data leaks) and write them as JSON to ``out_path``.

    Wraps ``tio.HistogramStandardization.train`` on the subjects' image files. Returns
    ``{modality: landmarks (13,)}`` (intensities at the 1st, 10th, 20th, 25th … 99th
    foreground percentiles); pass ``out_path`` as ``histogram_landmarks``.
    """
    if not subjects:
        raise ValueError("fit_histogram_landmarks needs at least one training subject")
    if foreground not in FOREGROUND_METHODS:
        raise ValueError(f"fit_histogram_landmarks needs foreground in {FOREGROUND_METHODS}, "
                         f"got {foreground!r}")
    method = masking_method(foreground)
    landmarks = {}
    for modality in modalities:
        paths = []
        for subject in subjects:
            image = subject.get(modality)
            if image is None or image.path is None:
                raise ValueError(
                    f"subject {subject.get('subject_id')!r} has no {modality!r} image file;"
                    " histogram landmarks are fitted on image files"
                )
            paths.append(image.path)
        landmarks[modality] = tio.HistogramStandardization.train(
            paths, masking_function=method, progress=False
        )
    text = json.dumps({k: v.tolist() for k, v in landmarks.items()}, indent=1)
    atomic_write_text(Path(out_path), text)
    return landmarks


def load_landmarks(source: str | Path | dict) -> dict[str, np.ndarray]:
    """``{modality: landmarks}`` from a dict or the JSON file of :func:`fit_histogram_landmarks`."""
    if isinstance(source, dict):
        return {k: np.asarray(v, dtype=float) for k, v in source.items()}
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read histogram landmarks {path}: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object {{modality: [landmarks]}}")
    return {k: np.asarray(v, dtype=float) for k, v in data.items()}
