"""Anatomical regions of the synthetic cohort, defined in MNI152 millimetres.

nilearn ships the MNI152 2009a template and its grey/white-matter maps but no atlas, so the
structures that the disease effects act on are drawn procedurally: an ellipsoid or a capsule
(a line segment with a radius) in MNI mm, intersected with a tissue class of the template.
Coordinates are left-hemisphere (x < 0); bilateral regions are mirrored (the 2009a template
is symmetric). They are approximate centroids and extents read off the Harvard–Oxford
cortical/subcortical atlases and the AAL atlas, and were checked by overlaying them on the
nilearn template (``tests/data/test_synth_effects.py`` checks their volumes):

* hippocampus: Harvard–Oxford centroid ≈ (−25, −22, −14); long axis from the head at
  (−28, −10, −20) to the tail at (−22, −38, −2) (rises posteriorly).
* entorhinal cortex: anterior parahippocampal gyrus, medial and inferior to the hippocampal
  head (Insausti et al. 1998; Jülich atlas EC centroid ≈ (−23, −8, −30)).
* lateral temporal cortex: middle/inferior temporal gyri, x ≈ −45…−68, y ≈ −55…+5.
* parietal cortex: inferior parietal lobule (−45, −55, 42) and precuneus (−7, −62, 42), the
  AD-signature cortex (Dickerson et al. 2009).
* lateral ventricles: template CSF deep inside the brain around (0, −10, 14).
* substantia nigra: midbrain band from anteromedial (−8, −13, −12) to posterolateral
  (−14, −23, −8) (Keuken et al. 2014, 7 T atlas, converted to MNI);
  nigrosome-1 at its dorsolateral caudal end (Schwarz et al. 2014), ≈ (−12, −22, −7).
* red nucleus (−5, −19, −8), globus pallidus (−18, −4, 0): iron-rich, dark on T2*.
* putamen: Harvard–Oxford centroid ≈ (−25, 2, 0); caudate: head (−13, 14, 8) to body
  (−17, −10, 20) along the ventricle wall.

These are stand-ins for a real atlas, good to a few millimetres; that is enough because
every effect and its ground truth use the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class RegionSpec:
    """One region: a shape in MNI mm intersected with a tissue class.

    Attributes:
        name: base name; bilateral regions get ``_l`` / ``_r`` suffixes.
        shape: ``"ellipsoid"`` (``a`` = centre, ``radii`` = semi-axes, mm) or ``"capsule"``
            (segment ``a`` → ``b``, ``radii[0]`` = radius, mm).
        tissue: ``"gm"`` (GM probability ≥ 0.3), ``"deep"`` (GM + WM ≥ 0.5 and CSF < 0.5,
            for nuclei that the GM map only partly covers) or ``"csf"`` (CSF ≥ 0.5, at least
            ``min_depth_mm`` inside the brain).
        bilateral: mirror the left-hemisphere definition to the right.
    """

    name: str
    shape: str
    a: tuple[float, float, float]
    radii: tuple[float, ...]
    tissue: str
    b: tuple[float, float, float] | None = None
    bilateral: bool = True
    min_depth_mm: float = 0.0


#: In label-priority order: a voxel belongs to the first region that claims it, so small
#: nuclei come before the large cortical regions around them.
REGION_SPECS: tuple[RegionSpec, ...] = (
    RegionSpec("nigrosome", "ellipsoid", (-12.0, -22.0, -7.0), (2.5, 2.5, 2.0), "deep"),
    RegionSpec("substantia_nigra", "capsule", (-8.0, -13.0, -12.0), (3.0,), "deep",
               b=(-14.0, -23.0, -8.0)),
    RegionSpec("red_nucleus", "ellipsoid", (-5.0, -19.0, -8.0), (3.0, 3.5, 3.0), "deep"),
    RegionSpec("pallidum", "ellipsoid", (-18.0, -4.0, 0.0), (3.5, 8.0, 5.0), "deep"),
    RegionSpec("putamen", "ellipsoid", (-26.0, 1.0, 1.0), (5.5, 15.0, 10.0), "deep"),
    RegionSpec("caudate", "capsule", (-13.0, 14.0, 8.0), (5.0,), "deep", b=(-17.0, -10.0, 20.0)),
    RegionSpec("hippocampus", "capsule", (-28.0, -10.0, -20.0), (5.5,), "gm",
               b=(-22.0, -38.0, -2.0)),
    RegionSpec("entorhinal", "capsule", (-21.0, 0.0, -32.0), (5.0,), "gm",
               b=(-25.0, -16.0, -28.0)),
    RegionSpec("ventricles", "ellipsoid", (0.0, -10.0, 14.0), (30.0, 45.0, 22.0), "csf",
               bilateral=False, min_depth_mm=10.0),
    RegionSpec("temporal", "ellipsoid", (-56.0, -25.0, -15.0), (13.0, 30.0, 15.0), "gm"),
    RegionSpec("parietal", "ellipsoid", (-45.0, -55.0, 42.0), (15.0, 16.0, 14.0), "gm"),
    RegionSpec("precuneus", "ellipsoid", (-7.0, -62.0, 42.0), (7.0, 16.0, 14.0), "gm"),
)


def region_names() -> list[str]:
    """All region names, in label order (label value = index + 1)."""
    names = []
    for spec in REGION_SPECS:
        if spec.bilateral:
            names += [f"{spec.name}_l", f"{spec.name}_r"]
        else:
            names.append(spec.name)
    return names


def _shape_membership(spec: RegionSpec, world_mm: np.ndarray, mirror: bool) -> np.ndarray:
    """Bool mask of points of ``world_mm`` (N, 3) inside the region's shape."""
    sign = np.array([-1.0 if mirror else 1.0, 1.0, 1.0])
    a = np.asarray(spec.a) * sign
    if spec.shape == "ellipsoid":
        d = (world_mm - a) / np.asarray(spec.radii)
        return np.einsum("ij,ij->i", d, d) <= 1.0
    if spec.shape == "capsule":
        b = np.asarray(spec.b) * sign
        ab = b - a
        t = np.clip((world_mm - a) @ ab / (ab @ ab), 0.0, 1.0)
        nearest = a + t[:, None] * ab
        return np.linalg.norm(world_mm - nearest, axis=1) <= spec.radii[0]
    raise ValueError(f"region {spec.name!r}: unknown shape {spec.shape!r}")


def build_label_map(
    gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, brain: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """Rasterise :data:`REGION_SPECS` on the template grid.

    Args:
        gm, wm, csf: template tissue probabilities, float (X, Y, Z).
        brain: template brain mask, bool (X, Y, Z).
        affine: (4, 4) voxel → MNI mm of the template grid (axis-aligned).

    Returns:
        uint8 (X, Y, Z): 0 = no region, ``k`` = ``region_names()[k - 1]``.
    """
    labels = np.zeros(gm.shape, np.uint8)
    spacing = np.abs(np.diag(affine)[:3])
    # Depth below the brain surface, computed at half resolution (a full-resolution EDT of
    # the 1 mm template costs seconds and the 10 mm threshold needs no precision).
    coarse_depth = ndi.distance_transform_edt(brain[::2, ::2, ::2], sampling=2 * spacing)
    inv = np.linalg.inv(affine)
    label = 0
    for spec in REGION_SPECS:
        for mirror in ((False, True) if spec.bilateral else (False,)):
            label += 1
            # Restrict the work to the shape's bounding box.
            sign = np.array([-1.0 if mirror else 1.0, 1.0, 1.0])
            pts = [np.asarray(spec.a) * sign]
            if spec.b is not None:
                pts.append(np.asarray(spec.b) * sign)
            reach = max(spec.radii)
            lo_mm = np.min(pts, axis=0) - reach
            hi_mm = np.max(pts, axis=0) + reach
            lo = np.floor(inv[:3, :3] @ lo_mm + inv[:3, 3]).astype(int).clip(0)
            hi = np.ceil(inv[:3, :3] @ hi_mm + inv[:3, 3]).astype(int) + 1
            hi = np.minimum(hi, gm.shape)
            sl = tuple(slice(l, h) for l, h in zip(lo, hi))
            idx = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"), -1)
            world = idx.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
            inside = _shape_membership(spec, world, mirror).reshape(idx.shape[:3])
            if spec.tissue == "gm":
                inside &= gm[sl] >= 0.3
            elif spec.tissue == "deep":
                inside &= (gm[sl] + wm[sl] >= 0.5) & (csf[sl] < 0.5)
            elif spec.tissue == "csf":
                depth = coarse_depth[tuple(slice(l // 2, (h + 1) // 2) for l, h in zip(lo, hi))]
                depth = depth.repeat(2, 0).repeat(2, 1).repeat(2, 2)
                depth = depth[tuple(slice(l % 2, l % 2 + h - l) for l, h in zip(lo, hi))]
                inside &= (csf[sl] >= 0.5) & (depth >= spec.min_depth_mm)
            else:
                raise ValueError(f"region {spec.name!r}: unknown tissue {spec.tissue!r}")
            inside &= brain[sl] & (labels[sl] == 0)
            labels[sl][inside] = label
    return labels
