"""Cerebral microbleeds for the synthetic cohort (effect ``microbleeds``).

A subject gets ``K ~ Poisson(λ)``, ``λ ~ Gamma(shape 0.8, mean 3)`` foci (≈ 29 % of subjects
have none, a few have 10+; at most :data:`MAX_MICROBLEEDS`), placed at parenchyma voxels:

- 60 % **lobar**: the grey/white-matter junction (GM probability 0.25–0.75) outside deep territories;
- 30 % **deep**: basal ganglia, internal capsule, thalamus (``territories.DEEP_LABELS``);
- 10 % **infratentorial**: brainstem and cerebellum (vertebrobasilar territories).

Each focus of apparent diameter ``d`` (2–10 mm; smaller when hard) darkens with a
susceptibility-like blooming profile ``fraction(r) = 2^(-(2r/d)²)`` (0.5 at ``r = d/2``):
``T2starw`` gain ``1 - fraction · (1 - g₀)`` with centre gain ``g₀`` 0.2–0.5 (up to 0.75 when
hard), and slight darkening elsewhere (``dwi`` EPI ×0.2, ``FLAIR`` ×0.1, ``T1w`` ×0.05 of the
T2* drop). ``mask = fraction >= 0.5``; foci are kept one voxel apart so every focus is exactly
one 26-connected instance.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cogimg.data.boxes import instances_and_boxes
from cogimg.data.synth.stroke import check_difficulty
from cogimg.data.synth.territories import DEEP_LABELS, FAMILY_LABELS, ParenchymaSampler
from cogimg.data.synth.types import Effect, SubjectAnatomy

MAX_MICROBLEEDS = 30
#: Location classes and their shares.
LOCATION_WEIGHTS = {"lobar": 0.6, "deep": 0.3, "infratentorial": 0.1}
#: Fraction of the T2* darkening each other modality shows.
OTHER_MODALITY_SHARE = {"dwi": 0.2, "FLAIR": 0.1, "T1w": 0.05}
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)


def _location_classes(anatomy: SubjectAnatomy, sampler: ParenchymaSampler) -> dict[str, np.ndarray]:
    """Bool per parenchyma candidate of ``sampler`` for each location class."""
    gm = anatomy.tissue["gm"].ravel()[sampler.flat_index]
    deep = np.isin(sampler.labels, DEEP_LABELS)
    infratentorial = np.isin(sampler.labels, FAMILY_LABELS["VB"])
    lobar = (gm >= 0.25) & (gm <= 0.75) & ~deep & ~infratentorial & (sampler.labels > 0)
    return {"lobar": lobar, "deep": deep, "infratentorial": infratentorial}


def _blooming(anatomy: SubjectAnatomy, centre_vox: np.ndarray, diameter_mm: float):
    """Fraction map ``2^(-(2r/d)²)`` of one focus on a crop around ``centre_vox`` (float, (3,))."""
    radius_vox = int(np.ceil(1.6 * diameter_mm / anatomy.spacing_mm)) + 1
    nearest = np.rint(centre_vox).astype(int)
    crop = tuple(slice(max(0, c - radius_vox), min(n, c + radius_vox + 1))
                 for c, n in zip(nearest, anatomy.shape))
    grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in crop], indexing="ij")
    offsets = np.stack(grids, axis=-1) - centre_vox
    distance_mm = np.linalg.norm(offsets @ anatomy.affine[:3, :3].T, axis=-1)
    fraction = np.exp2(-((2.0 * distance_mm / diameter_mm) ** 2)) * anatomy.brain_mask[crop]
    return crop, fraction.astype(np.float32)


def microbleed_effect(rng: np.random.Generator, anatomy: SubjectAnatomy,
                      difficulty: float = 0.5) -> Effect:
    """Add 0–30 microbleeds to ``anatomy`` (see the module docstring).

    Returns:
        ``Effect("microbleeds")`` with gains for ``T2starw``, ``dwi``, ``FLAIR``, ``T1w`` (none
        when the subject has no microbleed), ``labels["microbleeds"]`` (mask, instances,
        boxes), ``maps["microbleeds"]`` (blooming fraction) and per-focus ``info``.
    """
    difficulty = check_difficulty(difficulty)
    count = int(min(rng.poisson(rng.gamma(0.8, 3.0 / 0.8)), MAX_MICROBLEEDS))
    fraction_total = np.zeros(anatomy.shape, dtype=np.float32)
    mask = np.zeros(anatomy.shape, dtype=np.uint8)
    t2star_drop = np.zeros(anatomy.shape, dtype=np.float32)  # 1 - T2starw gain, darkest wins
    foci, union = [], None
    if count:
        sampler = ParenchymaSampler(anatomy)
        classes = _location_classes(anatomy, sampler)
        locations = list(LOCATION_WEIGHTS)
        shares = np.array([LOCATION_WEIGHTS[k] for k in locations])
    for _ in range(count):
        for _attempt in range(10):
            location = locations[rng.choice(len(locations), p=shares)]
            flat = sampler.sample(rng, allowed=classes[location])
            if flat is None:  # e.g. a field of view without brainstem
                flat, location = sampler.sample(rng), "parenchyma"
            diameter = float(np.exp(rng.uniform(np.log(2.0), np.log(10.0 - 4.0 * difficulty))))
            centre_vox = np.array(sampler.voxel(flat), dtype=float) + rng.uniform(-0.25, 0.25, 3)
            crop, fraction = _blooming(anatomy, centre_vox, diameter)
            own = fraction >= 0.5
            touching = ndimage.binary_dilation(own, structure=_STRUCTURE_26) & (mask[crop] > 0)
            if own.any() and not touching.any():
                break
        else:
            continue  # no free spot after 10 tries: the subject simply has fewer foci
        centre_gain = rng.uniform(0.2, 0.5) + 0.25 * difficulty * rng.random()
        np.maximum(t2star_drop[crop], fraction * (1.0 - centre_gain), out=t2star_drop[crop])
        np.maximum(fraction_total[crop], fraction, out=fraction_total[crop])
        mask[crop] |= own.astype(np.uint8)
        union = crop if union is None else tuple(
            slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(union, crop))
        foci.append({
            "location": location,
            "diameter_mm": diameter,
            "centre_gain_T2starw": float(centre_gain),
            "centre_mm": [float(v) for v in anatomy.affine[:3, :3] @ centre_vox + anatomy.affine[:3, 3]],
            "volume_ml": float(own.sum() * anatomy.voxel_volume_ml),
            "_peak": tuple(int(s.start + i) for s, i in zip(crop, np.unravel_index(np.argmax(fraction), own.shape))),
        })
    mask &= anatomy.brain_mask
    instances, boxes = instances_and_boxes(mask, anatomy.affine, label="microbleed", region=union)
    for focus in foci:
        focus["instance_id"] = int(instances[focus.pop("_peak")])
    gain = {}
    if foci:
        gain["T2starw"] = 1.0 - t2star_drop
        for modality, share in OTHER_MODALITY_SHARE.items():
            gain[modality] = 1.0 - share * t2star_drop
    return Effect(
        name="microbleeds",
        gain=gain,
        labels={"microbleeds": {"mask": mask, "instances": instances, "boxes": boxes}},
        maps={"microbleeds": fraction_total},
        info={"difficulty": difficulty, "n_microbleeds": len(foci), "n_drawn": count, "foci": foci},
    )
