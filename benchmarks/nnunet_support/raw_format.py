"""Write a cogimg BIDS cohort in nnU-Net v2's raw format, with cogimg's own split.

nnU-Net reads ``nnUNet_raw/Dataset<ID>_<name>/``::

    dataset.json                      channel_names, labels, numTraining, file_ending
    imagesTr/<case>_0000.nii.gz       channel 0 (first modality), _0001 channel 1, ...
    labelsTr/<case>.nii.gz            integer labels 0 (background), 1 (lesion)
    imagesTs/<case>_0000.nii.gz ...   held-out cases (never seen by training)

and ``nnUNet_preprocessed/Dataset<ID>_<name>/splits_final.json``: a list of folds, each
``{"train": [cases], "val": [cases]}``.

Images are copied byte for byte from the BIDS files (the raw scans nnU-Net would get in
practice; nnU-Net does its own resampling and normalisation); labels are binarised
(``value > 0`` → 1, uint8) on the label file's own grid (affine and header kept). Case
identifiers are cogimg's ``subject_id`` (``sub-0001`` or ``sub-X_ses-Y``), so nnU-Net's split
and predictions map back to cogimg's subjects without a table.

Runs in cogimg's environment (nibabel + cogimg's BIDS loader); nnU-Net is not imported.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from cogimg.io import atomic_save_nifti, atomic_write_text

FILE_ENDING = ".nii.gz"
#: nnU-Net picks its normalisation from the channel name ("CT" → CT scheme, else z-score).
CHANNEL_NAMES = {"dwi": "DWI", "adc": "ADC", "flair": "FLAIR", "t1w": "T1w", "t2w": "T2w"}


def dataset_name(dataset_id: int, name: str = "cogimgStroke") -> str:
    """``Dataset<ID:03d>_<name>``, the folder name nnU-Net expects (ID in 1..999)."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset IDs are 1..999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{name}"


def case_files(subject, modalities: Sequence[str], label_keys: Sequence[str]
               ) -> tuple[list[Path], Path | None]:
    """Image paths of a cogimg ``tio.Subject`` in ``modalities`` order, and its first label
    file among ``label_keys`` (``None`` when it has none)."""
    images = subject.get_images_dict(intensity_only=False)
    missing = [m for m in modalities if m not in images]
    if missing:
        raise KeyError(f"subject {subject['subject_id']} has no {missing} "
                       f"(has {sorted(images)})")
    label = next((Path(images[k].path) for k in label_keys if k in images), None)
    return [Path(images[m].path) for m in modalities], label


def write_case(images: Sequence[Path], label: Path | None, case: str, images_dir: Path,
               labels_dir: Path | None) -> None:
    """Copy ``images`` to ``images_dir/<case>_<channel:04d>.nii.gz`` and write the binarised
    ``label`` to ``labels_dir/<case>.nii.gz`` (skipped when either is ``None``)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for channel, path in enumerate(images):
        if not str(path).endswith(FILE_ENDING):
            raise ValueError(f"{path}: nnU-Net raw files here must end in {FILE_ENDING}")
        shutil.copyfile(path, images_dir / f"{case}_{channel:04d}{FILE_ENDING}")
    if label is not None and labels_dir is not None:
        labels_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_nifti(binary_label(label), labels_dir / f"{case}{FILE_ENDING}")


def binary_label(path: Path) -> nib.Nifti1Image:
    """The mask at ``path`` as uint8 0/1 (``value > 0``), same shape, affine and header."""
    img = nib.load(str(path))
    data = (np.asarray(img.dataobj) > 0).astype(np.uint8)
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    return nib.Nifti1Image(data, img.affine, header)


def write_dataset_json(folder: Path, modalities: Sequence[str], num_training: int) -> dict:
    """``dataset.json`` for a binary lesion task; returns what it wrote."""
    content = {
        "channel_names": {str(i): CHANNEL_NAMES.get(m.lower(), m)
                          for i, m in enumerate(modalities)},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
        "name": folder.name,
        "description": "cogimg synthetic stroke cohort (benchmarks/vs_nnunet.py)",
    }
    atomic_write_text(folder / "dataset.json", json.dumps(content, indent=2))
    return content


def write_raw_dataset(subjects, folder: Path, train: Sequence[str], test: Sequence[str],
                      modalities: Sequence[str], label_keys: Sequence[str]) -> dict:
    """Write cogimg ``subjects`` (``tio.Subject`` list) into the raw dataset ``folder``.

    ``train`` (cogimg's train + val subject IDs) go to ``imagesTr``/``labelsTr``, ``test`` to
    ``imagesTs`` (labels of the test cases are not written: score them from the BIDS tree).
    A train subject without a label file is an error naming it. Returns the dataset.json.
    """
    by_id = {s["subject_id"]: s for s in subjects}
    unknown = sorted((set(train) | set(test)) - set(by_id))
    if unknown:
        raise KeyError(f"split lists subjects not in the dataset: {unknown[:5]}")
    if overlap := sorted(set(train) & set(test)):
        raise ValueError(f"subjects in both train and test: {overlap[:5]}")
    for sid in sorted(train):
        images, label = case_files(by_id[sid], modalities, label_keys)
        if label is None:
            raise FileNotFoundError(f"training subject {sid} has no label among {list(label_keys)}")
        write_case(images, label, sid, folder / "imagesTr", folder / "labelsTr")
    for sid in sorted(test):
        images, _ = case_files(by_id[sid], modalities, label_keys)
        write_case(images, None, sid, folder / "imagesTs", None)
    return write_dataset_json(folder, modalities, len(train))


def write_splits_final(path: Path, folds: Sequence[dict]) -> list[dict]:
    """nnU-Net's ``splits_final.json`` from cogimg folds (``{"train": [...], "val": [...]}``,
    the test subjects left out); returns the list written."""
    content = [{"train": sorted(f["train"]), "val": sorted(f["val"])} for f in folds]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(content, indent=2))
    return content


def write_case_folder(images: Sequence[Path], modalities: Sequence[str], folder: Path) -> None:
    """The same raw images as a cogimg case folder (``folder/<modality>.nii.gz``), the input
    ``cogimg predict`` takes for a clinical case (:func:`cogimg.data.inputs.find_cases`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for modality, path in zip(modalities, images, strict=True):
        shutil.copyfile(path, folder / f"{modality}{FILE_ENDING}")
