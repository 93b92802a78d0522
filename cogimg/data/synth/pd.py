"""Parkinson's disease: subtle MRI changes, dopamine-transporter loss and UPDRS.

* Substantia nigra: iron accumulates (T2* signal falls) and neuromelanin is lost (T1w
  signal falls slightly) — Sulzer et al. 2018; nigrosome-1 loses its hyperintensity on T2*
  (the "swallow tail" sign, Schwarz et al. 2014).
* Striatum: mild T1w signal change in putamen and caudate.
* DAT SPECT: specific binding falls in the putamen first — more on the side opposite the
  clinically more affected limbs, posterior before anterior — and less in the caudate
  (Booij et al. 1997; Kraemmer et al. 2014). This is the clear channel; MRI is subtle.
* UPDRS part III grows with severity, with rater noise.

All MRI and DAT changes are gains on the healthy contrast; their ground truth is written
as the ``pd`` map (largest relative MRI signal change) and the ``dat`` map (fraction of
specific striatal binding lost).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from cogimg.data.synth.contrasts import REGION_FACTORS
from cogimg.data.synth.difficulty import Difficulty
from cogimg.data.synth.types import Effect, SubjectAnatomy

#: Relative MRI signal change at full severity (``medium``): modality → region → change.
MRI_CHANGE = {
    "T2starw": {"substantia_nigra": -0.20, "putamen": -0.03},
    "T1w": {"substantia_nigra": -0.06, "putamen": -0.03, "caudate": -0.02},
}


@dataclass
class PDProfile:
    """A subject's Parkinson's latent state (``severity`` 0 for non-PD subjects)."""

    severity: float
    more_affected_hemisphere: str  # "l" or "r": the striatum opposite the worse limbs
    asymmetry: float
    putamen_loss: dict[str, float] = field(default_factory=dict)  # per side, posterior end
    caudate_loss: dict[str, float] = field(default_factory=dict)
    updrs: int = 0

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def sample_pd_profile(rng: np.random.Generator, diagnosis: str, age: float) -> PDProfile:
    """Draw the PD latent state (non-PD subjects get severity 0 and a control UPDRS)."""
    if diagnosis != "PD":
        updrs = int(rng.poisson(1.5 + 0.05 * max(age - 50.0, 0.0)))
        return PDProfile(0.0, "l", 0.0, {"l": 0.0, "r": 0.0}, {"l": 0.0, "r": 0.0}, updrs)
    sev = float(rng.uniform(0.15, 1.0))
    side = "l" if rng.uniform() < 0.5 else "r"
    asym = float(rng.uniform(0.1, 0.45))
    worse = float(np.clip(0.5 + 0.35 * sev + rng.normal(0.0, 0.08), 0.25, 0.9))
    other = "r" if side == "l" else "l"
    putamen = {side: worse, other: worse * (1.0 - asym)}
    caud = float(np.clip(0.15 + 0.25 * sev + rng.normal(0.0, 0.06), 0.0, 0.7))
    caudate = {side: caud, other: caud * (1.0 - 0.5 * asym)}
    updrs = int(np.clip(round(10.0 + 30.0 * sev + rng.normal(0.0, 5.0)), 3, 100))
    return PDProfile(sev, side, asym, putamen, caudate, updrs)


def _soft(deviation: np.ndarray) -> np.ndarray:
    """Partial-volume edges for a label-based change map."""
    return ndi.gaussian_filter(deviation, 0.6).astype(np.float32)


def pd_effect(
    rng: np.random.Generator, anatomy: SubjectAnatomy, profile: PDProfile, difficulty: Difficulty,
) -> Effect:
    """MRI and DAT gains of one subject (an empty effect for non-PD subjects)."""
    if profile.severity <= 0:
        return Effect(name="pd", info={"severity": 0.0})
    eff = difficulty.effect * profile.severity
    regions = anatomy.regions
    gains, info = {}, {"severity": round(profile.severity, 4), "mri_change": {}}
    change_max = np.zeros(anatomy.shape, np.float32)
    for modality, changes in MRI_CHANGE.items():
        dev = np.zeros(anatomy.shape, np.float32)
        for base, delta in changes.items():
            for side in ("l", "r"):
                worse = side == profile.more_affected_hemisphere
                d = delta * eff * (1.0 if worse else 1.0 - 0.5 * profile.asymmetry)
                d *= float(np.exp(rng.normal(0.0, 0.15)))
                dev[regions[f"{base}_{side}"]] = d
                info["mri_change"][f"{modality}/{base}_{side}"] = round(d, 4)
        if modality == "T2starw":
            # Nigrosome-1 drops from its bright healthy level to the nigra's dark level.
            f = REGION_FACTORS["T2starw"]
            loss = float(np.clip((0.5 + 0.5 * profile.severity) * difficulty.effect, 0.0, 1.0))
            drop = -(1.0 - f["substantia_nigra"] / f["nigrosome"]) * loss
            for side in ("l", "r"):
                dev[regions[f"nigrosome_{side}"]] = drop
            info["nigrosome_hyperintensity_loss"] = round(loss, 4)
        dev = _soft(dev)
        gains[modality] = 1.0 + dev
        change_max = np.maximum(change_max, np.abs(dev))

    # DAT: loss of specific binding, posterior > anterior putamen.
    loss_map = np.zeros(anatomy.shape, np.float32)
    y = anatomy.template_mm[..., 1]
    for side in ("l", "r"):
        put = regions[f"putamen_{side}"]
        if put.any():
            ys = y[put]
            t = (ys.max() - ys) / max(float(ys.max() - ys.min()), 1e-3)  # 0 anterior → 1 posterior
            loss_map[put] = profile.putamen_loss[side] * (0.55 + 0.45 * t)
        loss_map[regions[f"caudate_{side}"]] = profile.caudate_loss[side]
    loss_map = np.clip(loss_map * difficulty.effect, 0.0, 0.95)
    dat_gain = np.ones(anatomy.shape, np.float32)
    for base in ("putamen", "caudate"):
        bp = REGION_FACTORS["pet_dat"][base] - 1.0
        for side in ("l", "r"):
            m = regions[f"{base}_{side}"]
            dat_gain[m] = (1.0 + bp * (1.0 - loss_map[m])) / (1.0 + bp)
    gains["pet_dat"] = 1.0 + _soft(dat_gain - 1.0)
    info["dat_loss"] = {"putamen": {k: round(v, 4) for k, v in profile.putamen_loss.items()},
                        "caudate": {k: round(v, 4) for k, v in profile.caudate_loss.items()},
                        "scaled_by_difficulty": difficulty.effect}
    return Effect(
        name="pd",
        gain=gains,
        maps={"pd": change_max, "dat": loss_map},
        clinical={"UPDRS": profile.updrs},
        info=info,
    )
