"""Detection metrics: FROC/CPM and AP on a constructed case with a hand-computed answer, and
against MONAI's FROC utilities on random cases."""

from __future__ import annotations

import numpy as np
import pytest
from monai.metrics import compute_froc_curve_data, compute_froc_score

from cogimg.metrics.detection import (
    FROC_FP_RATES,
    average_precision,
    detection_summary,
    froc,
    froc_curve,
    match_from_row,
    match_scan,
    scan_row,
)


def cube(x, y, z, size=4):
    return [x, y, z, x + size, y + size, z + size]


# Scan A: targets T1, T2; detections .9 on T1, .8 nowhere, .7 on T1 again, .6 on T2.
# Scan B: target T3, missed; detections .95 and .5 nowhere.
GT_A = [cube(0, 0, 0), cube(20, 20, 20)]
PRED_A = ([cube(0, 0, 1), cube(40, 40, 40), cube(1, 0, 0), cube(20, 21, 20)], [0.9, 0.8, 0.7, 0.6])
GT_B = [cube(10, 10, 10)]
PRED_B = ([cube(30, 0, 0), cube(0, 30, 0)], [0.95, 0.5])


def constructed_matches(threshold=0.1):
    return [match_scan(*PRED_A, GT_A, threshold=threshold), match_scan(*PRED_B, GT_B, threshold=threshold)]


def test_match_rules_on_constructed_case():
    a, b = constructed_matches()
    assert a.hits.tolist() == [True, False, True, True]
    assert a.is_tp.tolist() == [True, False, False, True]  # the .7 duplicate is an AP false positive
    assert a.target_scores.tolist() == [0.9, 0.6]
    assert b.target_scores.tolist() == [-np.inf] and b.fp_scores.tolist() == [0.95, 0.5]


def test_froc_hand_computed():
    # Operating points (FP/scan, sensitivity): (.5, 0) at .95, (.5, 1/3) at .9, (1, 1/3) at .8,
    # (1, 2/3) at .6 (the duplicate .7 is no threshold), (1.5, 2/3) at .5.
    fps, sens, thresholds = froc_curve(constructed_matches())
    np.testing.assert_allclose(fps, [0, 0.5, 0.5, 1, 1, 1.5])
    np.testing.assert_allclose(sens, [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(thresholds[1:], [0.95, 0.9, 0.8, 0.6, 0.5])
    result = froc(constructed_matches())
    # The .95 false positive comes first: sensitivity 0 up to .5 FP/scan, 1/3 at .5, 2/3 from 1.
    expected = [0, 0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]
    np.testing.assert_allclose(list(result["sensitivity"].values()), expected)
    assert list(result["sensitivity"]) == list(FROC_FP_RATES)
    assert result["cpm"] == pytest.approx(3 / 7)


def test_average_precision_hand_computed():
    # Pooled by score: FP .95, TP .9, FP .8, FP .7 (duplicate), TP .6, FP .5 over 3 targets:
    # precision envelope 1/2 up to recall 1/3, then 2/5 up to 2/3 → 1/6 + 2/15 = 0.3.
    assert average_precision(constructed_matches()) == pytest.approx(0.3)
    # A stricter IoU loses the shifted detections: IoU of two 4³ cubes offset by 1 is 48/80 = 0.6.
    assert average_precision(constructed_matches(threshold=0.7)) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_froc_equals_monai_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    matches = []
    for _ in range(rng.integers(2, 9)):
        gt = [cube(*rng.integers(0, 60, 3)) for _ in range(rng.integers(0, 5))]
        pred = [cube(*rng.integers(0, 60, 3)) for _ in range(rng.integers(0, 12))]
        pred += [np.add(g, rng.integers(-1, 2, 6)).tolist() for g in gt if rng.random() < 0.7]
        pred = [[min(b[i], b[i + 3] - 1) if i < 3 else b[i] for i in range(6)] for b in pred]
        matches.append(match_scan(pred, rng.random(len(pred)), gt))
    n_targets = sum(m.n_targets for m in matches)
    if n_targets == 0:
        pytest.skip("no target drawn")
    fp = np.concatenate([m.fp_scores for m in matches])
    tp = np.concatenate([m.target_scores for m in matches])
    # MONAI drops its lowest distinct score as a threshold and counts missed targets at
    # probability 0; a sentinel below every score makes both conventions coincide.
    fp_monai = np.concatenate([fp, [-1.0]])
    tp_monai = np.where(np.isfinite(tp), tp, -1.0)
    fps, sens = compute_froc_curve_data(fp_monai, tp_monai, n_targets, len(matches))
    expected = compute_froc_score(fps, sens, eval_thresholds=FROC_FP_RATES)
    assert froc(matches)["cpm"] == pytest.approx(expected, abs=1e-12)


def test_centre_distance_matching_for_tiny_objects():
    # Two 1-voxel boxes one voxel apart: IoU 0, centres 2 mm apart at 2 mm spacing.
    gt, pred = [[5, 5, 5, 6, 6, 6]], [[6, 5, 5, 7, 6, 6]]
    assert not match_scan(pred, [0.9], gt, criterion="iou", threshold=0.1).hits[0]
    near = match_scan(pred, [0.9], gt, criterion="centre", threshold=2.0, spacing_mm=(2, 2, 2))
    far = match_scan(pred, [0.9], gt, criterion="centre", threshold=1.9, spacing_mm=(2, 2, 2))
    assert near.is_tp[0] and not far.hits[0]


def test_summary_rows_and_errors():
    summary = detection_summary([PRED_A, PRED_B], [GT_A, GT_B])
    assert summary["cpm"] == pytest.approx(3 / 7) and summary["ap_0.1"] == pytest.approx(0.3)
    assert summary["sens_0.5fp"] == pytest.approx(1 / 3) and "ap_0.25" in summary
    a, _ = constructed_matches()
    row = scan_row("sub-01", a, score_threshold=0.65)
    assert (row["n_targets"], row["n_detections"], row["n_false_positives"]) == (2, 3, 1)
    assert row["sensitivity"] == 0.5
    again = match_from_row(row)
    np.testing.assert_array_equal(again.hits, a.hits)
    assert again.target_scores.tolist() == a.target_scores.tolist()
    with pytest.raises(ValueError, match="criterion"):
        match_scan([], [], [], criterion="dice")
    with pytest.raises(ValueError, match="pred_boxes"):
        match_scan([[0, 0, 0, 1]], [0.5], GT_A)
    with pytest.raises(ValueError, match="2 predicted boxes but 1 scores"):
        match_scan(PRED_B[0], [0.5], GT_B)
    empty = froc([match_scan([], [], [])])
    assert np.isnan(empty["cpm"])
