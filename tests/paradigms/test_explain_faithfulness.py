"""Faithfulness metrics on constructed cases with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cogimg.paradigms.explain.faithfulness import (
    curve_auc,
    deletion_curve,
    insertion_curve,
    pointing_game,
    relevance_mass,
)


def region_box(shape=(8, 8, 8)) -> np.ndarray:
    region = np.zeros(shape, bool)
    region[2:4, 2:4, 2:4] = True  # 8 voxels
    return region


# --------------------------------------------------------------------------- pointing game
def test_pointing_game_hits_inside_and_misses_outside():
    region = region_box()
    inside = np.zeros(region.shape)
    inside[3, 3, 3] = 1.0
    outside = np.zeros(region.shape)
    outside[7, 7, 7] = 1.0
    assert pointing_game(inside, region) is True
    assert pointing_game(outside, region) is False
    assert pointing_game(torch.from_numpy(inside), torch.from_numpy(region)) is True


def test_pointing_game_tolerance_is_euclidean_distance_in_voxels():
    region = region_box()
    sal = np.zeros(region.shape)
    sal[3, 3, 6] = 1.0  # 3 voxels beyond the region's last slice z=3
    assert not pointing_game(sal, region, tolerance_vox=2)
    assert pointing_game(sal, region, tolerance_vox=3)


def test_pointing_game_ties_and_empty_maps():
    region = region_box()
    tied = np.zeros(region.shape)
    tied[7, 7, 7] = tied[2, 2, 2] = 1.0  # one of the tied maxima is inside
    assert pointing_game(tied, region)
    assert not pointing_game(np.zeros(region.shape), region)  # no evidence anywhere


def test_pointing_game_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        pointing_game(np.ones((4, 4, 4)), np.zeros((4, 4, 4), bool))
    with pytest.raises(ValueError, match="same grid"):
        pointing_game(np.ones((4, 4, 4)), np.ones((4, 4, 5), bool))
    with pytest.raises(ValueError, match="non-finite"):
        pointing_game(np.full((4, 4, 4), np.nan), np.ones((4, 4, 4), bool))


# --------------------------------------------------------------------------- relevance mass
def test_relevance_mass_hand_computed():
    region = region_box()
    sal = np.zeros(region.shape)
    sal[region] = 1.0       # 8 inside
    sal[7, 7, 7] = 3.0      # 3 outside
    sal[0, 0, 0] = -5.0     # negative evidence is not relevance
    assert relevance_mass(sal, region) == pytest.approx(8 / 11)


def test_relevance_mass_of_uniform_map_is_region_share_and_zero_map_is_nan():
    region = region_box()
    assert relevance_mass(np.ones(region.shape), region) == pytest.approx(8 / 512)
    assert math.isnan(relevance_mass(np.zeros(region.shape), region))


# --------------------------------------------------------------------------- curves
def mean_in(region: np.ndarray):
    """Score = mean of channel 0 over ``region`` (linear, so curves are exact)."""
    mask = torch.from_numpy(region)

    def score(batch: torch.Tensor) -> torch.Tensor:
        return batch[:, 0][:, mask].mean(dim=1)

    return score


def test_deletion_and_insertion_of_a_perfect_map():
    region = np.zeros((4, 4, 4), bool)
    region.flat[:16] = True                      # 16 of 64 voxels = the first quarter
    image = torch.ones(1, 2, 4, 4, 4)
    sal = region.astype(np.float32)
    fractions, deleted = deletion_curve(mean_in(region), image, sal, steps=4, batch_size=2)
    np.testing.assert_allclose(fractions, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(deleted, [1, 0, 0, 0, 0])
    assert curve_auc(fractions, deleted) == pytest.approx(0.125)  # ½ · ¼ · 1
    _, inserted = insertion_curve(mean_in(region), image, sal, steps=4, batch_size=3)
    np.testing.assert_allclose(inserted, [0, 1, 1, 1, 1])
    assert curve_auc(fractions, inserted) == pytest.approx(0.875)


def test_deletion_of_an_inverted_map_is_slow():
    region = np.zeros((4, 4, 4), bool)
    region.flat[:16] = True
    sal = (~region).astype(np.float32)           # most salient = everything but the region
    fractions, deleted = deletion_curve(mean_in(region), torch.ones(1, 1, 4, 4, 4), sal, steps=4)
    np.testing.assert_allclose(deleted, [1, 1, 1, 1, 0])
    assert curve_auc(fractions, deleted) == pytest.approx(0.875)


def test_deletion_uses_the_baseline_value():
    region = np.ones((2, 2, 2), bool)
    _, scores = deletion_curve(mean_in(region), torch.ones(1, 1, 2, 2, 2), np.ones((2, 2, 2)),
                               baseline=-1.0, steps=2)
    np.testing.assert_allclose(scores, [1.0, 0.0, -1.0])


def test_curves_reject_bad_input():
    score = mean_in(np.ones((2, 2, 2), bool))
    with pytest.raises(ValueError, match="image grid"):
        deletion_curve(score, torch.ones(1, 1, 2, 2, 2), np.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="one image"):
        deletion_curve(score, torch.ones(2, 1, 2, 2, 2), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="steps"):
        insertion_curve(score, torch.ones(1, 1, 2, 2, 2), np.ones((2, 2, 2)), steps=0)
    with pytest.raises(ValueError, match="two points"):
        curve_auc(np.array([0.0]), np.array([1.0]))
