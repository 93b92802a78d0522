"""cogimg's side of the comparison's inference: a checkpoint's masks on the native grid, with
or without mirroring test-time augmentation.

The same path as ``cogimg predict`` (:func:`cogimg.inference.predict.predict_dataset`: the
training preprocessing stored in the checkpoint, Gaussian sliding windows, back onto the
native grid of the reference modality), with the task's ``tta_flip_axes`` set to all three
axes or none, so it matches ``nnUNetv2_predict`` with or without ``--disable_tta``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cogimg.diseases import get_preset
from cogimg.inference.checkpoint import load_task, preprocessing_config
from cogimg.inference.inputs import subjects_from_input
from cogimg.inference.native import preprocessed_subjects, to_native
from cogimg.io import atomic_save_nifti


def predict_masks(ckpt: Path, inputs: list[Path], out_dir: Path, mirror: bool) -> list[str]:
    """Write ``<out_dir>/<subject_id>.nii.gz`` (uint8 0/1 on the native grid) for every subject
    of each path in ``inputs`` (BIDS subject folders or case folders); returns the IDs."""
    task, data = load_task(ckpt)
    task.hparams.tta_flip_axes = (0, 1, 2) if mirror else ()
    task.eval()
    preset = get_preset(data["preset"])
    modalities = tuple(data["modalities"])
    out_dir.mkdir(parents=True, exist_ok=True)
    subjects = [s for path in inputs for s in subjects_from_input(path, modalities, preset.name)]
    done = []
    with torch.no_grad():
        for subject, processed, image in preprocessed_subjects(subjects,
                                                               preprocessing_config(data),
                                                               modalities):
            probs = task.predict_case(image)["probabilities"]
            mask = to_native(probs.argmax(0).to(torch.uint8).cpu(), processed, is_label=True)
            atomic_save_nifti(mask, out_dir / f"{subject['subject_id']}.nii.gz")
            done.append(subject["subject_id"])
    return done
