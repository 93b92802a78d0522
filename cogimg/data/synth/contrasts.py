"""Tissue maps → image contrasts (T1w, FLAIR, T2starw, dwi, adc, amyloid and DAT PET).

Every modality is a partial-volume mixture ``Σ_t p_t(x) · μ_t`` of the subject's tissue
probabilities (grey matter, white matter, CSF) with per-tissue means ``μ_t`` that differ
by modality, scanner (site) and subject, times a map of region-specific factors for the
structures one tissue class cannot describe (iron-rich nuclei on T2*, striatal dopamine
transporter binding on DAT PET), times each disease effect's gain. T1w also gets the MNI
template's own texture (its difference from a three-class fit), so deep nuclei and
myelination gradients look like the template's.

Reference means are relative to white matter on the reference scanner, except ADC
(10⁻⁶ mm²/s, the unit of ISLES'22) and PET (SUVR for amyloid, uptake ratio to non-specific
background for DAT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from cogimg.data.synth.anatomy import RegionMasks

#: Modalities every subject gets, in file order.
MODALITIES: tuple[str, ...] = ("T1w", "FLAIR", "T2starw", "dwi", "adc", "pet_amyloid", "pet_dat")
MRI_MODALITIES: tuple[str, ...] = ("T1w", "FLAIR", "T2starw", "dwi", "adc")
PET_MODALITIES: tuple[str, ...] = ("pet_amyloid", "pet_dat")

#: Healthy tissue means on the reference scanner (sources: typical 3 T relative signal
#: intensities; ADC from Helenius et al. 2002; amyloid PET white-matter retention ≈ 1.5–2×
#: cortex for florbetapir; DAT uptake is near-uniform outside the striatum).
TISSUE_MEANS: dict[str, dict[str, float]] = {
    "T1w": {"gm": 0.66, "wm": 0.88, "csf": 0.28},  # = template fit, see anatomy.t1_tissue_means
    "FLAIR": {"gm": 0.62, "wm": 0.48, "csf": 0.07},
    "T2starw": {"gm": 0.62, "wm": 0.50, "csf": 0.90},
    "dwi": {"gm": 0.55, "wm": 0.48, "csf": 0.10},
    "adc": {"gm": 850.0, "wm": 720.0, "csf": 3000.0},
    "pet_amyloid": {"gm": 1.05, "wm": 1.70, "csf": 0.25},
    "pet_dat": {"gm": 1.00, "wm": 0.85, "csf": 0.20},
}

#: Healthy region factors (multiplying the tissue mixture). T2*: iron shortens T2* in the
#: pallidum, substantia nigra and red nucleus (Haacke et al. 2005); nigrosome-1 keeps a
#: brighter signal inside the dark nigra — the "swallow tail" that PD erases (Schwarz et al.
#: 2014). DAT: specific binding ratio ≈ 2.5–3.5 in the healthy striatum (Varrone 2013).
REGION_FACTORS: dict[str, dict[str, float]] = {
    "T2starw": {
        "pallidum": 0.60, "substantia_nigra": 0.62, "red_nucleus": 0.65, "putamen": 0.88,
        "caudate": 0.92, "nigrosome": 0.95,
    },
    "T1w": {},
    "FLAIR": {"substantia_nigra": 0.92, "pallidum": 0.92},
    "dwi": {},
    "adc": {},
    "pet_amyloid": {},
    "pet_dat": {"putamen": 3.6, "caudate": 3.9},
}


@dataclass
class ContrastParams:
    """A subject's tissue means and region factors on its scanner, per modality."""

    tissue_means: dict[str, dict[str, float]]
    region_factors: dict[str, dict[str, float]]
    t1_texture: float

    def to_json(self) -> dict:
        return {
            "tissue_means": {m: {t: round(v, 4) for t, v in d.items()} for m, d in self.tissue_means.items()},
            "region_factors": {m: {r: round(v, 4) for r, v in d.items()} for m, d in self.region_factors.items()},
        }


def subject_contrast(
    rng: np.random.Generator, site_tissue_scale: dict[str, dict[str, float]], age: float,
    jitter: float = 0.04,
) -> ContrastParams:
    """Draw a subject's contrast: reference means × site scale × subject jitter.

    Args:
        site_tissue_scale: modality → tissue → multiplicative site factor (``sites.py``).
        age: years; iron in the nigra and pallidum rises and DAT binding falls with age
            (≈ 0.6 %/year after 50: van Dyck et al. 2002).
        jitter: SD of the subject's log tissue means (relaxation times vary by person).
    """
    means, factors = {}, {}
    for m in MODALITIES:
        site = site_tissue_scale.get(m, {})
        means[m] = {
            t: v * site.get(t, 1.0) * float(np.exp(rng.normal(0.0, jitter)))
            for t, v in TISSUE_MEANS[m].items()
        }
        factors[m] = {r: float(f) for r, f in REGION_FACTORS[m].items()}
    years = max(age - 50.0, 0.0)
    for r in ("substantia_nigra", "pallidum", "red_nucleus"):
        factors["T2starw"][r] *= float(np.exp(rng.normal(-0.002 * years, 0.05)))
    for r in ("putamen", "caudate"):
        bp = (factors["pet_dat"][r] - 1.0) * (1.0 - 0.006 * years) * float(np.exp(rng.normal(0.0, 0.07)))
        factors["pet_dat"][r] = 1.0 + max(bp, 0.2)
    return ContrastParams(means, factors, t1_texture=float(np.exp(rng.normal(0.0, 0.1))))


def region_factor_map(regions: RegionMasks, factors: dict[str, float], spacing_mm: float) -> np.ndarray | None:
    """float32 (X, Y, Z) product of region factors (bilateral names match both sides).

    Edges are softened by a Gaussian of 0.6 voxel so nuclei have partial-volume borders.
    Returns ``None`` when the modality has no region factors.
    """
    if not factors:
        return None
    lut = np.ones(len(regions.names) + 1, np.float32)
    boxes = []
    for k, name in enumerate(regions.names, start=1):
        base = name[:-2] if name.endswith(("_l", "_r")) else name
        if base in factors:
            lut[k] = factors[base]
            box = regions.box(name, margin_vox=3)
            if box is not None:
                boxes.append(box)
    fmap = np.ones(regions.labels.shape, np.float32)
    if boxes:  # the factor regions are small deep nuclei: work in their bounding box
        union = tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(3))
        fmap[union] = ndi.gaussian_filter(lut[regions.labels[union]], 0.6, mode="nearest")
    return fmap


def synthesize(
    modality: str, tissue: dict[str, np.ndarray], params: ContrastParams,
    factor_map: np.ndarray | None = None, t1_residual: np.ndarray | None = None,
    gm_extra: np.ndarray | None = None,
) -> np.ndarray:
    """Healthy (or effect-modified) noiseless image of one modality, float32 (X, Y, Z).

    Args:
        tissue: ``gm``, ``wm``, ``csf`` probabilities, float32 (X, Y, Z).
        factor_map: region factors (:func:`region_factor_map`), or ``None``.
        t1_residual: template texture (T1w only), in template T1 units.
        gm_extra: additive grey-matter signal, as a fraction of the GM mean (amyloid load).
    """
    means = params.tissue_means[modality]
    gm_term = tissue["gm"] if gm_extra is None else tissue["gm"] * (1.0 + gm_extra)
    img = means["gm"] * gm_term + means["wm"] * tissue["wm"] + means["csf"] * tissue["csf"]
    if modality == "T1w" and t1_residual is not None:
        # The template's texture is in its own T1 units; rescale to this subject's contrast.
        ref_span = TISSUE_MEANS["T1w"]["wm"] - TISSUE_MEANS["T1w"]["csf"]
        span = means["wm"] - means["csf"]
        img = img + t1_residual * (params.t1_texture * span / ref_span)
    if factor_map is not None:
        img = img * factor_map
    return np.clip(img, 0.0, None).astype(np.float32, copy=False)
