"""Lesion–symptom mapping: GLM t equals reference tests and a direct nilearn ``permuted_ols``
call, FWE controls false positives on pure noise, and a score generated from known regions
is recovered."""

from __future__ import annotations

import numpy as np
import pytest
from nilearn.mass_univariate import permuted_ols
from scipy import stats

from cogimg.paradigms.lsm.stats import glm_t, lesion_matrix, permutation_lsm
from cogimg.paradigms.lsm.synthetic import dice, pick_regions, random_lesions, synthetic_scores

SHAPE = (10, 10, 8)


@pytest.fixture(scope="module")
def maps():
    return random_lesions(80, SHAPE, seed=0, radius_vox=(2.0, 4.0))


def test_t_without_covariates_is_the_pooled_two_sample_t_test(maps):
    lm = lesion_matrix(maps, min_count=5)
    y = np.random.default_rng(1).normal(size=maps.shape[0])
    t = glm_t(lm.values, y)
    for v in (0, lm.values.shape[1] // 2, lm.values.shape[1] - 1):
        lesioned = lm.values[:, v] > 0
        ref = stats.ttest_ind(y[lesioned], y[~lesioned]).statistic
        assert t[v] == pytest.approx(ref, rel=1e-4)


def test_t_with_a_covariate_equals_least_squares(maps):
    lm = lesion_matrix(maps, min_count=5)
    rng = np.random.default_rng(2)
    volume = maps.reshape(len(maps), -1).sum(1).astype(float)
    y = 0.1 * volume + rng.normal(size=len(maps))
    t = glm_t(lm.values, y, volume)
    for v in (3, lm.values.shape[1] - 4):
        x = np.column_stack([np.ones(len(y)), volume, lm.values[:, v]])
        beta, res, *_ = np.linalg.lstsq(x, y, rcond=None)
        sigma2 = res[0] / (len(y) - 3)
        se = np.sqrt(sigma2 * np.linalg.inv(x.T @ x)[2, 2])
        assert t[v] == pytest.approx(beta[2] / se, rel=1e-4)


@pytest.mark.parametrize("tail", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("with_covariate", [False, True])
def test_glm_equals_a_direct_permuted_ols_call(maps, tail, with_covariate):
    lm = lesion_matrix(maps, min_count=5)
    rng = np.random.default_rng(4)
    volume = maps.reshape(len(maps), -1).sum(1).astype(float)
    y = 0.05 * volume + rng.normal(size=len(maps))
    covariate = volume if with_covariate else None
    result = permutation_lsm(lm.values, y, covariate, n_perm=100, tail=tail, seed=7)
    sign = -1.0 if tail == "less" else 1.0  # nilearn's one-sided test is "greater"
    direct = permuted_ols(sign * y[:, None], lm.values.astype(np.float64),
                          confounding_vars=None if covariate is None else volume[:, None],
                          n_perm=100, two_sided_test=tail == "two-sided", random_state=7,
                          n_jobs=1, verbose=0)
    np.testing.assert_allclose(result.t, sign * direct["t"][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.p_fwe, 10.0 ** -direct["logp_max_t"][0], rtol=1e-12)
    np.testing.assert_array_equal(result.null_max, direct["h0_max_t"][0])
    assert result.threshold == pytest.approx(np.quantile(direct["h0_max_t"][0], 0.95))


def test_p_fwe_is_the_share_of_permutation_maxima_at_least_the_statistic(maps):
    lm = lesion_matrix(maps, min_count=5)
    y = np.random.default_rng(5).normal(size=len(maps))
    result = permutation_lsm(lm.values, y, n_perm=60, seed=1)
    exceed = (result.null_max[None, :] >= np.abs(result.t.astype(np.float64))[:, None] - 1e-6).sum(1)
    np.testing.assert_allclose(result.p_fwe, (1 + exceed) / 61)
    with pytest.raises(ValueError, match="constant"):
        permutation_lsm(lm.values, np.ones(len(maps)))


def test_minimum_lesion_count_mask(maps):
    lm = lesion_matrix(maps, min_count=10)
    count = maps.sum(0)
    np.testing.assert_array_equal(lm.voxel_mask, (count >= 10) & (80 - count >= 10))
    with pytest.raises(ValueError, match="lower min_count"):
        lesion_matrix(maps, min_count=80)


def test_fwe_controls_false_positives_on_pure_noise(maps):
    lm = lesion_matrix(maps, min_count=5)
    runs, hits = 200, 0
    for seed in range(runs):
        noise = np.random.default_rng(100 + seed).normal(size=maps.shape[0])
        result = permutation_lsm(lm.values, noise, n_perm=200, seed=seed, batch=200)
        hits += bool(result.significant.any())
    # Exact FWE control gives a rate of 5 %; 200 runs estimate it within ±1.5 % (binomial SD),
    # so the rate must stay within two SDs of 5 % (measured: 12 / 200 = 6 %).
    assert hits / runs <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / runs), f"{hits} of {runs} runs"


def test_known_regions_are_recovered(maps):
    regions = pick_regions(maps, n_regions=2, radius_vox=1.5, seed=0)
    scores = synthetic_scores(maps, regions, noise_sd=0.5, seed=0)
    lm = lesion_matrix(maps, min_count=5)
    result = permutation_lsm(lm.values, scores, n_perm=200, tail="greater", seed=0)
    found = lm.to_volume(result.significant) > 0
    truth = np.logical_or.reduce(regions)
    assert (found & truth).sum() > 0.5 * truth.sum()
    assert dice(found, truth) > 0.3
    assert result.t.max() > result.threshold


def test_brunner_munzel_equals_scipy_and_controls_fwe(maps):
    from cogimg.paradigms.lsm.stats import VoxelBrunnerMunzel

    lm = lesion_matrix(maps, min_count=5)
    y = np.random.default_rng(3).integers(0, 8, maps.shape[0]).astype(float)  # ties, as NIHSS
    bm = VoxelBrunnerMunzel(lm.values).t(y[:, None])[:, 0]
    for v in (0, lm.values.shape[1] // 3, lm.values.shape[1] - 1):
        lesioned = lm.values[:, v] > 0
        ref = stats.brunnermunzel(y[~lesioned], y[lesioned]).statistic
        assert bm[v] == pytest.approx(ref, rel=1e-5)
    result = permutation_lsm(lm.values, y, n_perm=50, stat="brunner-munzel", seed=0)
    assert not result.significant.any()  # pure noise
    with pytest.raises(ValueError, match="no covariates"):
        permutation_lsm(lm.values, y, np.ones(len(y)), stat="brunner-munzel")
