"""Outcome feature groups equal hand computations on a two-participant cohort."""

from __future__ import annotations

import numpy as np
import pytest

from cogimg.data.outcome import OutcomeCohort
from cogimg.data.outcome_features import FEATURE_GROUPS, hemisphere_volumes_ml, tabular_features


def tiny_cohort() -> OutcomeCohort:
    """Maps of 4 × 1 × 1 blocks of 2³ voxels (1 mm³ each); block centres at world x = −4, −2,
    0, 2 mm: two left blocks, one on the midline (split in half), one right."""
    maps = np.zeros((2, 4, 1, 1), np.uint8)
    maps[0, :, 0, 0] = [8, 4, 2, 0]
    map_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    map_affine[0, 3] = -4.0
    return OutcomeCohort(
        ids=["sub-1", "sub-2"], scores=np.array([7.0, 0.0]), covariates=np.array([[60.0], [70.0]]),
        covariate_names=["age"], lesion_volume_ml=np.array([0.014, 0.0]),
        territory_load=np.array([[0.5, 0.1], [0.0, 0.0]]), territory_names=["1_L", "2_R"],
        maps=maps, map_affine=map_affine, downsample=2, mask_affine=np.eye(4),
        mask_shape=(8, 2, 2))


def test_every_group_equals_a_hand_computation():
    cohort = tiny_cohort()
    # left: 8 + 4 voxels + half of the midline block's 2 = 13 voxels of 1 mm³; right: 1 voxel.
    np.testing.assert_allclose(hemisphere_volumes_ml(cohort), [[0.013, 0.001], [0, 0]])
    x, names = tabular_features(cohort, FEATURE_GROUPS)
    lv = np.log1p(0.014)
    expected = {
        "1_L": [0.5, 0], "2_R": [0.1, 0], "age": [60, 70], "log_lesion_volume_ml": [lv, 0],
        "lesion_volume_ml": [0.014, 0], "log_left_volume_ml": [np.log1p(0.013), 0],
        "log_right_volume_ml": [np.log1p(0.001), 0], "left_share": [13 / 14, 0.5],
        "1_L_x_log_volume": [0.5 * lv, 0], "2_R_x_log_volume": [0.1 * lv, 0],
        "map_0": [1, 0], "map_1": [0.5, 0], "map_2": [0.25, 0], "map_3": [0, 0]}
    assert names == list(expected)
    np.testing.assert_allclose(x, np.array(list(expected.values())).T)


def test_group_order_and_errors():
    cohort = tiny_cohort()
    x, names = tabular_features(cohort, ["covariates", "volume_ml"])
    assert names == ["age", "lesion_volume_ml"] and x.shape == (2, 2)
    with pytest.raises(ValueError, match="unknown feature group"):
        tabular_features(cohort, ["volume"])
    cohort.territory_names = []
    with pytest.raises(ValueError, match="need territory loads"):
        tabular_features(cohort, ["territory_x_volume"])
