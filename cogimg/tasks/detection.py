"""DetectionTask: lesion detection with any ``detection`` model of the registry.

Batches (from ``cogimg.data.datamodules.PatchDataModule``, e.g. preset ``microbleeds``):
    training: ``image`` (B, C, X, Y, Z) float32 patches, ``label`` (B, 1, X, Y, Z) integer
    mask. Lesion-centred sampling comes from the datamodule's ``label_probabilities``
    (``{0: 0.3, 1: 0.7}`` = 70 % of patches centred on a lesion voxel). Target boxes are the
    connected components of each patch's mask (one per lesion; a lesion cut by the patch
    border gets the box of its visible part), per class value 1..K-1.
    validation/test: one whole preprocessed volume (B = 1) with ``subject_id`` and
    ``spacing_mm``; the detector runs Gaussian sliding windows over it (see
    :mod:`cogimg.models.detection`) and the ground truth is the components of the whole mask
    (the synthetic cohort keeps microbleeds one voxel apart, so components = instances and
    equal its ``…_boxes.json``).

Metrics (:mod:`cogimg.metrics.detection`): FROC sensitivities at 1/8 … 8 false positives
per scan, CPM (logged ``val/cpm``, the ``microbleeds`` preset's primary metric) and AP at
IoU 0.1 and 0.25 (``val/ap_0.1``, ``val/ap_0.25``); with ``match="centre"`` a detection hits
a lesion when their box centres are at most ``match_threshold`` mm apart (tiny lesions),
and the AP thresholds are distances too. One row per subject and class in
``subject_rows`` carries counts at ``report_score_threshold`` and the FROC inputs.

:func:`segmentation_detections` turns a ``SegmentationTask`` into a detector (components of
its mask scored by their peak probability): the baseline a detector has to beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from cogimg import models
from cogimg.data.boxes import (
    boxes_from_instances,
    boxes_to_array,
    label_components,
    scored_boxes_from_probabilities,
)
from cogimg.metrics.detection import detection_summary, match_scan, scan_row
from cogimg.tasks.base import BaseTask
from cogimg.tasks.scoring import DetectionScorer

MATCH_CRITERIA = ("iou", "centre")


def targets_from_labels(label: torch.Tensor, num_classes: int = 2, min_voxels: int = 1,
                        connectivity: int = 26) -> list[dict[str, torch.Tensor]]:
    """Detection targets of a batch of masks ``(B, 1, X, Y, Z)`` (values 0..num_classes-1).

    Returns per sample ``{"boxes": (N, 6) float32 half-open voxel boxes, "labels": (N,)
    int64 class index 0..num_classes-2}`` (class value k → index k - 1), on ``label``'s device.
    """
    if label.ndim != 5 or label.shape[1] != 1:
        raise ValueError(f"label must be (B, 1, X, Y, Z), got shape {tuple(label.shape)}")
    masks = label[:, 0].cpu().numpy()
    targets = []
    for mask in masks:
        boxes, labels = [], []
        for value in range(1, num_classes):
            instances, count = label_components(mask == value, connectivity)
            if count:
                found = boxes_to_array(boxes_from_instances(instances, np.eye(4), min_voxels=min_voxels))
                boxes.append(found)
                labels.append(np.full(len(found), value - 1))
        boxes_array = np.concatenate(boxes) if boxes else np.zeros((0, 6))
        labels_array = np.concatenate(labels) if labels else np.zeros(0)
        targets.append({"boxes": torch.as_tensor(boxes_array, dtype=torch.float32, device=label.device),
                        "labels": torch.as_tensor(labels_array, dtype=torch.long, device=label.device)})
    return targets


class DetectionTask(BaseTask):
    """3D lesion detection (boxes + scores) with a registry detector.

    Args:
        model: registry name tagged ``detection`` (``retinanet_3d``, ``centernet_3d``).
        in_channels: input modalities (microbleeds preset: T2starw = 1).
        num_classes: classes including background, as the preset's ``classes`` (binary: 2).
        patch_size: training patch and sliding-window size, voxels (X, Y, Z).
        class_names: optional names of the foreground classes.
        min_voxels: lesions with fewer voxels are not targets (a deliberate size filter).
        match: ``iou`` or ``centre`` (box-centre distance in mm, for tiny lesions).
        match_threshold: FROC hit threshold (IoU, or mm for ``centre``).
        ap_thresholds: one AP per threshold (IoU, or mm for ``centre``).
        score_threshold: detections below it are dropped at inference (low, for the FROC).
        report_score_threshold: operating point of the per-subject counts.
        nms_iou: IoU above which the lower-scored of two boxes of a class is suppressed.
        max_detections: per volume.
        sw_overlap / sw_batch_size: sliding-window overlap fraction and windows per pass.
        **base: optimizer/scheduler arguments of :class:`BaseTask`.
    """

    kind = "detection"
    default_metric = "cpm"
    #: ``sensitivity`` and ``n_false_positives`` are per-scan means at ``report_score_threshold``.
    leaderboard_metrics = ("cpm", "sensitivity", "n_false_positives")
    metric_labels: ClassVar[dict[str, str]] = {"cpm": "CPM", "sensitivity": "sensitivity", "n_false_positives": "FP/scan"}
    subject_scorer = DetectionScorer

    def __init__(
        self,
        model: str = "centernet_3d",
        in_channels: int = 1,
        num_classes: int = 2,
        patch_size: tuple[int, int, int] = (32, 32, 32),
        model_kwargs: dict[str, Any] | None = None,
        class_names: tuple[str, ...] | None = None,
        min_voxels: int = 1,
        match: str = "iou",
        match_threshold: float = 0.1,
        ap_thresholds: tuple[float, ...] = (0.1, 0.25),
        score_threshold: float = 0.05,
        report_score_threshold: float = 0.5,
        nms_iou: float = 0.1,
        max_detections: int = 100,
        sw_overlap: float = 0.25,
        sw_batch_size: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup_steps: int = 20,
        addons: list | None = None,
    ) -> None:
        if addons:
            raise ValueError("DetectionTask takes no training add-ons yet (its detectors compute "
                             "their own losses, without the logits that add-ons read)")
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: count background too (binary = 2)")
        if class_names is not None and len(class_names) != num_classes - 1:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes - 1} foreground classes")
        if match not in MATCH_CRITERIA:
            raise ValueError(f"match={match!r}; choose one of {list(MATCH_CRITERIA)}")
        if model not in models.available("detection"):
            raise ValueError(f"model {model!r} is not a detection model; choose one of "
                             f"{models.available('detection')}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.patch_size = tuple(int(s) for s in patch_size)
        super().__init__(model, model_kwargs, lr, weight_decay, optimizer, scheduler, warmup_steps)
        # Per stage: ((subject ID, class name), (boxes, scores, target boxes, spacing)) per scan.
        self.scans: dict[str, list[tuple]] = {"val": [], "test": []}

    def configure_models(self) -> None:
        self.model = models.get(self.hparams.model, in_channels=self.in_channels,
                                num_classes=self.num_classes - 1, patch_size=self.patch_size,
                                **(self.hparams.model_kwargs or {}))

    # -- training ------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        image = batch["image"]
        targets = targets_from_labels(batch["label"], self.num_classes, self.hparams.min_voxels)
        losses = self.model.loss(image, targets)
        loss = sum(losses.values())
        for name, value in losses.items():
            self.log(f"train/loss_{name}", value, batch_size=image.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=image.shape[0])
        return loss

    # -- whole-volume inference ----------------------------------------------------------
    def detect(self, image: torch.Tensor) -> list[dict[str, np.ndarray]]:
        """Detections of whole volumes ``(B, C, X, Y, Z)``: per volume ``boxes`` ``(N, 6)``
        (continuous voxel coordinates, MONAI ``xyzxyz``), ``scores`` ``(N,)`` and ``labels``
        ``(N,)`` (class value 1..num_classes-1), by descending score."""
        hp = self.hparams
        results = self.model.detect(image, self.patch_size, overlap=hp.sw_overlap,
                                    sw_batch_size=hp.sw_batch_size, score_threshold=hp.score_threshold,
                                    nms_iou=hp.nms_iou, max_detections=hp.max_detections)
        out = []
        for r in results:
            order = torch.argsort(r["scores"], descending=True)
            out.append({"boxes": r["boxes"][order].detach().cpu().double().numpy(),
                        "scores": r["scores"][order].detach().cpu().double().numpy(),
                        "labels": r["labels"][order].detach().cpu().numpy() + 1})
        return out

    def infer(self, batch: dict) -> list[dict[str, np.ndarray]]:
        return self.detect(batch["image"])

    def predict_case(self, image: torch.Tensor, spacing_mm=None) -> dict[str, Any]:
        return {"detections": self.detect(image)[0]}

    def evaluate_batch(self, batch: dict, stage: str) -> list[dict[str, Any]]:
        detections = self.detect(batch["image"])
        truths = targets_from_labels(batch["label"], self.num_classes, self.hparams.min_voxels)
        spacing = _as_spacing(batch.get("spacing_mm"), len(detections))
        ids = batch.get("subject_id", [f"{stage}-{i}" for i in range(len(detections))])
        names = self.hparams.class_names or tuple(f"class{k}" for k in range(1, self.num_classes))
        rows = []
        for i, (found, truth) in enumerate(zip(detections, truths)):
            for k, name in enumerate(names, start=1):
                pick = found["labels"] == k
                scan = (found["boxes"][pick], found["scores"][pick],
                        truth["boxes"][truth["labels"] == k - 1].cpu().double().numpy(), spacing[i])
                self.scans[stage].append(((str(ids[i]), name), scan))
                match = match_scan(*scan[:3], self.hparams.match, self.hparams.match_threshold, scan[3])
                row = scan_row(str(ids[i]), match, self.hparams.report_score_threshold)
                if self.num_classes > 2:
                    row["class"] = name
                rows.append(row)
        return rows

    def summary(self, stage: str) -> dict[str, float]:
        """FROC/CPM and AP over the scans evaluated in ``stage`` (``val`` or ``test``)."""
        scans = [scan for _, scan in self.scans[stage]]
        hp = self.hparams
        return detection_summary([(b, s) for b, s, _, _ in scans], [t for _, _, t, _ in scans],
                                 criterion=hp.match, froc_threshold=hp.match_threshold,
                                 ap_thresholds=tuple(hp.ap_thresholds),
                                 spacing_mm=[sp for *_, sp in scans])

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.scans["val"] = []

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.scans["test"] = []

    def gather_state(self, stage: str) -> None:
        """Every rank's scans, one per (subject, class), in subject order (as the rows)."""
        by_key = dict(self.gathered(self.scans[stage]))
        self.scans[stage] = [(key, by_key[key]) for key in sorted(by_key)]

    def summarise(self, rows: list[dict[str, Any]], stage: str) -> dict[str, float]:
        return self.summary(stage)


def segmentation_detections(task, image: torch.Tensor, threshold: float = 0.5,
                            min_voxels: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Detection from segmentation: per volume of ``image`` ``(B, C, X, Y, Z)``, the boxes
    ``(N, 6)`` of the connected components of ``foreground probability ≥ threshold`` from a
    ``SegmentationTask`` (sliding windows), each scored by its peak foreground probability."""
    probs = task.predict_volume(image)
    foreground = (1.0 - probs[:, 0]).cpu().numpy()
    return [scored_boxes_from_probabilities(f, threshold, min_voxels) for f in foreground]


def _as_spacing(value, batch_size: int) -> Sequence[tuple[float, float, float]]:
    if value is None:
        raise KeyError("validation batches must carry 'spacing_mm' (voxel size in mm) for "
                       "centre distances in mm")
    arr = torch.as_tensor(value, dtype=torch.float64).reshape(batch_size, 3)
    return [tuple(float(v) for v in row) for row in arr]
