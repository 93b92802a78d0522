"""Domain-randomised stroke images (cogimg.data.randomise) and the label maps they are drawn
from (cogimg.data.label_maps): constraints, seeding, variety."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from scipy import ndimage

from cogimg.data.label_maps import (
    CSF,
    GM,
    LESION,
    MIMIC,
    REGION,
    RIM,
    SCALP,
    SHELL,
    WM,
    add_emboli,
    add_mimics,
    add_sulci,
    label_map,
    mirrored,
    symmetric_regions,
)
from cogimg.data.randomise import (
    RECIPES,
    TISSUE_KEY,
    SynthStroke,
    draw_means,
    randomisation,
    skull_base_gain,
)

SHAPE = (40, 40, 28)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """Tissue labels (ellipsoid brain: GM rim, WM core, CSF ventricles) and a 10 mm-radius
    lesion that spans WM and GM."""
    x, y, z = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SHAPE], indexing="ij")
    r = np.sqrt((x / 16) ** 2 + (y / 16) ** 2 + (z / 11) ** 2)
    tissue = np.zeros(SHAPE, np.uint8)
    tissue[r < 1.0] = GM
    tissue[r < 0.75] = WM
    tissue[(np.abs(x) < 3) & (np.abs(y) < 6) & (np.abs(z) < 3)] = CSF
    lesion = ((x - 8) ** 2 + (y - 2) ** 2 + z**2 < 25).astype(np.uint8)
    return tissue, lesion


def subject() -> tio.Subject:
    tissue, lesion = phantom()
    zeros = torch.zeros((1, *SHAPE))
    return tio.Subject(
        dwi=tio.ScalarImage(tensor=zeros, affine=AFFINE), adc=tio.ScalarImage(tensor=zeros, affine=AFFINE),
        lesions_msk=tio.LabelMap(tensor=torch.from_numpy(lesion)[None], affine=AFFINE),
        **{TISSUE_KEY: tio.LabelMap(tensor=torch.from_numpy(tissue)[None], affine=AFFINE)},
        subject_id="phantom")


def regions() -> tuple[np.ndarray, np.ndarray]:
    """The lesion core (eroded 2 voxels) and a ring of GM/WM 3–5 voxels around the lesion."""
    tissue, lesion = phantom()
    core = ndimage.binary_erosion(lesion, iterations=2)
    ring = (ndimage.binary_dilation(lesion, iterations=5) & ~ndimage.binary_dilation(lesion, iterations=3)
            & np.isin(tissue, (GM, WM)))
    return core, ring


def draw(seed: int) -> tio.Subject:
    torch.manual_seed(seed)
    return SynthStroke(("dwi", "adc"))(subject())


def test_lesion_brighter_on_dwi_darker_on_adc_in_every_draw():
    core, ring = regions()
    for seed in range(8):
        out = draw(seed)
        dwi, adc = out["dwi"].data[0].numpy(), out["adc"].data[0].numpy()
        assert np.median(dwi[core]) > np.median(dwi[ring]), seed
        assert np.median(adc[core]) < np.median(adc[ring]), seed
        assert TISSUE_KEY not in out and "lesions_msk" in out  # label kept, tissue removed


def test_seeded_draws_repeat_and_differ():
    a, b, c = draw(3), draw(3), draw(4)
    torch.testing.assert_close(a["dwi"].data, b["dwi"].data)
    torch.testing.assert_close(a["adc"].data, b["adc"].data)
    tissue, _ = phantom()

    def csf_to_wm(s):  # a contrast (not a scale): changes between draws
        dwi = s["dwi"].data[0].numpy()
        return np.median(dwi[tissue == CSF]) - np.median(dwi[tissue == WM])

    assert abs(csf_to_wm(a) - csf_to_wm(c)) > 0.05
    assert not torch.allclose(a["dwi"].data, c["dwi"].data)


def test_output_normalised_in_head_and_on_the_label_grid():
    out = draw(0)
    for key in ("dwi", "adc"):
        assert out[key].spatial_shape == SHAPE
        np.testing.assert_allclose(out[key].affine, AFFINE)
        assert torch.isfinite(out[key].data).all()
    # z-scored inside the head: the brain's values are centred near 0 with unit spread
    tissue, _ = phantom()
    brain = out["dwi"].data[0][torch.from_numpy(tissue > 0)]
    assert abs(float(brain.mean())) < 1.0 and 0.3 < float(brain.std()) < 3.0


def test_skull_shells_lie_outside_the_brain():
    tissue, lesion = phantom()
    torch.manual_seed(0)
    labels = label_map(tissue, lesion, skull=True)
    assert set(np.unique(labels)) == {0, CSF, GM, WM, LESION, SHELL, SCALP}
    assert not np.isin(labels[tissue > 0], (SHELL, SCALP)).any()
    assert (labels[(lesion > 0) & (tissue > 0)] == LESION).all()
    assert set(np.unique(label_map(tissue, lesion, skull=False))) == {0, CSF, GM, WM, LESION}


def test_mimics_sit_in_tissue_and_on_the_brain_surface_never_on_the_lesion():
    tissue, lesion = phantom()
    brain = tissue > 0
    surface = brain & ~ndimage.binary_erosion(brain, iterations=3)
    for seed in range(4):
        torch.manual_seed(seed)
        labels = add_mimics(label_map(tissue, lesion, skull=False), 1.0, np.random.default_rng(seed))
        assert (labels[(lesion > 0) & brain] == LESION).all()
        blobs, rim = labels == MIMIC, labels == RIM
        assert blobs.any() and rim.any(), seed
        assert np.isin(tissue[blobs], (GM, WM)).all()  # blobs replace GM/WM only
        assert 0.001 < blobs.sum() / np.isin(tissue, (GM, WM)).sum() < 0.03
        assert surface[rim].all() and not rim[~brain].any()
    untouched = label_map(tissue, lesion, skull=False)
    np.testing.assert_array_equal(add_mimics(untouched.copy(), 0.0, np.random.default_rng(0)), untouched)


def test_symmetric_regions_mirror_themselves_about_the_brain_centre():
    tissue, _ = phantom()  # symmetric in X about (40 - 1) / 2
    brain = np.isin(tissue, (GM, WM))
    for seed in range(4):
        regions = symmetric_regions(brain, 0, np.random.default_rng(seed))
        np.testing.assert_array_equal(regions, mirrored(regions, 0, 19.5))
        assert not regions[~brain].any() and 0.025 < regions.sum() / brain.sum() < 0.13
    np.testing.assert_array_equal(mirrored(np.arange(5), 0, 2.0), [4, 3, 2, 1, 0])
    torch.manual_seed(0)
    labels = add_mimics(label_map(*phantom(), skull=False), 1.0, np.random.default_rng(0))
    assert (labels == REGION).any()


def test_mimics_are_bright_on_dwi_but_not_dark_on_adc():
    """A blob or rim mimic looks like a lesion on DWI only: its ADC is at least the brighter
    tissue's (rim: about GM's), the lesion's is below the darker tissue's."""
    for seed in range(20):
        torch.manual_seed(seed)
        dwi, adc = draw_means("dwi", (0.25, 1.5), (0.15, 0.55)), draw_means("adc", (0.25, 1.5), (0.15, 0.55))
        assert dwi[MIMIC] > max(dwi[GM], dwi[WM]) and dwi[RIM] >= max(dwi[GM], dwi[WM])
        assert adc[MIMIC] >= max(adc[GM], adc[WM]) > adc[LESION] and adc[RIM] >= 0.95 * adc[GM]
        # symmetric regions: bright on DWI, ADC from as low as a mild lesion's to raised (their
        # cue is symmetry)
        assert dwi[REGION] > max(dwi[GM], dwi[WM])
        assert 0.75 * min(adc[GM], adc[WM]) <= adc[REGION] <= 1.3 * min(adc[GM], adc[WM])


def test_missing_tissue_map_and_unknown_recipe_are_named():
    s = subject()
    s.remove_image(TISSUE_KEY)
    with pytest.raises(KeyError, match=TISSUE_KEY):
        SynthStroke(("dwi", "adc"))(s)
    with pytest.raises(ValueError, match="synthstroke"):
        randomisation("nope", ("dwi", "adc"), "lesions_msk")
    with pytest.raises(ValueError, match="T1w"):
        SynthStroke(("dwi", "T1w"))


def test_subacute_recipe_draws_lesion_adc_up_to_its_tissue_and_the_default_does_not():
    """Lesion ADC / darker tissue's ADC over 400 draws of the means: the default margin keeps it
    in [0.45, 0.85]; ``synthstroke_subacute`` reaches pseudo-normalised lesions (up to 1.0,
    never above) and still draws the deep ones."""
    def ratios(adc_margin):
        torch.manual_seed(0)
        out = []
        for _ in range(400):
            adc = draw_means("adc", (0.25, 1.5), adc_margin)
            out.append(adc[LESION] / min(adc[GM], adc[WM]))
        return np.array(out)

    default = ratios(SynthStroke().adc_margin)
    subacute = ratios(RECIPES["synthstroke_subacute"]["adc_margin"])
    assert 0.45 <= default.min() and default.max() <= 0.85
    assert 0.95 < subacute.max() <= 1.0 and subacute.min() < 0.5
    assert (subacute > 0.85).mean() == pytest.approx(0.15 / 0.55, abs=0.06)


def test_emboli_are_small_lesions_in_tissue_clustered_in_one_territory():
    """An embolic shower: small LESION ellipsoids (radius ≤ 6 mm × 1.4) in GM/WM only, within
    one sphere of at most 60 mm radius, the cohort's lesion kept; ``p_emboli=0`` changes nothing."""
    tissue, lesion = phantom()
    spacing = (2.0, 2.0, 2.0)
    largest = 4 / 3 * np.pi * (6 * 1.4 / 2.0) ** 3  # voxels of the largest possible ellipsoid
    sizes = []
    for seed in range(30):
        base = label_map(tissue, lesion, skull=False)
        one = add_emboli(base.copy(), 1.0, (1, 1), np.random.default_rng(seed), spacing)
        sizes.append(int(((one == LESION) & (base != LESION)).sum()))
        labels = add_emboli(base.copy(), 1.0, (10, 20), np.random.default_rng(seed), spacing)
        added = (labels == LESION) & (base != LESION)
        assert np.isin(tissue[added], (GM, WM)).all() and (labels[base == LESION] == LESION).all()
        assert ndimage.label(added, np.ones((3, 3, 3)))[1] >= 2, seed
        centres = np.argwhere(added) * 2.0
        assert np.linalg.norm(centres - centres.mean(0), axis=1).max() <= 2 * (60 + 6 * 1.4)
    assert max(sizes) <= largest and np.median(sizes) < 0.25 * largest
    untouched = label_map(tissue, lesion, skull=False)
    np.testing.assert_array_equal(add_emboli(untouched.copy(), 0.0, (10, 20), np.random.default_rng(0)),
                                  untouched)


def test_embolic_recipe_trains_on_the_emboli_it_draws():
    """The subject's lesion mask after the embolic recipe is exactly what the images show: the
    cohort's lesion plus new components, which are brighter than tissue on DWI."""
    tissue, lesion = phantom()
    torch.manual_seed(1)
    out = SynthStroke(("dwi", "adc"), p_emboli=1.0, emboli=(15, 15), p_mimics=0.0, p_skull=0.0,
                      adc_margin=RECIPES["synthstroke_embolic"]["adc_margin"])(subject())
    drawn = out["lesions_msk"].data[0].numpy() > 0
    assert drawn[lesion > 0].all() and drawn.sum() > lesion.sum()
    new = drawn & ~(lesion > 0)
    dwi = out["dwi"].data[0].numpy()
    assert np.median(dwi[new]) > np.median(dwi[np.isin(tissue, (GM, WM)) & ~drawn])
    torch.manual_seed(1)
    default = SynthStroke(("dwi", "adc"))(subject())
    np.testing.assert_array_equal(default["lesions_msk"].data[0].numpy(), lesion)


def test_mimic_kinds_draw_only_the_kinds_asked_for():
    """``kinds`` picks which mimics are drawn; the blob-free ``synthstroke_dwi`` recipe draws
    symmetric regions and rim patches but never a ``MIMIC`` blob; unknown kinds are named."""
    tissue, lesion = phantom()
    for seed in range(4):
        labels = add_mimics(label_map(tissue, lesion, skull=False), 1.0, np.random.default_rng(seed),
                            kinds=RECIPES["synthstroke_dwi"]["mimic_kinds"])
        assert (labels == REGION).any() and (labels == RIM).any() and not (labels == MIMIC).any()
        only_blobs = add_mimics(label_map(tissue, lesion, skull=False), 1.0,
                                np.random.default_rng(seed), kinds=("blob",))
        assert set(np.unique(only_blobs)) - {0, CSF, GM, WM, LESION} == {MIMIC}
    assert RECIPES["synthstroke_dwi_blobs"]["mimic_kinds"] == ("region", "blob", "rim")
    with pytest.raises(ValueError, match="'spots'"):
        SynthStroke(("dwi", "adc"), mimic_kinds=("region", "spots"))


def test_dwi_defined_recipe_draws_lesion_adc_from_dark_to_raised_dwi_always_bright():
    """``synthstroke_dwi``: lesion ADC / darker tissue's ADC spans 0.5–1.45 over 400 draws of
    the means (dark, pseudo-normal and partial-volume-raised lesions), while on DWI the lesion
    stays brighter than both tissues by 10–100 %."""
    recipe = RECIPES["synthstroke_dwi"]
    torch.manual_seed(0)
    adc_ratio, dwi_ratio = [], []
    for _ in range(400):
        adc = draw_means("adc", recipe["dwi_margin"], recipe["adc_margin"])
        dwi = draw_means("dwi", recipe["dwi_margin"], recipe["adc_margin"])
        adc_ratio.append(adc[LESION] / min(adc[GM], adc[WM]))
        dwi_ratio.append(dwi[LESION] / max(dwi[GM], dwi[WM]))
    adc_ratio, dwi_ratio = np.array(adc_ratio), np.array(dwi_ratio)
    assert 0.5 <= adc_ratio.min() < 0.55 and 1.4 < adc_ratio.max() <= 1.45
    assert (adc_ratio > 1.0).mean() == pytest.approx(0.45 / 0.95, abs=0.07)
    assert 1.1 <= dwi_ratio.min() and dwi_ratio.max() <= 2.0


def test_skull_base_gain_brightens_the_inferior_brain_only():
    """The gain is never below 1, above 1.2 at the bottom of the brain, falls from there to the
    middle and again to the top (near 1), on either orientation of the superior-inferior axis."""
    brain = phantom()[0] > 0
    first, last = np.flatnonzero(brain.any((0, 1)))[[0, -1]]
    for seed in range(6):
        for superior_first, (bottom, top) in ((False, (first, last)), (True, (last, first))):
            gain = skull_base_gain(brain, 2, superior_first, np.random.default_rng(seed))
            assert gain.min() >= 1.0 and gain.dtype == np.float32
            by_height = [float(np.mean(gain[..., z][brain[..., z]]))
                         for z in (bottom, (first + last) // 2, top)]
            assert by_height[0] > 1.2 and by_height[0] > by_height[1] > by_height[2], seed
            assert by_height[2] < 1.1, seed
    np.testing.assert_array_equal(skull_base_gain(np.zeros_like(brain), 2, False,
                                                  np.random.default_rng(0)), 1.0)


def test_skull_base_recipe_brightens_inferior_dwi_and_keeps_the_lesion():
    """With ``p_skull_base=1`` the inferior brain is brighter on DWI relative to the superior
    brain than in the same draw without it; the lesion mask is unchanged."""
    brain = phantom()[0] > 0
    rows = np.flatnonzero(brain.any((0, 1)))
    low, high = brain.copy(), brain.copy()
    low[..., rows[0] + 4:] = False
    high[..., :(rows[0] + rows[-1]) // 2 + 2] = False

    def draw_with(p):
        torch.manual_seed(5)
        return SynthStroke(("dwi", "adc"), p_skull_base=p, p_mimics=0.0, p_skull=0.0,
                           slice_downsampling=(1.0, 1.0))(subject())

    plain, bright = draw_with(0.0), draw_with(1.0)
    gap = [np.median(s["dwi"].data[0].numpy()[low]) - np.median(s["dwi"].data[0].numpy()[high])
             for s in (plain, bright)]
    assert gap[1] > gap[0] + 0.3
    np.testing.assert_array_equal(plain["lesions_msk"].data, bright["lesions_msk"].data)


def test_sulci_widen_csf_near_the_surface_lined_with_grey_matter():
    """``add_sulci`` turns only GM/WM into CSF (and WM into GM): within 16 mm of the brain's
    surface, reaching it, with no WM left touching new CSF and the lesion untouched; the CSF
    share of that band varies widely between draws (young to atrophic brains), and so does the
    sulci's width: some draws carve one-voxel sheets (nothing deeper than 4 mm survives an
    erosion), others wide sulci. On 1 mm and 2 mm grids alike (widths and depths in mm);
    ``p_sulci=0`` changes nothing."""
    tissue, lesion = phantom()
    brain = tissue > 0
    for spacing in (1.0, 2.0):
        depth = ndimage.distance_transform_edt(brain, sampling=(spacing,) * 3)
        shares, wide = [], []
        for seed in range(20):
            base = label_map(tissue, lesion, skull=False)
            labels = add_sulci(base.copy(), 1.0, np.random.default_rng(seed), (spacing,) * 3)
            changed = labels != base
            assert np.isin(base[changed], (GM, WM)).all() and np.isin(labels[changed], (CSF, GM)).all()
            csf = changed & (labels == CSF)
            assert depth[csf].max() < 16.0 and (csf & ~ndimage.binary_erosion(brain)).any()
            assert not (ndimage.binary_dilation(csf) & (labels == WM)).any()
            assert (labels[lesion > 0] == LESION).all()
            shares.append(csf.sum() / (brain & (depth < 16.0)).sum())
            deep = csf & (depth > 4.0)
            wide.append(ndimage.binary_erosion(deep).sum() / max(deep.sum(), 1))
        assert 0.05 < min(shares) and max(shares) < 0.85 and max(shares) - min(shares) > 0.3
        assert min(wide) == 0.0 and max(wide) > 0.2, spacing
    untouched = label_map(tissue, lesion, skull=False)
    np.testing.assert_array_equal(add_sulci(untouched.copy(), 0.0, np.random.default_rng(0)),
                                  untouched)


def test_sulci_recipe_shows_csf_near_the_surface_and_leaves_other_recipes_unchanged():
    """Over seeded draws, ``p_sulci=1`` puts ventricle-like (CSF) ADC in more of the brain's
    outer 4 voxels than the same draws without folding; ``p_sulci=0`` draws exactly what the
    default draws (the other recipes' random streams are unchanged); the folded recipes are
    their unfolded recipes plus ``p_sulci``."""
    tissue, lesion = phantom()
    brain = tissue > 0
    band = brain & (ndimage.distance_transform_edt(brain) <= 4)
    tissue_voxels = np.isin(tissue, (GM, WM)) & (lesion == 0)

    def csf_like_share(**kwargs) -> float:
        shares = []
        for seed in range(6):
            torch.manual_seed(seed)
            adc = SynthStroke(("dwi", "adc"), p_mimics=0.0, p_skull=0.0, slice_downsampling=(1.0, 1.0),
                              **kwargs).draw(tissue, lesion, AFFINE)[0][1].numpy()
            threshold = 0.5 * (np.median(adc[tissue_voxels]) + np.median(adc[tissue == CSF]))
            shares.append(float((adc[band] > threshold).mean()))
        return float(np.mean(shares))

    assert csf_like_share(p_sulci=1.0) > csf_like_share(p_sulci=0.0) + 0.08
    torch.manual_seed(3)
    default = SynthStroke(("dwi", "adc")).draw(tissue, lesion, AFFINE)[0]
    torch.manual_seed(3)
    np.testing.assert_array_equal(SynthStroke(("dwi", "adc"), p_sulci=0.0).draw(tissue, lesion, AFFINE)[0],
                                  default)
    for name in ("synthstroke_embolic", "synthstroke_dwi"):
        assert RECIPES[f"{name}_sulci"] == {**RECIPES[name], "p_sulci": 0.8}
