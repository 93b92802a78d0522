"""Confidence calibration of classifiers: temperature scaling and expected calibration error.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017)
divides the logits by one scalar ``T > 0`` fitted on held-out (validation) subjects by
minimising the negative log-likelihood. It changes the confidence, never the ranking or
the predicted class. ``T > 1`` softens over-confident networks.

Example::

    T = fit_temperature(val_logits, val_labels)          # (N, K), (N,)
    prob = calibrated_probabilities(test_logits, T)      # (M, K), rows sum to 1
    ece = expected_calibration_error(prob, test_labels)
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

#: Search interval of log(T): T in [0.02, 50] covers any network worth calibrating.
LOG_T_BOUNDS = (np.log(0.02), np.log(50.0))


def _logits_labels(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if z.ndim != 2 or z.shape[1] < 2 or z.shape[0] != y.shape[0] or z.shape[0] == 0:
        raise ValueError(f"need logits (N, K ≥ 2) and labels (N,) with N ≥ 1, got "
                         f"{z.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must index the {z.shape[1]} classes, got {np.unique(y).tolist()}")
    if not np.isfinite(z).all():
        raise ValueError("logits hold NaN or Inf")
    return z, y


def temperature_nll(logits, labels, temperature: float) -> float:
    """Mean negative log-likelihood (nats) of ``labels`` under ``softmax(logits / T)``."""
    z, y = _logits_labels(logits, labels)
    return float(-log_softmax(z / temperature, axis=1)[np.arange(len(y)), y].mean())


def fit_temperature(logits, labels) -> float:
    """The temperature ``T`` minimising :func:`temperature_nll` on ``logits`` ``(N, K)``.

    One-dimensional bounded minimisation over ``log T`` (Brent's method). The NLL is
    convex in ``1 / T``, so the minimum is unique; when the data push ``T`` to a bound (e.g.
    every sample correct and separable: the NLL keeps falling as ``T → 0``) the bound is
    returned.
    """
    z, y = _logits_labels(logits, labels)
    result = minimize_scalar(lambda log_t: temperature_nll(z, y, float(np.exp(log_t))),
                             bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def calibrated_probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / T)`` ``(N, K)`` (or ``(K,)`` for one vector of logits)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64)
    return softmax(z / temperature, axis=-1)


def expected_calibration_error(prob, labels, n_bins: int = 15) -> float:
    """ECE: the bin-weighted mean of ``|accuracy - confidence|`` over ``n_bins`` equal-width
    bins of the top-class confidence (Guo et al. 2017). ``prob`` ``(N, K)``, ``labels`` ``(N,)``."""
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise ValueError(f"need prob (N, K) and labels (N,), got {p.shape} and {y.shape}")
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == y
    # Bin i holds confidences in (i / n, (i + 1) / n]; a confidence of exactly 0 joins bin 0.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        inside = bins == b
        ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def calibration_summary(logits, labels) -> dict:
    """Fit ``T`` on ``logits`` / ``labels`` and report what it changed: ``temperature``,
    ``n``, ``nll_before`` / ``nll_after`` (nats) and ``ece_before`` / ``ece_after`` on the
    same samples (in-sample: the fit's own data, so it shows the size of the correction)."""
    z, y = _logits_labels(logits, labels)
    t = fit_temperature(z, y)
    return {"temperature": t, "n": len(y),
            "nll_before": temperature_nll(z, y, 1.0), "nll_after": temperature_nll(z, y, t),
            "ece_before": expected_calibration_error(calibrated_probabilities(z), y),
            "ece_after": expected_calibration_error(calibrated_probabilities(z, t), y)}


__all__ = ["calibrated_probabilities", "calibration_summary", "expected_calibration_error",
           "fit_temperature", "temperature_nll"]
