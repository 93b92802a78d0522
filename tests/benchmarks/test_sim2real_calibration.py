"""benchmarks/sim2real_calibration.py's voxel-rule ceiling: the best "DWI above k and ADC below
t" rule on phantoms whose separability is known by construction."""

from __future__ import annotations

import numpy as np

from benchmarks.sim2real_calibration import voxel_rule_ceiling


def phantom(mimic_adc: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A 20³ brain of parenchyma (DWI 100, ADC 800), a 4³ lesion (DWI 180, ADC 480) and a 4³
    mimic as bright on DWI with ADC ``mimic_adc``."""
    dwi, adc = np.full((20,) * 3, 100.0), np.full((20,) * 3, 800.0)
    lesion = np.zeros((20,) * 3, bool)
    lesion[2:6, 2:6, 2:6] = True
    mimic = np.zeros_like(lesion)
    mimic[12:16, 12:16, 12:16] = True
    dwi[lesion | mimic] = 180.0
    adc[lesion], adc[mimic] = 480.0, mimic_adc
    brain = np.ones_like(lesion)
    return {"dwi": dwi, "adc": adc}, {"brain": brain, "lesion": lesion, "parenchyma": ~(lesion | mimic)}


def test_adc_limit_separates_a_lesion_from_a_shine_through_mimic():
    images, masks = phantom(mimic_adc=900.0)
    best = voxel_rule_ceiling(images, masks)
    assert best["dice"] == 1.0
    assert best["dwi_above"] < 1.8 and 0.6 <= best["adc_below"] <= 1.1


def test_a_mimic_dark_on_adc_too_caps_the_ceiling_at_two_thirds():
    """Lesion and mimic identical in both channels: any rule takes both (Dice 2·64/192) or
    neither."""
    images, masks = phantom(mimic_adc=480.0)
    assert np.isclose(voxel_rule_ceiling(images, masks)["dice"], 2 * 64 / (128 + 64))
