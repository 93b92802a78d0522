"""Classification metrics equal scikit-learn's; bootstrap intervals resample subjects."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cogimg.metrics.classification import (
    accuracy,
    auroc,
    balanced_accuracy,
    bootstrap_ci,
    classification_report,
    confusion_matrix,
    f1_macro,
)


def random_problem(seed: int, n: int, k: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]  # informative but imperfect
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, prob


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 4])
def test_metrics_equal_scikit_learn(seed, k):
    y, prob = random_problem(seed, 40 + 7 * seed, k)
    pred = prob.argmax(1)
    assert balanced_accuracy(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))
    assert f1_macro(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    np.testing.assert_array_equal(confusion_matrix(y, pred, k), skm.confusion_matrix(y, pred, labels=range(k)))
    if k == 2:
        assert auroc(y, prob) == pytest.approx(skm.roc_auc_score(y, prob[:, 1]))
        assert auroc(y, prob[:, 1]) == pytest.approx(skm.roc_auc_score(y, prob[:, 1]))
    else:
        assert auroc(y, prob) == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))


def test_auroc_with_ties_and_a_class_never_predicted():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    score = np.array([0.2, 0.5, 0.5, 0.9, 0.5, 0.1, 0.7, 0.5])  # ties across classes
    assert auroc(y, score) == pytest.approx(skm.roc_auc_score(y, score))
    pred = np.zeros_like(y)  # class 1 never predicted: its F1 is 0
    assert f1_macro(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert balanced_accuracy(y, pred) == 0.5


def test_hand_computed_values():
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    assert balanced_accuracy(y, pred) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert accuracy(y, pred) == pytest.approx(4 / 6)
    # F1: class 0: 2·2/(2+3)=0.8, class 1: 2·1/(2+2)=0.5, class 2: 2·1/(2+1)=2/3
    assert f1_macro(y, pred) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert confusion_matrix(y, pred).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_undefined_cases_give_nan_instead_of_raising():
    assert np.isnan(auroc([1, 1, 1], [0.2, 0.4, 0.9]))
    # Class 2 absent from y_true: one-vs-rest over the classes that are present.
    y = np.array([0, 1, 0, 1])
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]])
    assert auroc(y, prob) == pytest.approx(1.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same length"):
        balanced_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="1-D"):
        accuracy([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(KeyError, match="unknown metric"):
        bootstrap_ci([0, 1], [0, 1], "sensitivity")


def test_report_uses_argmax_of_probabilities():
    y, prob = random_problem(0, 30, 3)
    report = classification_report(y, prob)
    assert report["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, prob.argmax(1)))
    assert report["auroc"] == pytest.approx(skm.roc_auc_score(y, prob, multi_class="ovr"))
    assert np.sum(report["confusion_matrix"]) == 30


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    y, prob = random_problem(1, 60, 3)
    pred = prob.argmax(1)
    point = balanced_accuracy(y, pred)
    low, high = bootstrap_ci(y, pred, "balanced_accuracy", n_boot=500, seed=0)
    assert low < point < high and 0 <= low and high <= 1
    assert (low, high) == bootstrap_ci(y, pred, "balanced_accuracy", n_boot=500, seed=0)
    assert (low, high) != bootstrap_ci(y, pred, "balanced_accuracy", n_boot=500, seed=1)
    # Probabilities are accepted for a label metric (argmax) and needed for AUROC.
    assert (low, high) == bootstrap_ci(y, prob, "balanced_accuracy", n_boot=500, seed=0)
    a_low, a_high = bootstrap_ci(y, prob, "auroc", n_boot=300)
    assert a_low < auroc(y, prob) < a_high


def test_bootstrap_interval_shrinks_with_more_subjects():
    widths = []
    for n in (40, 640):
        y, prob = random_problem(2, n, 2)
        low, high = bootstrap_ci(y, prob.argmax(1), "accuracy", n_boot=400)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # ∝ 1/sqrt(n): 4× narrower in theory


def test_groups_resample_whole_subjects():
    # Two sessions per subject with identical outcomes: a cluster bootstrap over 10 subjects
    # is as wide as a bootstrap of 10 entries, wider than pretending 20 are independent.
    y = np.repeat([0, 1] * 5, 2)
    pred = np.repeat([0, 1, 1, 1, 0, 0, 0, 1, 1, 0], 2)
    ids = np.repeat(np.arange(10), 2)
    grouped = bootstrap_ci(y, pred, "accuracy", n_boot=800, groups=ids, stratified=False)
    naive = bootstrap_ci(y, pred, "accuracy", n_boot=800, stratified=False)
    single = bootstrap_ci(y[::2], pred[::2], "accuracy", n_boot=800, stratified=False)
    assert grouped[1] - grouped[0] > naive[1] - naive[0]
    assert grouped[1] - grouped[0] == pytest.approx(single[1] - single[0], abs=0.06)


def test_bootstrap_with_a_custom_metric():
    y = np.array([0, 1] * 20)
    low, high = bootstrap_ci(y, y, lambda t, p: float(np.mean(t == p)), n_boot=50)
    assert low == high == 1.0
