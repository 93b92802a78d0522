"""Binary lesion-segmentation metrics with the ISLES'22 challenge definitions.

All metric functions take two binary masks of shape ``(X, Y, Z)`` — ``pred`` and
``truth`` — as numpy arrays or torch tensors (bool, or ints/floats holding only 0 and 1)
and return plain Python numbers. ``spacing_mm`` is the voxel size along array axes
0, 1, 2 in mm (for a nibabel image: ``img.header.get_zooms()[:3]``).

Definitions follow the official ISLES'22 evaluation code (``eval_metrics_isles.py`` in
ezequieldlrosa/isles22_docker_evaluation, which scored the leaderboard, and
``utils/eval_utils.py`` in ezequieldlrosa/isles22):

- Dice: ``2|P∩T| / (|P| + |T|)``; both masks empty → 1.0.
- Absolute volume difference: ``|V_P − V_T|`` in mL.
- Lesion count difference: ``|#components(P) − #components(T)|``, 26-connectivity.
- Lesion-wise F1: a truth component is a TP if any of its voxels is predicted, else an FN;
  a predicted component is an FP if none of its voxels is in the truth;
  ``F1 = tp / (tp + (fp + fn) / 2)``; both empty → 1.0.

Where cogimg deliberately differs from that code (none of these change a value on valid
input):

- Shape mismatch and non-binary values raise here; their code warns on a shape mismatch
  (volume difference) and casts with ``astype(bool)``, silently merging label values.
- Voxel volume here is ``prod(spacing_mm) / 1000``; theirs is ``|det(affine[:3, :3])| /
  1000`` of the prediction image. Both agree unless the affine is sheared.
- Their docker code labels with ``np.ones((3, 3, 3))`` and comments "18-connectivity";
  that structure is 26-connectivity, which is what we (and their cc3d version) use.

Lesion-wise F1 as defined counts a predicted blob that touches two truth lesions as two
TPs, and a truth lesion split into several predicted blobs as one TP with no FP: F1 does
not penalise merging or fragmentation — the lesion count difference does.

HD95 is not an ISLES'22 metric; it is MONAI's symmetric 95th-percentile Hausdorff
distance, ``max(p95(d(P→T)), p95(d(T→P)))`` over boundary voxels, in mm.
:func:`detection_by_volume` is not one either: it splits a prediction's errors into
false-positive and missed volume and counts the true lesions found per lesion-volume bin,
with ISLES'22's lesion-wise true positive.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from cogimg.data.boxes import label_components
from cogimg.io import atomic_path

# Column order of a per-subject row (after ``subject_id``); ``summarise`` aggregates these.
METRIC_KEYS: tuple[str, ...] = (
    "dice",
    "absolute_volume_difference_ml",
    "lesion_count_difference",
    "lesion_f1",
    "hausdorff95_mm",
    "volume_pred_ml",
    "volume_truth_ml",
    "n_lesions_pred",
    "n_lesions_truth",
)


# --------------------------------------------------------------------------- validation


def _as_binary_mask(mask: Any, name: str) -> np.ndarray:
    """Return ``mask`` as a boolean ``(X, Y, Z)`` array, or raise naming what is wrong."""
    if hasattr(mask, "detach"):  # torch tensor, without importing torch here
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ValueError(
            f"{name} must be a 3D (X, Y, Z) mask, got shape {tuple(array.shape)}; "
            "squeeze batch/channel axes first"
        )
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must be bool, integer or float, got dtype {array.dtype}")
    is_binary = (array == 0) | (array == 1)
    if not is_binary.all():
        offending = np.unique(array[~is_binary])
        shown = ", ".join(str(v) for v in offending[:5]) + (" …" if offending.size > 5 else "")
        raise ValueError(f"{name} must be binary (0/1), found other values: {shown}")
    return array == 1


def _binary_pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    pred_mask = _as_binary_mask(pred, "pred")
    truth_mask = _as_binary_mask(truth, "truth")
    if pred_mask.shape != truth_mask.shape:
        raise ValueError(
            f"pred and truth shapes differ: pred {pred_mask.shape} vs truth {truth_mask.shape}"
        )
    return pred_mask, truth_mask


def _spacing(spacing_mm: Any) -> np.ndarray:
    if hasattr(spacing_mm, "detach"):
        spacing_mm = spacing_mm.detach().cpu().numpy()
    try:
        spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"spacing_mm must be 3 positive numbers, got {spacing_mm!r}") from err
    if spacing.size != 3 or not np.all(np.isfinite(spacing)) or not np.all(spacing > 0):
        raise ValueError(f"spacing_mm must be 3 positive numbers (mm), got {spacing_mm!r}")
    return spacing


def voxel_volume_ml(spacing_mm: Sequence[float]) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm³) for a spacing ``(x, y, z)`` in mm."""
    return float(np.prod(_spacing(spacing_mm)) / 1000.0)


# --------------------------------------------------------------------------- metrics


def lesion_components(mask: Any) -> tuple[np.ndarray, int]:
    """Label 26-connected lesions of a binary ``(X, Y, Z)`` mask.

    Returns ``(labels, n)``: an int32 array of the mask's shape, 0 for background and
    1..n for the lesions, and the number of lesions ``n``.

    scipy is used rather than cc3d: cc3d labels faster, but scipy's time per mask is small
    next to HD95 and inference, so it does not earn a dependency
    (``benchmarks/transform_speed.py`` times both when cc3d is installed).
    """
    return label_components(_as_binary_mask(mask, "mask"), connectivity=26)


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0  # ISLES'22 convention: nothing to find and nothing found is perfect.
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def dice(pred: Any, truth: Any) -> float:
    """Dice of two binary ``(X, Y, Z)`` masks; 1.0 when both are empty, 0.0 when one is."""
    return _dice(*_binary_pair(pred, truth))


def absolute_volume_difference_ml(pred: Any, truth: Any, spacing_mm: Sequence[float]) -> float:
    """``|V_pred − V_truth|`` in mL for binary ``(X, Y, Z)`` masks with voxel size ``spacing_mm``."""
    pred_mask, truth_mask = _binary_pair(pred, truth)
    voxel_ml = voxel_volume_ml(spacing_mm)
    return abs(int(pred_mask.sum()) - int(truth_mask.sum())) * voxel_ml


def lesion_count_difference(pred: Any, truth: Any) -> int:
    """``|#lesions(pred) − #lesions(truth)|`` with 26-connected components."""
    pred_mask, truth_mask = _binary_pair(pred, truth)
    return abs(lesion_components(pred_mask)[1] - lesion_components(truth_mask)[1])


def _lesion_f1(
    pred: np.ndarray,
    truth: np.ndarray,
    pred_labels: np.ndarray,
    n_pred: int,
    truth_labels: np.ndarray,
    n_truth: int,
) -> float:
    # Which labels have at least one voxel in the other mask; equivalent to ISLES'22's
    # per-component loops but one pass over the overlap instead of one per lesion.
    truth_hit = np.bincount(truth_labels[pred], minlength=n_truth + 1)[1:] > 0
    pred_hit = np.bincount(pred_labels[truth], minlength=n_pred + 1)[1:] > 0
    tp = int(truth_hit.sum())
    fn = n_truth - tp
    fp = n_pred - int(pred_hit.sum())
    if tp + fp + fn == 0:  # only when both masks are empty
        return 1.0
    return tp / (tp + (fp + fn) / 2)


def lesion_f1(pred: Any, truth: Any) -> float:
    """ISLES'22 lesion-wise F1 of binary ``(X, Y, Z)`` masks (see module docstring).

    Both empty → 1.0; exactly one empty → 0.0 (all FP or all FN).
    """
    pred_mask, truth_mask = _binary_pair(pred, truth)
    pred_labels, n_pred = lesion_components(pred_mask)
    truth_labels, n_truth = lesion_components(truth_mask)
    return _lesion_f1(pred_mask, truth_mask, pred_labels, n_pred, truth_labels, n_truth)


def _hausdorff95_mm(pred: np.ndarray, truth: np.ndarray, spacing: np.ndarray) -> float:
    pred_empty, truth_empty = not pred.any(), not truth.any()
    if pred_empty and truth_empty:
        return 0.0
    if pred_empty or truth_empty:
        # No surface to measure to: the distance is undefined. nan (not inf) so that
        # summarise() can count these cases and average the rest with nanmean.
        return math.nan
    from monai.metrics import compute_hausdorff_distance  # heavy import, only when needed

    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated argument internally and warns on every call.
        warnings.filterwarnings(
            "ignore", message=".*always_return_as_numpy", category=FutureWarning
        )
        distance = compute_hausdorff_distance(
            pred[None, None].astype(np.float32),
            truth[None, None].astype(np.float32),
            include_background=True,  # one binary channel: the lesion is channel 0
            percentile=95,
            spacing=spacing.tolist(),
        )
    return float(distance.reshape(-1)[0])


def hausdorff95_mm(pred: Any, truth: Any, spacing_mm: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) via MONAI.

    Both empty → 0.0; exactly one empty → ``nan`` (undefined; ``summarise`` reports how
    many subjects had it). MONAI computes in float32, so values carry ~1e-6 relative error.
    """
    pred_mask, truth_mask = _binary_pair(pred, truth)
    return _hausdorff95_mm(pred_mask, truth_mask, _spacing(spacing_mm))


#: Lesion-volume bin edges (mL) of :func:`detection_by_volume`.
LESION_VOLUME_EDGES_ML: tuple[float, ...] = (0.1, 1.0)


def volume_bin_names(edges_ml: Sequence[float] = LESION_VOLUME_EDGES_ML) -> list[str]:
    """Names of the lesion-volume bins that ``edges_ml`` (increasing, mL) cut:
    ``under_0.1ml``, ``0.1_to_1ml``, ``1ml_or_more`` for the default edges."""
    edges = [f"{e:g}" for e in edges_ml]
    return ([f"under_{edges[0]}ml"] + [f"{a}_to_{b}ml" for a, b in pairwise(edges)]
            + [f"{edges[-1]}ml_or_more"])


def detection_keys(edges_ml: Sequence[float] = LESION_VOLUME_EDGES_ML) -> tuple[str, ...]:
    """The keys of :func:`detection_by_volume`'s row for ``edges_ml``, in its order."""
    return ("false_positive_ml", "missed_ml",
            *(f"{kind}_lesions_{size}" for size in volume_bin_names(edges_ml)
              for kind in ("true", "found")))


def detection_by_volume(pred: Any, truth: Any, spacing_mm: Sequence[float],
                        edges_ml: Sequence[float] = LESION_VOLUME_EDGES_ML) -> dict[str, float | int]:
    """Where a prediction's errors lie: ``false_positive_ml`` (predicted volume outside the
    truth) and ``missed_ml`` (true volume not predicted), both in mL, so that ``Dice = 2·TP /
    (2·TP + FP + FN)`` splits into its two error terms; and per bin of true-lesion volume
    (26-connected components of ``truth``; bins cut at ``edges_ml``, named by
    :func:`volume_bin_names`) ``true_lesions_<bin>`` and ``found_lesions_<bin>``: how many
    true lesions of that size there are and how many of them the prediction touches (ISLES'22's
    lesion-wise true positive: any voxel in common). Counts, not recalls, so that cases can be
    pooled."""
    pred_mask, truth_mask = _binary_pair(pred, truth)
    edges = np.asarray(edges_ml, dtype=np.float64)
    if edges.ndim != 1 or not len(edges) or np.any(np.diff(edges) <= 0) or edges[0] <= 0:
        raise ValueError(f"edges_ml must be positive and increasing, got {list(edges_ml)}")
    voxel_ml = voxel_volume_ml(spacing_mm)
    row: dict[str, float | int] = {
        "false_positive_ml": int((pred_mask & ~truth_mask).sum()) * voxel_ml,
        "missed_ml": int((truth_mask & ~pred_mask).sum()) * voxel_ml}
    labels, n = lesion_components(truth_mask)
    voxels = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    found = np.bincount(labels[pred_mask], minlength=n + 1)[1:] > 0
    # bin k: edges[k-1] <= volume < edges[k], in voxels with a tolerance for 0.1 / 0.001 etc.
    bins = np.searchsorted(edges / voxel_ml - 1e-6, voxels, side="right")
    for k, name in enumerate(volume_bin_names(edges_ml)):
        row[f"true_lesions_{name}"] = int((bins == k).sum())
        row[f"found_lesions_{name}"] = int((found & (bins == k)).sum())
    return row


# --------------------------------------------------------------------------- per subject


def segmentation_report(
    pred: Any, truth: Any, spacing_mm: Sequence[float], subject_id: str | None = None
) -> dict[str, Any]:
    """All metrics of one subject as a flat row: ``subject_id`` then ``METRIC_KEYS``.

    Components are labelled once and shared between the count difference and F1.
    """
    pred_mask, truth_mask = _binary_pair(pred, truth)
    spacing = _spacing(spacing_mm)
    voxel_ml = float(np.prod(spacing) / 1000.0)
    pred_labels, n_pred = lesion_components(pred_mask)
    truth_labels, n_truth = lesion_components(truth_mask)
    volume_pred = int(pred_mask.sum()) * voxel_ml
    volume_truth = int(truth_mask.sum()) * voxel_ml
    return {
        "subject_id": subject_id,
        "dice": _dice(pred_mask, truth_mask),
        "absolute_volume_difference_ml": abs(int(pred_mask.sum()) - int(truth_mask.sum()))
        * voxel_ml,
        "lesion_count_difference": abs(n_pred - n_truth),
        "lesion_f1": _lesion_f1(pred_mask, truth_mask, pred_labels, n_pred, truth_labels, n_truth),
        "hausdorff95_mm": _hausdorff95_mm(pred_mask, truth_mask, spacing),
        "volume_pred_ml": volume_pred,
        "volume_truth_ml": volume_truth,
        "n_lesions_pred": n_pred,
        "n_lesions_truth": n_truth,
    }


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Aggregate per-subject rows from ``segmentation_report``, ignoring undefined values.

    Returns ``{metric: {"mean", "std", "median", "n", "n_undefined"}}`` for each of
    ``METRIC_KEYS``: ``n`` subjects with a finite value, ``n_undefined`` with nan (e.g.
    HD95 when one mask is empty). ``std`` is the sample SD (ddof=1); it is nan when
    ``n < 2``, and mean/median are nan when ``n == 0``.
    """
    if not rows:
        raise ValueError("summarise() needs at least one row, got none")
    summary: dict[str, dict[str, float | int]] = {}
    for key in METRIC_KEYS:
        values = []
        for index, row in enumerate(rows):
            if key not in row:
                raise KeyError(f"row {index} (subject {row.get('subject_id')!r}) has no {key!r}")
            try:
                values.append(float(row[key]))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"row {index} (subject {row.get('subject_id')!r}): {key}={row[key]!r} "
                    "is not a number"
                ) from err
        array = np.asarray(values, dtype=np.float64)
        if np.isinf(array).any():
            raise ValueError(f"{key} has infinite values; undefined metrics must be nan")
        defined = array[~np.isnan(array)]
        n = int(defined.size)
        summary[key] = {
            "mean": float(defined.mean()) if n else math.nan,
            "std": float(defined.std(ddof=1)) if n >= 2 else math.nan,
            "median": float(np.median(defined)) if n else math.nan,
            "n": n,
            "n_undefined": int(array.size - n),
        }
    return summary


def write_subject_csv(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write per-subject rows to ``path`` atomically (temp file + ``os.replace``).

    Columns are the first row's keys, in order; every row must have the same keys.
    Undefined values are written as ``nan``. Refuses to replace an existing file unless
    ``overwrite=True``. Returns the path written.
    """
    path = Path(path)
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    columns = list(rows[0].keys())
    for index, row in enumerate(rows):
        if list(row.keys()) != columns:
            raise ValueError(
                f"row {index} (subject {row.get('subject_id')!r}) has columns "
                f"{list(row.keys())}, expected {columns} as in row 0"
            )
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
