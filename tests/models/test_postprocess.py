"""Small-lesion removal in mL at anisotropic spacing, and the validation choice rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cogimg.models.postprocess import choose_min_lesion_ml, remove_small_lesions

SPACING = (1.0, 1.0, 2.5)  # one voxel = 2.5 mm³ = 0.0025 mL


def hand_mask() -> np.ndarray:
    """Four 26-connected lesions: 64, 8, 2 (corner-touching) and 1 voxels."""
    mask = np.zeros((20, 20, 12), dtype=np.uint8)
    mask[1:5, 1:5, 1:5] = 1  # 64 voxels = 0.16 mL
    mask[10:12, 10:12, 8:10] = 1  # 8 voxels = 0.02 mL
    mask[15, 2, 2] = mask[16, 3, 3] = 1  # 2 voxels touching at a corner = 0.005 mL
    mask[2, 17, 10] = 1  # 1 voxel = 0.0025 mL
    return mask


@pytest.mark.parametrize(("threshold", "kept_voxels"), [
    (0.0, 75),  # off
    (0.004, 74),  # only the single voxel is smaller; the corner pair counts as one lesion
    (0.01, 72),  # the pair (0.005 mL) goes too
    (0.03, 64),  # the 8-voxel cube (0.02 mL) goes too
    (0.2, 0),  # everything is below 0.2 mL
])
def test_remove_small_lesions_counts_millilitres_at_anisotropic_spacing(threshold, kept_voxels):
    mask = hand_mask()
    kept = remove_small_lesions(mask, SPACING, threshold)
    assert kept.dtype == mask.dtype and kept.shape == mask.shape
    assert int(kept.sum()) == kept_voxels
    assert not (kept & ~mask.astype(bool)).any()  # only removes
    assert int(mask.sum()) == 75  # the input is untouched


def test_remove_small_lesions_is_per_class_and_takes_tensors():
    labels = np.zeros((10, 10, 10), dtype=np.int64)
    labels[2:4, 2:4, 2:4] = 1  # 8 voxels of class 1 …
    labels[4:6, 2:4, 2:4] = 2  # … touching 8 voxels of class 2: together 16 voxels
    labels[7:10, 7:10, 7:10] = 2  # 27 voxels of class 2
    kept = remove_small_lesions(torch.from_numpy(labels), (1.0, 1.0, 1.0), 0.010)
    assert isinstance(kept, np.ndarray)
    assert set(np.unique(kept)) == {0, 2} and int((kept == 2).sum()) == 27
    bool_mask = labels > 0  # as one class, the 16 touching voxels survive 0.010 mL
    assert int(remove_small_lesions(bool_mask, (1.0, 1.0, 1.0), 0.010).sum()) == 43


def test_remove_small_lesions_refuses_bad_input():
    with pytest.raises(ValueError, match="min_volume_ml"):
        remove_small_lesions(hand_mask(), SPACING, -0.1)
    with pytest.raises(ValueError, match="min_volume_ml"):
        remove_small_lesions(hand_mask(), SPACING, float("nan"))
    with pytest.raises(TypeError, match="dtype float"):
        remove_small_lesions(hand_mask().astype(np.float32), SPACING, 0.1)
    with pytest.raises(ValueError, match="3D"):
        remove_small_lesions(hand_mask()[0], SPACING, 0.1)
    with pytest.raises(ValueError, match="spacing_mm"):
        remove_small_lesions(hand_mask(), (1.0, 0.0, 1.0), 0.1)


def _cube_case(specks: bool):
    truth = np.zeros((16, 16, 16), dtype=bool)
    truth[4:9, 4:9, 4:9] = True  # 125 voxels = 0.125 mL at 1 mm
    pred = truth.copy()
    if specks:
        pred[0, 0, 0] = pred[15, 15, 15] = pred[0, 15, 0] = pred[15, 0, 15] = True
    return pred, truth


def test_choice_removes_specks_when_that_helps_dice():
    pred, truth = _cube_case(specks=True)
    chosen, table = choose_min_lesion_ml([pred], [truth], [(1.0, 1.0, 1.0)],
                                         candidates=[0.5, 0.01, 0.001])
    assert [row["min_lesion_ml"] for row in table] == [0.0, 0.001, 0.01, 0.5]  # 0 always tried
    dice = [row["dice"] for row in table]
    # 0.001 mL is one voxel: "smaller than" keeps the specks; 0.5 mL removes the cube too.
    assert dice == pytest.approx([250 / 254, 250 / 254, 1.0, 0.0])
    assert chosen == 0.01
    assert table[0]["n_lesions_pred"] == 5 and table[2]["n_lesions_pred"] == 1
    assert table[2]["lesion_f1"] == 1.0 and table[0]["lesion_f1"] == pytest.approx(1 / 3)


def test_choice_stays_off_when_removal_hurts_or_ties():
    pred, truth = _cube_case(specks=False)
    small_truth = truth.copy()
    small_truth[14, 14, 14] = True  # a real one-voxel lesion …
    small_pred = small_truth.copy()  # … that the prediction finds
    chosen, table = choose_min_lesion_ml([small_pred, pred], [small_truth, truth],
                                         [(1.0, 1.0, 1.0)] * 2, candidates=[0.01, 0.05])
    assert chosen == 0.0
    assert table[0]["dice"] == 1.0 and table[1]["dice"] < 1.0
    assert table[1]["dice"] == table[2]["dice"]  # a tie among removals does not matter either
    chosen, _ = choose_min_lesion_ml([pred], [truth], [(1.0, 1.0, 1.0)], candidates=[0.01])
    assert chosen == 0.0  # removal changes nothing: a tie goes to the smaller threshold


def test_choice_refuses_mismatched_or_empty_input():
    pred, truth = _cube_case(specks=True)
    with pytest.raises(ValueError, match="one of each"):
        choose_min_lesion_ml([pred, pred], [truth], [(1.0, 1.0, 1.0)])
    with pytest.raises(ValueError, match="at least one"):
        choose_min_lesion_ml([], [], [])
    with pytest.raises(ValueError, match="candidate"):
        choose_min_lesion_ml([pred], [truth], [(1.0, 1.0, 1.0)], candidates=[-1.0])
