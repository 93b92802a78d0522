"""Out-of-distribution check: quiet on held-out scans of the training distribution, loud on
heavy noise and inverted contrast, blind (by design) to a scaling the normalisation removes;
the datamodule stores the training summary in its checkpoint state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio

from cogimg.data.cache import VolumeCache
from cogimg.data.ood import ood_report, scan_features, summarise_features
from cogimg.data.transforms import PreprocessingConfig
from tests.tasks.conftest import build_easy_stroke_tree, make_datamodule

SHAPE = (40, 40, 32)
AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])


def head(seed: int) -> np.ndarray:
    """A smooth ellipsoid 'head' with a brighter core and a random lesion, on noise."""
    rng = np.random.default_rng(seed)
    grid = (np.indices(SHAPE).transpose(1, 2, 3, 0) - (np.array(SHAPE) - 1) / 2) / (np.array(SHAPE) / 2.3)
    r = np.linalg.norm(grid * rng.uniform(0.95, 1.05, 3), axis=-1)
    image = (r < 1) * (80 + 40 * (r < 0.6)) + rng.normal(0, 3, SHAPE)
    centre = rng.integers(12, 28, 3)
    lesion = np.linalg.norm(np.indices(SHAPE).transpose(1, 2, 3, 0) - centre, axis=-1) < rng.uniform(2, 4)
    return (image + 60 * lesion * (r < 1)).astype(np.float32) * rng.uniform(0.5, 2.0)


def features(cache: VolumeCache, name: str, volume: np.ndarray) -> dict:
    subject = tio.Subject(dwi=tio.ScalarImage(tensor=torch.from_numpy(volume)[None], affine=AFFINE),
                          subject_id=name)
    return scan_features(cache.get(subject), ["dwi"])


@pytest.fixture(scope="module")
def zscore_setup(tmp_path_factory):
    cache = VolumeCache(tmp_path_factory.mktemp("ood"), PreprocessingConfig(spacing_mm=2.5, reference="dwi"))
    summary = summarise_features([features(cache, f"train{i}", head(i)) for i in range(10)])
    return cache, summary


def test_held_out_scans_of_the_training_distribution_are_not_flagged(zscore_setup):
    cache, summary = zscore_setup
    for seed in range(100, 106):
        report = ood_report(features(cache, f"held{seed}", head(seed)), summary)
        assert not report["flag"] and report["reasons"] == [], report
        assert report["score"] < summary["threshold"]


def test_heavy_noise_and_inverted_contrast_are_flagged_with_reasons(zscore_setup):
    cache, summary = zscore_setup
    clean = head(200)
    noisy = clean + np.random.default_rng(0).normal(0, clean.std(), SHAPE).astype(np.float32)
    report = ood_report(features(cache, "noisy", noisy), summary)
    assert report["flag"] and report["score"] > summary["threshold"]
    assert any("roughness (noise)" in r for r in report["reasons"])
    inside = clean > clean.mean()
    inverted = np.where(inside, clean.max() - clean, 0).astype(np.float32)  # dark lesion, bright rim
    report = ood_report(features(cache, "inverted", inverted), summary)
    assert report["flag"] and any("percentile" in r for r in report["reasons"])
    # Z-scored inputs: ×100 changes nothing the network sees, so nothing is flagged...
    assert not ood_report(features(cache, "scaled", clean * 100), summary)["flag"]


def test_scaling_is_flagged_when_the_preprocessing_keeps_raw_intensities(tmp_path):
    cache = VolumeCache(tmp_path, PreprocessingConfig(spacing_mm=2.5, reference="dwi", normalization="none"))
    ref = head(0).max()
    summary = summarise_features([features(cache, f"t{i}", head(i) / head(i).max() * ref) for i in range(8)])
    clean = head(50) / head(50).max() * ref
    assert not ood_report(features(cache, "clean", clean), summary)["flag"]
    report = ood_report(features(cache, "scaled", clean * 100), summary)
    assert report["flag"] and "intensity" in report["reasons"][0]


def test_thresholds_and_missing_summary():
    summary = summarise_features([{"dwi:roughness": 0.30 + 0.01 * i} for i in range(9)])
    ref = summary["features"]["dwi:roughness"]
    assert ref["median"] == pytest.approx(0.34) and ref["scale"] == pytest.approx(0.05)  # floored
    report = ood_report({"dwi:roughness": 0.34 + 0.05 * 4}, summary)
    assert report["score"] == pytest.approx(4.0) and not report["flag"]
    assert ood_report({"dwi:roughness": 0.54}, summary, threshold=3.0)["flag"]
    assert ood_report({"dwi:roughness": 0.3}, None) is None


def test_datamodule_checkpoint_state_holds_the_training_summary(tmp_path):
    root = build_easy_stroke_tree(tmp_path / "tree", n=6)
    dm = make_datamodule(root, tmp_path / "cache")
    assert "input_summary" not in dm.state_dict()  # nothing known before setup
    dm.setup("fit")
    summary = dm.state_dict()["input_summary"]
    assert summary["n_subjects"] == len(dm.subjects["train"])
    assert {"dwi:p50", "adc:roughness", "geometry:spacing_max_mm"} <= set(summary["features"])
    assert summary["features"]["geometry:spacing_max_mm"]["median"] == pytest.approx(2.0)
    torch.save({"state": dm.state_dict()}, tmp_path / "s.pt")  # weights-only loadable
    assert torch.load(tmp_path / "s.pt", weights_only=True)["state"]["input_summary"] == summary


def test_randomised_training_summarises_the_draws_the_network_sees(tmp_path):
    """With ``randomise`` the checkpoint's summary is of seeded draws of the training transform
    (not of the cached images, which the network never sees): the same for two setups, equal
    to summarising the draws directly, leaving the caller's torch RNG as it was, and wider in
    intensity than the cached images' summary, which draws from random contrasts must be."""
    from cogimg.data.datamodules import PatchDataModule
    from cogimg.data.label_maps import CSF, GM, WM
    from cogimg.data.ood import summarise_inputs
    from tests.conftest import write_nifti
    from tests.tasks.conftest import AFFINE as TREE_AFFINE
    from tests.tasks.conftest import SHAPE as TREE_SHAPE
    from tests.tasks.conftest import sphere

    root = build_easy_stroke_tree(tmp_path / "tree", n=6)
    tissue = np.zeros(TREE_SHAPE, np.uint8)
    tissue[sphere(TREE_SHAPE, (32, 20, 20), 18)] = GM
    tissue[sphere(TREE_SHAPE, (32, 20, 20), 13)] = WM
    tissue[sphere(TREE_SHAPE, (32, 20, 20), 4)] = CSF
    for k in range(1, 7):
        pid = f"sub-{k:02d}"
        write_nifti(root / "derivatives" / "truth" / pid / f"{pid}_desc-tissue_dseg.nii.gz",
                    tissue, TREE_AFFINE)

    def setup(randomise):
        dm = PatchDataModule(root, preset="stroke", cache_dir=tmp_path / "cache",
                             patch_size=(24, 24, 24), n_folds=3, test_fraction=0.2,
                             augmentation="none", seed=0, randomise=randomise)
        dm.setup("fit")
        return dm

    plain = setup(None).input_summary
    torch.manual_seed(123)
    before = torch.get_rng_state()
    dm = setup("synthstroke")
    assert torch.equal(torch.get_rng_state(), before)
    drawn = dm.input_summary
    assert drawn == setup("synthstroke").input_summary
    train = dm.subjects["train"]
    assert drawn == summarise_inputs(train, ["dwi", "adc"], transform=dm.train_transform(), seed=0)
    assert drawn["n_subjects"] == len(train) == plain["n_subjects"]
    assert drawn["features"]["geometry:fov_max_mm"] == plain["features"]["geometry:fov_max_mm"]
    for feature in ("dwi:p05", "dwi:p50", "dwi:p95", "dwi:roughness", "adc:p05", "adc:p50"):
        assert drawn["features"][feature]["scale"] > 1.5 * plain["features"][feature]["scale"], feature
