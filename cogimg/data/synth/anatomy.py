"""Healthy subject anatomy: the MNI152 template, deformed into a new head.

The template (T1, grey/white-matter probability and brain mask of the MNI152 2009a
symmetric template that nilearn ships in its wheel) is loaded once per process at 1 mm,
pre-smoothed for the output spacing, and sampled per subject through a random mapping

    subject voxel → world mm (output grid) → MNI mm (``SubjectAnatomy.template_mm``)

made of a global similarity transform (head size ±8 %, slight shape anisotropy, rotation of
a few degrees, translation of a few mm), a smooth random displacement field (a few mm RMS,
≈ 30 mm correlation length) and local size changes of the structures that vary most
between people (ventricles, hippocampus …). Sampling is trilinear on ``float32`` and only
inside the brain, so one 2 mm subject costs tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from cogimg.data.synth.regions import build_label_map, region_names
from cogimg.data.synth.types import SubjectAnatomy

#: Regions whose size varies between healthy people, with the SD of log volume
#: (ventricles vary most: Blatter et al. 1995; hippocampus ≈ 10 % after ICV correction).
NATURAL_SIZE_SD: dict[str, float] = {
    "ventricles": 0.25,
    "hippocampus_l": 0.08,
    "hippocampus_r": 0.08,
    "entorhinal_l": 0.08,
    "entorhinal_r": 0.08,
    "putamen_l": 0.06,
    "putamen_r": 0.06,
    "caudate_l": 0.06,
    "caudate_r": 0.06,
}

#: Centre (MNI mm) about which the head is scaled and rotated: the middle of the brain.
HEAD_CENTRE_MM = np.array([0.0, -18.0, 10.0])


@dataclass
class TemplateSpace:
    """The template at 1 mm plus the output grid, shared by every subject of a process.

    Attributes:
        spacing_mm: output voxel size (isotropic, mm).
        shape: output grid shape (X, Y, Z): nilearn's MNI152 field of view at ``spacing_mm``.
        affine: (4, 4) output voxel → MNI mm.
        maps: 1 mm float32 (197, 233, 189) maps ``gm``, ``wm``, ``csf``, ``brain`` and
            ``t1_residual`` (template T1 minus its tissue-class fit: deep-nucleus and
            myelination texture that three tissue classes cannot express).
        labels: 1 mm uint8 region labels (:func:`cogimg.data.synth.regions.build_label_map`).
        names: region names, ``names[k - 1]`` for label ``k``.
        centroid_mm / extent_mm: per-region centroid and coordinate SD (mm, MNI).
        src_origin_mm: MNI mm of voxel (0, 0, 0) of the 1 mm source grid.
        t1_tissue_means: template T1 intensity (max = 1) of pure ``gm``, ``wm``, ``csf``.
    """

    spacing_mm: float
    shape: tuple[int, int, int]
    affine: np.ndarray
    maps: dict[str, np.ndarray]
    labels: np.ndarray
    names: list[str]
    centroid_mm: dict[str, np.ndarray]
    extent_mm: dict[str, np.ndarray]
    src_origin_mm: np.ndarray
    t1_tissue_means: dict[str, float]

    def sample(self, name: str, coords_mm: np.ndarray, order: int = 1) -> np.ndarray:
        """Template map ``name`` (or ``"labels"``) at MNI points ``coords_mm`` (N, 3) → (N,)."""
        src = self.labels if name == "labels" else self.maps[name]
        vox = (coords_mm - self.src_origin_mm).T  # the 1 mm grid is axis-aligned
        return ndi.map_coordinates(src, vox, order=order, mode="constant", cval=0.0)


def _load_template_1mm() -> tuple[dict[str, np.ndarray], np.ndarray]:
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj, dtype=np.float32)
    for a in (t1, gm, wm, brain):
        a /= max(float(a.max()), 1e-6)
    gm *= brain
    wm *= brain
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    return {"t1": t1, "gm": gm, "wm": wm, "csf": csf, "brain": brain}, t1_img.affine


@lru_cache(maxsize=2)
def load_template(spacing_mm: float) -> TemplateSpace:
    """Load and prepare the template for output spacing ``spacing_mm`` (cached per process)."""
    if not 0.5 <= spacing_mm <= 8.0:
        raise ValueError(f"spacing_mm must be in [0.5, 8] mm, got {spacing_mm}")
    maps, src_affine = _load_template_1mm()
    brain_bool = maps["brain"] > 0.5
    labels = build_label_map(maps["gm"], maps["wm"], maps["csf"], brain_bool, src_affine)
    names = region_names()
    src_origin = src_affine[:3, 3].astype(np.float32)

    # Texture the three tissue classes cannot express (least-squares fit inside the brain).
    design = np.stack([maps[k][brain_bool] for k in ("gm", "wm", "csf")], 1)
    means, *_ = np.linalg.lstsq(design, maps["t1"][brain_bool], rcond=None)
    fit = sum(m * maps[k] for m, k in zip(means, ("gm", "wm", "csf")))
    maps["t1_residual"] = ((maps["t1"] - fit) * brain_bool).astype(np.float32)
    del maps["t1"]

    # Anti-alias for the output spacing: a Gaussian whose FWHM makes up the difference
    # between the 1 mm source and the target voxel.
    sigma = np.sqrt(max(spacing_mm**2 - 1.0, 0.0)) / 2.355
    if sigma > 0.05:
        for k in maps:
            maps[k] = ndi.gaussian_filter(maps[k], sigma).astype(np.float32)

    centroid, extent = {}, {}
    idx = np.nonzero(labels)
    lab = labels[idx]
    world = np.stack(idx, 1).astype(np.float32) + src_origin
    for k, name in enumerate(names, start=1):
        pts = world[lab == k]
        centroid[name] = pts.mean(0)
        extent[name] = pts.std(0)

    fov_mm = np.array(maps["gm"].shape) - 1.0  # 1 mm source: extent between voxel centres
    shape = tuple(int(n) for n in np.floor(fov_mm / spacing_mm + 1e-6).astype(int) + 1)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = src_origin
    return TemplateSpace(
        spacing_mm=float(spacing_mm),
        shape=shape,
        affine=affine,
        maps=maps,
        labels=labels,
        names=names,
        centroid_mm=centroid,
        extent_mm=extent,
        src_origin_mm=src_origin,
        t1_tissue_means={k: float(m) for k, m in zip(("gm", "wm", "csf"), means)},
    )


class RegionMasks(Mapping):
    """Read-only ``name → bool (X, Y, Z)`` view of a subject's region label map.

    Masks are made on access, so a 1 mm subject does not hold two dozen full-size arrays.
    ``labels`` is the uint8 (X, Y, Z) map itself (0 = none, k = ``names[k - 1]``).
    """

    def __init__(self, labels: np.ndarray, names: list[str]):
        self.labels = labels
        self.names = list(names)
        self._boxes = None

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            k = self.names.index(name) + 1
        except ValueError:
            raise KeyError(f"unknown region {name!r}; available: {self.names}") from None
        return self.labels == k

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def label_of(self, name: str) -> int:
        return self.names.index(name) + 1

    def box(self, name: str, margin_vox: int = 0) -> tuple[slice, ...] | None:
        """Bounding box (slices) of region ``name`` grown by ``margin_vox``; None if empty."""
        if self._boxes is None:
            self._boxes = ndi.find_objects(self.labels, max_label=len(self.names))
        found = self._boxes[self.label_of(name) - 1]
        if found is None:
            return None
        return tuple(slice(max(s.start - margin_vox, 0), min(s.stop + margin_vox, n))
                     for s, n in zip(found, self.labels.shape))


def _smooth_axis_matrix(n_out: int, spacing_mm: float, step_mm: float, corr_mm: float):
    """(n_out, n_knots) Gaussian kernel matrix from coarse knots to output voxels."""
    n_knots = int(np.ceil(n_out * spacing_mm / step_mm)) + 3
    knots = (np.arange(n_knots) - 1.0) * step_mm
    x = np.arange(n_out) * spacing_mm
    k = np.exp(-0.5 * ((x[:, None] - knots[None, :]) / corr_mm) ** 2)
    return k.astype(np.float32)


def random_displacement(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing_mm: float,
    rms_mm: float, corr_mm: float = 30.0,
) -> np.ndarray:
    """Smooth random displacement field, float32 (3, X, Y, Z) in mm with RMS ``rms_mm``.

    White noise on knots every ``corr_mm / 2`` mm is convolved with a Gaussian of SD
    ``corr_mm`` through separable kernel matrices — three small matrix products (BLAS)
    instead of a full-volume filter, which also does the upsampling.
    """
    step = corr_mm / 2.0
    mx, my, mz = (_smooth_axis_matrix(n, spacing_mm, step, corr_mm) for n in shape)
    coeff = rng.standard_normal((3, mx.shape[1], my.shape[1], mz.shape[1])).astype(np.float32)
    field = np.tensordot(coeff, mz, axes=([3], [1]))   # (3, kx, ky, Z)
    field = np.tensordot(field, my, axes=([2], [1]))   # (3, kx, Z, Y)
    field = np.tensordot(field, mx, axes=([1], [1]))   # (3, Z, Y, X)
    field = np.ascontiguousarray(field.transpose(0, 3, 2, 1))
    rms = float(np.sqrt(np.mean(field**2)))
    field *= np.float32(rms_mm / max(rms, 1e-6))
    return field


def local_scaling_displacement(
    coords_mm: np.ndarray, centre_mm: np.ndarray, sigma_mm: np.ndarray, amplitude: float
) -> tuple[np.ndarray, np.ndarray]:
    """Radial displacement that shrinks (``amplitude > 0``) or grows (< 0) a structure.

    The template point sampled for a subject point ``x`` is ``x + u(x)`` with
    ``u = amplitude · (x − c) · g(x)`` and ``g`` a Gaussian of SDs ``sigma_mm`` about ``c``:
    sampling from further out makes the structure look smaller. The Jacobian determinant
    is ``(1 + a g)² (1 + a g (1 − q))`` with ``q`` the squared Mahalanobis distance; the
    local volume of the subject relative to the template is its inverse.

    Args:
        coords_mm: (N, 3) MNI points.
    Returns:
        ``(u, jac_det)``: (N, 3) displacement in mm and (N,) Jacobian determinant.
    """
    d = coords_mm - centre_mm
    q = np.sum((d / sigma_mm) ** 2, axis=1)
    ag = amplitude * np.exp(-0.5 * q)
    u = d * ag[:, None]
    jac = (1.0 + ag) ** 2 * (1.0 + ag * (1.0 - q))
    return u.astype(np.float32), jac.astype(np.float32)


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class HealthySubject:
    """A drawn subject: its anatomy plus what only the contrast synthesis needs.

    Attributes:
        anatomy: the effect modules' view (:class:`SubjectAnatomy`).
        t1_residual: float32 (X, Y, Z) template T1 texture at the subject's voxels.
        info: JSON-ready description of the draw (scales, angles, region size factors).
    """

    anatomy: SubjectAnatomy
    t1_residual: np.ndarray
    info: dict


def build_anatomy(
    template: TemplateSpace, rng: np.random.Generator, sex: str = "F",
    deformation_mm: float = 2.5,
) -> HealthySubject:
    """Draw one healthy subject.

    Args:
        template: from :func:`load_template`.
        rng: the subject's anatomy generator (nothing else draws from it).
        sex: ``"M"`` heads are ≈ 3 % larger linearly (≈ 10 % intracranial volume).
        deformation_mm: RMS of the smooth random displacement field.

    """
    shape, spacing = template.shape, template.spacing_mm
    scale = float(np.clip(rng.normal(1.015 if sex == "M" else 0.985, 0.035), 0.92, 1.08))
    aniso = np.clip(rng.normal(0.0, 0.02, 3), -0.05, 0.05)
    axis_scale = scale * np.exp(aniso - aniso.mean())
    angles = np.deg2rad(np.clip(rng.normal(0.0, 2.0, 3), -5.0, 5.0))
    shift = np.clip(rng.normal(0.0, 2.0, 3), -5.0, 5.0)
    # subject mm → template mm: undo the head's scale/rotation about the brain centre.
    lin = (_rotation(angles) @ np.diag(1.0 / axis_scale)).astype(np.float32)

    axes = [template.affine[i, 3] + np.arange(n, dtype=np.float32) * spacing for i, n in enumerate(shape)]
    offset = (-lin @ HEAD_CENTRE_MM + HEAD_CENTRE_MM + shift).astype(np.float32)
    field = random_displacement(rng, shape, spacing, deformation_mm)  # (3, X, Y, Z)
    for i in range(3):
        plane = lin[i, 0] * axes[0][:, None] + lin[i, 1] * axes[1][None, :] + offset[i]  # (X, Y)
        field[i] += plane[:, :, None]
        field[i] += (lin[i, 2] * axes[2])[None, None, :]
    coords = np.ascontiguousarray(np.moveaxis(field, 0, -1))  # (X, Y, Z, 3) MNI mm
    del field

    # Find the brain on every second voxel first, then sample at full resolution only
    # there (the brain fills ≈ 20 % of the field of view).
    coarse = template.sample("brain", coords[::2, ::2, ::2].reshape(-1, 3))
    coarse = ndi.binary_dilation(coarse.reshape(coords[::2, ::2, ::2].shape[:3]) > 0.0, iterations=1)
    candidate = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: shape[0], : shape[1], : shape[2]]
    brain_prob = np.zeros(shape, np.float32)
    brain_prob[candidate] = template.sample("brain", coords[candidate])
    inside = brain_prob > 0.02  # sample the rest only where there is brain
    pts = coords[inside]

    size_factors = {}
    for name, sd in NATURAL_SIZE_SD.items():
        factor = float(np.exp(np.clip(rng.normal(0.0, sd), -2.5 * sd, 2.5 * sd)))
        size_factors[name] = factor
        amp = factor ** (-1.0 / 3.0) - 1.0  # sample further out → structure looks smaller
        # Capped so the ventricles' field (long structures) fades out well inside the brain.
        sig = np.minimum(2.0 * template.extent_mm[name] + 3.0, 20.0)
        lo, hi = template.centroid_mm[name] - 3.0 * sig, template.centroid_mm[name] + 3.0 * sig
        near = np.flatnonzero((pts[:, 0] > lo[0]) & (pts[:, 0] < hi[0]) & (pts[:, 1] > lo[1])
                              & (pts[:, 1] < hi[1]) & (pts[:, 2] > lo[2]) & (pts[:, 2] < hi[2]))
        u, _ = local_scaling_displacement(pts[near], template.centroid_mm[name], sig, amp)
        pts[near] += u
    coords[inside] = pts

    tissue = {}
    for k in ("gm", "wm"):
        full = np.zeros(shape, np.float32)
        full[inside] = np.clip(template.sample(k, pts), 0.0, 1.0)
        tissue[k] = full
    # CSF = brain − GM − WM on the template, and trilinear sampling is linear: no need
    # to sample a third map.
    tissue["csf"] = np.clip(brain_prob - tissue["gm"] - tissue["wm"], 0.0, 1.0)
    brain_mask = brain_prob > 0.5
    total = tissue["gm"] + tissue["wm"] + tissue["csf"]
    norm = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    for k in tissue:
        tissue[k] *= norm * brain_mask
    labels = np.zeros(shape, np.uint8)
    labels[inside] = template.sample("labels", pts, order=0).astype(np.uint8)
    labels *= brain_mask
    t1_residual = np.zeros(shape, np.float32)
    t1_residual[inside] = template.sample("t1_residual", pts)

    anatomy = SubjectAnatomy(
        affine=template.affine.copy(),
        spacing_mm=spacing,
        tissue=tissue,
        brain_mask=brain_mask,
        template_mm=coords,
        regions=RegionMasks(labels, template.names),
    )
    info = {
        "head_scale": round(scale, 4),
        "axis_scale": [round(float(s), 4) for s in axis_scale],
        "rotation_deg": [round(float(a), 2) for a in np.rad2deg(angles)],
        "translation_mm": [round(float(t), 2) for t in shift],
        "deformation_rms_mm": deformation_mm,
        "region_size_factor": {k: round(v, 4) for k, v in size_factors.items()},
    }
    return HealthySubject(anatomy=anatomy, t1_residual=t1_residual * brain_mask, info=info)
