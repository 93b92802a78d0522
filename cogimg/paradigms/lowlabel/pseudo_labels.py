"""Pseudo-label files of a self-training round: written beside, never over, ground truth.

:func:`write_pseudo_labels` predicts the datamodule's **unlabelled** subjects with the
current model and writes, under a folder that must lie outside the dataset tree:

- segmentation: ``<subject_id>_pseudo_dseg.nii.gz`` on the subject's native grid — the
  predicted class where the model's probability ≥ ``threshold``, :data:`IGNORE` (255)
  elsewhere;
- classification: one row per subject in ``pseudo_labels.csv``;
- always ``pseudo_labels.csv`` (``subject_id``, ``accepted_fraction`` or
  ``pseudo_label``/``confidence``/``accepted``).

Labelled subjects are never predicted or written: they keep their ground truth, in the
dataset and in training (:class:`~cogimg.paradigms.lowlabel.semi_supervised.SemiSupervised`
only ever adds a loss on unlabelled batches).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import torch

from cogimg.data.cache import load_subject
from cogimg.inference import to_native
from cogimg.io import atomic_save_nifti, atomic_write_text

IGNORE = 255


def check_outside_dataset(out_dir: str | Path, data_root: str | Path) -> Path:
    """``out_dir`` resolved; ``ValueError`` when it lies inside ``data_root`` (where a file
    could replace, or later be read as, ground truth)."""
    out, root = Path(out_dir).resolve(), Path(data_root).resolve()
    if out == root or root in out.parents:
        raise ValueError(f"{out_dir} is inside the dataset {data_root}; write pseudo-labels and "
                         "pre-labels outside it so they can never replace or pass for ground truth")
    return out


def write_pseudo_labels(task, datamodule, out_dir: str | Path, threshold: float) -> pd.DataFrame:
    """Predict every unlabelled subject of ``datamodule`` and write its pseudo-label (see module
    doc) under ``out_dir``. Returns the table written as ``pseudo_labels.csv``."""
    out = check_outside_dataset(out_dir, datamodule.data_root)
    labelled = {str(s["subject_id"]) for s in datamodule.subjects["train"]}
    subjects = datamodule.subjects.get("unlabelled", [])
    if overlap := sorted(labelled & {str(s["subject_id"]) for s in subjects}):
        raise RuntimeError(f"subjects {overlap} are both labelled and unlabelled")
    was_training = task.training
    task.eval()
    try:
        rows = [_segmentation_row(task, s, datamodule.modalities, out, threshold)
                if task.kind == "segmentation" else
                _classification_row(task, s, datamodule, threshold) for s in subjects]
    finally:
        task.train(was_training)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "pseudo_labels.csv", table.to_csv(index=False, lineterminator="\n"))
    return table


def _segmentation_row(task, subject, modalities, out: Path, threshold: float) -> dict:
    loaded = load_subject(copy.deepcopy(subject))
    image = torch.cat([loaded[m].data.float() for m in modalities])[None].to(task.device)
    confidence, label = task.predict_volume(image)[0].max(0)
    accepted = confidence >= threshold
    pseudo = torch.where(accepted, label, torch.full_like(label, IGNORE)).to(torch.uint8).cpu()
    sid = str(subject["subject_id"])
    atomic_save_nifti(to_native(pseudo, subject, is_label=True), out / f"{sid}_pseudo_dseg.nii.gz")
    return {"subject_id": sid, "accepted_fraction": float(accepted.float().mean()),
            "foreground_voxels": int(((label > 0) & accepted).sum())}


def _classification_row(task, subject, datamodule, threshold: float) -> dict:
    from cogimg.data.sampling import SubjectCollate

    loaded = load_subject(copy.deepcopy(datamodule._select([subject], labels=False)[0]))
    batch = SubjectCollate(datamodule.modalities, tabular_key="tabular")([loaded])
    batch = {k: v.to(task.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.no_grad():
        prob = task.unlabelled_logits(batch).float().softmax(1)[0]
    confidence, index = prob.max(0)
    return {"subject_id": str(subject["subject_id"]), "pseudo_label": task.classes[int(index)],
            "confidence": float(confidence), "accepted": bool(confidence >= threshold)}
