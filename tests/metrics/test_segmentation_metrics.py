"""Tests for cogimg.metrics.segmentation: hand-counted cases, ISLES'22 and MONAI references."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from cogimg.metrics.segmentation import (
    METRIC_KEYS,
    absolute_volume_difference_ml,
    detection_by_volume,
    detection_keys,
    dice,
    hausdorff95_mm,
    lesion_components,
    lesion_count_difference,
    lesion_f1,
    segmentation_report,
    summarise,
    volume_bin_names,
    voxel_volume_ml,
    write_subject_csv,
)

ISLES_MASK = (
    Path(__file__).resolve().parents[2].parent
    / "shared/data/isles22/derivatives/sub-strokecase0001/ses-0001"
    / "sub-strokecase0001_ses-0001_msk.nii.gz"
)


# --------------------------------------------------------------------------- references


def isles22_reference(truth: np.ndarray, pred: np.ndarray, voxel_ml: float) -> dict:
    """Independent per-lesion-loop implementation of the ISLES'22 metric definitions.

    Written for this test from the definitions and the loop structure of the official
    evaluation code (ezequieldlrosa/isles22_docker_evaluation, eval_metrics_isles.py:
    compute_dice, compute_absolute_volume_difference, compute_absolute_lesion_difference,
    compute_lesion_f1_score; MIT). It deliberately uses the slow, obvious form — one
    boolean image per component — so it shares no shortcut with the vectorised module.
    """
    truth, pred = truth.astype(bool), pred.astype(bool)
    structure = np.ones((3, 3, 3))
    total = truth.sum() + pred.sum()
    dice_value = 1.0 if total == 0 else 2.0 * np.logical_and(truth, pred).sum() / total
    truth_labels, n_truth = ndimage.label(truth, structure)
    pred_labels, n_pred = ndimage.label(pred, structure)
    tp = fn = fp = 0
    for lesion in range(1, n_truth + 1):
        if np.logical_and(truth_labels == lesion, pred).any():
            tp += 1
        else:
            fn += 1
    for lesion in range(1, n_pred + 1):
        if not np.logical_and(pred_labels == lesion, truth).any():
            fp += 1
    f1 = 1.0 if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2)
    return {
        "dice": dice_value,
        "absolute_volume_difference_ml": abs(truth.sum() * voxel_ml - pred.sum() * voxel_ml),
        "lesion_count_difference": abs(n_pred - n_truth),
        "lesion_f1": f1,
    }


def hd95_reference(pred: np.ndarray, truth: np.ndarray, spacing: tuple) -> float:
    """Symmetric HD95 from scipy's exact Euclidean distance transform (no MONAI)."""
    edges_pred = pred ^ ndimage.binary_erosion(pred)
    edges_truth = truth ^ ndimage.binary_erosion(truth)
    to_truth = ndimage.distance_transform_edt(~edges_truth, sampling=spacing)[edges_pred]
    to_pred = ndimage.distance_transform_edt(~edges_pred, sampling=spacing)[edges_truth]
    return max(np.percentile(to_truth, 95), np.percentile(to_pred, 95))


def random_blobs(seed: int, shape=(28, 32, 24), sigma=1.5, level=0.12) -> np.ndarray:
    """Several irregular lesions of varied size: thresholded smoothed noise."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise > level * noise.std() * 8


def sparse_voxels(seed: int, shape=(28, 32, 24), p=0.03) -> np.ndarray:
    """Scattered voxels: many diagonal contacts, so 26-connectivity matters."""
    return np.random.default_rng(seed).random(shape) < p


def as_batch(mask: np.ndarray) -> torch.Tensor:
    """(X, Y, Z) mask → (1, 1, X, Y, Z) float tensor, MONAI's (B, C, ...) layout."""
    return torch.from_numpy(mask[None, None].astype(np.float32))


def empty(shape=(6, 6, 6)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


# --------------------------------------------------------------------------- hand-counted


def test_two_truth_lesions_one_hit_one_missed_one_false_positive():
    truth = empty((12, 12, 12))
    truth[1:3, 1:3, 1:3] = True  # lesion A, hit
    truth[8:10, 8:10, 8:10] = True  # lesion B, missed
    pred = empty((12, 12, 12))
    pred[2:4, 2:4, 2:4] = True  # overlaps A in one voxel
    pred[1:2, 9:11, 1:2] = True  # FP far from both
    assert lesion_f1(pred, truth) == pytest.approx(0.5)  # 1 / (1 + (1 + 1) / 2)
    assert lesion_count_difference(pred, truth) == 0  # 2 vs 2
    assert dice(pred, truth) == pytest.approx(2 * 1 / (16 + 10))


def test_dice_hand_counted():
    truth = empty()
    truth[0, 0, 0:6] = True  # 6 voxels
    pred = empty()
    pred[0, 0, 3:6] = True
    pred[5, 5, 5] = True  # 4 voxels, 3 shared
    assert dice(pred, truth) == pytest.approx(6 / 10)


def test_diagonal_corner_contact_is_one_lesion_with_26_connectivity():
    mask = empty((4, 4, 4))
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # touch only at corners
    labels, n = lesion_components(mask)
    assert n == 1
    assert set(np.unique(labels[mask])) == {1}
    assert ndimage.label(mask)[1] == 3  # scipy's default 6-connectivity would split it
    truth = empty((4, 4, 4))
    truth[0, 0, 0] = True
    assert lesion_f1(mask, truth) == 1.0  # one predicted component, overlapping the truth


def test_merged_and_fragmented_lesions_follow_isles22_counting():
    truth = empty((10, 10, 10))
    truth[1:3, 1:3, 1:3] = True
    truth[1:4, 1:4, 5:9] = True
    merged = empty((10, 10, 10))
    merged[1:3, 1:3, 1:8] = True  # one predicted blob over both truth lesions
    assert lesion_f1(merged, truth) == 1.0  # 2 TP, 0 FP
    assert lesion_count_difference(merged, truth) == 1
    fragments = empty((10, 10, 10))
    fragments[1, 1, 1] = fragments[1, 1, 5] = fragments[3, 3, 8] = True  # not touching
    assert lesion_f1(fragments, truth) == 1.0  # three blobs on two lesions: no FP
    assert lesion_count_difference(fragments, truth) == 1


def test_anisotropic_volume_difference_in_ml():
    pred = empty((10, 10, 10))
    pred[0, 0, :] = True  # 10 voxels × 3 mm³
    assert voxel_volume_ml((1, 1, 3)) == pytest.approx(0.003)
    assert absolute_volume_difference_ml(pred, empty((10, 10, 10)), (1, 1, 3)) == pytest.approx(
        0.03
    )
    truth = empty((10, 10, 10))
    truth[5, 5, :4] = True
    assert absolute_volume_difference_ml(pred, truth, (0.5, 2.0, 1.5)) == pytest.approx(
        6 * 1.5 / 1000
    )


@pytest.mark.parametrize(
    ("shift_axis", "spacing", "expected_mm"),
    [(2, (1.0, 1.0, 2.0), 10.0), (0, (2.0, 1.0, 1.0), 10.0), (1, (1.0, 0.7, 3.0), 3.5)],
)
def test_hausdorff95_of_two_voxels_uses_spacing_per_axis(shift_axis, spacing, expected_mm):
    pred, truth = empty((12, 12, 12)), empty((12, 12, 12))
    truth[1, 1, 1] = True
    index = [1, 1, 1]
    index[shift_axis] += 5
    pred[tuple(index)] = True
    assert hausdorff95_mm(pred, truth, spacing) == pytest.approx(expected_mm, abs=1e-5)


def test_both_empty_is_perfect_for_every_metric():
    row = segmentation_report(empty(), empty(), (1, 1, 1), subject_id="s")
    assert row["dice"] == 1.0
    assert row["absolute_volume_difference_ml"] == 0.0
    assert row["lesion_count_difference"] == 0
    assert row["lesion_f1"] == 1.0
    assert row["hausdorff95_mm"] == 0.0
    assert row["n_lesions_pred"] == row["n_lesions_truth"] == 0


@pytest.mark.parametrize("empty_side", ["pred", "truth"])
def test_exactly_one_empty_mask(empty_side):
    lesions = empty()
    lesions[0:2, 0:2, 0:2] = True  # 8 voxels
    lesions[4, 4, 4] = True  # second lesion
    pred, truth = (empty(), lesions) if empty_side == "pred" else (lesions, empty())
    spacing = (2, 2, 2)  # 8 mm³ per voxel
    assert dice(pred, truth) == 0.0
    assert absolute_volume_difference_ml(pred, truth, spacing) == pytest.approx(9 * 8 / 1000)
    assert lesion_count_difference(pred, truth) == 2
    assert lesion_f1(pred, truth) == 0.0
    assert math.isnan(hausdorff95_mm(pred, truth, spacing))
    row = segmentation_report(pred, truth, spacing)
    assert math.isnan(row["hausdorff95_mm"]) and row["lesion_f1"] == 0.0


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("seed", range(6))
def test_matches_isles22_reference_on_random_masks(seed):
    # Mix of generators so that some pairs overlap a lot, some little, some in scattered voxels.
    makers = [random_blobs, sparse_voxels]
    truth = makers[seed % 2](seed)
    pred = makers[(seed // 2) % 2](seed + 100) if seed < 4 else truth ^ sparse_voxels(seed + 7)
    spacing = (0.9, 1.1, 2.5)
    expected = isles22_reference(truth, pred, float(np.prod(spacing)) / 1000)
    row = segmentation_report(pred, truth, spacing)
    assert expected["lesion_count_difference"] > 0 or expected["lesion_f1"] < 1  # not trivial
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-12), key
    assert lesion_f1(pred, truth) == pytest.approx(expected["lesion_f1"], abs=1e-12)
    assert lesion_count_difference(pred, truth) == expected["lesion_count_difference"]


@pytest.mark.parametrize("seed", range(4))
def test_dice_matches_monai_dice_metric(seed):
    from monai.metrics import DiceMetric

    truth, pred = random_blobs(seed), random_blobs(seed + 50)
    metric = DiceMetric(include_background=True, reduction="none")
    expected = metric(as_batch(pred), as_batch(truth)).item()
    assert dice(pred, truth) == pytest.approx(expected, abs=1e-6)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # MONAI-internal
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.2, 3.0)])
def test_hausdorff95_matches_monai_and_scipy_reference(seed, spacing):
    from monai.metrics import HausdorffDistanceMetric

    truth, pred = random_blobs(seed), random_blobs(seed + 50)
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    monai_value = metric(as_batch(pred), as_batch(truth), spacing=list(spacing)).item()
    ours = hausdorff95_mm(pred, truth, spacing)
    assert ours == pytest.approx(monai_value, abs=1e-4)
    assert ours == pytest.approx(hd95_reference(pred, truth, spacing), abs=1e-4)
    assert ours > 0


# --------------------------------------------------------------------------- validation


def test_accepts_torch_tensors_and_binary_ints_and_floats():
    truth = random_blobs(1)
    pred = random_blobs(2)
    expected = dice(pred, truth)
    assert dice(torch.from_numpy(pred), torch.from_numpy(truth.astype(np.uint16))) == expected
    assert dice(pred.astype(np.float32), truth.astype(np.int64)) == expected
    assert lesion_f1(torch.from_numpy(pred.astype(np.float32)), truth) == lesion_f1(pred, truth)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"pred \(4, 4, 4\) vs truth \(4, 4, 5\)"):
        dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


@pytest.mark.parametrize(("bad", "shown"), [(2, "2"), (0.5, "0.5"), (np.nan, "nan"), (-1, "-1")])
def test_non_binary_values_are_named(bad, shown):
    mask = np.zeros((4, 4, 4), dtype=np.float64)
    mask[1, 1, 1] = bad
    with pytest.raises(ValueError, match=rf"truth must be binary.*{shown}"):
        lesion_f1(np.zeros((4, 4, 4)), mask)


def test_non_3d_input_is_rejected():
    with pytest.raises(ValueError, match=r"pred must be a 3D.*\(1, 4, 4, 4\)"):
        dice(np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 4)))


@pytest.mark.parametrize("spacing", [(1, 1), (1, 1, 0), (1, -2, 1), (1, 1, np.nan), "abc"])
def test_bad_spacing_is_rejected(spacing):
    with pytest.raises(ValueError, match="spacing_mm must be 3 positive numbers"):
        absolute_volume_difference_ml(empty(), empty(), spacing)


# --------------------------------------------------------------------------- table


def test_summarise_is_nan_aware_and_counts_subjects():
    rows = [
        segmentation_report(random_blobs(s), random_blobs(s + 10), (1, 1, 1), subject_id=f"s{s}")
        for s in range(3)
    ]
    one = empty((28, 32, 24))
    one[3:6, 3:6, 3:6] = True
    rows.append(segmentation_report(empty((28, 32, 24)), one, (1, 1, 1), subject_id="missed"))
    summary = summarise(rows)
    assert set(summary) == set(METRIC_KEYS)
    hd = [r["hausdorff95_mm"] for r in rows[:3]]
    assert summary["hausdorff95_mm"]["n"] == 3
    assert summary["hausdorff95_mm"]["n_undefined"] == 1
    assert summary["hausdorff95_mm"]["mean"] == pytest.approx(np.mean(hd))
    assert summary["hausdorff95_mm"]["std"] == pytest.approx(np.std(hd, ddof=1))
    assert summary["hausdorff95_mm"]["median"] == pytest.approx(np.median(hd))
    dices = [r["dice"] for r in rows]
    assert summary["dice"]["n"] == 4 and summary["dice"]["n_undefined"] == 0
    assert summary["dice"]["mean"] == pytest.approx(np.mean(dices))
    assert dices[3] == 0.0


def test_summarise_rejects_bad_rows():
    row = segmentation_report(empty(), empty(), (1, 1, 1), subject_id="a")
    with pytest.raises(ValueError, match="at least one row"):
        summarise([])
    with pytest.raises(KeyError, match="'b'.*'lesion_f1'"):
        summarise([row, {k: v for k, v in row.items() if k != "lesion_f1"} | {"subject_id": "b"}])
    with pytest.raises(ValueError, match="infinite"):
        summarise([row | {"hausdorff95_mm": math.inf}])
    with pytest.raises(ValueError, match="dice=None is not a number"):
        summarise([row | {"dice": None}])


def test_single_subject_summary_has_undefined_std():
    summary = summarise([segmentation_report(empty(), empty(), (1, 1, 1))])
    assert summary["dice"]["mean"] == 1.0 and summary["dice"]["n"] == 1
    assert math.isnan(summary["dice"]["std"])


def test_write_subject_csv_round_trips_atomically(tmp_path):
    one = empty()
    one[1:3, 1:3, 1:3] = True
    rows = [
        segmentation_report(one, one, (1, 1, 2), subject_id="sub-01"),
        segmentation_report(empty(), one, (1, 1, 2), subject_id="sub-02"),
    ]
    path = write_subject_csv(rows, tmp_path / "metrics" / "subjects.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["subject_id", *METRIC_KEYS]
    assert read[0]["subject_id"] == "sub-01" and float(read[0]["dice"]) == 1.0
    assert float(read[0]["volume_truth_ml"]) == pytest.approx(0.016)
    assert math.isnan(float(read[1]["hausdorff95_mm"]))
    assert sorted(p.name for p in path.parent.iterdir()) == ["subjects.csv"]  # no temp left

    with pytest.raises(FileExistsError, match="subjects.csv exists"):
        write_subject_csv(rows[:1], path)
    write_subject_csv(rows[:1], path, overwrite=True)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_write_subject_csv_rejects_mismatched_rows(tmp_path):
    row = segmentation_report(empty(), empty(), (1, 1, 1), subject_id="a")
    target = tmp_path / "rows.csv"
    with pytest.raises(ValueError, match=r"row 1 \(subject 'b'\)"):
        write_subject_csv([row, {"subject_id": "b", "dice": 1.0}], target)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no rows"):
        write_subject_csv([], target)


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
@pytest.mark.skipif(not ISLES_MASK.exists(), reason="../shared/data/isles22 not present")
def test_isles22_expert_mask_against_itself():
    import nibabel as nib

    image = nib.load(ISLES_MASK)
    mask = np.asanyarray(image.dataobj)
    spacing = image.header.get_zooms()[:3]
    row = segmentation_report(mask, mask, spacing, subject_id="sub-strokecase0001")
    assert row["dice"] == 1.0
    assert row["lesion_f1"] == 1.0
    assert row["n_lesions_truth"] == row["n_lesions_pred"] == 31
    assert row["volume_truth_ml"] == pytest.approx(6.68, abs=0.01)
    assert row["absolute_volume_difference_ml"] == 0.0
    assert row["hausdorff95_mm"] == 0.0
    # One voxel removed from the largest lesion: the difference is exactly one 8 mm³ voxel.
    labels, _ = lesion_components(mask)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    eroded = mask.copy()
    eroded[tuple(np.argwhere(labels == largest)[0])] = 0
    assert absolute_volume_difference_ml(eroded, mask, spacing) == pytest.approx(0.008)


def test_detection_by_volume_counts_found_lesions_per_size_and_splits_the_errors():
    """Three true lesions at 2 mm (8 µL voxels): 5 voxels (0.04 mL), 20 (0.16 mL) and 150
    (1.2 mL); the prediction touches the two larger ones with one voxel each and adds a
    7-voxel false positive. Hand counts per bin, and the two error volumes give Dice back."""
    truth = np.zeros((30, 30, 30), bool)
    truth[1:6, 1, 1] = True                      # 5 voxels
    truth[10:15, 10:14, 10] = True               # 20 voxels
    truth[18:28, 18:23, 18:21] = True            # 150 voxels
    pred = np.zeros_like(truth)
    pred[12, 11, 10] = pred[20, 20, 20] = True   # one voxel in each of the two larger lesions
    pred[1:8, 25, 25] = True                     # 7 voxels, no lesion
    row = detection_by_volume(pred, truth, (2.0, 2.0, 2.0))
    assert volume_bin_names() == ["under_0.1ml", "0.1_to_1ml", "1ml_or_more"]
    assert tuple(row) == detection_keys()
    assert {k: v for k, v in row.items() if "lesions" in k} == {
        "true_lesions_under_0.1ml": 1, "found_lesions_under_0.1ml": 0,
        "true_lesions_0.1_to_1ml": 1, "found_lesions_0.1_to_1ml": 1,
        "true_lesions_1ml_or_more": 1, "found_lesions_1ml_or_more": 1}
    assert row["false_positive_ml"] == pytest.approx(7 * 0.008)
    assert row["missed_ml"] == pytest.approx((175 - 2) * 0.008)
    tp_ml = 2 * 0.008
    assert 2 * tp_ml / (2 * tp_ml + row["false_positive_ml"] + row["missed_ml"]) == pytest.approx(
        dice(pred, truth))
    # a lesion exactly at an edge falls in the upper bin: 100 voxels of 1 mm³ = 0.1 mL
    edge = np.zeros((10, 10, 10), bool)
    edge[:10, :10, 0] = True
    at_edge = detection_by_volume(np.zeros_like(edge), edge, (1.0, 1.0, 1.0))
    assert (at_edge["true_lesions_under_0.1ml"], at_edge["true_lesions_0.1_to_1ml"]) == (0, 1)
    assert volume_bin_names((0.5,)) == ["under_0.5ml", "0.5ml_or_more"]
    with pytest.raises(ValueError, match="positive and increasing"):
        detection_by_volume(pred, truth, (1.0, 1.0, 1.0), edges_ml=(1.0, 0.1))
