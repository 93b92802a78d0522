"""Alzheimer's disease: clinical profile, graded atrophy and the amyloid-PET signal.

Each subject has a latent disease ``stage`` in [0, 1] (CN < 0.2 ≤ MCI < 0.6 ≤ AD) that
drives every observation through its own independent noise, so no single modality gives
the diagnosis away and fusing them helps (the amyloid/tau/neurodegeneration cascade,
Jack et al. 2010):

* amyloid status rises early and saturates (≈ 20 % of CN, 90 % of MCI, 95 % of AD are
  amyloid positive; each APOE ε4 allele raises the odds ≈ 3×) → the amyloid-PET channel. The
  cohort's MCI is *MCI due to AD* (prodromal AD on the Alzheimer's continuum, amyloid-positive
  by the research criteria of Albert et al. 2011 / Jack et al. 2018), not ADNI's all-cause
  MCI (≈ 55 % positive); the amyloid load plateaus by the middle of the MCI range, so PET
  tells CN from impaired but hardly MCI from AD;
* neurodegeneration rises late (∝ stage^1.5, slower without amyloid) → MRI atrophy of the
  hippocampus, entorhinal, lateral temporal and parietal cortex and the precuneus,
  ventricular enlargement, plus age-related atrophy in everyone;
* cognition (MMSE, CDR) follows the stage with test noise.

So MCI vs CN is mostly an amyloid question, MCI vs AD mostly an atrophy question, and
whether an MCI subject converts depends on both (logistic in neurodegeneration + amyloid),
so MRI + PET predict conversion better than either.

Atrophy is tissue loss: grey matter (or, around the ventricles, any tissue) becomes CSF.
Hippocampus and entorhinal cortex shrink as shapes — the structure's grey-matter map is
re-sampled through a radial contraction about its centre and what it no longer covers
becomes CSF, with the contraction strength solved for so the lost fraction equals the
target; the ventricles grow the same way; the cortex thins as a partial-volume loss over
each region.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from cogimg.data.synth.anatomy import local_scaling_displacement
from cogimg.data.synth.difficulty import Difficulty
from cogimg.data.synth.types import Effect, SubjectAnatomy

STAGE_RANGE = {"CN": (0.0, 0.2), "MCI": (0.25, 0.6), "AD": (0.6, 1.0)}
#: P(0, 1, 2 APOE ε4 alleles) by diagnosis (ADNI-like frequencies).
APOE4_PROBS = {"CN": (0.72, 0.25, 0.03), "MCI": (0.50, 0.40, 0.10), "AD": (0.35, 0.47, 0.18)}
#: Logit of amyloid positivity before APOE and age terms.
AMYLOID_LOGIT = {"CN": -1.9, "MCI": 2.0, "AD": 2.5}
#: Stage at which a positive subject's amyloid load reaches its plateau (mid-MCI).
AMYLOID_PLATEAU_STAGE = 0.3

#: Fraction of the region's tissue lost at full neurodegeneration (``medium``), and per
#: year of age over 60 (Fjell et al. 2009; Jack et al. 2004). Ventricles: fractional growth.
DISEASE_LOSS = {"hippocampus": 0.30, "entorhinal": 0.35, "temporal": 0.15, "parietal": 0.12,
                "precuneus": 0.14, "cortex": 0.04, "ventricles": 0.9}
AGE_LOSS_PER_YEAR = {"hippocampus": 0.005, "entorhinal": 0.004, "temporal": 0.003,
                     "parietal": 0.003, "precuneus": 0.003, "cortex": 0.002, "ventricles": 0.03}
SHAPE_REGIONS = ("hippocampus", "entorhinal")
CORTICAL_REGIONS = ("temporal", "parietal", "precuneus")


@dataclass
class ADProfile:
    """A subject's Alzheimer's-related latent state and clinical scores."""

    stage: float
    apoe4: int
    amyloid_positive: bool
    amyloid_load: float  # ≈ centiloid / 100
    neurodegeneration: float
    mmse: int
    cdr: float
    converter: bool | None  # MCI only: converts to AD within follow-up

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def sample_ad_profile(rng: np.random.Generator, diagnosis: str, age: float) -> ADProfile:
    """Draw the AD latent state; non-AD diagnoses (PD, stroke) are drawn like CN."""
    dx = diagnosis if diagnosis in STAGE_RANGE else "CN"
    lo, hi = STAGE_RANGE[dx]
    stage = float(rng.uniform(lo, hi))
    apoe4 = int(rng.choice(3, p=APOE4_PROBS[dx]))
    p_amyloid = _sigmoid(AMYLOID_LOGIT[dx] + 1.1 * apoe4 + 0.05 * (age - 70.0))
    positive = bool(rng.uniform() < p_amyloid)
    if positive:
        load = float(np.clip(0.3 + 0.5 * min(stage / AMYLOID_PLATEAU_STAGE, 1.0) + rng.normal(0.0, 0.12),
                             0.15, 1.0))
    else:  # non-specific retention only (subject contrast jitter covers its variation)
        load = 0.0
    # Neurodegeneration follows amyloid; without it (SNAP) it progresses more slowly. Brain
    # reserve (a log-normal factor) and measurement-free noise decouple it from the clinical
    # stage: subjects at one stage carry different atrophy, so T1w alone cannot read the
    # stage off atrophy. A logistic model on the latents themselves (no image) stages CN/MCI/AD
    # better from atrophy, amyloid load and the clinical scores together than from any one of
    # them -- the complementarity studies/fusion_gain.yaml measures.
    reserve = float(np.exp(rng.normal(0.0, 0.5)))
    nd = (1.0 if positive else 0.6) * stage**1.5 * reserve + rng.normal(0.0, 0.12)
    nd = float(np.clip(nd, 0.0, 1.0))
    mmse = 29.3 - 8.0 * stage**1.6 - 0.03 * (age - 70.0) + rng.normal(0.0, 1.8)
    mmse = int(np.clip(round(mmse), 0, 30))
    x = stage + rng.normal(0.0, 0.07)
    cdr = 0.0 if x < 0.22 else 0.5 if x < 0.72 else 1.0 if x < 0.92 else 2.0
    converter = None
    if dx == "MCI":
        # Conversion risk: neurodegeneration (seen by MRI) and amyloid (seen by PET) add up.
        converter = bool(rng.uniform() < _sigmoid(12.0 * (nd - 0.22) + (1.5 if positive else -1.5)))
    return ADProfile(stage, apoe4, positive, load, nd, mmse, cdr, converter)


def _resample_loss(
    anatomy: SubjectAnatomy, name: str, target: float, grow: bool,
) -> tuple[tuple[slice, ...] | None, np.ndarray | None, float]:
    """Shrink (or, ``grow=True``, enlarge) region ``name`` by the fraction ``target``.

    The region's own tissue map (GM for shrinking structures, CSF for the ventricles) is
    re-sampled on the subject grid through :func:`local_scaling_displacement` about its
    centre of mass; what the shrunken structure no longer covers (or the grown one newly
    covers) turns into CSF. The amplitude is found by secant steps so the volume change is
    ``target`` of the region's volume.

    Returns:
        ``(box, change, achieved)``: the voxel box, the per-voxel tissue fraction converted
        to CSF inside it (float32), and the achieved fractional change.
    """
    if target <= 1e-4:
        return None, None, 0.0
    regions = anatomy.regions
    label = regions.label_of(name)
    coarse_box = regions.box(name, 1)
    if coarse_box is None:
        return None, None, 0.0
    tissue_key = "csf" if grow else "gm"
    member = regions.labels[coarse_box] == label
    own = anatomy.tissue[tissue_key][coarse_box] * member
    total = float(own.sum())
    idx = np.argwhere(member).astype(np.float32)
    weights = own[member]
    centre = (idx * weights[:, None]).sum(0) / max(float(weights.sum()), 1e-6)
    spread = np.sqrt(((idx - centre) ** 2 * weights[:, None]).sum(0) / max(float(weights.sum()), 1e-6))
    sigma = (1.5 * spread + 1.0).astype(np.float32)  # voxels
    if not grow:
        # Contract towards the inferomedial side, where the medial temporal structures sit
        # on white matter, so CSF opens superolaterally (the temporal horn) rather than as
        # a ring around the structure. Voxel axes are RAS on this grid.
        medial = 1.0 if name.endswith("_l") else -1.0
        direction = np.array([medial, 0.0, -1.0], np.float32) / np.sqrt(2.0)
        centre = centre + 0.8 * spread * direction
    # Shrinking samples from further out, so only the region's own voxels can change;
    # growing samples from nearer the centre, so voxels up to the largest displacement
    # (|a| σ e^-½ ≤ 0.85 · 0.61 σ) outside the region can become CSF too.
    reach = int(np.ceil(0.55 * sigma.max())) + 1 if grow else 0
    box = regions.box(name, 1 + reach)
    offset = np.array([c.start - b.start for c, b in zip(coarse_box, box)], np.float32)
    own_full = np.zeros(tuple(b.stop - b.start for b in box), np.float32)
    own_full[tuple(slice(int(o), int(o) + n) for o, n in zip(offset, own.shape))] = own
    centre = centre + offset
    candidate = (own_full > 0) if not grow else ndi.binary_dilation(own_full > 0, iterations=reach)
    candidate &= anatomy.brain_mask[box]
    pts = np.argwhere(candidate).astype(np.float32)
    own_pts = own_full[candidate]
    room = (1.0 - anatomy.tissue["csf"][box][candidate]) if grow else None

    def change_for(amplitude: float) -> np.ndarray:
        u, _ = local_scaling_displacement(pts, centre, sigma, amplitude)
        resampled = ndi.map_coordinates(own_full, (pts + u).T, order=1, mode="constant", cval=0.0)
        if grow:
            return np.clip(resampled - own_pts, 0.0, room)
        return np.clip(own_pts - resampled, 0.0, None)

    def frac(amplitude: float) -> tuple[float, np.ndarray]:
        c = change_for(amplitude)
        return float(c.sum()) / max(total, 1e-6), c

    # Growing needs a > −1 (no folding at the centre); shrinking stays well below the
    # folding limit of the Gaussian profile (a < 2.2).
    lo, hi = (-0.85, 0.0) if grow else (0.0, 1.5)
    a0 = float(np.clip((-0.5 if grow else 0.5) * target, lo, hi))  # first guess
    f0, _ = frac(a0)
    a1 = float(np.clip(a0 * target / max(f0, 1e-3), lo, hi))
    f1, c1 = frac(a1)
    if abs(f1 - target) > 0.01 and abs(f1 - f0) > 1e-4:
        a2 = float(np.clip(a1 + (target - f1) * (a1 - a0) / (f1 - f0), lo, hi))
        f2, c2 = frac(a2)
        if abs(f2 - target) < abs(f1 - target):
            f1, c1 = f2, c2
    change = np.zeros(candidate.shape, np.float32)
    change[candidate] = c1
    return box, change, f1


def atrophy_effect(
    rng: np.random.Generator, anatomy: SubjectAnatomy,
    profile: ADProfile, age: float, difficulty: Difficulty,
) -> tuple[dict[str, np.ndarray], Effect]:
    """Apply age- and AD-related atrophy to a subject's tissue maps.

    Args:
        anatomy: the healthy subject (not modified).
    Returns:
        ``(tissue, effect)``: the atrophied ``gm``/``wm``/``csf`` maps (float32 (X, Y, Z))
        and an :class:`Effect` with the ``atrophy`` map (fraction of each voxel's tissue
        turned into CSF by the regional processes; the diffuse cortical loss is only in
        ``info``) and per-region targets/achieved losses in ``info``.
    """
    years = max(age - 60.0, 0.0)
    nd = profile.neurodegeneration * difficulty.effect
    gm = anatomy.tissue["gm"].copy()
    wm = anatomy.tissue["wm"].copy()
    csf = anatomy.tissue["csf"].copy()
    lost = np.zeros(gm.shape, np.float32)
    regions = anatomy.regions
    info: dict = {"neurodegeneration": round(nd, 4), "regions": {}}

    def target_for(base: str) -> float:
        noise = float(np.exp(rng.normal(0.0, 0.2)))
        t = AGE_LOSS_PER_YEAR[base] * years + DISEASE_LOSS[base] * nd * noise
        return float(min(t, 2.0 if base == "ventricles" else 0.6))

    for base in SHAPE_REGIONS:
        for side in ("l", "r"):
            name = f"{base}_{side}"
            target = target_for(base)
            box, change, achieved = _resample_loss(anatomy, name, target, grow=False)
            if box is not None:
                change = np.minimum(change, gm[box])
                gm[box] -= change
                csf[box] += change
                lost[box] += change
            info["regions"][name] = {"target_loss": round(target, 4), "achieved_loss": round(achieved, 4)}

    target = target_for("ventricles")
    box, change, achieved = _resample_loss(anatomy, "ventricles", target, grow=True)
    if box is not None:
        tissue_sum = np.maximum(gm[box] + wm[box], 1e-6)
        change = np.minimum(change, tissue_sum)
        gm[box] -= change * gm[box] / tissue_sum
        wm[box] -= change * wm[box] / tissue_sum
        csf[box] += change
        lost[box] += change
        outside = float((change * (regions.labels[box] != regions.label_of("ventricles"))).sum())
    else:
        outside = 0.0
    # Growth beyond the ventricle label, so volumes can be measured without re-labelling.
    info["regions"]["ventricles"] = {
        "target_growth": round(target, 4), "achieved_growth": round(achieved, 4),
        "growth_outside_label_ml": round(outside * anatomy.voxel_volume_ml, 4)}

    spacing = anatomy.spacing_mm
    for base in CORTICAL_REGIONS:
        for side in ("l", "r"):
            name = f"{base}_{side}"
            target = target_for(base)
            k = regions.label_of(name)
            box = regions.box(name, int(np.ceil(6.0 / spacing)))
            if box is None or target <= 0:
                continue
            member = (regions.labels[box] == k).astype(np.float32)
            # Smooth fall-off (3 mm) so thinning fades out at the region's edge, scaled so
            # the region loses ``target`` of its grey matter on average.
            weight = ndi.gaussian_filter(member, 3.0 / spacing)
            mean_in = float((weight * member * gm[box]).sum() / max((member * gm[box]).sum(), 1e-6))
            frac = np.clip(weight * (target / max(mean_in, 1e-6)), 0.0, 0.9)
            change = gm[box] * frac
            gm[box] -= change
            csf[box] += change
            lost[box] += change
            info["regions"][name] = {"target_loss": round(target, 4)}

    # Diffuse cortical thinning everywhere: recorded in ``info`` but kept out of the map,
    # which shows where atrophy is *localised* (what an explanation should point at).
    global_loss = target_for("cortex")
    change = gm * np.float32(global_loss)
    gm -= change
    csf += change
    info["regions"]["cortex"] = {"target_loss": round(global_loss, 4), "in_map": False}

    tissue = {"gm": gm, "wm": wm, "csf": csf}
    effect = Effect(name="atrophy", maps={"atrophy": lost}, info=info)
    return tissue, effect


# Amyloid deposition pattern (Braak/Thal-like cortical distribution, MNI mm): weight bumps
# on top of a cortical baseline; the cerebellum is the SUVR reference and stays free.
_AMYLOID_BUMPS = (
    ((0.0, -58.0, 36.0), 18.0, 0.6),   # precuneus / posterior cingulate
    ((0.0, 45.0, 20.0), 25.0, 0.35),   # medial frontal
    ((-50.0, -40.0, 10.0), 25.0, 0.2),  # lateral temporo-parietal, left
    ((50.0, -40.0, 10.0), 25.0, 0.2),   # lateral temporo-parietal, right
    ((-35.0, -25.0, 60.0), 15.0, -0.4),  # sensorimotor (spared), left
    ((35.0, -25.0, 60.0), 15.0, -0.4),   # sensorimotor (spared), right
)


def amyloid_effect(anatomy: SubjectAnatomy, profile: ADProfile) -> tuple[np.ndarray, Effect]:
    """Cortical amyloid retention for the amyloid-PET channel.

    Returns:
        ``(gm_extra, effect)``: float32 (X, Y, Z) additive GM signal as a fraction of the
        GM mean (pass to ``contrasts.synthesize(..., gm_extra=)``) and an Effect whose
        ``amyloid`` map is the extra SUVR-weighted GM (``gm_extra × gm``).
    """
    extra = np.zeros(anatomy.shape, np.float32)
    if profile.amyloid_load > 0:
        mask = anatomy.tissue["gm"] > 0.05
        pts = anatomy.template_mm[mask]
        w = np.ones(len(pts), np.float32)
        for centre, sd, amp in _AMYLOID_BUMPS:
            d2 = np.sum((pts - np.asarray(centre, np.float32)) ** 2, axis=1)
            w += np.float32(amp) * np.exp(-0.5 * d2 / sd**2)
        w[pts[:, 1] < -80.0] *= 0.6  # occipital pole: late
        cerebellum = (pts[:, 2] < -25.0) & (pts[:, 1] < -40.0)
        w[cerebellum] = 0.05
        extra[mask] = 0.9 * profile.amyloid_load * np.clip(w, 0.0, 1.8)
    effect = Effect(
        name="amyloid",
        maps={"amyloid": extra * anatomy.tissue["gm"]},
        info={"amyloid_positive": profile.amyloid_positive, "amyloid_load": round(profile.amyloid_load, 4)},
    )
    return extra, effect
