"""From a scan to the model's input and back: training preprocessing, native-grid inversion.

:func:`preprocessed_subjects` runs each subject through the checkpoint's preprocessing in a
temporary :class:`~cogimg.data.cache.VolumeCache` (the same code path as training);
:func:`to_native` puts a volume on the preprocessed grid back onto the scan's own grid
(affine and header of its reference modality), so an output overlays the scan a clinician
opened.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from cogimg.data.cache import VolumeCache, invert_to_native, read_meta
from cogimg.data.transforms import PreprocessingConfig


def preprocessed_subjects(subjects: list[tio.Subject], config: PreprocessingConfig,
                          modalities: tuple[str, ...], device: str = "cpu"
                          ) -> Iterator[tuple[tio.Subject, tio.Subject, torch.Tensor]]:
    """Each subject with its preprocessed version (in a temporary cache, as in training) and
    the model input ``(1, C, X, Y, Z)`` float32 on ``device``, channels in ``modalities`` order."""
    with tempfile.TemporaryDirectory(prefix="cogimg-predict-") as tmp:
        cache = VolumeCache(tmp, config)
        for subject in subjects:
            processed = cache.get(subject)
            image = torch.cat([processed[m].data.float() for m in modalities])[None].to(device)
            yield subject, processed, image


def to_native(volume: torch.Tensor | np.ndarray, processed: tio.Subject,
              is_label: bool) -> nib.Nifti1Image:
    """A preprocessed-grid volume ``(X, Y, Z)`` back on the subject's native reference grid."""
    return invert_to_native(volume, read_meta(processed["cache_entry"]), is_label=is_label)
