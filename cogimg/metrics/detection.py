"""Lesion detection metrics: FROC (sensitivity at 1/8 … 8 false positives per scan, CPM) and
average precision, with IoU or centre-distance matching.

Boxes are ``(N, 6)`` arrays ``[x0, y0, z0, x1, y1, z1]`` in MONAI's ``StandardMode``
(continuous voxel coordinates where voxel ``i`` spans ``[i, i + 1)``, so the half-open integer
boxes of :mod:`cogimg.data.boxes` are valid input), or in mm — any unit, as long as
predictions and ground truth share it. Scores are any real numbers, higher = more confident.

Two matching rules, both per scan:

- **Hits (FROC)**, as in LUNA16 and MONAI's ``compute_fp_tp_probs``: a target is detected at
  the highest score of the detections that hit it; a detection that hits no target is a
  false positive; extra detections of an already-found target are neither.
- **One-to-one (AP)**, as in COCO: detections in descending score order each claim the best
  still-unclaimed target they hit; duplicates are false positives.

"Hit" means IoU ≥ ``threshold`` (``criterion="iou"``) or box-centre distance ≤ ``threshold``
mm (``criterion="centre"``, for tiny objects such as microbleeds where a 1-voxel shift halves
the IoU); ``spacing_mm`` converts voxel boxes to mm for the distance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.data.box_utils import box_iou, boxes_center_distance

#: False-positive rates per scan at which FROC sensitivity is read (their mean = CPM).
FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CRITERIA = ("iou", "centre")


@dataclass(frozen=True)
class ScanMatch:
    """Detections of one scan matched to its targets.

    Attributes:
        scores: ``(N,)`` detection scores.
        hits: ``(N,)`` bool, the detection hits at least one target.
        is_tp: ``(N,)`` bool, the detection claims a target one-to-one (AP).
        target_scores: ``(M,)`` highest score of the detections hitting each target;
            ``-inf`` for a missed target (FROC).
    """

    scores: np.ndarray
    hits: np.ndarray
    is_tp: np.ndarray
    target_scores: np.ndarray

    @property
    def n_targets(self) -> int:
        return int(self.target_scores.size)

    @property
    def fp_scores(self) -> np.ndarray:
        """Scores of the detections that hit no target (FROC false positives)."""
        return self.scores[~self.hits]


def _boxes(value, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 6)
    if array.ndim != 2 or array.shape[1] != 6:
        raise ValueError(f"{name} must be (N, 6) [x0, y0, z0, x1, y1, z1], got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array[:, 3:] < array[:, :3]):
        raise ValueError(f"{name}: boxes need finite corners with x1 ≥ x0, y1 ≥ y0, z1 ≥ z0")
    return array


def hit_matrix(pred_boxes, gt_boxes, criterion: str = "iou", threshold: float = 0.1,
               spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Which detections hit which targets, and how well.

    Returns:
        ``hits`` ``(N, M)`` bool and ``quality`` ``(N, M)`` (IoU, or minus the distance in mm,
        so that larger is better for both).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r}; choose one of {list(CRITERIA)}")
    pred, gt = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
    if len(pred) == 0 or len(gt) == 0:
        empty = np.zeros((len(pred), len(gt)))
        return empty.astype(bool), empty
    if criterion == "iou":
        quality = np.asarray(box_iou(pred, gt), dtype=np.float64)
        return quality >= threshold, quality
    scale = np.tile(np.asarray(spacing_mm, dtype=np.float64).reshape(3), 2)
    distance = np.asarray(boxes_center_distance(pred * scale, gt * scale)[0], dtype=np.float64)
    return distance <= threshold, -distance


def match_scan(pred_boxes, pred_scores, gt_boxes, criterion: str = "iou", threshold: float = 0.1,
               spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> ScanMatch:
    """Match one scan's detections (boxes ``(N, 6)``, scores ``(N,)``) to its targets ``(M, 6)``.

    See the module docstring for the two rules. ``threshold`` is an IoU (``criterion="iou"``)
    or a centre distance in mm (``criterion="centre"``).
    """
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    hits, quality = hit_matrix(pred_boxes, gt_boxes, criterion, threshold, spacing_mm)
    if hits.shape[0] != scores.size:
        raise ValueError(f"{hits.shape[0]} predicted boxes but {scores.size} scores")
    target_scores = np.where(hits, scores[:, None], -np.inf).max(axis=0, initial=-np.inf)
    is_tp = np.zeros(scores.size, dtype=bool)
    claimed = np.zeros(hits.shape[1], dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.flatnonzero(hits[i] & ~claimed)
        if candidates.size:
            claimed[candidates[np.argmax(quality[i, candidates])]] = True
            is_tp[i] = True
    return ScanMatch(scores=scores, hits=hits.any(axis=1), is_tp=is_tp,
                     target_scores=np.asarray(target_scores, dtype=np.float64))


def froc_curve(matches: Sequence[ScanMatch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC operating points over scans, one per distinct score threshold (descending).

    Returns:
        ``(fp_per_scan, sensitivity, thresholds)``, starting at the strictest point
        ``(0, 0, +inf)``.
    """
    if not matches:
        raise ValueError("froc_curve needs at least one scan")
    n_targets = sum(m.n_targets for m in matches)
    fp = np.sort(np.concatenate([m.fp_scores for m in matches]))
    tp = np.sort(np.concatenate([m.target_scores for m in matches]))
    thresholds = np.unique(np.concatenate([fp, tp[np.isfinite(tp)]]))[::-1]
    # Count of scores ≥ t for each threshold t, by binary search on the sorted scores.
    n_fp = fp.size - np.searchsorted(fp, thresholds, side="left")
    n_tp = tp.size - np.searchsorted(tp, thresholds, side="left")
    sensitivity = n_tp / n_targets if n_targets else np.full(thresholds.size, np.nan)
    return (np.concatenate([[0.0], n_fp / len(matches)]),
            np.concatenate([[0.0 if n_targets else np.nan], sensitivity]),
            np.concatenate([[np.inf], thresholds]))


def froc(matches: Sequence[ScanMatch], fp_rates: Sequence[float] = FROC_FP_RATES) -> dict:
    """Sensitivity at each false-positive rate per scan and their mean (CPM).

    Between operating points sensitivity is interpolated linearly, and beyond the loosest
    point it stays at its last value (the LUNA16 and MONAI ``compute_froc_score`` convention).

    Returns:
        ``{"cpm": float, "sensitivity": {rate: float}}`` (nan when there is no target).
    """
    fps, sensitivity, _ = froc_curve(matches)
    at = np.interp(np.asarray(fp_rates, dtype=np.float64), fps, sensitivity)
    return {"cpm": float(np.mean(at)), "sensitivity": {float(r): float(s) for r, s in zip(fp_rates, at)}}


def average_precision(matches: Sequence[ScanMatch]) -> float:
    """Area under the precision-recall curve of one-to-one matches pooled over scans.

    All-point interpolation (PASCAL VOC 2010+): precision at recall r is the best precision
    at any recall ≥ r. Targets never detected cap recall below 1. nan without targets.
    """
    n_targets = sum(m.n_targets for m in matches)
    if not n_targets:
        return float("nan")
    scores = np.concatenate([m.scores for m in matches]) if matches else np.zeros(0)
    is_tp = np.concatenate([m.is_tp for m in matches]) if matches else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_tp[order])
    fp = np.cumsum(~is_tp[order])
    recall = np.concatenate([[0.0], tp / n_targets])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1)])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))


def detection_summary(predictions: Sequence[tuple], targets: Sequence, criterion: str = "iou",
                      froc_threshold: float = 0.1, ap_thresholds: Sequence[float] = (0.1, 0.25),
                      spacing_mm: Sequence[Sequence[float]] | None = None) -> dict[str, float]:
    """Every detection metric over a set of scans.

    Args:
        predictions: per scan ``(boxes (N, 6), scores (N,))``.
        targets: per scan target boxes ``(M, 6)``.
        criterion: ``iou`` or ``centre`` (thresholds are then distances in mm).
        froc_threshold: hit threshold of the FROC.
        ap_thresholds: one AP per threshold.
        spacing_mm: per scan voxel size (mm) for centre distances; None = boxes are in mm.

    Returns:
        ``{"cpm", "sens_0.125fp", … "sens_8fp", "ap_<t>" …}`` (names that are safe as
        logger keys and checkpoint-file templates).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} scans of targets")
    spacing = spacing_mm or [(1.0, 1.0, 1.0)] * len(targets)

    def matches(threshold: float) -> list[ScanMatch]:
        return [match_scan(b, s, t, criterion, threshold, sp)
                for (b, s), t, sp in zip(predictions, targets, spacing)]

    result = froc(matches(froc_threshold))
    summary = {"cpm": result["cpm"]}
    summary.update({f"sens_{rate:g}fp": value for rate, value in result["sensitivity"].items()})
    for threshold in ap_thresholds:
        summary[f"ap_{threshold:g}"] = average_precision(matches(threshold))
    return summary


def scan_row(subject_id: str, match: ScanMatch, score_threshold: float = 0.5) -> dict:
    """Per-subject row: counts at ``score_threshold`` plus the FROC inputs as JSON lists
    (``scores``, ``hits``, ``target_scores`` with ``null`` for missed targets), so that a
    FROC can be recomputed from a CSV of rows with :func:`match_from_row`."""
    kept = match.scores >= score_threshold
    found = match.target_scores >= score_threshold
    return {
        "subject_id": subject_id,
        "n_targets": match.n_targets,
        "n_detections": int(kept.sum()),
        "n_detected_targets": int(found.sum()),
        "n_false_positives": int((kept & ~match.hits).sum()),
        "sensitivity": float(found.mean()) if match.n_targets else float("nan"),
        "scores": json.dumps([round(float(s), 6) for s in match.scores]),
        "hits": json.dumps([bool(h) for h in match.hits]),
        "target_scores": json.dumps([round(float(s), 6) if np.isfinite(s) else None
                                     for s in match.target_scores]),
    }


def match_from_row(row: dict) -> ScanMatch:
    """The FROC part of a :func:`scan_row` (``is_tp`` is not stored: all False)."""
    scores = np.asarray(json.loads(row["scores"]), dtype=np.float64)
    targets = [(-np.inf if s is None else s) for s in json.loads(row["target_scores"])]
    return ScanMatch(scores=scores, hits=np.asarray(json.loads(row["hits"]), dtype=bool),
                     is_tp=np.zeros(scores.size, dtype=bool),
                     target_scores=np.asarray(targets, dtype=np.float64))
