"""Real-scan preprocessing that does not rely on synthetic conventions: find the head, normalise in it.

Real clinical scans differ from the synthetic cohort in ways a model must not depend on: they
may keep skull, scalp and a noisy background (the cohort's images are skull-stripped with an
exact-zero background), come on anisotropic grids (4–6 mm slices), and store intensities on
any scale (ADC in 10⁻⁶ or 10⁻³ mm²/s, DWI in arbitrary scanner units). With
``foreground="head"`` the preprocessing (:func:`cogimg.data.transforms.preprocessing`) adds
:class:`HeadMask` right after resampling: the head/brain region is found on the reference
modality without any atlas, and the percentile clip and z-score of every channel use the
statistics inside it. The output of ``cogimg predict`` returns to the scan's native grid as
always (:func:`cogimg.inference.to_native`).

What a model trained with ``foreground="head"`` expects
---------------------------------------------------------
- **Channels**: the preset's modalities in order (stroke: DWI b=1000, then ADC), each a 3D
  NIfTI with a valid affine; any orientation, any voxel size (resampled to the preset's
  spacing on the reference modality's field of view), any intensity unit (removed by the
  z-score).
- **Field of view**: a whole head or a skull-stripped brain; a background of zeros or of
  noise. The head mask is: Gaussian smoothing (σ = 1 voxel) of the reference, Otsu threshold
  (SimpleITK) of its values clipped to the 0.5–99.5th percentiles of the non-zero voxels,
  the largest 26-connected component, holes filled in 3D and slice by slice (ventricles,
  dark CSF on DWI).
- **Normalisation**: each channel is clipped to the preset's percentiles of its values in
  the head mask and z-scored there (mean 0, SD 1 in the mask); outside the mask values keep
  the same linear map.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio
from scipy import ndimage

#: Key of the head-mask label map :class:`HeadMask` adds (the ``foreground`` name that selects it).
HEAD_KEY = "head"


def head_mask(volume: np.ndarray | torch.Tensor, smooth_vox: float = 1.0) -> np.ndarray:
    """Boolean head/brain mask (X, Y, Z) of one image (X, Y, Z), intensity-scale invariant.

    Otsu threshold of the smoothed image (values clipped to the 0.5–99.5th percentiles of
    its non-zero voxels), largest 26-connected component, holes filled in 3D and in every
    axial slice. An image without any non-zero voxel gives an all-false mask.
    """
    data = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    data = np.nan_to_num(data.astype(np.float32, copy=False))
    if data.ndim != 3:
        raise ValueError(f"head_mask needs a 3D volume (X, Y, Z), got shape {data.shape}")
    nonzero = data[data != 0]
    if nonzero.size < 10:
        return np.zeros(data.shape, bool)
    low, high = np.percentile(nonzero, (0.5, 99.5))
    smooth = ndimage.gaussian_filter(np.clip(data, min(low, 0.0), high), smooth_vox)
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.Execute(sitk.GetImageFromArray(smooth))
    mask = smooth > otsu.GetThreshold()
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(mask)
    for z in range(mask.shape[2]):  # dark CSF open to the top/bottom slice of the volume
        mask[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    return mask


def normalise_in_mask(volume: torch.Tensor, mask: torch.Tensor,
                      clip_percentiles: tuple[float, float] | None = (0.5, 99.5)) -> torch.Tensor:
    """Clip ``volume`` (C, X, Y, Z) per channel to percentiles of its values in ``mask``
    (X, Y, Z) bool, then z-score with the mask's mean and SD; float32, same shape."""
    out = volume.float().clone()
    if not bool(mask.any()):
        raise ValueError("normalise_in_mask: the mask is empty")
    for c in range(out.shape[0]):
        values = out[c][mask]
        if clip_percentiles is not None:
            low, high = np.percentile(values.numpy(), clip_percentiles)
            out[c] = out[c].clamp(float(low), float(high))
            values = out[c][mask]
        out[c] = (out[c] - values.mean()) / values.std().clamp_min(1e-6)
    return out


class HeadMask(tio.Transform):
    """Add the :func:`head_mask` of the reference image as a label map ``head``.

    Args:
        reference: key of the reference modality; ``None`` = the first intensity image.
    """

    def __init__(self, reference: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.args_names = ["reference"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        images = subject.get_images_dict(intensity_only=True)
        if not images:
            raise ValueError(f"subject {subject.get('subject_id')!r} has no intensity image")
        key = self.reference if self.reference is not None else next(iter(images))
        if key not in images:
            raise KeyError(f"reference modality {key!r} not in subject "
                           f"{subject.get('subject_id')!r}; its images are {sorted(images)}")
        image = images[key]
        mask = head_mask(image.data[0])
        if not mask.any():
            raise ValueError(f"subject {subject.get('subject_id')!r}: no head found in {key!r} "
                             f"({image.path or 'in memory'})")
        if HEAD_KEY in subject:
            subject.remove_image(HEAD_KEY)
        subject.add_image(tio.LabelMap(tensor=torch.from_numpy(mask[None].astype(np.uint8)),
                                       affine=image.affine), HEAD_KEY)
        return subject


class DropHeadMask(tio.Transform):
    """Remove the ``head`` label map :class:`HeadMask` added (the last preprocessing step: the
    cache keeps only the scan's own images and labels)."""

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        if HEAD_KEY in subject:
            subject.remove_image(HEAD_KEY)
        return subject
