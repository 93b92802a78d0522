"""The label maps that domain-randomised stroke images are drawn from (:mod:`cogimg.data.randomise`).

A subject's label map starts from its tissue classes and lesion mask (:func:`label_map`):
0 background, 1 CSF, 2 GM, 3 WM, 4 lesion (inside the brain) and, when drawn, two shells
around the brain (5: CSF/bone, 1–3 voxels; 6: scalp, 1–4 voxels more). The edits then change
it in place, each with its own probability and from a NumPy generator:

- :func:`add_sulci`: a **folded cortex** (sulcal CSF lined with GM in the outer 6–16 mm and a
  subarachnoid CSF layer, which the template-based tissue maps smooth away);
- :func:`add_mimics`: the **lesion mimics** that real DWI is full of — 9, large left-right
  symmetric regions of GM/WM (physiological regional contrast such as the posterior fossa's,
  and EPI susceptibility artefacts at the skull base: what is symmetric is not a lesion); 7,
  small blobs in GM/WM (T2 shine-through, chronic or vasogenic lesions); 8, patches of a 1–3
  voxel rim at the brain's surface (cortical and susceptibility hyperintensity);
- :func:`add_emboli`: an **embolic shower** added to the lesion — small lesions (radius
  1–6 mm) in the GM/WM of one arterial-territory-sized sphere (radius 20–60 mm); the cohort's
  lesions are one to a few large components, real embolic strokes dozens of tiny ones.

Which intensities each label gets is :mod:`cogimg.data.randomise`'s business.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

BACKGROUND, CSF, GM, WM, LESION, SHELL, SCALP, MIMIC, RIM, REGION = range(10)
#: The labels inside the brain (everything but background and the skull/scalp shells).
BRAIN_LABELS = (CSF, GM, WM, LESION, MIMIC, RIM, REGION)


def label_map(tissue: np.ndarray, lesion: np.ndarray, skull: bool) -> np.ndarray:
    """int16 (X, Y, Z) labels (module docstring) from tissue classes and a lesion mask;
    shell widths are drawn from torch's generator when ``skull``."""
    labels = tissue.astype(np.int16)
    brain = labels > 0
    labels[(lesion > 0) & brain] = LESION
    if skull:
        inner = int(torch.randint(1, 4, (1,)).item())
        outer = inner + int(torch.randint(1, 5, (1,)).item())
        grown = ndimage.binary_dilation(brain, iterations=inner)
        head = ndimage.binary_dilation(grown, iterations=outer - inner)
        labels[grown & ~brain] = SHELL
        labels[head & ~grown] = SCALP
    return labels


def smooth_noise(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator,
                  coarse: int = 1) -> np.ndarray:
    """A smooth random field (X, Y, Z) with unit SD: white noise on a grid ``coarse`` times
    coarser, Gaussian-smoothed (``sigma_vox / coarse``), linearly upsampled."""
    small = tuple(-(-n // coarse) for n in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma_vox / coarse)
    if coarse > 1:
        field = ndimage.zoom(field, coarse, order=1)[tuple(slice(0, n) for n in shape)]
    return field / max(float(field.std()), 1e-6)


def mirrored(volume: np.ndarray, axis: int, centre: float) -> np.ndarray:
    """``volume`` reflected along ``axis`` about the voxel coordinate ``centre``."""
    size = volume.shape[axis]
    source = np.clip(np.rint(2.0 * centre - np.arange(size)).astype(int), 0, size - 1)
    return np.take(volume, source, axis=axis)


def symmetric_regions(tissue: np.ndarray, lr_axis: int, rng: np.random.Generator) -> np.ndarray:
    """Bool mask (X, Y, Z) of left-right symmetric regions covering 3–12 % of ``tissue``: a
    smooth random field (σ 4–10 voxels) plus its mirror image about the tissue's centre of
    mass along ``lr_axis``, above a quantile."""
    field = smooth_noise(tissue.shape, rng.uniform(4.0, 10.0), rng, coarse=4)
    field = field + mirrored(field, lr_axis, ndimage.center_of_mass(tissue)[lr_axis])
    return tissue & (field > np.quantile(field[tissue], 1.0 - rng.uniform(0.03, 0.12)))


MIMIC_KINDS = ("region", "blob", "rim")


def check_mimic_kinds(kinds: Sequence[str]) -> None:
    unknown = sorted(set(kinds) - set(MIMIC_KINDS))
    if unknown:
        raise ValueError(f"unknown lesion mimic kind(s) {unknown}; expected some of {MIMIC_KINDS}")


def add_mimics(labels: np.ndarray, p_mimics: float, rng: np.random.Generator,
               lr_axis: int = 0, kinds: Sequence[str] = MIMIC_KINDS) -> np.ndarray:
    """Add lesion mimics to ``labels`` in place (module docstring), each of ``kinds``
    with probability ``p_mimics``: ``"region"``, label ``REGION`` (:func:`symmetric_regions`,
    left-right along the voxel axis ``lr_axis``), ``"blob"``, label ``MIMIC``: blobs covering
    0.2–2 % of the remaining GM/WM (smooth noise, σ 1–2.5 voxels, above a quantile) and
    ``"rim"``, label ``RIM``: patches of the brain's outer 1–3 voxels (smooth noise, σ 3–8
    voxels, about a third to two thirds of the rim). Lesion voxels are never changed."""
    check_mimic_kinds(kinds)
    tissue = np.isin(labels, (GM, WM))
    if "region" in kinds and rng.random() < p_mimics and tissue.any():
        labels[symmetric_regions(tissue, lr_axis, rng)] = REGION
        tissue = np.isin(labels, (GM, WM))
    if "blob" in kinds and rng.random() < p_mimics and tissue.any():
        field = smooth_noise(labels.shape, rng.uniform(1.0, 2.5), rng)
        labels[tissue & (field > np.quantile(field[tissue], 1.0 - rng.uniform(0.002, 0.02)))] = MIMIC
    if "rim" in kinds and rng.random() < p_mimics:
        brain = np.isin(labels, BRAIN_LABELS)
        rim = brain & ~ndimage.binary_erosion(brain, iterations=int(rng.integers(1, 4)))
        patches = smooth_noise(labels.shape, rng.uniform(3.0, 8.0), rng, coarse=4) > rng.uniform(-0.4, 0.4)
        labels[rim & patches & (labels != LESION)] = RIM
    return labels


def add_emboli(labels: np.ndarray, p_emboli: float, count: tuple[int, int],
               rng: np.random.Generator, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """With probability ``p_emboli``, add an embolic shower to ``labels`` in place (module
    docstring): ``n ~ U{count}`` ellipsoids of ``LESION`` (radius 1–6 mm, each axis
    scaled by 0.6–1.4), centred on GM/WM voxels within a sphere of radius 20–60 mm around one
    GM/WM voxel and clipped to GM/WM. ``spacing_mm``: voxel size (X, Y, Z) of ``labels``."""
    if not rng.random() < p_emboli:
        return labels
    tissue = np.isin(labels, (GM, WM))
    coords = np.argwhere(tissue)
    if not len(coords):
        return labels
    spacing = np.asarray(spacing_mm, float)
    centre = coords[rng.integers(len(coords))]
    near = coords[np.linalg.norm((coords - centre) * spacing, axis=1) < rng.uniform(20.0, 60.0)]
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        point = near[rng.integers(len(near))]
        radii = rng.uniform(1.0, 6.0) * rng.uniform(0.6, 1.4, 3) / spacing  # voxels per axis
        low = np.maximum(point - np.ceil(radii).astype(int), 0)
        high = np.minimum(point + np.ceil(radii).astype(int) + 1, labels.shape)
        box = tuple(slice(a, b) for a, b in zip(low, high))
        grid = np.meshgrid(*[(np.arange(a, b) - c) / r for a, b, c, r in zip(low, high, point, radii)],
                           indexing="ij")
        blob = sum(g**2 for g in grid) <= 1.0
        labels[box][blob & tissue[box]] = LESION
    return labels


def add_sulci(labels: np.ndarray, p_sulci: float, rng: np.random.Generator,
              spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """With probability ``p_sulci``, fold the cortex of ``labels`` in place (module docstring) and widen its CSF spaces as ageing does: sulci of ``CSF`` along the zero level set
    of a smooth random field (σ 2–4 mm, so sulci lie about 9–18 mm apart) within 6–16 mm of
    the brain's surface, each 1 voxel plus 0–6 mm wide; the brain's outer 0–4 mm becomes CSF
    (subarachnoid space); WM voxels touching new CSF become GM (the cortical ribbon). Only GM
    and WM voxels change. The template-based tissue maps are an average brain's, whose thin
    sulci are smoothed away, while real scans of stroke-age patients show a folded cortex and
    wide sulci (the calibration benchmark's CSF share of the outer brain). ``spacing_mm``:
    voxel size (X, Y, Z) of ``labels``."""
    if not rng.random() < p_sulci:
        return labels
    spacing = np.asarray(spacing_mm, float)
    tissue = np.isin(labels, (GM, WM))
    depth = ndimage.distance_transform_edt(np.isin(labels, BRAIN_LABELS), sampling=spacing)
    positive = smooth_noise(labels.shape, rng.uniform(2.0, 4.0) / spacing.mean(), rng) > 0
    sheets = positive & ~ndimage.binary_erosion(positive)
    near_sheet = ndimage.distance_transform_edt(~sheets, sampling=spacing) <= rng.uniform(0.0, 3.0)
    csf = tissue & ((near_sheet & (depth < rng.uniform(6.0, 16.0)))
                    | (depth <= rng.uniform(0.0, 4.0)))
    labels[csf] = CSF
    labels[ndimage.binary_dilation(csf) & (labels == WM)] = GM
    return labels
