"""Clinical-workflow inference: NIfTI or DICOM in, lesion mask NIfTI + JSON report out (detection
checkpoints: ``<subject_id>_pred_boxes.json`` with boxes in native voxels and mm, score, class;
tasks with case-level outputs, e.g. brain age: ``<subject_id>_pred.json`` with their values).

What is written follows the task's ``predict_case`` (its protocol): ``probabilities`` (a
mask), ``detections`` (boxes) or ``values`` (named numbers).

``predict_dataset`` applies a trained segmentation checkpoint to a single NIfTI, a BIDS
subject folder, a whole BIDS tree, a DICOM series folder or a folder of cases
(:mod:`cogimg.data.inputs`). Each scan goes through the same preprocessing as in
training (stored in the checkpoint by the datamodule), Gaussian sliding-window inference
(optionally averaged over the 8 mirrored copies of the scan: ``tta="flip"``), and back
onto the native grid of its reference modality (affine and header of the input),
so the mask overlays the scan the clinician opened. Per subject it writes
``<subject_id>_pred_msk.nii.gz`` and ``<subject_id>_pred.json`` (lesion count, volume in mL
and centroid in mm per lesion; ISLES'22 metrics when a ground-truth mask exists).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cogimg.data.cache import read_meta
from cogimg.diseases import get_preset
from cogimg.inference.checkpoint import preprocessing_config
from cogimg.inference.ensemble import checkpoint_list, load_ensemble, predict_ensemble_case
from cogimg.inference.inputs import subjects_from_input
from cogimg.inference.native import preprocessed_subjects, to_native
from cogimg.inference.reports import detection_report, mask_report
from cogimg.inference.settings import apply_inference_settings
from cogimg.io import atomic_save_nifti, atomic_write_text


def predict_dataset(ckpt: str | Path | Sequence[str | Path], input_path: str | Path,
                    output_dir: str | Path,
                    device: str = "cpu", overwrite: bool = False, tta: str | None = None,
                    overlap: float | None = None,
                    sw_batch_size: int | None = None,
                    min_lesion_ml: float | None = None) -> list[dict]:
    """Predict every subject of ``input_path``; returns the per-subject reports.

    ``ckpt``: one checkpoint, or several segmentation checkpoints that read the same inputs
    (an ensemble, :mod:`~cogimg.inference.ensemble`: their probabilities are averaged; the
    reports list them under ``checkpoints``).
    ``tta`` (``"none"`` or ``"flip"``: mirroring over all three axes), ``overlap``,
    ``sw_batch_size`` and ``min_lesion_ml`` override the checkpoint's own settings
    (:func:`~cogimg.inference.settings.apply_inference_settings`, which also applies a
    ``cogimg postprocess`` choice beside the checkpoint); ``None`` keeps them. Mask reports
    record the ``min_lesion_ml`` used.
    """
    ckpts = checkpoint_list(ckpt)
    tasks, data = load_ensemble(ckpts)
    for member, path in zip(tasks, ckpts):
        apply_inference_settings(member, path, tta, overlap, sw_batch_size, min_lesion_ml)
        member.to(device)
    task = tasks[0]
    source = ({"checkpoint": str(ckpts[0])} if len(ckpts) == 1
              else {"checkpoints": [str(c) for c in ckpts]})
    preset = get_preset(data["preset"])
    modalities = tuple(data["modalities"])
    out = Path(output_dir)
    subjects = subjects_from_input(input_path, modalities, preset.name)  # the input gate
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for subject, processed, image in preprocessed_subjects(subjects, preprocessing_config(data),
                                                           modalities, device):
        sid = subject["subject_id"]
        mask_path, json_path = out / f"{sid}_pred_msk.nii.gz", out / f"{sid}_pred.json"
        if not overwrite and (mask_path.exists() or json_path.exists()):
            raise FileExistsError(f"{mask_path} exists; pass --overwrite to replace it")
        with torch.inference_mode():
            prediction = predict_ensemble_case(tasks, image, processed[modalities[0]].spacing)
        if "detections" in prediction:  # a detector: boxes, no mask
            reports.append(_predict_boxes(task, prediction["detections"], subject, processed, out,
                                          overwrite, {**source, "preset": preset.name,
                                                      "modalities": list(modalities)}))
            continue
        if "values" in prediction:  # case-level outputs: numbers, no mask
            report = {"subject_id": sid, **source, "preset": preset.name,
                      "modalities": list(modalities), "kind": task.kind,
                      **{k: float(v) for k, v in prediction["values"].items()}}
            atomic_write_text(json_path, json.dumps(report, indent=2))
            reports.append(report)
            continue
        native = to_native(prediction["mask"].to(torch.uint8).cpu(), processed, is_label=True)
        report = {"subject_id": sid, **source, "preset": preset.name,
                  "modalities": list(modalities), "mask": mask_path.name,
                  "min_lesion_ml": float(task.hparams.get("min_lesion_ml", 0.0)),
                  **mask_report(native, subject, preset.label_keys)}
        atomic_save_nifti(native, mask_path)
        atomic_write_text(json_path, json.dumps(report, indent=2, default=float))
        reports.append(report)
    return reports


def _predict_boxes(task, found: dict, subject, processed, out: Path, overwrite: bool,
                   info: dict) -> dict:
    """Write ``<subject_id>_pred_boxes.json`` (see :func:`detection_report`)."""
    sid = subject["subject_id"]
    json_path = out / f"{sid}_pred_boxes.json"
    if not overwrite and json_path.exists():
        raise FileExistsError(f"{json_path} exists; pass --overwrite to replace it")
    meta = read_meta(processed["cache_entry"])
    native_affine = np.asarray(meta["images"][meta["reference"]]["native"]["affine"])
    report = {"subject_id": sid, **info, "boxes": json_path.name,
              **detection_report(task, found, meta, native_affine)}
    atomic_write_text(json_path, json.dumps(report, indent=2))
    return report


def report_line(report: dict) -> str:
    """One line summarising a :func:`predict_dataset` report (lesions, detections or values)."""
    sid = report["subject_id"]
    if "detections" in report:
        top = max((d["score"] for d in report["detections"]), default=float("nan"))
        return f"{sid}: {report['n_detections']} detection(s), top score {top:.2f}"
    if "n_lesions" not in report:  # case-level values
        values = {k: v for k, v in report.items() if isinstance(v, float)}
        return f"{sid}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items())
    line = f"{sid}: {report['n_lesions']} lesion(s), {report['total_volume_ml']:.2f} mL"
    if "metrics" in report:
        m = report["metrics"]
        line += (f" | Dice {m['dice']:.3f}, lesion F1 {m['lesion_f1']:.3f}, "
                 f"AVD {m['absolute_volume_difference_ml']:.2f} mL, ALD {m['lesion_count_difference']}")
    return line
