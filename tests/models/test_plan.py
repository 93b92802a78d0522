"""Planner rules against hand-computed cases; memory measurement; a plan applied trains."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cogimg.models.plan import (
    GIB,
    PlannerConfig,
    label_probabilities,
    network_kwargs,
    normalisation,
    plan_from_fingerprint,
    pool_and_strides,
    saved_activation_bytes,
    target_spacing,
    training_memory,
)

SMALL = PlannerConfig(base_filters=4, max_filters=16)


def _fingerprint(spacings, shapes, frequencies=None) -> dict:
    """The fields the planner reads, for subjects with these spacings (mm) and shapes."""
    n = len(spacings)
    stats = {"mean": 100.0, "std": 10.0, "percentile_0_5": 70.0, "percentile_99_5": 130.0}
    return {"root": "/data", "preset": "stroke", "reference": "dwi", "n_subjects": n,
            "modalities": {"dwi": {"spacings_mm": spacings, "shapes": shapes,
                                   "foreground_intensity": stats}},
            "subjects": [{"nonzero_fraction": 0.9}] * n,
            "class_frequencies": frequencies or {"0": 0.99, "1": 0.01}}


# --------------------------------------------------------------------------- spacing
def test_isotropic_target_spacing_is_the_median():
    spacings = [[1.0, 1.0, 1.0], [1.2, 1.1, 1.3], [0.8, 0.9, 1.0]]
    target = target_spacing(spacings, [[100, 100, 100]] * 3)
    np.testing.assert_allclose(target, [1.0, 1.0, 1.0])


def test_thick_slices_take_the_10th_percentile():
    """0.45 × 0.45 × 5 mm, 512 × 512 × 30: z is > 3× coarser and has < 1/3 of the voxels, so
    z = 10th percentile of (4, 5, 5, 5, 6) = 4 + 0.4 · (5 - 4) = 4.4 mm."""
    zs = [4.0, 5.0, 5.0, 5.0, 6.0]
    spacings = [[0.45, 0.45, z] for z in zs]
    target = target_spacing(spacings, [[512, 512, 30]] * 5)
    np.testing.assert_allclose(target, [0.45, 0.45, 4.4])
    # the same spacings with as many voxels along z as along x, y: not anisotropic voxels
    np.testing.assert_allclose(target_spacing(spacings, [[512, 512, 400]] * 5), [0.45, 0.45, 5.0])


# --------------------------------------------------------------------------- topology
def test_isotropic_pooling_stops_at_four_voxels():
    strides, patch, divisor = pool_and_strides([1.0, 1.0, 1.0], [128, 128, 128])
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 5  # 128 → 4 voxels
    assert divisor == [32, 32, 32] and patch == [128, 128, 128]


def test_thick_axis_is_skipped_by_the_first_strides():
    """0.45 × 0.45 × 3.75 mm, 256 × 256 × 24: x, y pool alone until their spacing is within
    2× of z (0.45 → 3.6 mm: three levels), then all axes pool until z has < 8 voxels
    (24 → 12 → 6), then x, y once more (16 → 8 → 4)."""
    strides, patch, divisor = pool_and_strides([0.45, 0.45, 3.75], [256, 256, 24])
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert divisor == [64, 64, 4] and patch == [256, 256, 24]
    kwargs = network_kwargs("dynunet", strides, 8, 64)
    assert kwargs["strides"][:2] == [1, [2, 2, 1]] and kwargs["filters"] == [8, 16, 32, 64, 64,
                                                                             64, 64]
    with pytest.raises(ValueError, match="isotropic strides"):
        network_kwargs("unet", strides, 8, 64)


def test_anisotropic_plan_builds_dynunet_with_per_axis_strides():
    zs = [4.0, 5.0, 5.0, 5.0, 6.0]
    fp = _fingerprint([[0.45, 0.45, z] for z in zs], [[512, 512, 30]] * 5)
    plan = plan_from_fingerprint(fp, memory_gb=1000, config=SMALL)
    assert plan["spacing_mm"] == pytest.approx([0.45, 0.45, 4.4])
    assert plan["median_shape"] == [512, 512, 34]  # floor(30 · (4, 5, 5, 5, 6) / 4.4)
    assert plan["strides"][:2] == [[1, 1, 1], [2, 2, 1]]
    assert plan["model_kwargs"]["strides"][1] == [2, 2, 1]
    assert plan["patch_size"][2] % math.prod(s[2] for s in plan["strides"]) == 0


# --------------------------------------------------------------------------- memory
def test_saved_activation_bytes_by_hand():
    """conv saves its input (2 · 8³ float32), ReLU its output (4 · 8³), which is returned."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU())
    assert saved_activation_bytes(model, (1, 2, 8, 8, 8)) == (2 + 4) * 8**3 * 4
    real = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU())
    assert saved_activation_bytes(real, (1, 2, 8, 8, 8)) == (2 + 4) * 8**3 * 4


def test_memory_is_monotone_in_patch_size():
    kwargs = network_kwargs("dynunet", [[1, 1, 1]] + [[2, 2, 2]] * 3, 4, 16)
    patches = [(16, 16, 16), (24, 16, 16), (24, 24, 16), (32, 32, 32), (48, 32, 32)]
    estimates = [training_memory("dynunet", 2, 2, p, kwargs) for p in patches]
    assert len({e.fixed for e in estimates}) == 1
    per_sample = [e.per_sample for e in estimates]
    assert per_sample == sorted(per_sample) and len(set(per_sample)) == len(per_sample)


# --------------------------------------------------------------------------- plans
def test_small_dataset_patch_is_the_median_shape_and_batch_is_capped():
    """Median 40 × 48 × 36 at 1 mm: the patch is clipped to it and padded to the stride (8);
    20 subjects: 5 % of the dataset is one patch, so the floor of 2 holds; 400: 18."""
    shapes = [[40, 48, 36], [38, 50, 36], [42, 46, 36]] * 7
    fp = _fingerprint([[1.0, 1.0, 1.0]] * 20, shapes[:20])
    plan = plan_from_fingerprint(fp, memory_gb=64, config=SMALL)
    assert plan["median_shape"] == [40, 48, 36]
    assert plan["patch_size"] == [40, 48, 40]
    assert plan["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 3
    assert plan["batch_size"] == 2
    many = plan_from_fingerprint(_fingerprint([[1.0] * 3] * 400, [[40, 48, 36]] * 400),
                                 memory_gb=64, config=SMALL)
    assert many["batch_size"] == round(0.05 * 40 * 48 * 36 * 400 / (40 * 48 * 40)) == 18


def test_plan_that_does_not_fit_is_shrunk_along_the_largest_axis_first():
    """Median 56 × 120 × 56: the padded patch 56 × 128 × 56 is largest relative to the median
    along y, so y loses one stride multiple (16) first."""
    fp = _fingerprint([[1.0, 1.0, 1.0]] * 4, [[56, 120, 56]] * 4)
    roomy = plan_from_fingerprint(fp, memory_gb=64, config=SMALL)
    assert roomy["patch_size"] == [56, 128, 56] and roomy["memory"]["patch_shrinks"] == 0
    full = training_memory("dynunet", 1, 2, [56, 128, 56], roomy["model_kwargs"]).total(2)
    budget = 0.97 * full / SMALL.usable_fraction / GIB
    tight = plan_from_fingerprint(fp, memory_gb=budget, config=SMALL)
    assert tight["patch_size"] == [56, 112, 56] and tight["memory"]["patch_shrinks"] == 1
    assert tight["memory"]["planned_gib"] <= tight["memory"]["usable_gib"]
    with pytest.raises(ValueError, match="does not fit"):
        plan_from_fingerprint(fp, memory_gb=1e-4, config=SMALL)


def test_oversampling_and_normalisation():
    probs = label_probabilities({"0": 0.9, "1": 0.1}, 0.33)
    assert probs == {0: pytest.approx(0.67 * 0.9), 1: pytest.approx(0.33 + 0.67 * 0.1)}
    fp = _fingerprint([[1.0] * 3], [[10] * 3])
    fp["modalities"]["CT"] = fp["modalities"]["dwi"]
    assert normalisation("CT", fp) == {"scheme": "ct", "clip": [70.0, 130.0], "mean": 100.0,
                                       "std": 10.0}
    assert normalisation("dwi", fp) == {"scheme": "zscore", "use_mask_for_norm": False, "clip": None}
    fp["subjects"] = [{"nonzero_fraction": 0.5}]
    assert normalisation("dwi", fp)["use_mask_for_norm"] is True


def test_plan_applied_to_the_experiment_trains_one_step(tmp_path):
    """`cogimg plan` → plan.yaml → `--config seg_dynunet.yaml --config plan.yaml` → one step."""
    from cogimg.cli import main
    from cogimg.tasks.config import load_experiment
    from tests.tasks.conftest import build_easy_stroke_tree, trainer

    root = build_easy_stroke_tree(tmp_path / "ds", n=6)
    command = ["plan", str(root), "--out", str(tmp_path / "plan"), "--memory-gb", "2",
               "--samples", "600", "--no-progress"]
    assert main(command) == 0
    assert main(command) == 2  # the plan exists: --overwrite needed
    assert main(["plan", str(root), "--network", "swinunetr"]) == 2
    yaml_path = tmp_path / "plan" / "plan.yaml"
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text(encoding="utf-8"))
    assert json.loads((tmp_path / "plan" / "fingerprint.json").read_text())["n_subjects"] == 6
    with pytest.warns(UserWarning, match="run-management"):  # the YAML's default_root_dir
        exp = load_experiment("experiments/stroke/seg_dynunet.yaml", [
            "--config", str(yaml_path), "--data.init_args.cache_dir", str(tmp_path / "cache"),
            "--data.init_args.n_folds", "3", "--data.init_args.num_workers", "0",
            "--data.init_args.augmentation", "none", "--data.init_args.samples_per_volume", "2",
            "--data.init_args.queue_length", "4"])
    assert list(exp.data_args["patch_size"]) == plan["patch_size"] == [64, 40, 40]
    assert list(exp.task_args["patch_size"]) == plan["patch_size"]  # linked from the data
    assert exp.task_args["model_kwargs"] == plan["model_kwargs"]
    assert exp.data_args["label_probabilities"] == {
        int(k): v for k, v in plan["label_probabilities"].items()}
    assert list(exp.data_args["spacing_mm"]) == plan["spacing_mm"]
    dm, task = exp.data_class(**exp.data_args), exp.task_class(**exp.task_args)
    fitter = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    before = [p.detach().clone() for p in task.parameters()]
    fitter.fit(task, datamodule=dm)
    assert fitter.global_step == 1
    assert torch.isfinite(fitter.callback_metrics["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters(), strict=True))
