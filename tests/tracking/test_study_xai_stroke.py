"""The stroke XAI study (studies/xai_faithfulness_stroke.yaml): the segmentation explanation
path of the ``explain`` runner against a model with a known answer, and the tiny preset end to
end through ``cogimg study`` (a rerun trains nothing)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torchio as tio
import yaml
from torch import nn

from cogimg.cli import main
from cogimg.data.cache import VolumeCache, read_meta
from cogimg.data.transforms import PreprocessingConfig
from cogimg.tasks.segmentation import SegmentationTask
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.study_explain import explain_subject
from cogimg.tracking.study_spec import load_study
from tests.tracking.study_checks import assert_rerun_runs_nothing

ROOT = Path(__file__).resolve().parents[2]
LESION = (slice(6, 9), slice(5, 8), slice(7, 10))  # 27 native voxels


def _stroke_subject(tmp_path: Path) -> tuple[torch.Tensor, dict, np.ndarray]:
    """A 16³ native DWI + ADC pair at 2 mm with a bright-DWI / dark-ADC cube, preprocessed by the
    cache onto the same grid: ``(image (1, 2, 16, 16, 16), meta, lesion (16, 16, 16) bool)``."""
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    lesion = np.zeros((16, 16, 16), bool)
    lesion[LESION] = True
    images = {}
    for name, inside in (("dwi", 3.0), ("adc", 0.5)):
        data = (1.0 + 0.05 * rng.standard_normal(lesion.shape)).astype(np.float32)
        data[lesion] = inside
        nib.save(nib.Nifti1Image(data, affine), tmp_path / f"sub-01_{name}.nii.gz")
        images[name] = tio.ScalarImage(tmp_path / f"sub-01_{name}.nii.gz")
    cache = VolumeCache(tmp_path / "cache", PreprocessingConfig(spacing_mm=2.0, reference="dwi"))
    processed = cache.get(tio.Subject(**images, subject_id="sub-01"))
    image = torch.cat([processed[m].data.float() for m in ("dwi", "adc")])[None]
    return image, read_meta(processed["cache_entry"]), lesion


def _known_unet() -> SegmentationTask:
    """A segmentation task whose network is one 1×1×1 convolution: background logit 0,
    lesion logit ``2 · DWI − 2`` (z-scored DWI), scored by 8³ sliding windows."""
    task = SegmentationTask(model="unet", in_channels=2, patch_size=(32, 16, 16))
    conv = nn.Conv3d(2, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1, 0] = 2.0
        conv.bias[1] = -2.0
    task.model = conv
    task.patch_size = (8, 8, 8)
    return task.eval()


def test_segmentation_explanations_point_into_the_lesion_a_random_map_does_not(tmp_path):
    image, meta, lesion = _stroke_subject(tmp_path)
    assert tuple(image.shape[2:]) == lesion.shape  # the preprocessed grid is the native one
    task = _known_unet()
    options = {"method_options": {"n_steps": 8, "internal_batch_size": 4}}
    rng = np.random.default_rng(0)
    ig = explain_subject(task, image, meta, lesion, "ig", 0, options, rng)
    chance = explain_subject(task, image, meta, lesion, "random", 0, options, rng)

    # The predicted lesion is where 2 z − 2 > 0: exactly the cube; the explained probability
    # is the mean lesion probability sigmoid(2 z − 2) over it.
    z = image[0, 0]
    assert torch.equal(z > 1, torch.from_numpy(lesion))
    assert ig["target_prob"] == pytest.approx(float(torch.sigmoid(2 * z[z > 1] - 2).mean()), rel=1e-4)
    assert chance["target_prob"] == pytest.approx(ig["target_prob"])
    # IG of a linear score with baseline 0 is weight × input on the summed region: all positive
    # relevance lies in the lesion, so the map points into it and holds all of its mass.
    assert ig["pointing_game"] == 1.0 and ig["relevance_mass"] == pytest.approx(1.0, abs=1e-4)
    # A uniform random map puts about its share of voxels (27 / 4096) inside.
    assert chance["pointing_game"] == 0.0 and chance["relevance_mass"] < 0.02
    # Deleting the lesion first drops the lesion probability at once; inserting it first raises it.
    assert ig["deletion_auc"] < chance["deletion_auc"] - 0.2
    assert ig["insertion_auc"] > chance["insertion_auc"] + 0.2
    assert ig["seconds"] >= 0 and set(ig) == set(chance)


@pytest.mark.study
@pytest.mark.slow  # a tiny cohort, one two-step fit and four explanation arms
def test_tiny_stroke_xai_study_runs_end_to_end_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COGIMG_WANDB", "off")
    path, out = ROOT / "studies" / "xai_faithfulness_stroke.yaml", tmp_path / "xai_stroke"
    study = load_study(path, "tiny")
    full = load_study(path)
    assert {a["name"] for a in full["arms"]} - {a["name"] for a in study["arms"]} == {
        "unet", "unet_ig", "unet_random"}
    assert main(["study", str(path), "--out", str(out), "--preset", "tiny", "--accelerator", "cpu",
                 "--workers", "1"]) == 0
    assert "| arm a | arm b | metric |" in capsys.readouterr().out
    for arm in study["arms"]:
        runs, skipped = find_runs(out / "runs" / arm["name"] / "seed0", stage="test")
        assert len(runs) == 1 and not skipped, (arm["name"], skipped)

    table = pd.read_csv(out / "comparisons.csv")
    expected = [(c["a"], c["b"], c["metric"]) for c in study["comparisons"]]
    assert list(zip(table["arm_a"], table["arm_b"], table["metric"])) == expected
    assert {b for _, b, _ in expected} == {"gradcam", "ig", "occlusion"}
    assert {m for *_, m in expected} == {"pointing_game", "relevance_mass", "insertion_auc"}
    assert (table["stage"] == "test").all()

    runs, _ = find_runs(out / "runs", stage="test")
    explained = {r.manifest["experiment"]: r.subjects for r in runs if r.kind == "explanation"}
    assert sorted(explained) == ["gradcam", "ig", "occlusion", "random"]
    ids = [sorted(rows["subject_id"]) for rows in explained.values()]
    assert all(i == ids[0] for i in ids) and len(ids[0]) >= 1  # the same stroke test patients
    for arm, rows in explained.items():
        assert set(rows["target"]) == {"stroke"} and rows["pointing_game"].isin([0.0, 1.0]).all()
        assert rows["insertion_auc"].between(0, 1).all()
        mass = rows["relevance_mass"]
        assert mass.dropna().between(0, 1).all()
        # a comparison is left empty (with a note) only where an arm's maps were all zero
        noted = table[(table["arm_b"] == arm) & (table["metric"] == "relevance_mass")]["note"]
        assert noted.isna().all() == mass.notna().any(), arm
    assert table[table["metric"] != "relevance_mass"]["note"].isna().all()
    for figure in study["figures"]:
        assert (out / "figures" / f"{figure}.png").is_file(), figure

    assert_rerun_runs_nothing(out, yaml.safe_load((out / "study.yaml").read_text(encoding="utf-8")),
                              monkeypatch)
