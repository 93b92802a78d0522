"""Clinical-workflow inference: NIfTI or DICOM in, lesion mask NIfTI + JSON report out (detection
checkpoints: ``<subject_id>_pred_boxes.json`` with boxes in native voxels and mm, score, class).

``predict_dataset`` applies a trained segmentation checkpoint to a single NIfTI, a BIDS
subject folder, a whole BIDS tree, a DICOM series folder or a folder of cases
(:mod:`cogimg.data.inputs`). Each scan goes through the same preprocessing as in
training (stored in the checkpoint by the datamodule), Gaussian sliding-window inference,
and back onto the native grid of its reference modality (affine and header of the input),
so the mask overlays the scan the clinician opened. Per subject it writes
``<subject_id>_pred_msk.nii.gz`` and ``<subject_id>_pred.json`` (lesion count, volume in mL
and centroid in mm per lesion; ISLES'22 metrics when a ground-truth mask exists).
"""

from __future__ import annotations

import importlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from cogimg.data.bids import load_dataset
from cogimg.data.boxes import boxes_from_mask, mm_box_to_voxel, voxel_box_to_mm
from cogimg.data.cache import VolumeCache, invert_to_native, read_meta
from cogimg.data.inputs import InputError, find_cases
from cogimg.data.transforms import PreprocessingConfig
from cogimg.diseases import get_preset
from cogimg.io import atomic_save_nifti, atomic_write_text
from cogimg.metrics.segmentation import segmentation_report
from cogimg.tasks.base import BaseTask


class CheckpointError(ValueError):
    """A checkpoint that ``cogimg predict`` cannot use (names the file and what is missing)."""


@dataclass
class Checkpoint:
    """What a cogimg checkpoint holds for inference (see :func:`read_checkpoint`)."""

    path: Path
    task: BaseTask
    data: dict
    calibration: dict | None = None
    input_summary: dict | None = None


def read_checkpoint(ckpt: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Rebuild a task, its data settings, its calibration and training-input summary.

    The file is read with ``torch.load(weights_only=True)`` (no pickled code runs), the task
    class must live in ``cogimg.tasks`` and the data settings are those the datamodule stored
    (see ``_CachedDataModule.state_dict``). ``calibration``: the temperature fitted on the
    validation logits (classification, :mod:`cogimg.metrics.calibration`); ``input_summary``:
    the training inputs' statistics for :func:`cogimg.data.ood.ood_report`. Both are ``None``
    in checkpoints written before they existed.
    """
    ckpt = Path(ckpt)
    try:
        state = torch.load(ckpt, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{ckpt}: cannot read checkpoint ({exc})") from exc
    info = state.get("cogimg")
    data = next((v for k, v in state.items()
                 if isinstance(v, dict) and {"preset", "preprocessing"} <= set(v)), None)
    if not info or data is None or "hyper_parameters" not in state:
        raise CheckpointError(f"{ckpt}: not a cogimg checkpoint (needs the task class, "
                              "hyper-parameters and the datamodule's preprocessing)")
    module_name, _, class_name = info["task"].rpartition(".")
    if not module_name.startswith("cogimg.tasks."):
        raise CheckpointError(f"{ckpt}: task class {info['task']!r} is outside cogimg.tasks")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, BaseTask)):
        raise CheckpointError(f"{ckpt}: {info['task']!r} is not a cogimg task")
    # LightningCLI adds bookkeeping keys such as "_class_path" to the hyper-parameters.
    task = cls(**{k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")})
    task.load_state_dict(state["state_dict"])
    settings = {k: v for k, v in data.items() if k != "input_summary"}
    return Checkpoint(ckpt, task.eval(), settings, info.get("calibration"), data.get("input_summary"))


def load_task(ckpt: str | Path, map_location: str = "cpu") -> tuple[BaseTask, dict]:
    """The task in eval mode and ``{"preset", "modalities", "preprocessing"}`` of a checkpoint
    (:func:`read_checkpoint`)."""
    loaded = read_checkpoint(ckpt, map_location)
    return loaded.task, loaded.data


def preprocessing_config(data: dict) -> PreprocessingConfig:
    names = {f.name for f in fields(PreprocessingConfig)}
    return PreprocessingConfig(**{k: v for k, v in data["preprocessing"].items() if k in names})


def subjects_from_input(path: str | Path, modalities: tuple[str, ...],
                        preset_name: str) -> list[tio.Subject]:
    """Subjects to predict: a BIDS root or subject folder (``…/sub-X``), or what
    :func:`cogimg.data.inputs.find_cases` reads besides: a NIfTI file or DICOM series folder
    (single-modality models), a case folder of modality-named NIfTI files / DICOM series, or
    a folder of those. Every subject must have all ``modalities``; any unusable input raises."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist")
    if path.is_dir() and ((path / "participants.tsv").is_file() or path.name.startswith("sub-")):
        participant = None
        if path.name.startswith("sub-"):
            participant, path = path.name, path.parent
            if path.name == "rawdata":
                path = path.parent
        dataset = load_dataset(path, required_modalities=modalities)
        subjects = [s for s in dataset.subjects
                    if participant is None or s["participant_id"] == participant]
        if not subjects:
            raise ValueError(f"no subject {participant or ''} with {list(modalities)} under {path}")
        return subjects
    cases, errors = find_cases(path, modalities)
    if errors:
        raise InputError("; ".join(f"{where}: {why}" if where not in why else why
                                   for where, why in errors))
    return [case.subject_for(modalities) for case in cases]


def lesion_report(mask: nib.Nifti1Image) -> dict:
    """Lesion count, total volume (mL) and per-lesion volume/centroid (mm) of a binary mask."""
    boxes = boxes_from_mask(np.asarray(mask.dataobj) > 0, mask.affine)
    return {
        "n_lesions": len(boxes),
        "total_volume_ml": float(sum(b["volume_ml"] for b in boxes)),
        "lesions": [{"id": b["id"], "volume_ml": b["volume_ml"], "centroid_mm": b["centroid_mm"],
                     "box_mm": b["mm"]} for b in boxes],
    }


def preprocessed_subjects(subjects: list[tio.Subject], config: PreprocessingConfig,
                          modalities: tuple[str, ...], device: str = "cpu"
                          ) -> Iterator[tuple[tio.Subject, tio.Subject, torch.Tensor]]:
    """Each subject with its preprocessed version (in a temporary cache, as in training) and
    the model input ``(1, C, X, Y, Z)`` float32 on ``device``, channels in ``modalities`` order."""
    with tempfile.TemporaryDirectory(prefix="cogimg-predict-") as tmp:
        cache = VolumeCache(tmp, config)
        for subject in subjects:
            processed = cache.get(subject)
            image = torch.cat([processed[m].data.float() for m in modalities])[None].to(device)
            yield subject, processed, image


def to_native(volume: torch.Tensor | np.ndarray, processed: tio.Subject,
              is_label: bool) -> nib.Nifti1Image:
    """A preprocessed-grid volume ``(X, Y, Z)`` back on the subject's native reference grid."""
    return invert_to_native(volume, read_meta(processed["cache_entry"]), is_label=is_label)


def mask_report(native: nib.Nifti1Image, subject: tio.Subject, label_keys: tuple[str, ...]) -> dict:
    """:func:`lesion_report` of a native mask, plus ISLES'22 ``metrics`` when ``subject`` has a
    ground-truth mask under one of ``label_keys``."""
    report = lesion_report(native)
    truth_key = next((k for k in label_keys if k in subject), None)
    if truth_key is not None:
        truth = np.asarray(nib.load(subject[truth_key].path).dataobj) > 0
        report["metrics"] = segmentation_report(
            np.asarray(native.dataobj) > 0, truth, native.header.get_zooms()[:3],
            subject_id=subject["subject_id"])
    return report


def predict_dataset(ckpt: str | Path, input_path: str | Path, output_dir: str | Path,
                    device: str = "cpu", overwrite: bool = False) -> list[dict]:
    """Predict every subject of ``input_path``; returns the per-subject reports."""
    task, data = load_task(ckpt)
    task.to(device)
    preset = get_preset(data["preset"])
    modalities = tuple(data["modalities"])
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    subjects = subjects_from_input(input_path, modalities, preset.name)
    reports = []
    for subject, processed, image in preprocessed_subjects(subjects, preprocessing_config(data),
                                                           modalities, device):
        sid = subject["subject_id"]
        mask_path, json_path = out / f"{sid}_pred_msk.nii.gz", out / f"{sid}_pred.json"
        if not overwrite and (mask_path.exists() or json_path.exists()):
            raise FileExistsError(f"{mask_path} exists; pass --overwrite to replace it")
        if hasattr(task, "detect"):  # a DetectionTask: boxes, no mask
            reports.append(_predict_boxes(task, image, subject, processed, out, overwrite,
                                          {"checkpoint": str(ckpt), "preset": preset.name,
                                           "modalities": list(modalities)}))
            continue
        probs = task.predict_volume(image)[0]
        native = to_native(probs.argmax(0).to(torch.uint8).cpu(), processed, is_label=True)
        report = {"subject_id": sid, "checkpoint": str(ckpt), "preset": preset.name,
                  "modalities": list(modalities), "mask": mask_path.name,
                  **mask_report(native, subject, preset.label_keys)}
        atomic_save_nifti(native, mask_path)
        atomic_write_text(json_path, json.dumps(report, indent=2, default=float))
        reports.append(report)
    return reports


def detection_report(task, image: torch.Tensor, meta: dict, native_affine: np.ndarray) -> dict:
    """Detections of one preprocessed volume ``image`` (1, C, X, Y, Z) as JSON-ready boxes:
    ``voxel`` on the native grid of ``native_affine`` (continuous, voxel ``i`` spans
    ``[i, i + 1)``), ``mm`` (world), ``score`` and ``class`` (value and name), by score."""
    found = task.detect(image)[0]
    grid = np.asarray(meta["preprocessed"]["affine"], dtype=np.float64)
    names = task.hparams.class_names or tuple(f"class{k}" for k in range(1, task.num_classes))
    detections = []
    for box, score, label in zip(found["boxes"], found["scores"], found["labels"]):
        mm = voxel_box_to_mm(box, grid)
        detections.append({"class": int(label), "label": names[int(label) - 1], "score": float(score),
                           "voxel": [round(v, 3) for v in mm_box_to_voxel(mm, native_affine)],
                           "mm": [round(v, 3) for v in mm]})
    return {"n_detections": len(detections), "detections": detections}


def _predict_boxes(task, image, subject, processed, out: Path, overwrite: bool, info: dict) -> dict:
    """Write ``<subject_id>_pred_boxes.json`` (see :func:`detection_report`)."""
    sid = subject["subject_id"]
    json_path = out / f"{sid}_pred_boxes.json"
    if not overwrite and json_path.exists():
        raise FileExistsError(f"{json_path} exists; pass --overwrite to replace it")
    meta = read_meta(processed["cache_entry"])
    native_affine = np.asarray(meta["images"][meta["reference"]]["native"]["affine"])
    report = {"subject_id": sid, **info, "boxes": json_path.name,
              **detection_report(task, image, meta, native_affine)}
    atomic_write_text(json_path, json.dumps(report, indent=2))
    return report
