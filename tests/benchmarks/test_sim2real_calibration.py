"""benchmarks/sim2real_calibration.py: the voxel-rule ceiling (the best "DWI above k and ADC below
t" rule) on phantoms whose separability is known by construction, and the statistics of each
recipe's draws, measured on the lesion mask the draw shows (emboli included)."""

from __future__ import annotations

import numpy as np

from benchmarks.sim2real_calibration import outer_csf_share, voxel_rule_ceiling


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


def test_outer_csf_share_counts_the_outer_10_mm_in_millimetres():
    """A 30³ cube brain (one background voxel around it) whose outer 2 voxels are CSF: at 1 mm
    the outer 10 mm leaves a 10³ core, at 2 mm a 20³ core (depth = distance to background)."""
    brain = np.zeros((32,) * 3, bool)
    brain[1:31, 1:31, 1:31] = True
    csf = brain.copy()
    csf[3:29, 3:29, 3:29] = False
    masks = {"brain": brain, "csf": csf}
    assert outer_csf_share(masks, (1.0, 1.0, 1.0)) == (30**3 - 26**3) / (30**3 - 10**3)
    assert outer_csf_share(masks, (2.0, 2.0, 2.0)) == (30**3 - 26**3) / (30**3 - 20**3)


def test_randomised_draws_are_measured_before_normalisation_and_the_subacute_recipe_is_fainter(tmp_path):
    """Draws of both recipes from one phantom subject's label maps: the same seeds give the same
    draws but for the lesion's ADC margin, which ``synthstroke_subacute`` draws in [0, 0.55]
    instead of [0.15, 0.55] (so never deeper): its lesions are fainter on ADC, as bright on
    DWI; ADC stays in 10⁻⁶ or 10⁻³ mm²/s (not z-scored)."""
    import nibabel as nib

    from benchmarks.sim2real_calibration import randomised_cases
    from tests.data.test_randomise import AFFINE
    from tests.data.test_randomise import phantom as tissue_phantom

    tissue, lesion = tissue_phantom()
    for sub, volume in (("truth/sub-0001/sub-0001_desc-tissue_dseg", tissue),
                        ("lesions/sub-0001/anat/sub-0001_msk", lesion)):
        path = tmp_path / "derivatives" / f"{sub}.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(volume.astype(np.uint8), AFFINE), path)
    default = randomised_cases(tmp_path, "synthstroke", 6)
    subacute = randomised_cases(tmp_path, "synthstroke_subacute", 6)
    assert [c["case"] for c in default] == [f"sub-0001 draw {k}" for k in range(6)]
    adc = [(d["channels"]["adc"]["lesion_contrast"], s["channels"]["adc"]["lesion_contrast"])
           for d, s in zip(default, subacute)]
    dwi = [(d["channels"]["dwi"]["lesion_contrast"], s["channels"]["dwi"]["lesion_contrast"])
           for d, s in zip(default, subacute)]
    assert all(s > d for d, s in adc) and all(d < 1.0 for d, _ in adc)
    assert all(d == s > 1.0 for d, s in dwi)  # DWI is drawn before ADC: the same numbers
    assert all(400 < c["adc_parenchyma_median_e6"] < 1500 for c in default + subacute)
    # synthstroke_calibrated: the DWI margin [0.05, 1.2] is below [0.25, 1.5] for every uniform
    # draw, so each lesion is fainter on DWI; ADC gets extra noise, DWI none
    calibrated = randomised_cases(tmp_path, "synthstroke_calibrated", 6)
    assert all(c["channels"]["dwi"]["lesion_contrast"] < s["channels"]["dwi"]["lesion_contrast"]
               for c, s in zip(calibrated, subacute))

    def median_noise(cases, channel):
        return np.median([c["channels"][channel]["noise_rel"] for c in cases])

    assert median_noise(calibrated, "adc") > 1.3 * median_noise(subacute, "adc")
    assert median_noise(calibrated, "dwi") < 1.3 * median_noise(subacute, "dwi")
    # synthstroke_embolic: the subacute recipe's draws (same seeds) plus, in some draws, an
    # embolic shower that the measured lesion mask counts as extra components
    embolic = randomised_cases(tmp_path, "synthstroke_embolic", 6)
    pairs = [(s["lesion_components"], e["lesion_components"]) for s, e in zip(subacute, embolic)]
    assert all(e >= s for s, e in pairs) and any(e >= s + 3 for s, e in pairs)
    # synthstroke_embolic_sulci: the embolic recipe with a folded, atrophic cortex (add_sulci)
    folded = randomised_cases(tmp_path, "synthstroke_embolic_sulci", 6)
    assert (np.median([c["outer_csf_share"] for c in folded])
            > np.median([c["outer_csf_share"] for c in embolic]) + 0.05)
