"""JSON-ready reports of a prediction: lesions of a mask, detections of a detector.

Volumes are in mL, positions in mm (world coordinates of the scan's affine) and, for boxes,
also in native voxels (continuous: voxel ``i`` spans ``[i, i + 1)``).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torchio as tio

from cogimg.data.boxes import boxes_from_mask, mm_box_to_voxel, voxel_box_to_mm
from cogimg.metrics.segmentation import detection_by_volume, segmentation_report


def lesion_report(mask: nib.Nifti1Image) -> dict:
    """Lesion count, total volume (mL) and per-lesion volume/centroid (mm) of a binary mask."""
    boxes = boxes_from_mask(np.asarray(mask.dataobj) > 0, mask.affine)
    return {
        "n_lesions": len(boxes),
        "total_volume_ml": float(sum(b["volume_ml"] for b in boxes)),
        "lesions": [{"id": b["id"], "volume_ml": b["volume_ml"], "centroid_mm": b["centroid_mm"],
                     "box_mm": b["mm"]} for b in boxes],
    }


def mask_report(native: nib.Nifti1Image, subject: tio.Subject, label_keys: tuple[str, ...]) -> dict:
    """:func:`lesion_report` of a native mask, plus ISLES'22 ``metrics`` and the errors'
    ``detection_by_volume`` (:func:`~cogimg.metrics.segmentation.detection_by_volume`) when
    ``subject`` has a ground-truth mask under one of ``label_keys``."""
    report = lesion_report(native)
    truth_key = next((k for k in label_keys if k in subject), None)
    if truth_key is not None:
        truth = np.asarray(nib.load(subject[truth_key].path).dataobj) > 0
        pred, spacing = np.asarray(native.dataobj) > 0, native.header.get_zooms()[:3]
        report["metrics"] = segmentation_report(pred, truth, spacing,
                                                subject_id=subject["subject_id"])
        report["detection_by_volume"] = detection_by_volume(pred, truth, spacing)
    return report


def detection_report(task, found: dict, meta: dict, native_affine: np.ndarray) -> dict:
    """Detections ``found`` (``task.predict_case(image)["detections"]`` of one preprocessed
    volume: voxel ``boxes`` (N, 6), ``scores``, ``labels``) as JSON-ready boxes: ``voxel`` on the
    native grid of ``native_affine`` (continuous, voxel ``i`` spans ``[i, i + 1)``), ``mm``
    (world), ``score`` and ``class`` (value and name), by score."""
    grid = np.asarray(meta["preprocessed"]["affine"], dtype=np.float64)
    names = task.hparams.class_names or tuple(f"class{k}" for k in range(1, task.num_classes))
    detections = []
    for box, score, label in zip(found["boxes"], found["scores"], found["labels"]):
        mm = voxel_box_to_mm(box, grid)
        detections.append({"class": int(label), "label": names[int(label) - 1], "score": float(score),
                           "voxel": [round(v, 3) for v in mm_box_to_voxel(mm, native_affine)],
                           "mm": [round(v, 3) for v in mm]})
    return {"n_detections": len(detections), "detections": detections}
