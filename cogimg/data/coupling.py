"""Structure–function coupling per region, the classical measure: a subject's structural
profile (morphometric similarity of its T1w parcels) against its functional connectivity
profile, region by region (:func:`structure_function_coupling`), and the features
:class:`cogimg.data.connectome.ConnectomeDataModule` serves with ``features="coupling"``
(:func:`subject_coupling`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def regional_features(image: np.ndarray, labels: np.ndarray, indices: Sequence[int],
                      voxel_volume_mm3: float = 1.0) -> np.ndarray:
    """Per-region structural features of one subject: ``(R, 2)`` = (volume in mm³, mean
    intensity) of each label in ``indices`` (``image`` and ``labels`` on one grid ``(X, Y, Z)``;
    a label without voxels gives volume 0 and intensity ``nan``)."""
    image, labels = np.asarray(image, dtype=np.float64), np.asarray(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and label image {labels.shape} differ in grid")
    out = np.full((len(indices), 2), np.nan)
    for r, k in enumerate(indices):
        inside = labels == k
        out[r, 0] = inside.sum() * float(voxel_volume_mm3)
        if inside.any():
            out[r, 1] = image[inside].mean()
    return out


def structural_similarity(features: np.ndarray) -> np.ndarray:
    """A subject's structural (morphometric similarity) matrix ``(R, R)`` from ``(R, F)``
    regional features: each feature z-scored across regions; with ``F ≥ 2`` the Pearson
    correlation of two regions' feature vectors (Seidlitz et al. 2018), with ``F = 1`` minus
    the absolute difference of their z-scores. The diagonal is 1 (``F ≥ 2``) or 0."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"features must be (R ≥ 3 regions, F), got {x.shape}")
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if z.shape[1] == 1:
        return -np.abs(z - z.T)
    return np.corrcoef(z)


def structure_function_coupling(structural: np.ndarray, functional: np.ndarray) -> np.ndarray:
    """Per-region structure–function coupling ``(R,)``: the Pearson correlation, over the other
    regions ``j ≠ i``, of region ``i``'s structural profile (row ``i`` of ``structural``) with
    its functional connectivity profile (row ``i`` of ``functional``); ``nan`` where either
    profile is constant. Both ``(R, R)`` for the same subject and regions."""
    s, f = np.asarray(structural, dtype=np.float64), np.asarray(functional, dtype=np.float64)
    if s.shape != f.shape or s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 3:
        raise ValueError(f"structural {s.shape} and functional {f.shape} must be the same "
                         "(R, R) with R ≥ 3")
    r = s.shape[0]
    off = ~np.eye(r, dtype=bool)
    a = s[off].reshape(r, r - 1)
    b = f[off].reshape(r, r - 1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def coupling_features(features: Sequence[np.ndarray], connectomes: Sequence[np.ndarray]
                      ) -> np.ndarray:
    """Structure–function coupling of every subject as features ``(N, R)``: subject ``n``'s
    regional features ``(R, F)`` (:func:`regional_features`) → :func:`structural_similarity`,
    coupled with its functional connectome ``(R, R)`` (e.g. a correlation matrix)."""
    if len(features) != len(connectomes):
        raise ValueError(f"{len(features)} subjects' structural features but "
                         f"{len(connectomes)} connectomes")
    return np.stack([structure_function_coupling(structural_similarity(x), c)
                     for x, c in zip(features, connectomes)]) if len(features) else np.zeros((0, 0))


def find_t1w(data_root: str | Path, subject: str) -> Path:
    """The subject's T1w image ``<data_root>/<subject>/[ses-*/]anat/<subject>*_T1w.nii[.gz]``
    (one expected; none or several is a ``ValueError`` naming the subject)."""
    base = Path(data_root) / subject
    found = sorted(p for pattern in ("anat/*_T1w.nii*", "ses-*/anat/*_T1w.nii*")
                   for p in base.glob(pattern))
    if len(found) != 1:
        raise ValueError(f"{base}: structure-function coupling needs one T1w image "
                         f"(anat/*_T1w.nii[.gz]) for {subject}, found {len(found)}")
    return found[0]


def subject_coupling(data_root: str | Path, subjects: Sequence[str],
                     series: Mapping[str, np.ndarray], parcellation: Any = None) -> np.ndarray:
    """Per-region structure–function coupling of each subject ``(N, R)`` float32.

    Structure: the subject's T1w mean intensity in each parcel (the parcellation resampled to
    the T1w grid, nearest neighbour; :func:`regional_features`) → :func:`structural_similarity`
    ``(R, R)``; function: the Pearson correlation of its region time series ``(T, R)``;
    coupled by :func:`structure_function_coupling`. Undefined values (an empty or constant
    parcel) are 0. ``parcellation``: a :class:`cogimg.data.func.Parcellation` (default: the
    one beside the data)."""
    import nibabel as nib
    from nilearn.image import resample_to_img

    from cogimg.data.func.bold import default_parcellation

    parc = parcellation if parcellation is not None else default_parcellation(data_root)
    atlas = parc.label_image()
    labels_on: dict[tuple, np.ndarray] = {}
    features, matrices = [], []
    for sid in subjects:
        t1 = nib.load(find_t1w(data_root, sid))
        key = (t1.shape[:3], np.round(t1.affine, 4).tobytes())
        if key not in labels_on:
            labels_on[key] = np.asarray(resample_to_img(
                atlas, t1, interpolation="nearest", force_resample=True,
                copy_header=True).dataobj).astype(np.int64)
        voxel = float(abs(np.linalg.det(t1.affine[:3, :3])))
        regional = regional_features(np.asarray(t1.dataobj), labels_on[key], parc.indices, voxel)
        features.append(regional[:, 1:])  # mean intensity (volumes are the atlas's, not the
        # subject's, on a template grid)
        x = np.asarray(series[sid], dtype=np.float64)
        matrices.append(np.corrcoef(x.T))
    if not features:
        return np.zeros((0, len(parc.indices)), dtype=np.float32)
    return np.nan_to_num(coupling_features(features, matrices), nan=0.0).astype(np.float32)
