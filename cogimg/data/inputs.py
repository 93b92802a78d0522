"""What a user points an inference command at: NIfTI files, DICOM series, case folders, BIDS.

:func:`find_cases` turns one ``--input`` path into *cases* (one patient-session each) plus
an error per thing it could not use, so a batch run skips nothing silently:

- a **NIfTI file** (``.nii`` / ``.nii.gz``), an **ITK file** (``.mha`` / ``.nrrd``, read by
  SimpleITK) or a **DICOM series folder** (DICOM files directly inside, one series): one
  *lone image*, given to models that read one modality (suffixes in any case);
- a **case folder** whose entries are named after modalities (case-insensitive), each a
  NIfTI or ITK file (``dwi.nii.gz``, ``ADC.mha``) or a DICOM series folder (``DWI/``): one
  case with those images;
- a **BIDS tree** (``participants.tsv``) or **BIDS subject** (``sub-X``): one case per
  subject-session (:func:`cogimg.data.bids.load_dataset`, non-strict: a bad subject is an
  error of its own, the others still run);
- any other folder is a **batch**: each entry is one of the first two kinds (names starting
  with ``.`` are ignored, as the file manager hides them; anything else unusable is an error).

DICOM series are read by TorchIO (SimpleITK/GDCM), which derives the RAS affine from the
series' ImagePositionPatient / ImageOrientationPatient / PixelSpacing; predictions written as
NIfTI carry that affine, so they overlay the series in any viewer that reads both.

Every image passes the input gate (:func:`cogimg.data.gate.checked_image`: truncation,
NaN/Inf, 2D/4D, singular affine, declared size vs file size) when its case is built; a case
that fails it is an error of its own, naming the file. NIfTI images are read with nibabel's
geometry (the sform when set), the one ``cogimg check`` validates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torchio as tio

from cogimg.data.bids import load_dataset
from cogimg.data.gate import ITK_SUFFIXES, NIFTI_SUFFIXES, checked_image, image_suffix


class InputError(ValueError):
    """An input that cannot be used (names the path and what is wrong)."""


@dataclass
class Case:
    """One patient-session to run models on.

    ``images``: modality key → image; a lone image (one file or series) has the key ``""``
    and serves any one-modality model. ``subject``: the BIDS subject the case came from.
    """

    case_id: str
    source: Path
    images: dict[str, tio.ScalarImage] = field(default_factory=dict)
    subject: tio.Subject | None = None

    def subject_for(self, modalities: tuple[str, ...] | list[str], with_labels: bool = False) -> tio.Subject:
        """A ``tio.Subject`` with exactly ``modalities`` (+ the BIDS label maps when
        ``with_labels``); ``InputError`` naming what is missing."""
        modalities = tuple(modalities)
        if "" in self.images:
            if len(modalities) != 1:
                raise InputError(f"{self.source}: one image, but the model reads {list(modalities)}; "
                                 "pass a case folder with one NIfTI file or DICOM series per modality "
                                 f"({', '.join(modalities)})")
            images = {modalities[0]: self.images[""]}
        else:
            if missing := [m for m in modalities if m not in self.images]:
                raise InputError(f"{self.source}: no {', '.join(missing)} image (the model reads "
                                 f"{list(modalities)}; found {sorted(self.images) or 'none'})")
            images = {m: self.images[m] for m in modalities}
        extra = {}
        if self.subject is not None:
            images_all = self.subject.get_images_dict(intensity_only=False)
            extra = {k: v for k, v in self.subject.items() if k not in images_all}
            if with_labels:
                images.update({k: self.subject[k] for k in self.subject.get("labels", ())})
        extra.update(subject_id=self.case_id, participant_id=extra.get("participant_id", self.case_id))
        extra.setdefault("labels", ())
        return tio.Subject(**images, **extra)


def safe_id(name: str) -> str:
    """``name`` usable as a file stem and cache key: letters, digits, ``. _ -`` only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return cleaned or "case"


def nifti_stem(path: Path) -> str:
    """The file name without its image suffix (``DWI.NII.GZ`` -> ``DWI``, ``adc.mha`` -> ``adc``)."""
    return path.name[: -len(image_suffix(path))]


def is_nifti(path: Path) -> bool:
    return path.is_file() and image_suffix(path) in NIFTI_SUFFIXES


def is_image_file(path: Path) -> bool:
    """A NIfTI or single-file ITK image (``.mha``, ``.nrrd``), any case of suffix."""
    return path.is_file() and image_suffix(path) in (*NIFTI_SUFFIXES, *ITK_SUFFIXES)


def _is_dicom_file(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as handle:  # DICOM Part 10: "DICM" after a 128-byte preamble
        return handle.read(132)[128:] == b"DICM"


def is_dicom_series(folder: Path) -> bool:
    """A folder with DICOM files directly inside."""
    return folder.is_dir() and any(_is_dicom_file(p) for p in folder.iterdir() if not p.name.startswith("."))


def read_dicom_series(folder: str | Path) -> tio.ScalarImage:
    """The one DICOM series in ``folder``, decoded now (so a broken series fails here, naming
    the folder). ``InputError`` when the folder holds no or several series."""
    import SimpleITK as sitk

    folder = Path(folder)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(f"{folder}: no readable DICOM series")
    if len(ids) > 1:
        raise InputError(f"{folder}: {len(ids)} DICOM series ({', '.join(ids)}); put each series "
                         "in its own folder")
    image = tio.ScalarImage(folder)
    try:
        image.load()
    except Exception as exc:
        raise InputError(f"{folder}: cannot read the DICOM series ({exc})") from exc
    return checked_image(image)


def native_nifti(image: tio.Image) -> nib.Nifti1Image:
    """The image as the clinician opened it: the NIfTI file itself, or (DICOM, in-memory)
    its first channel with TorchIO's RAS affine."""
    if image.path is not None and is_nifti(Path(image.path)):
        return nib.load(image.path)
    return nib.Nifti1Image(np.asarray(image.numpy()[0], dtype=np.float32), image.affine)


def _lone(path: Path) -> Case:
    if is_image_file(path):
        return Case(safe_id(nifti_stem(path)), path, {"": checked_image(path)})
    return Case(safe_id(path.name), path, {"": read_dicom_series(path)})


def _modality_key(path: Path, known: dict[str, str]) -> str | None:
    stem = nifti_stem(path) if is_image_file(path) else path.name if path.is_dir() else None
    return None if stem is None else known.get(stem.lower())


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _case_folder(folder: Path, known: dict[str, str]) -> Case | None:
    """The case of a folder whose entries are all modality-named, or ``None``."""
    entries = _entries(folder)
    keys = [_modality_key(p, known) for p in entries]
    if not entries or any(k is None for k in keys):
        return None
    if len(set(keys)) != len(keys):
        raise InputError(f"{folder}: two entries for one modality ({sorted(keys)})")
    images = {k: checked_image(p) if is_image_file(p) else read_dicom_series(p)
              for k, p in zip(keys, entries)}
    return Case(safe_id(folder.name), folder, images)


def _bids_cases(root: Path, participant: str | None) -> tuple[list[Case], list[tuple[str, str]]]:
    dataset = load_dataset(root, strict=False)
    errors = [(f"{root / p.path_or_key}" if "/" in p.path_or_key else p.path_or_key, p.message)
              for p in dataset.errors if participant is None or participant in str(p.path_or_key)]
    cases = []
    for s in dataset.subjects:
        if participant is not None and s["participant_id"] != participant:
            continue
        try:
            images = {k: checked_image(s[k]) for k in s["modalities"]}
        except ValueError as exc:  # the gate: an error of this subject, naming the file
            errors.append((str(s[s["modalities"][0]].path), str(exc)))
            continue
        cases.append(Case(s["subject_id"], Path(s[s["modalities"][0]].path).parent, images, s))
    if participant is not None and not cases and not errors:
        errors.append((str(root / participant), f"no usable subject {participant} under {root}"))
    return cases, errors


def find_cases(path: str | Path, modalities: tuple[str, ...] | list[str] = ()
               ) -> tuple[list[Case], list[tuple[str, str]]]:
    """Cases of ``path`` and ``(input, reason)`` for every entry that cannot be used.

    ``modalities``: keys a case folder's entries may be named by (besides every preset's),
    matched case-insensitively. ``FileNotFoundError`` when ``path`` does not exist.
    """
    from cogimg.diseases import PRESETS

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist")
    names = {m for p in PRESETS.values() for m in (*p.modalities, *p.optional_modalities)}
    known = {m.lower(): m for m in (*sorted(names), *modalities)}
    if path.is_file():
        if not is_image_file(path):
            raise InputError(f"{path}: not an image file (.nii, .nii.gz, .mha, .nrrd); for DICOM "
                             "pass the series folder")
        try:
            return [_lone(path)], []
        except Exception as exc:  # noqa: BLE001 -- reported as this input's error
            return [], [(str(path), str(exc))]
    if (path / "participants.tsv").is_file():
        return _bids_cases(path, None)
    if path.name.startswith("sub-"):
        root = path.parent.parent if path.parent.name == "rawdata" else path.parent
        return _bids_cases(root, path.name)
    try:
        case = _lone(path) if is_dicom_series(path) else _case_folder(path, known)
    except Exception as exc:  # noqa: BLE001 -- reported as this input's error
        return [], [(str(path), str(exc))]
    if case is not None:
        return [case], []
    cases, errors, seen = [], [], set()
    for entry in _entries(path):
        try:
            if is_image_file(entry) or is_dicom_series(entry):
                found = _lone(entry)
            elif entry.is_dir() and (found := _case_folder(entry, known)) is not None:
                pass
            else:
                raise InputError(f"{entry}: not a NIfTI file, a DICOM series folder or a case "
                                 f"folder of modality-named images ({', '.join(sorted(known.values()))}); "
                                 ".mha and .nrrd files are read too")
            if found.case_id in seen:
                raise InputError(f"{entry}: case id {found.case_id!r} is already taken by another input")
        except Exception as exc:  # noqa: BLE001 -- one unreadable input must not stop the batch
            errors.append((str(entry), str(exc)))
            continue
        seen.add(found.case_id)
        cases.append(found)
    return cases, errors


__all__ = ["Case", "InputError", "find_cases", "is_dicom_series", "is_image_file", "native_nifti",
           "read_dicom_series", "safe_id"]
