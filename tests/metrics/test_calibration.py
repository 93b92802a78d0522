"""Temperature scaling and ECE against hand-computed values and a brute-force optimum; the
classification task stores the temperature fitted on its latest validation logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from cogimg.metrics.calibration import (
    calibrated_probabilities,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    temperature_nll,
)
from cogimg.tasks.classification import ClassificationTask


def test_temperature_of_a_hand_computed_binary_case():
    # Three samples with logits (1, 0), labels 0, 0, 1: NLL(T) = -(2 log p + log(1 - p)) with
    # p = sigmoid(1 / T), minimal at p = 2/3, i.e. 1 / T = log 2.
    logits = np.array([[1.0, 0.0]] * 3)
    labels = np.array([0, 0, 1])
    assert fit_temperature(logits, labels) == pytest.approx(1 / np.log(2), rel=1e-4)
    p = 1 / (1 + np.exp(-np.log(2)))
    assert temperature_nll(logits, labels, 1 / np.log(2)) == pytest.approx(
        -(2 * np.log(p) + np.log(1 - p)) / 3, rel=1e-9)


def test_fit_recovers_the_overconfidence_factor_and_equals_a_grid_search():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (2000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits, axis=1)])
    overconfident = 2.5 * true_logits
    fitted = fit_temperature(overconfident, labels)
    assert fitted == pytest.approx(2.5, rel=0.08)
    grid = np.exp(np.linspace(np.log(1.5), np.log(4), 1001))
    best = grid[np.argmin([temperature_nll(overconfident, labels, t) for t in grid])]
    assert fitted == pytest.approx(best, rel=1e-3)
    summary = calibration_summary(overconfident, labels)
    assert summary["nll_after"] < summary["nll_before"] and summary["ece_after"] < summary["ece_before"]


def test_calibrated_probabilities_keep_the_ranking():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    prob = calibrated_probabilities(logits, 2.0)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0)
    np.testing.assert_array_equal(prob.argmax(axis=1), logits.argmax(axis=1))
    np.testing.assert_allclose(prob, softmax(logits / 2.0, axis=1))
    with pytest.raises(ValueError, match="temperature"):
        calibrated_probabilities(logits, 0.0)


def test_expected_calibration_error_by_hand():
    # Two bins of 10: confidence 0.95 / 8 of 10 right (gap 0.15), 0.55 / 6 of 10 right (gap 0.05).
    prob = np.array([[0.95, 0.05]] * 10 + [[0.55, 0.45]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert expected_calibration_error(prob, labels, n_bins=10) == pytest.approx(0.5 * 0.15 + 0.5 * 0.05)


def test_task_stores_the_temperature_of_its_latest_validation_logits():
    task = ClassificationTask("resnet10_3d", classes=["CN", "AD"], input_shape=(16, 16, 16),
                              model_kwargs={"block_inplanes": [4, 4, 8, 8]})
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(0, 3, (40, 2)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(0, 2, 40))
    task._val_outputs = [(logits[:20], labels[:20]), (logits[20:], labels[20:])]
    task._val_outputs_step = task.global_step
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    stored = checkpoint["cogimg"]["calibration"]
    assert stored["temperature"] == pytest.approx(fit_temperature(logits.numpy(), labels.numpy()))
    assert stored["n"] == 40 and stored["fitted_on"] == "validation"
    task._val_outputs_step = task.global_step - 1  # logits of other weights: no calibration
    checkpoint = {}
    task.on_save_checkpoint(checkpoint)
    assert "calibration" not in checkpoint["cogimg"]
