"""Effect-level tests of the synthetic cohort: anatomy, atrophy, PD, sites, plan, writer.

Most work on one subject drawn at 4 mm; the logistic-regression check generates a
60-subject AD cohort at 4 mm (≈ 10 s).
"""

from __future__ import annotations

import csv
import itertools
import json

import nibabel as nib
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from cogimg.data.synth import generate_cohort
from cogimg.data.synth.anatomy import build_anatomy, load_template
from cogimg.data.synth.atrophy import ADProfile, atrophy_effect, sample_ad_profile
from cogimg.data.synth.cohort import regional_volumes
from cogimg.data.synth.contrasts import region_factor_map, subject_contrast, synthesize
from cogimg.data.synth.difficulty import get_difficulty
from cogimg.data.synth.pd import pd_effect, sample_pd_profile
from cogimg.data.synth.plan import largest_remainder, parse_diseases, plan_cohort
from cogimg.data.synth.sites import apply_scanner, bias_field, draw_subject_scan, make_sites
from cogimg.data.synth.writer import write_nifti

MEDIUM = get_difficulty("medium")


@pytest.fixture(scope="module")
def template():
    return load_template(4.0)


@pytest.fixture(scope="module")
def healthy(template):
    return build_anatomy(template, np.random.default_rng(0), "F")


def _volume(anatomy, region: str) -> float:
    return regional_volumes(anatomy)[region]


def test_template_regions_have_plausible_volumes():
    t = load_template(2.0)
    ml = {name: float((t.labels == k).sum()) / 1000.0 for k, name in enumerate(t.names, start=1)}
    assert 2.5 < ml["hippocampus_l"] < 5.0 and ml["hippocampus_l"] == pytest.approx(ml["hippocampus_r"], rel=0.05)
    assert 3.0 < ml["putamen_l"] < 6.0
    assert 10.0 < ml["ventricles"] < 40.0
    assert 0.2 < ml["substantia_nigra_l"] < 0.8
    assert ml["nigrosome_l"] > 0
    # regions sit where they belong: the hippocampus is grey matter in the left temporal lobe
    k = t.names.index("hippocampus_l") + 1
    assert t.centroid_mm["hippocampus_l"][0] < -15 and t.centroid_mm["hippocampus_l"][2] < 0
    assert t.maps["gm"][t.labels == k].mean() > 0.5


def test_anatomy_is_a_valid_subject(healthy):
    a = healthy.anatomy
    assert a.shape == (50, 59, 48) and a.template_mm.shape == a.shape + (3,)
    total = a.tissue["gm"] + a.tissue["wm"] + a.tissue["csf"]
    assert total.max() <= 1.0 + 1e-5 and not total[~a.brain_mask].any()
    assert 1300 < a.brain_mask.sum() * a.voxel_volume_ml < 2500  # mL
    assert a.regions["hippocampus_l"].any() and "putamen_r" in a.regions
    # the mapping moves voxels by a few mm beyond the affine part
    assert np.abs(a.template_mm[a.brain_mask]).max() < 130


def test_head_size_follows_the_draw(template):
    rng = np.random.default_rng(5)
    subjects = [build_anatomy(template, rng, "M") for _ in range(10)]
    icv = np.array([s.anatomy.brain_mask.sum() for s in subjects], float)
    scale = np.array([s.info["head_scale"] for s in subjects])
    # (the random deformation and the 4 mm grid add their own few-percent volume changes)
    assert np.corrcoef(icv, scale**3)[0, 1] > 0.8


def _profile(nd: float) -> ADProfile:
    return ADProfile(stage=nd, apoe4=0, amyloid_positive=True, amyloid_load=0.5,
                     neurodegeneration=nd, mmse=25, cdr=0.5, converter=None)


def test_atrophy_shrinks_hippocampus_monotonically_and_grows_ventricles(healthy):
    hippo, vent = [], []
    for nd in (0.0, 0.3, 0.6, 0.9):
        tissue, effect = atrophy_effect(np.random.default_rng(1), healthy.anatomy, _profile(nd), 70.0, MEDIUM)
        after = healthy.anatomy.__class__(**{**healthy.anatomy.__dict__, "tissue": tissue})
        grow = effect.info["regions"]["ventricles"]["growth_outside_label_ml"]
        vols = regional_volumes(after, grow)
        hippo.append(vols["hippocampus_l"] + vols["hippocampus_r"])
        vent.append(vols["ventricles"])
        achieved = effect.info["regions"]["hippocampus_l"]
        assert achieved["achieved_loss"] == pytest.approx(achieved["target_loss"], abs=0.03)
        assert effect.maps["atrophy"].min() >= 0
        assert np.allclose(tissue["gm"] + tissue["wm"] + tissue["csf"],
                           sum(healthy.anatomy.tissue.values()), atol=1e-4)  # tissue → CSF only
    assert all(a > b for a, b in itertools.pairwise(hippo))
    assert all(a < b for a, b in itertools.pairwise(vent))
    assert hippo[-1] < 0.85 * hippo[0]


def test_ad_profiles_cascade():
    rng = np.random.default_rng(0)
    by_dx = {dx: [sample_ad_profile(rng, dx, 72.0) for _ in range(300)] for dx in ("CN", "MCI", "AD")}
    amyloid = {dx: np.mean([p.amyloid_positive for p in ps]) for dx, ps in by_dx.items()}
    nd = {dx: np.mean([p.neurodegeneration for p in ps]) for dx, ps in by_dx.items()}
    mmse = {dx: np.mean([p.mmse for p in ps]) for dx, ps in by_dx.items()}
    assert 0.1 < amyloid["CN"] < 0.35 and amyloid["MCI"] > 0.8 and amyloid["AD"] > 0.9
    assert nd["CN"] < nd["MCI"] < nd["AD"] and mmse["CN"] > mmse["MCI"] > mmse["AD"]
    assert all(p.converter is not None for p in by_dx["MCI"]) and by_dx["CN"][0].converter is None


def test_ad_latents_are_complementary_across_modalities():
    """What each modality can see -- atrophy (T1w), amyloid load (PET), MMSE/APOE4/age
    (clinical) -- stages CN/MCI/AD only partly on its own and much better together (no single
    modality reads the stage off: PET tells CN from impaired, atrophy and MMSE MCI from AD)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng(0)
    dx = rng.choice(["CN", "MCI", "AD"], size=900, p=[0.5, 0.25, 0.25])
    ages = rng.uniform(60.0, 85.0, size=len(dx))
    profiles = [sample_ad_profile(rng, d, a) for d, a in zip(dx, ages)]
    features = {"t1": [[p.neurodegeneration] for p in profiles], "pet": [[p.amyloid_load] for p in profiles],
                "clinical": [[p.mmse, p.apoe4, a] for p, a in zip(profiles, ages)]}
    features["all"] = [[v for row in rows for v in row] for rows in zip(*features.values())]
    y = np.array([["CN", "MCI", "AD"].index(d) for d in dx])

    def staging_ba(rows):
        x = np.asarray(rows, float)
        x = (x - x.mean(0)) / x.std(0)
        pred = cross_val_predict(LogisticRegression(class_weight="balanced", max_iter=1000), x, y, cv=5)
        return balanced_accuracy_score(y, pred)

    ba = {name: staging_ba(rows) for name, rows in features.items()}
    singles = max(ba["t1"], ba["pet"], ba["clinical"])
    assert 0.55 < min(ba["t1"], ba["pet"], ba["clinical"]) and singles < 0.78
    assert ba["all"] > singles + 0.10


def test_pd_effect_is_subtle_on_mri_and_clear_on_dat(healthy):
    rng = np.random.default_rng(2)
    profile = sample_pd_profile(rng, "PD", 65.0)
    effect = pd_effect(rng, healthy.anatomy, profile, MEDIUM)
    regions = healthy.anatomy.regions
    sn = regions["substantia_nigra_l"] | regions["substantia_nigra_r"]
    putamen = regions["putamen_l"] | regions["putamen_r"]
    t1_change = 1.0 - effect.gain["T1w"][putamen].mean()
    dat_change = 1.0 - effect.gain["pet_dat"][putamen].mean()
    assert 0.0 < t1_change < 0.05 and dat_change > 5 * t1_change
    assert effect.maps["dat"][putamen].mean() > 0.15  # fraction of specific binding lost
    assert effect.gain["T2starw"][sn].mean() < 0.99  # diluted by partial volume at 4 mm
    assert effect.clinical["UPDRS"] >= 3 and effect.maps["dat"].max() > 0.2
    control = pd_effect(rng, healthy.anatomy, sample_pd_profile(rng, "CN", 65.0), MEDIUM)
    assert not control.gain and not control.maps


def test_site_effects_change_intensity_statistics(healthy):
    a = healthy.anatomy
    sites = make_sites(np.random.default_rng(0), 3, MEDIUM)
    wm = (a.tissue["wm"] > 0.9) & a.brain_mask
    gm = (a.tissue["gm"] > 0.8) & a.brain_mask
    stats = []
    for site in sites:
        rng = np.random.default_rng(7)
        params = subject_contrast(np.random.default_rng(1), site.tissue_scale, 70.0, jitter=0.0)
        ideal = synthesize("T1w", a.tissue, params, region_factor_map(a.regions, params.region_factors["T1w"], 4.0))
        scan = draw_subject_scan(rng, site)
        bias = bias_field(a.shape, scan.bias_coeffs, scan.bias_amplitude, mask=a.brain_mask)
        img = apply_scanner(ideal, "T1w", a.brain_mask, 4.0, site, scan, rng, bias)
        assert not img[~a.brain_mask].any()
        stats.append((img[wm].mean() / img[gm].mean(), img[a.brain_mask].std() / img[a.brain_mask].mean()))
    stats = np.array(stats)
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(stats[i] - stats[j]).max() > 0.02, (i, j, stats)
    assert len({s.noise["FLAIR"] for s in sites}) == 3 and len({s.fwhm_mm["dwi"] for s in sites}) == 3


def test_plan_counts_sites_and_confounding():
    counts = largest_remainder(10, np.array([0.3, 0.15, 0.15, 0.2, 0.2]))
    assert counts.sum() == 10 and list(counts) == [3, 2, 1, 2, 2]
    balanced = plan_cohort(100, 0, 4, "stroke,ad,pd", MEDIUM, site_confound=0.0)
    per = {}
    for s in balanced.subjects:
        per.setdefault(s.diagnosis, np.zeros(4, int))[s.site] += 1
    assert {dx: int(c.sum()) for dx, c in per.items()} == {"CN": 30, "MCI": 15, "AD": 15, "PD": 20, "stroke": 20}
    assert all(c.max() - c.min() <= 1 for c in per.values())
    confounded = plan_cohort(40, 0, 2, "ad", MEDIUM, site_confound=1.0)
    sites_of = {}
    for s in confounded.subjects:
        sites_of.setdefault(s.diagnosis, set()).add(s.site)
    assert all(len(v) == 1 for v in sites_of.values())
    with pytest.raises(ValueError, match="diseases"):
        parse_diseases("ad,cancer")


def test_plan_is_deterministic_and_subject_streams_are_stable():
    a = plan_cohort(12, 7, 3, "stroke,ad,pd", MEDIUM)
    b = plan_cohort(12, 7, 3, "stroke,ad,pd", MEDIUM)
    assert [(s.diagnosis, s.site, s.age, s.ad.mmse) for s in a.subjects] == \
           [(s.diagnosis, s.site, s.age, s.ad.mmse) for s in b.subjects]
    s = a.subjects[0]
    first = s.rngs()["anatomy"].random(3)
    assert np.array_equal(first, s.rngs()["anatomy"].random(3))  # no hidden spawn state


def test_written_images_read_back_as_float(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.random((8, 9, 7)) * 1234.5).astype(np.float32)
    path = tmp_path / "x.nii.gz"
    write_nifti(path, data, np.diag([2.0, 2.0, 2.0, 1.0]), "image")
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16
    assert np.allclose(img.get_fdata(), data, atol=1234.5 / 30000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]
    with pytest.raises(ValueError, match="kind"):
        write_nifti(path, data, np.eye(4), "picture")


def test_regional_volumes_separate_cn_from_ad_but_not_perfectly(tmp_path):
    """CN vs AD from ground-truth regional volumes (ICV-normalised), 5-fold CV, medium."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = generate_cohort(tmp_path / "ad", 60, 11, spacing_mm=4.0, sites=3, diseases="ad",
                          proportions={"CN": 0.4, "MCI": 0.2, "AD": 0.4}, progress=False)
    with open(out / "participants.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    features, dx = [], []
    for row in rows:
        pid = row["participant_id"]
        v = json.loads((out / f"derivatives/truth/{pid}/{pid}_effects.json").read_text(encoding="utf-8"))["regional_volumes_ml"]
        regions = ("hippocampus", "entorhinal", "temporal", "parietal", "precuneus")
        features.append([(v[f"{r}_l"] + v[f"{r}_r"]) / v["icv"] for r in regions] + [v["ventricles"] / v["icv"]])
        dx.append(row["diagnosis"])
    x, dx = np.array(features), np.array(dx)
    hippo = x[:, 0]
    assert hippo[dx == "CN"].mean() > hippo[dx == "MCI"].mean() > hippo[dx == "AD"].mean()
    keep = dx != "MCI"
    clf = make_pipeline(StandardScaler(), LogisticRegression())
    scores = cross_val_score(clf, x[keep], dx[keep] == "AD", scoring="balanced_accuracy",
                             cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert 0.7 < scores.mean() < 0.99, scores
