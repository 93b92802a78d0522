"""The one bootstrap module: hand-computed cases, the resampling schemes, errors, and equality
with the loops it replaced (classification, regression and federated intervals)."""

from __future__ import annotations

import numpy as np
import pytest

from cogimg.metrics import bootstrap
from cogimg.metrics.classification import balanced_accuracy
from cogimg.metrics.classification import bootstrap_ci as classification_ci
from cogimg.metrics.regression import bootstrap_ci as regression_ci
from cogimg.metrics.regression import paired_bootstrap_delta, pearson_r


# --------------------------------------------------------------------------- hand-computed
def test_percentile_interval_of_known_values():
    assert bootstrap.percentile_interval([1, 2, 3, 4, 5], level=0.5) == (2.0, 4.0)
    # linear interpolation: 2.5th percentile of 0..100 is 2.5
    assert bootstrap.percentile_interval(np.arange(101)) == pytest.approx((2.5, 97.5))
    assert bootstrap.percentile_interval([np.nan, 1.0, 3.0], level=0.5) == (1.5, 2.5)
    low, high = bootstrap.percentile_interval([np.nan, 1.0, 3.0], skip_nan=False)
    assert np.isnan(low) and np.isnan(high)
    assert all(np.isnan(bootstrap.percentile_interval([np.nan, np.nan])))


def test_constant_vector_gives_a_zero_width_interval():
    assert bootstrap.mean_ci(np.full(12, 0.7), n_boot=50) == pytest.approx((0.7, 0.7))


def test_single_subject_resamples_only_itself():
    assert [idx.tolist() for idx in bootstrap.resample_indices(1, 3)] == [[0], [0], [0]]


def test_resample_is_numpy_choice_with_replacement_in_seed_order():
    rng = np.random.default_rng(7)
    expected = [rng.integers(0, 9, 9) for _ in range(4)]
    got = list(bootstrap.resample_indices(9, 4, seed=7))
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_same_seed_same_interval_other_seed_other_draws():
    values = np.random.default_rng(0).normal(size=40)
    assert bootstrap.mean_ci(values, 200, seed=3) == bootstrap.mean_ci(values, 200, seed=3)
    first = [i.tolist() for i in bootstrap.resample_indices(40, 5, seed=3)]
    other = [i.tolist() for i in bootstrap.resample_indices(40, 5, seed=4)]
    assert first != other


def test_stratified_resamples_keep_class_counts():
    strata = np.array(["a"] * 3 + ["b"] * 7 + ["c"] * 2)
    for idx in bootstrap.resample_indices(strata.size, 50, seed=1, strata=strata):
        assert idx.size == strata.size
        assert [int((strata[idx] == c).sum()) for c in "abc"] == [3, 7, 2]


def test_cluster_resamples_carry_whole_clusters():
    groups = np.array([5, 5, 5, 8, 9, 9])  # clusters of 3, 1 and 2 entries
    for idx in bootstrap.resample_indices(groups.size, 50, seed=2, groups=groups):
        picked = groups[idx]
        counts = {g: int((picked == g).sum()) for g in set(picked.tolist())}
        assert counts.get(5, 0) % 3 == 0 and counts.get(9, 0) % 2 == 0
        assert sum(c // {5: 3, 8: 1, 9: 2}[g] for g, c in counts.items()) == 3  # 3 clusters drawn


def test_stratified_clusters_keep_cluster_class_counts():
    groups = np.array([0, 0, 1, 2, 2, 3])
    strata = np.array([1, 1, 0, 1, 1, 0])  # clusters 0 and 2: class 1; 1 and 3: class 0
    for idx in bootstrap.resample_indices(6, 30, seed=0, strata=strata, groups=groups):
        clusters = groups[idx]
        assert (strata[idx] == 0).sum() == 2  # two single-entry class-0 clusters
        assert set(clusters[strata[idx] == 1].tolist()) <= {0, 2} and (strata[idx] == 1).sum() == 4


def test_paired_on_identical_vectors_is_zero():
    values = np.random.default_rng(0).uniform(size=25)
    assert bootstrap.paired_mean_ci(values, values, 100) == (0.0, 0.0)
    result = bootstrap.paired_bootstrap(lambda i: values[i].mean(), lambda i: values[i].mean(), 25, 100)
    assert result["delta"] == 0.0 and result["p_le_0"] == 1.0


def test_paired_shift_moves_the_interval_by_the_shift():
    values = np.random.default_rng(1).uniform(size=30)
    assert bootstrap.paired_mean_ci(values + 0.25, values, 100) == pytest.approx((0.25, 0.25))
    result = bootstrap.paired_bootstrap(lambda i: values[i].mean() + 0.25, lambda i: values[i].mean(),
                                        30, 100)
    assert result["delta"] == pytest.approx(0.25) and result["p_le_0"] == 0.0


def test_undefined_resamples_are_left_out():
    calls = iter([np.nan, 1.0, 2.0, np.nan, 3.0])
    assert bootstrap.bootstrap_ci(lambda idx: next(calls), 4, n_boot=5, level=0.5) == (1.5, 2.5)
    assert all(np.isnan(bootstrap.bootstrap_ci(lambda idx: np.nan, 4, n_boot=5)))


# --------------------------------------------------------------------------- errors
def test_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        bootstrap.mean_ci([])
    with pytest.raises(ValueError, match="empty"):
        list(bootstrap.resample_indices(0, 10))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap.mean_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap.mean_ci([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError, match="aligned"):
        bootstrap.paired_mean_ci([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"strata has shape \(2,\); expected \(3,\)"):
        list(bootstrap.resample_indices(3, 1, strata=[0, 1]))
    with pytest.raises(ValueError, match="groups has shape"):
        list(bootstrap.resample_indices(3, 1, groups=[0, 1, 2, 3]))


# --------------------------------------------------------------------------- same numbers as before
def _old_classification_ci(t, values, fn, n_boot, seed, stratified, groups, level=0.95):
    """The loop metrics/classification.py ran before it called this module."""
    group_ids = np.arange(t.size) if groups is None else np.asarray(groups)
    unique, first, inverse = np.unique(group_ids, return_index=True, return_inverse=True)
    members = None if groups is None else [np.flatnonzero(inverse == g) for g in range(unique.size)]
    strata = ([np.flatnonzero(t[first] == c) for c in np.unique(t[first])] if stratified
              else [np.arange(unique.size)])
    rng = np.random.default_rng(seed)
    scores = np.empty(n_boot)
    for b in range(n_boot):
        chosen = np.concatenate([rng.choice(s, size=s.size, replace=True) for s in strata])
        idx = chosen if members is None else np.concatenate([members[g] for g in chosen])
        scores[b] = fn(t[idx], values[idx])
    tail = 100 * (1 - level) / 2
    return tuple(float(v) for v in np.percentile(scores[~np.isnan(scores)], [tail, 100 - tail]))


def _old_regression_draws(n, n_boot, seed, groups):
    """The resamples metrics/regression.py drew before it called this module."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.integers(0, n, n) for _ in range(n_boot)]
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    return [np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
            for _ in range(n_boot)]


@pytest.mark.parametrize("stratified", [True, False])
@pytest.mark.parametrize("clustered", [False, True])
def test_classification_interval_equals_the_replaced_loop(stratified, clustered):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 40)
    pred = np.where(rng.uniform(size=40) < 0.6, y, rng.integers(0, 3, 40))
    groups = rng.integers(0, 15, 40) if clustered else None
    expected = _old_classification_ci(y, pred, balanced_accuracy, 300, 4, stratified, groups)
    assert classification_ci(y, pred, "balanced_accuracy", 300, 4, stratified=stratified,
                             groups=groups) == expected


@pytest.mark.parametrize("clustered", [False, True])
def test_regression_intervals_equal_the_replaced_loops(clustered):
    rng = np.random.default_rng(6)
    t = rng.normal(size=35)
    p, ref = t + rng.normal(size=35), t + 2 * rng.normal(size=35)
    groups = rng.integers(0, 12, 35) if clustered else None
    draws = _old_regression_draws(35, 300, 2, groups)
    new_draws = list(bootstrap.resample_indices(35, 300, 2, groups=groups))
    assert all(np.array_equal(a, b) for a, b in zip(new_draws, draws, strict=True))
    # np.dot's summation order may follow memory alignment: equal to the last bits, not always bitwise
    scores = np.array([pearson_r(t[i], p[i]) for i in draws])
    assert regression_ci(t, p, "pearson_r", 300, 2, groups=groups) == pytest.approx(
        np.percentile(scores, [2.5, 97.5]), rel=1e-12)
    if not clustered:
        deltas = np.array([pearson_r(t[i], p[i]) - pearson_r(t[i], ref[i]) for i in draws])
        result = paired_bootstrap_delta(t, p, ref, "pearson_r", 300, 2)
        assert (result["ci_low"], result["ci_high"]) == pytest.approx(
            np.percentile(deltas, [2.5, 97.5]), rel=1e-12)
        assert result["p_le_0"] == float(np.mean(deltas <= 0))
