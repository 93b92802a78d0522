"""Acute ischaemic stroke lesions for the synthetic cohort (effect ``stroke``).

Per subject: one index lesion in a vascular territory (``territories.STROKE_FAMILY_WEIGHTS``)
plus 0–4 small satellite lesions (more with difficulty), each with

- a **shape** from the real-lesion library (``lesion_shapes``), or a procedural blob when the
  library is absent, scaled to a target volume (log-normal per territory: lacunes 0.08–3 mL,
  MCA infarcts up to 150 mL), randomly rotated, mirrored and smoothly deformed;
- a **place**: half the library shapes from the chosen territory go back near their real
  MNI position (mirrored to the chosen side), the rest are centred on a random parenchyma
  voxel of the territory. The subject's ``template_mm`` carries shape and atlas through its
  deformation; the lesion is confined to parenchyma (× brain mask × (1 - CSF), no ventricles);
- an **age** (1 h – 7 days) that sets its contrast (:class:`LesionContrast`): DWI bright,
  ADC dark (partly pseudo-normalised after day 3, still < 1 at day 7), FLAIR ≈ 1 in the first
  hours and bright later, T1w slightly dark, T2starw slightly bright.

Partial volume: the shape is linearly interpolated onto the subject grid and smoothed
(σ = 0.5 voxel) into a fraction map; ``mask = fraction >= 0.5``; gains are
``1 + fraction · (g - 1) · (1 + heterogeneity · texture)``. ``difficulty`` ∈ [0, 1] weakens
the contrast (× 0.4–1 at 1), makes it more heterogeneous and adds small satellites.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cogimg.data.boxes import instances_and_boxes
from cogimg.data.synth.lesion_shapes import LesionShape, load_library, procedural_blob
from cogimg.data.synth.territories import (
    ParenchymaSampler,
    sample_stroke_territory,
    territory_labels,
    territory_name,
)
from cogimg.data.synth.types import Effect, SubjectAnatomy

#: Target-volume prior per territory family: (median mL, log-sd, min mL, max mL).
VOLUME_PRIORS: dict[str, tuple[float, float, float, float]] = {
    "MCA": (12.0, 1.4, 0.3, 150.0),
    "ACA": (5.0, 1.1, 0.2, 60.0),
    "PCA": (6.0, 1.1, 0.2, 60.0),
    "LS": (0.6, 0.7, 0.08, 3.0),
}
SATELLITE_PRIOR = (0.3, 0.9, 0.05, 5.0)
AGE_RANGE_DAYS = (1.0 / 24.0, 7.0)
MIN_LESION_VOXELS = 2
#: NIHSS weight of a lesion per territory (left MCA = language + dominant motor) and the
#: volume (mL) at which a lesion reaches ~70 % of its territory's log-volume slope.
NIHSS_WEIGHTS = {"MCA_L": 1.5, "MCA_R": 1.15, "ACA_L": 0.8, "ACA_R": 0.7,
                 "PCA_L": 0.6, "PCA_R": 0.5, "LS_L": 0.9, "LS_R": 0.8}
NIHSS_VOLUME_ML = {"MCA": 3.0, "ACA": 3.0, "PCA": 3.0, "LS": 0.5}


def check_difficulty(difficulty: float) -> float:
    """Validate ``difficulty`` (0 = easy … 1 = hard) and return it as float."""
    value = float(difficulty)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], got {difficulty!r}")
    return value


@dataclass(frozen=True)
class LesionContrast:
    """Fully expressed lesion/healthy intensity ratios of one lesion.

    Attributes:
        dwi_peak: DWI ratio at full expression (1.3–2.5 when easy).
        adc_min: ADC ratio at full expression (0.5–0.85 when easy).
        flair_peak: FLAIR ratio of an established (> 1 day) lesion.
    """

    dwi_peak: float
    adc_min: float
    flair_peak: float

    def gains(self, age_days: float) -> dict[str, float]:
        """Ratio per modality (``dwi``, ``adc``, ``FLAIR``, ``T1w``, ``T2starw``) at ``age_days``."""
        a = float(age_days)
        dwi_course = (0.6 + 0.4 * min(a, 1.0)) * np.exp(-max(0.0, a - 4.0) / 10.0)
        adc_course = (0.7 + 0.3 * min(a / 0.25, 1.0)) * (1.0 - 0.8 * min(max(0.0, a - 3.0) / 7.0, 1.0))
        flair_course = 1.0 - np.exp(-max(0.0, a - 0.125))  # DWI-FLAIR mismatch for ~3 h
        return {
            "dwi": float(1.0 + (self.dwi_peak - 1.0) * dwi_course),
            "adc": float(1.0 - (1.0 - self.adc_min) * adc_course),
            "FLAIR": float(1.0 + (self.flair_peak - 1.0) * flair_course),
            "T1w": float(1.0 - 0.15 * flair_course),
            "T2starw": float(1.0 + 0.5 * (self.flair_peak - 1.0) * flair_course),
        }


def sample_contrast(rng: np.random.Generator, difficulty: float) -> LesionContrast:
    """Draw a lesion's contrast; ``difficulty`` 1 scales its deviation from 1 by 0.4–1."""
    strength = rng.uniform(1.0 - 0.6 * difficulty, 1.0)
    # Calibrated against a real acute case (benchmarks/sim2real_calibration.py): real lesion
    # ratios are milder than the textbook core values (partial volume, evolving penumbra).
    return LesionContrast(
        dwi_peak=1.0 + strength * rng.uniform(0.3, 1.5),
        adc_min=1.0 - strength * rng.uniform(0.15, 0.5),
        flair_peak=1.0 + strength * rng.uniform(0.2, 0.8),
    )


def _lognormal_volume(rng, prior) -> float:
    median, sigma, low, high = prior
    return float(np.clip(median * np.exp(sigma * rng.standard_normal()), low, high))


def nihss_score(rng: np.random.Generator, lesions: list[dict]) -> int:
    """NIHSS-like score 0–42 from lesions ``[{"territory": "MCA_L", "volume_ml": …}, …]``.

    Expected score ``Σ 5 · w_territory · ln(1 + V / V_family)`` (left MCA weighs most; a
    lacune reaches its plateau at smaller volumes) plus Gaussian noise of sd ``1 + 0.2 ·
    expected``, rounded and clipped.
    """
    expected = 0.0
    for lesion in lesions:
        family = lesion["territory"].split("_")[0]
        expected += 5.0 * NIHSS_WEIGHTS[lesion["territory"]] * np.log1p(
            lesion["volume_ml"] / NIHSS_VOLUME_ML[family])
    noisy = expected + rng.normal(0.0, 1.0 + 0.2 * expected)
    return int(np.clip(np.rint(noisy), 0, 42))


def _random_linear(rng, scale: float, max_angle_deg: float) -> np.ndarray:
    """Template-mm offset → shape-mm offset: inverse of (rotation · anisotropic scale)."""
    aniso = np.exp(rng.normal(0.0, 0.12, size=3))
    aniso /= np.prod(aniso) ** (1.0 / 3.0)  # volume is set by ``scale`` alone
    rotation = Rotation.from_euler("xyz", rng.uniform(-max_angle_deg, max_angle_deg, size=3),
                                   degrees=True).as_matrix()
    return np.diag(1.0 / (scale * aniso)) @ rotation.T


def _smooth_displacement(rng, radius_mm: float):
    """Smooth random displacement (mm) of shape-mm points ``(N, 3)``: 2 sinusoids per axis."""
    waves = (rng.normal(0.0, 1.0, size=(3, 2, 3)) * (np.pi / max(radius_mm, 1.0))).astype(np.float32)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(3, 2)).astype(np.float32)
    amplitude = np.float32(0.1 * radius_mm)

    def displace(points: np.ndarray) -> np.ndarray:  # float32: large lesions have ~10⁵ points
        return amplitude * np.stack(
            [np.sin(points @ waves[axis].T + phases[axis]).sum(axis=1) for axis in range(3)], axis=1)

    return displace


def _crop(centre, radius_vox, shape) -> tuple[slice, ...]:
    return tuple(slice(max(0, int(c - r)), min(n, int(c + r + 1)))
                 for c, r, n in zip(centre, radius_vox, shape))


def _touches_inner_border(fraction: np.ndarray, crop, shape) -> bool:
    """Whether the fraction is non-zero on a crop face that is not the volume's own edge."""
    for axis, s in enumerate(crop):
        for index, at_edge in ((0, s.start == 0), (-1, s.stop == shape[axis])):
            if not at_edge and np.take(fraction, index, axis=axis).any():
                return True
    return False


def place_shape(rng: np.random.Generator, anatomy: SubjectAnatomy, shape: LesionShape,
                centre_flat: int, volume_ml: float, max_angle_deg: float = 30.0):
    """Resample a shape into the subject around voxel ``centre_flat``.

    The shape's centroid lands on the centre voxel's template coordinate; it is scaled to
    ``volume_ml``, rotated (± ``max_angle_deg`` per axis), stretched and deformed in template
    space, pulled back through ``anatomy.template_mm`` and confined to parenchyma.

    Returns:
        ``(crop, fraction)``: the crop's slices in the subject grid and a float32 fraction map
        in [0, 1] on it.
    """
    mask = shape.mask
    centroid = np.array(ndimage.center_of_mass(mask))
    scale = (volume_ml / max(shape.volume_ml, 1e-6)) ** (1.0 / 3.0)
    linear = _random_linear(rng, scale, max_angle_deg)
    corners = np.array([[x, y, z] for x in (0, mask.shape[0]) for y in (0, mask.shape[1])
                        for z in (0, mask.shape[2])], dtype=np.float64)
    corner_mm = (corners - centroid) * shape.spacing_mm
    radius_mm = float(np.max(np.linalg.norm(corner_mm, axis=1)))
    displace = _smooth_displacement(rng, radius_mm)
    reach = 0.2 * radius_mm / shape.spacing_mm + 1.0  # max displacement + interpolation, voxels
    template_extent = np.max(np.abs(corner_mm @ np.linalg.inv(linear).T), axis=0)  # per axis, mm
    centre = np.unravel_index(centre_flat, anatomy.shape)
    anchor = anatomy.template_mm[centre].astype(np.float32)
    # ×1.2 covers the displacement, ×1.1 the subject's local deformation; grown below if not.
    radius_vox = np.ceil(1.2 * 1.1 * template_extent / anatomy.spacing_mm).astype(int) + 2
    source = mask.astype(np.float32)
    upper = np.array(mask.shape, dtype=np.float32) - 1.0 + reach
    for _ in range(4):
        crop = _crop(centre, radius_vox, anatomy.shape)
        points = anatomy.template_mm[crop]
        shape_mm = (points.reshape(-1, 3) - anchor) @ linear.T.astype(np.float32)
        coords = centroid.astype(np.float32) + shape_mm / shape.spacing_mm
        # Deform and interpolate only where the shape can be: most of the crop is empty.
        near = np.flatnonzero(np.all((coords > -reach) & (coords < upper), axis=1))
        near_mm = shape_mm[near]
        near_coords = centroid + (near_mm + displace(near_mm)) / shape.spacing_mm
        fraction = np.zeros(len(coords), dtype=np.float32)
        fraction[near] = ndimage.map_coordinates(source, near_coords.T, order=1, mode="constant",
                                                 cval=0.0, output=np.float32)
        fraction = fraction.reshape(points.shape[:3])
        if not _touches_inner_border(fraction, crop, anatomy.shape):
            break
        radius_vox *= 2
    crop, fraction = _shrink_to_support(crop, fraction, margin=2)
    fraction = ndimage.gaussian_filter(fraction, sigma=0.5)
    parenchyma = anatomy.brain_mask[crop] * np.clip(1.0 - anatomy.tissue["csf"][crop], 0.0, 1.0)
    if "ventricles" in anatomy.regions:
        parenchyma = parenchyma * ~anatomy.regions["ventricles"][crop]
    return crop, np.clip(fraction * parenchyma, 0.0, 1.0).astype(np.float32)


def _shrink_to_support(crop, values: np.ndarray, margin: int):
    """Crop ``values`` to its non-zero bounding box ± ``margin`` voxels (within the crop)."""
    inner = []
    for axis in range(3):
        profile = np.flatnonzero(np.any(values, axis=tuple(a for a in range(3) if a != axis)))
        if profile.size == 0:
            return crop, values
        inner.append(slice(max(0, int(profile[0]) - margin),
                           min(values.shape[axis], int(profile[-1]) + margin + 1)))
    outer = tuple(slice(c.start + i.start, c.start + i.stop) for c, i in zip(crop, inner))
    return outer, values[tuple(inner)]


def _choose_centre(rng, sampler: ParenchymaSampler, shape: LesionShape, family: str, side: str):
    """Centre voxel: the real lesion's site (mirrored) or a random voxel of the territory."""
    if shape.family == family and shape.centroid_mm is not None and rng.random() < 0.5:
        site = shape.centroid_mm.copy()
        if shape.side != side:
            site[0] = -site[0]
        return sampler.nearest(site + rng.normal(0.0, 3.0, size=3)), "real_site"
    centre = sampler.sample(rng, territory_labels(family, side))
    if centre is None:  # the subject's field of view misses this territory
        return sampler.sample(rng), "any_parenchyma"
    return centre, "territory_voxel"


def _draw_shape(rng, library, volume_ml: float, family: str, side: str) -> LesionShape:
    if library is None:
        return procedural_blob(rng, volume_ml)
    shape = library.choose(rng, volume_ml, family)
    if shape.side and shape.side != side:  # mirror to the chosen hemisphere
        shape = LesionShape(mask=shape.mask[::-1], spacing_mm=shape.spacing_mm,
                            volume_ml=shape.volume_ml, family=shape.family, side=side,
                            source=shape.source + ":mirrored",
                            centroid_mm=shape.centroid_mm * np.array([-1.0, 1.0, 1.0]))
    return shape


def stroke_effect(rng: np.random.Generator, anatomy: SubjectAnatomy, difficulty: float = 0.5) -> Effect:
    """Place 1–5 acute ischaemic lesions in ``anatomy`` (see the module docstring).

    Returns:
        ``Effect("stroke")`` with gains for ``dwi``, ``adc``, ``FLAIR``, ``T1w``, ``T2starw``;
        ``labels["lesions"]`` (mask, 26-connected instances, boxes), ``maps["lesion"]``
        (fraction), ``clinical["NIHSS"]`` and per-lesion ``info``.
    """
    difficulty = check_difficulty(difficulty)
    library = load_library()
    sampler = ParenchymaSampler(anatomy)
    max_lesions = 2 + round(3 * difficulty)
    n_satellites = min(int(rng.poisson(0.4 + 1.6 * difficulty)), max_lesions - 1)
    index_family, index_side = sample_stroke_territory(rng)
    event_age = float(np.exp(rng.uniform(*np.log(AGE_RANGE_DAYS))))
    heterogeneity = 0.05 + 0.3 * difficulty

    fraction_total = np.zeros(anatomy.shape, dtype=np.float32)
    deviation = {}  # modality → (X, Y, Z) gain − 1 of the lesion with the largest fraction
    lesions, skipped, union = [], [], None
    for number in range(1 + n_satellites):
        if number == 0:
            family, side = index_family, index_side
            target = _lognormal_volume(rng, VOLUME_PRIORS[family])
        else:  # satellites: same embolic event (same territory) 60 % of the time
            family, side = (index_family, index_side) if rng.random() < 0.6 else sample_stroke_territory(rng)
            target = _lognormal_volume(rng, SATELLITE_PRIOR)
        age = event_age if rng.random() < 0.8 else float(np.exp(rng.uniform(*np.log(AGE_RANGE_DAYS))))
        contrast = sample_contrast(rng, difficulty)
        for attempt in range(6 if number == 0 else 3):
            shape = _draw_shape(rng, library, target * (1.5**attempt), family, side)
            centre, placement = _choose_centre(rng, sampler, shape, family, side)
            crop, fraction = place_shape(rng, anatomy, shape, centre, target * (1.5**attempt),
                                         max_angle_deg=10.0 if placement == "real_site" else 30.0)
            own = fraction >= 0.5
            if own.sum() >= MIN_LESION_VOXELS:
                break
        else:
            skipped.append({"territory": territory_name(family, side), "target_ml": target,
                            "reason": f"fewer than {MIN_LESION_VOXELS} voxels after placement"})
            continue
        texture = ndimage.gaussian_filter(rng.standard_normal(fraction.shape).astype(np.float32), 1.0)
        texture /= max(float(texture.std()), 1e-6)
        modulation = np.clip(1.0 + heterogeneity * texture, 0.2, None)
        wins = fraction > fraction_total[crop]
        fraction_total[crop][wins] = fraction[wins]
        for modality, gain in contrast.gains(age).items():
            target_map = deviation.setdefault(modality, np.zeros(anatomy.shape, dtype=np.float32))
            target_map[crop][wins] = (fraction * (gain - 1.0) * modulation)[wins]
        union = crop if union is None else tuple(
            slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(union, crop))
        centre_vox = np.array([s.start for s in crop]) + np.array(ndimage.center_of_mass(own))
        lesions.append({
            "territory": territory_name(family, side),
            "volume_ml": float(own.sum() * anatomy.voxel_volume_ml),
            "target_ml": target,
            "age_days": age,
            "centroid_mm": [float(v) for v in anatomy.affine[:3, :3] @ centre_vox + anatomy.affine[:3, 3]],
            "centroid_template_mm": [float(v) for v in anatomy.template_mm[
                tuple(np.clip(np.rint(centre_vox).astype(int), 0, np.array(anatomy.shape) - 1))]],
            "shape": shape.source,
            "placement": placement,
            "gains": contrast.gains(age),
            "_own": (crop, own),
        })

    mask = ((fraction_total >= 0.5) & anatomy.brain_mask).astype(np.uint8)
    instances, boxes = instances_and_boxes(mask, anatomy.affine, label="lesion", region=union)
    for lesion in lesions:
        crop, own = lesion.pop("_own")
        lesion["instance_ids"] = sorted(int(i) for i in np.unique(instances[crop][own]) if i > 0)
    nihss = nihss_score(rng, lesions)
    return Effect(
        name="stroke",
        gain={m: 1.0 + d for m, d in deviation.items()},  # float32 stays float32
        labels={"lesions": {"mask": mask, "instances": instances, "boxes": boxes}},
        maps={"lesion": fraction_total},
        clinical={"NIHSS": nihss},
        info={"difficulty": difficulty, "n_lesions": len(lesions), "lesions": lesions,
              "skipped": skipped, "total_volume_ml": float(mask.sum() * anatomy.voxel_volume_ml),
              "shape_source": "library" if library is not None else "procedural"},
    )
