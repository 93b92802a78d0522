"""Stroke lesions and microbleeds of the synthetic cohort, their territories and shapes.

The anatomy is nilearn's MNI152 brain (shipped in its wheel) with an identity deformation:
``template_mm`` is each voxel's own world coordinate.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, stats

from cogimg.data.synth import lesion_shapes, territories
from cogimg.data.synth.lesion_shapes import build_library, load_library, procedural_blob
from cogimg.data.synth.microbleeds import microbleed_effect
from cogimg.data.synth.stroke import LesionContrast, nihss_score, stroke_effect
from cogimg.data.synth.types import SubjectAnatomy

SOOP_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "soop_masks"
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
_ANATOMIES: dict[int, SubjectAnatomy] = {}


def mni_anatomy(spacing: int) -> SubjectAnatomy:
    """MNI152 brain at ``spacing`` mm, identity deformation (cached per test session)."""
    if spacing not in _ANATOMIES:
        from nilearn.datasets import (
            load_mni152_brain_mask,
            load_mni152_gm_template,
            load_mni152_wm_template,
        )

        mask_image = load_mni152_brain_mask(resolution=spacing)
        brain = mask_image.get_fdata() > 0
        gm = load_mni152_gm_template(resolution=spacing).get_fdata().astype(np.float32)
        wm = load_mni152_wm_template(resolution=spacing).get_fdata().astype(np.float32)
        total = np.maximum(gm + wm, 1.0)
        gm, wm = gm / total, wm / total
        csf = np.where(brain, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in brain.shape], indexing="ij"), axis=-1)
        affine = mask_image.affine
        template_mm = (ijk @ affine[:3, :3].T + affine[:3, 3]).astype(np.float32)
        _ANATOMIES[spacing] = SubjectAnatomy(
            affine=affine, spacing_mm=float(spacing), tissue={"gm": gm, "wm": wm, "csf": csf},
            brain_mask=brain, template_mm=template_mm)
    return _ANATOMIES[spacing]


def assert_labels_consistent(label: dict, anatomy: SubjectAnatomy):
    """Binary mask inside the brain, instances = its 26-components, one tight box each."""
    mask, instances, boxes = label["mask"], label["instances"], label["boxes"]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert not np.any(mask.astype(bool) & ~anatomy.brain_mask)
    assert instances.dtype == np.int16
    np.testing.assert_array_equal(instances, ndimage.label(mask, structure=STRUCTURE_26)[0])
    assert [box["id"] for box in boxes] == list(range(1, int(instances.max()) + 1))
    for box in boxes:
        ix = np.nonzero(instances == box["id"])
        assert box["voxel"] == [int(a.min()) for a in ix] + [int(a.max()) + 1 for a in ix]
        assert box["n_voxels"] == ix[0].size


@pytest.fixture(scope="module")
def cohort_2mm():
    """Summaries of 40 stroke subjects at 2 mm (difficulty alternating 0 and 1)."""
    anatomy = mni_anatomy(2)
    atlas = territories.load_atlas()
    subjects = []
    for seed in range(40):
        effect = stroke_effect(np.random.default_rng(seed), anatomy, difficulty=seed % 2)
        for lesion in effect.info["lesions"]:
            label = int(atlas.labels_at(np.array(lesion["centroid_mm"])))
            found = territories.family_and_side(label)
            lesion["centroid_territory"] = territories.territory_name(*found) if found else None
        subjects.append({"info": effect.info, "nihss": effect.clinical["NIHSS"]})
    return subjects


# --- stroke ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stroke_labels_gains_and_info(seed):
    anatomy = mni_anatomy(4)
    effect = stroke_effect(np.random.default_rng(seed), anatomy, difficulty=0.5 * (seed % 3))
    assert effect.name == "stroke"
    label = effect.labels["lesions"]
    assert_labels_consistent(label, anatomy)
    mask = label["mask"].astype(bool)
    assert mask.any() and effect.info["n_lesions"] >= 1
    assert effect.gain["dwi"][mask].min() > 1.0
    assert effect.gain["adc"][mask].max() < 1.0
    far = ~ndimage.binary_dilation(effect.maps["lesion"] > 0, iterations=2)
    for gain in effect.gain.values():
        assert gain.dtype == np.float32 and gain.shape == anatomy.shape
        np.testing.assert_array_equal(gain[far], 1.0)
    fraction = effect.maps["lesion"]
    assert fraction.dtype == np.float32 and 0.0 <= fraction.min() and fraction.max() <= 1.0
    np.testing.assert_array_equal(mask, (fraction >= 0.5) & anatomy.brain_mask)
    assert 0 <= effect.clinical["NIHSS"] <= 42 and isinstance(effect.clinical["NIHSS"], int)
    all_ids = sorted(i for lesion in effect.info["lesions"] for i in lesion["instance_ids"])
    assert set(all_ids) == set(range(1, int(label["instances"].max()) + 1))
    for lesion in effect.info["lesions"]:
        assert lesion["territory"].split("_")[0] in territories.STROKE_FAMILY_WEIGHTS
        assert lesion["volume_ml"] > 0 and 1 / 24 <= lesion["age_days"] <= 7


def test_stroke_is_deterministic_per_seed():
    anatomy = mni_anatomy(4)
    first, again = (stroke_effect(np.random.default_rng(7), anatomy, 0.5) for _ in range(2))
    other = stroke_effect(np.random.default_rng(8), anatomy, 0.5)
    np.testing.assert_array_equal(first.gain["dwi"], again.gain["dwi"])
    np.testing.assert_array_equal(first.labels["lesions"]["instances"], again.labels["lesions"]["instances"])
    assert first.info == again.info and first.clinical == again.clinical
    assert not np.array_equal(first.maps["lesion"], other.maps["lesion"])


def test_stroke_rejects_bad_difficulty():
    with pytest.raises(ValueError, match="difficulty must lie in"):
        stroke_effect(np.random.default_rng(0), mni_anatomy(4), difficulty=1.5)


def test_lesion_volumes_span_small_to_large(cohort_2mm):
    volumes = [lesion["volume_ml"] for s in cohort_2mm for lesion in s["info"]["lesions"]]
    assert min(volumes) < 0.5 and max(volumes) > 20.0
    index_volumes = [s["info"]["lesions"][0]["volume_ml"] for s in cohort_2mm]
    assert np.median(index_volumes) > 1.0  # index lesions are not all lacunes


def test_lesions_fall_in_their_territory(cohort_2mm):
    lesions = [lesion for s in cohort_2mm for lesion in s["info"]["lesions"]]
    hits = [lesion["centroid_territory"] == lesion["territory"] for lesion in lesions]
    assert np.mean(hits) >= 0.75, f"{np.mean(hits):.2f} of {len(hits)} lesion centroids in territory"
    assert {lesion["territory"].split("_")[0] for lesion in lesions} == {"MCA", "ACA", "PCA", "LS"}


def test_nihss_correlates_with_volume(cohort_2mm):
    total = [s["info"]["total_volume_ml"] for s in cohort_2mm]
    nihss = [s["nihss"] for s in cohort_2mm]
    assert stats.spearmanr(total, nihss).statistic > 0.4


def test_nihss_weighs_left_mca_and_volume():
    rng = np.random.default_rng(0)

    def mean_score(territory, volume):
        return np.mean([nihss_score(rng, [{"territory": territory, "volume_ml": volume}]) for _ in range(300)])

    assert mean_score("MCA_L", 50.0) > mean_score("MCA_R", 50.0) > mean_score("MCA_R", 2.0)
    assert nihss_score(rng, [{"territory": "MCA_L", "volume_ml": 1e6}] * 5) == 42


def test_contrast_time_course():
    contrast = LesionContrast(dwi_peak=2.5, adc_min=0.5, flair_peak=1.6)
    hyperacute, day2, day7 = (contrast.gains(age) for age in (1 / 24, 2.0, 7.0))
    assert hyperacute["FLAIR"] == pytest.approx(1.0)  # DWI-FLAIR mismatch
    assert day2["FLAIR"] > 1.3 and day2["dwi"] == pytest.approx(2.5) and day2["adc"] == pytest.approx(0.5)
    assert 0.5 < day7["adc"] < 1.0  # pseudo-normalising, not yet normal
    assert 1.0 < day7["dwi"] < day2["dwi"]


def test_procedural_fallback_without_library(monkeypatch, tmp_path):
    monkeypatch.setattr(lesion_shapes, "LIBRARY_PATH", tmp_path / "absent.npz")
    assert load_library() is None
    anatomy = mni_anatomy(4)
    effect = stroke_effect(np.random.default_rng(3), anatomy, 0.5)
    assert effect.info["shape_source"] == "procedural"
    assert all(lesion["shape"] == "procedural" for lesion in effect.info["lesions"])
    assert_labels_consistent(effect.labels["lesions"], anatomy)


@pytest.mark.parametrize("volume_ml", [0.05, 2.0, 80.0])
def test_procedural_blob_has_requested_volume(volume_ml):
    blob = procedural_blob(np.random.default_rng(1), volume_ml)
    assert ndimage.label(blob.mask, structure=STRUCTURE_26)[1] == 1
    assert blob.volume_ml == pytest.approx(volume_ml, rel=0.3)


def test_packaged_library_spans_lacunes_to_territorial_infarcts():
    library = load_library()
    assert library is not None and 100 <= len(library) <= 200
    assert library.volume_ml.min() < 0.05 and library.volume_ml.max() > 100
    assert (lesion_shapes.LIBRARY_PATH.stat().st_size) < 2_000_000
    shape = library.get(len(library) - 1)
    assert shape.mask.sum() * shape.spacing_mm**3 / 1000 == pytest.approx(shape.volume_ml, rel=1e-3)


def test_build_library_from_masks(tmp_path):
    import nibabel as nib

    atlas = nib.load(territories.ASSETS_DIR / territories.ATLAS_FILENAME)
    (tmp_path / "lesions").mkdir()
    for name in ("ArterialAtlas136.nii.gz", "ArterialAtlas136.txt"):
        (tmp_path / name).write_bytes((territories.ASSETS_DIR / name).read_bytes())
    for index, size in enumerate((2, 4, 8)):
        data = np.zeros(atlas.shape, dtype=np.uint8)
        data[40:40 + size, 100:100 + size, 60:60 + size] = 1
        data[10, 50, 40] = 1  # a 1-voxel speck (below min_voxels), after the cube in RAS order
        nib.save(nib.Nifti1Image(data, atlas.affine), tmp_path / "lesions" / f"sub-{index}_lesion.nii.gz")
    out = tmp_path / "shapes.npz"
    summary = build_library(tmp_path, out, n_shapes=3, min_voxels=8, n_bins=2)
    assert summary["n_shapes"] == 3 and summary["n_candidates"] == 3
    library = load_library(out)
    np.testing.assert_allclose(library.volume_ml, [0.008, 0.064, 0.512])
    assert library.get(2).mask.shape == (8, 8, 8) and library.get(2).mask.all()
    assert list(library.source) == ["sub-0#1", "sub-1#1", "sub-2#1"]


@pytest.mark.real_data
@pytest.mark.skipif(not SOOP_DIR.is_dir(), reason="../shared/data/soop_masks is absent")
def test_packaged_assets_match_their_sources():
    import nibabel as nib

    for name in ("ArterialAtlas136.nii.gz", "ArterialAtlas136.txt"):
        assert filecmp.cmp(territories.ASSETS_DIR / name, SOOP_DIR / name, shallow=False)
    library = load_library()
    for index in (0, len(library) // 2, len(library) - 1):
        shape = library.get(index)
        subject, component = shape.source.split("#")
        image = nib.as_closest_canonical(nib.load(SOOP_DIR / "lesions" / f"{subject}_lesion.nii.gz"))
        components = ndimage.label(np.asarray(image.dataobj) > 0, structure=STRUCTURE_26)[0]
        region = ndimage.find_objects(components)[int(component) - 1]
        np.testing.assert_array_equal(components[region] == int(component), shape.mask)


def test_atlas_labels_at_known_points():
    atlas = territories.load_atlas()
    points = np.array([[-10.4, 3.4, 34.0], [13.4, 3.6, 34.0], [-44.0, -40.0, 40.0], [0.0, 0.0, 200.0]])
    np.testing.assert_array_equal(atlas.labels_at(points), [1, 2, 9, 0])  # ACA L/R, MCA parietal L, outside
    assert territories.family_and_side(9) == ("MCA", "L")
    assert territories.territory_labels("LS", "R") == (4, 6, 24)


# --- microbleeds ---------------------------------------------------------------------------

def test_microbleeds_small_dark_and_consistent():
    anatomy = mni_anatomy(2)
    counts = []
    for seed in range(12):
        effect = microbleed_effect(np.random.default_rng(seed), anatomy, difficulty=0.5)
        assert effect.name == "microbleeds"
        label = effect.labels["microbleeds"]
        assert_labels_consistent(label, anatomy)
        counts.append(effect.info["n_microbleeds"])
        assert int(label["instances"].max()) == counts[-1]
        assert sorted(f["instance_id"] for f in effect.info["foci"]) == list(range(1, counts[-1] + 1))
        if not counts[-1]:
            assert effect.gain == {} and not label["mask"].any()
            continue
        t2star = effect.gain["T2starw"]
        assert t2star.max() <= 1.0 and t2star.min() >= 0.2
        for box in label["boxes"]:
            assert box["volume_ml"] <= 0.6  # ≤ 10 mm apparent diameter
            assert t2star[label["instances"] == box["id"]].min() < 0.9
        drop = 1.0 - t2star
        np.testing.assert_allclose(1.0 - effect.gain["dwi"], 0.2 * drop, atol=1e-6)
        assert 2.0 <= min(f["diameter_mm"] for f in effect.info["foci"])
        assert max(f["diameter_mm"] for f in effect.info["foci"]) <= 10.0
    assert 0 in counts and max(counts) >= 3


def test_microbleeds_are_deterministic():
    anatomy = mni_anatomy(4)
    first, again = (microbleed_effect(np.random.default_rng(11), anatomy, 0.2) for _ in range(2))
    np.testing.assert_array_equal(first.maps["microbleeds"], again.maps["microbleeds"])
    assert first.info == again.info
