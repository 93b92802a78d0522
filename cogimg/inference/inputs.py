"""What to predict: the subjects of a ``--input`` path, whatever form it takes.

A BIDS root or subject folder is read by :func:`cogimg.data.bids.load_dataset`; a single
NIfTI, a DICOM series folder, a case folder or a folder of cases by
:func:`cogimg.data.inputs.find_cases`. Either way the result is TorchIO subjects carrying every
modality the model needs, or one error that lists every unusable entry. Every image has
passed the input gate (:func:`cogimg.data.gate.checked_image`) before this returns, so no
compute starts on a truncated, non-finite, 2D/4D or geometry-less scan.
"""

from __future__ import annotations

from pathlib import Path

import torchio as tio

from cogimg.data.bids import load_dataset
from cogimg.data.gate import checked_image
from cogimg.data.inputs import InputError, find_cases


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
        # only the model's modalities are read and checked (labels stay: they score the mask)
        dataset = load_dataset(path, required_modalities=modalities, modalities=modalities)
        subjects = [s for s in dataset.subjects
                    if participant is None or s["participant_id"] == participant]
        if not subjects:
            raise ValueError(f"no subject {participant or ''} with {list(modalities)} under {path}")
        return [_gated(subject, modalities) for subject in subjects]
    cases, errors = find_cases(path, modalities)
    if errors:
        raise InputError("; ".join(f"{where}: {why}" if where not in why else why
                                   for where, why in errors))
    return [case.subject_for(modalities) for case in cases]


def _gated(subject: tio.Subject, modalities: tuple[str, ...]) -> tio.Subject:
    """``subject`` with its ``modalities`` images replaced by the gate's (checked, read with
    the geometry ``cogimg check`` validates)."""
    images = {m: checked_image(subject[m]) for m in modalities}
    return tio.Subject(**{k: v for k, v in subject.items() if k not in images}, **images)
