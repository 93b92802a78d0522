"""The checkpoints of a clinical run and what each one answers for one case.

A run holds up to one segmentation, one detection and several classification checkpoints
(:func:`load_models`). Each reads its own modalities with its own preprocessing (kept in a
per-model :class:`~cogimg.data.cache.VolumeCache` for the run), and each result comes with
the out-of-distribution check against that model's training inputs
(:func:`~cogimg.data.ood.ood_report`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cogimg.data.cache import VolumeCache, invert_to_native, read_meta
from cogimg.data.inputs import Case
from cogimg.data.ood import ood_report, scan_features
from cogimg.diseases import get_preset
from cogimg.inference import (
    Checkpoint,
    CheckpointError,
    apply_inference_settings,
    detection_report,
    lesion_report,
    preprocessing_config,
    read_checkpoint,
)
from cogimg.metrics.calibration import calibrated_probabilities

ROLES = ("segmentation", "detection", "classification")


@dataclass
class Model:
    """A loaded checkpoint in its role, with the cache its preprocessing writes to."""

    role: str
    checkpoint: Checkpoint
    cache: VolumeCache | None = field(default=None, repr=False)

    @property
    def task(self):
        return self.checkpoint.task

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.checkpoint.data["modalities"])

    @property
    def preset(self) -> str:
        return self.checkpoint.data["preset"]

    def describe(self) -> dict:
        data = {"role": self.role, "checkpoint": str(self.checkpoint.path), "preset": self.preset,
                "modalities": list(self.modalities), "task": type(self.task).__name__,
                "ood_reference": self.checkpoint.input_summary is not None}
        if self.role == "classification":
            data["classes"] = list(self.task.classes)
            data["temperature"] = self.temperature
        return data

    @property
    def temperature(self) -> float | None:
        calibration = self.checkpoint.calibration
        return None if not calibration else float(calibration["temperature"])


def load_models(seg: str | Path | None, det: str | Path | None, cls: list[str | Path] | None,
                cache_root: str | Path, device: str = "cpu") -> list[Model]:
    """Load every checkpoint and check it fits its role (``CheckpointError`` otherwise).

    Warns once per checkpoint that lacks a training-input summary (its results carry
    ``ood: null``) or, for classifiers, a fitted temperature (uncalibrated probabilities).
    """
    wanted = [("segmentation", seg), ("detection", det)] + [("classification", c) for c in cls or ()]
    models = []
    for role, path in wanted:
        if path is None:
            continue
        loaded = read_checkpoint(path)
        actual = loaded.task.kind or type(loaded.task).__name__
        if actual != role:
            raise CheckpointError(f"{path}: a {actual} checkpoint, given as the {role} checkpoint")
        if role == "segmentation":
            apply_inference_settings(loaded.task, path)  # a `cogimg postprocess` choice, as predict
        if role == "classification" and getattr(loaded.task.model, "tabular", None) is not None:
            raise CheckpointError(f"{path}: this classifier also reads clinical (tabular) features, "
                                  "which the clinical command does not take; use an image-only model")
        if loaded.input_summary is None:
            warnings.warn(f"{path}: no training-input summary (checkpoint older than the OOD check); "
                          "its results report ood: null", stacklevel=2)
        if role == "classification" and not loaded.calibration:
            warnings.warn(f"{path}: no fitted temperature (no validation at save time, or an older "
                          "checkpoint); probabilities are reported uncalibrated", stacklevel=2)
        loaded.task.to(device)
        cache = VolumeCache(Path(cache_root) / f"model{len(models)}", preprocessing_config(loaded.data))
        models.append(Model(role, loaded, cache))
    if not models:
        raise CheckpointError("give at least one of --seg-ckpt, --det-ckpt, --cls-ckpt")
    return models


@dataclass
class Prepared:
    """One case as one model sees it."""

    subject: object  # the native tio.Subject
    processed: object  # the preprocessed (cached) tio.Subject
    meta: dict
    image: torch.Tensor  # (1, C, X, Y, Z) on the model's device


def prepare(model: Model, case: Case, device: str) -> Prepared:
    """Preprocess ``case`` for ``model`` as in training."""
    subject = case.subject_for(model.modalities)
    processed = model.cache.get(subject)
    image = torch.cat([processed[m].data.float() for m in model.modalities])[None].to(device)
    return Prepared(subject, processed, read_meta(processed["cache_entry"]), image)


def input_check(model: Model, prepared: Prepared, threshold: float | None) -> dict | None:
    """The OOD report of ``prepared`` against ``model``'s training inputs (``None``: no summary)."""
    features = scan_features(prepared.processed["cache_entry"], model.modalities)
    return ood_report(features, model.checkpoint.input_summary, threshold)


def segment(model: Model, prepared: Prepared):
    """``(native mask NIfTI, lesion report)``: argmax of the sliding-window probabilities on
    the native grid of the reference modality; count, total and per-lesion volume (mL)."""
    spacing = prepared.processed[model.modalities[0]].spacing
    found = model.task.predict_case(prepared.image, spacing_mm=spacing)["mask"]
    mask = invert_to_native(found.to(torch.uint8).cpu(), prepared.meta, is_label=True)
    return mask, lesion_report(mask)


def detect(model: Model, prepared: Prepared) -> dict:
    """Boxes on the native grid (:func:`cogimg.inference.detection_report`)."""
    native_affine = np.asarray(prepared.meta["images"][prepared.meta["reference"]]["native"]["affine"])
    found = model.task.predict_case(prepared.image)["detections"]
    return detection_report(model.task, found, prepared.meta, native_affine)


def classify(model: Model, prepared: Prepared) -> dict:
    """Class probabilities ``softmax(logits / T)`` with the checkpoint's temperature ``T``
    (``T = 1`` and ``calibrated: false`` when it has none), the uncalibrated ones beside."""
    with torch.no_grad():
        logits = model.task(prepared.image).float().cpu().numpy()[0]
    temperature = model.temperature
    prob = calibrated_probabilities(logits, temperature or 1.0)
    raw = calibrated_probabilities(logits)
    classes = list(model.task.classes)
    best = int(np.argmax(prob))
    return {"disease": get_preset(model.preset).name, "classes": classes,
            "predicted": classes[best], "confidence": float(prob[best]),
            "probabilities": {c: float(p) for c, p in zip(classes, prob)},
            "uncalibrated_probabilities": {c: float(p) for c, p in zip(classes, raw)},
            "calibrated": temperature is not None, "temperature": temperature,
            "logits": [float(v) for v in logits]}


__all__ = ["ROLES", "Model", "Prepared", "classify", "detect", "input_check", "load_models",
           "prepare", "segment"]
