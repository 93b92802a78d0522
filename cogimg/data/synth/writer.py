"""Writing the synthetic cohort as a BIDS-like tree, atomically.

The whole cohort is generated into a hidden sibling directory (``.NAME.<pid>.<token>.tmp``)
and renamed onto ``--out`` at the end, so a crash never leaves a cohort that looks complete;
each file inside is also written under a temporary name and ``os.replace``d. The staging
folders of killed runs are removed by the next run; the published cohort holds cogimg's
output marker, and ``--overwrite`` replaces only a folder that holds it (or a cohort cogimg
wrote before the marker existed).

Images and ground-truth maps are stored as int16 with a per-file ``scl_slope`` (nibabel
chooses it; values read back as float with < 0.01 % of the range in rounding — half the
bytes and faster to compress than float32), masks as uint8 and instance maps as int16, all
at gzip level 1 (nibabel's default; level 6 is slower for slightly smaller files).
``benchmarks/transform_speed.py`` times both choices.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from cogimg.io import (
    atomic_save_nifti,
    atomic_write_text,
    mark_output,
    refuse_foreign_folder,
    remove_stale_temporaries,
    temporary_sibling,
)

#: BIDS folder and file suffix of each modality.
MODALITY_FILES: dict[str, tuple[str, str]] = {
    "T1w": ("anat", "T1w"),
    "FLAIR": ("anat", "FLAIR"),
    "T2starw": ("anat", "T2starw"),
    "dwi": ("dwi", "dwi"),
    "adc": ("dwi", "adc"),
    "pet_amyloid": ("pet", "trc-amyloid_pet"),
    "pet_dat": ("pet", "trc-dat_pet"),
}
COMPRESS_LEVEL = 1

#: participants.tsv columns, in order ('n/a' where a column does not apply).
PARTICIPANT_COLUMNS = ("participant_id", "diagnosis", "site", "age", "sex", "MMSE", "CDR",
                       "APOE4", "NIHSS", "UPDRS", "converter")


def modality_path(pid: str, modality: str) -> str:
    """Relative path of a subject's image, e.g. ``sub-0001/anat/sub-0001_T1w.nii.gz``."""
    folder, suffix = MODALITY_FILES[modality]
    return f"{pid}/{folder}/{pid}_{suffix}.nii.gz"


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, kind: str) -> None:
    """Write ``data`` (X, Y, Z) atomically.

    Args:
        kind: ``image`` or ``map`` (float data stored as int16 + scl_slope), ``mask``
            (uint8) or ``instances`` (int16).
    """
    if kind in ("image", "map"):
        img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
        img.set_data_dtype(np.int16)  # nibabel scales float → int16 with scl_slope/inter
    elif kind == "mask":
        img = nib.Nifti1Image(np.asarray(data, np.uint8), affine)
    elif kind == "instances":
        img = nib.Nifti1Image(np.asarray(data, np.int16), affine)
    else:
        raise ValueError(f"unknown NIfTI kind {kind!r}")
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=1)  # scanner-anatomical (here MNI) space
    img.header.set_sform(affine, code=4)  # MNI152
    atomic_save_nifti(img, path)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON atomically (NumPy scalars and arrays become lists)."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default) + "\n")


def format_tsv(rows: list[dict], columns: tuple[str, ...] = PARTICIPANT_COLUMNS) -> str:
    """Tab-separated text of ``rows`` (``None`` → ``n/a``; floats with one decimal)."""

    def cell(v) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, bool):
            return str(int(v))
        if isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    lines = ["\t".join(columns)]
    lines += ["\t".join(cell(row.get(c)) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``, and even then one that cogimg did not
    write; refuse a file in its place."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a directory")
    if out.resolve() in (Path.cwd(), *Path.cwd().parents):
        raise ValueError(f"--out {out} is the working directory or one of its parents; "
                         "give a new folder (e.g. --out data/synth)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} is not empty; pass --overwrite to replace it")
    # cohorts written before the marker hold cogimg's dataset_description.json
    refuse_foreign_folder(out, also_ours=("participants.tsv",) if _generated_by_cogimg(out) else ())


def _generated_by_cogimg(out: Path) -> bool:
    try:
        description = json.loads((out / "dataset_description.json").read_text(encoding="utf-8"))
        return any(g.get("Name") == "cogimg synth" for g in description.get("GeneratedBy", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def staging_dir(out: Path) -> Path:
    """A fresh hidden sibling of ``out`` to generate into (the staging folders of killed
    runs are removed first)."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = temporary_sibling(out)
    tmp.mkdir()
    return tmp


def publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Move the finished ``staging`` tree onto ``out`` (replacing it when ``overwrite``)."""
    out = out.absolute()
    check_output_dir(out, overwrite)
    mark_output(staging)
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = temporary_sibling(out, "old")
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


#: participants.json: BIDS sidecar describing the columns.
PARTICIPANT_DESCRIPTIONS = {
    "diagnosis": {"Description": "CN, MCI, AD, PD or stroke"},
    "site": {"Description": "scanner site (site-1 … site-K); see derivatives/truth/sites.json"},
    "age": {"Description": "age at scan", "Units": "years"},
    "sex": {"Description": "M or F"},
    "MMSE": {"Description": "Mini-Mental State Examination (0-30), noisy function of disease stage"},
    "CDR": {"Description": "Clinical Dementia Rating (global); n/a for PD and stroke"},
    "APOE4": {"Description": "number of APOE e4 alleles (0-2)"},
    "NIHSS": {"Description": "NIH Stroke Scale; stroke only"},
    "UPDRS": {"Description": "MDS-UPDRS part III-like motor score; CN and PD only"},
    "converter": {"Description": "MCI only: 1 if the subject converts to AD during follow-up"},
}


def write_dataset_files(root: Path, rows: list[dict], config: dict, sites: list[dict],
                        command: str | None) -> None:
    """participants.tsv/json, dataset_description.json, README, derivative descriptions."""
    from cogimg import __version__

    atomic_write_text(root / "participants.tsv", format_tsv(rows))
    write_json(root / "participants.json", PARTICIPANT_DESCRIPTIONS)
    generated_by = [{"Name": "cogimg synth", "Version": __version__,
                     "Description": "synthetic multi-site cohort on the MNI152 2009a template"}]
    write_json(root / "dataset_description.json", {
        "Name": "cogimg synthetic cohort", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "License": "CC0 (synthetic); anatomy from the MNI152 2009a template (see README)",
        "GeneratedBy": generated_by,
    })
    for pipeline in sorted(p.name for p in (root / "derivatives").iterdir() if p.is_dir()):
        write_json(root / "derivatives" / pipeline / "dataset_description.json", {
            "Name": f"cogimg synthetic cohort: {pipeline}", "BIDSVersion": "1.9.0",
            "DatasetType": "derivative", "GeneratedBy": generated_by,
        })
    write_json(root / "derivatives" / "truth" / "sites.json", sites)
    from cogimg.data.synth.regions import region_names

    write_json(root / "derivatives" / "truth" / "regions.json",
               {str(k): name for k, name in enumerate(region_names(), start=1)})
    write_json(root / "derivatives" / "truth" / "cohort.json", config)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["diagnosis"]] = counts.get(row["diagnosis"], 0) + 1
    lines = [
        "# cogimg synthetic cohort", "",
        f"Synthetic, fully known brain MRI/PET cohort made by `cogimg synth` (cogimg {__version__}).",
        "Nothing here comes from a real person.", "",
        f"Command: `{command or 'generate_cohort(...)'}`",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in config.items() if not isinstance(v, dict)),
        "",
        "Subjects per diagnosis: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "",
        "Layout: sub-*/anat (T1w, FLAIR, T2starw), sub-*/dwi (dwi, adc), sub-*/pet",
        "(trc-amyloid, trc-dat), all on one MNI152 grid. derivatives/lesions and",
        "derivatives/microbleeds hold masks (_msk), instance maps (_dseg) and boxes",
        "(_boxes.json); derivatives/truth holds, per subject, what was changed and where",
        "(_effects.json, desc-<effect>_map.nii.gz, desc-regions_dseg.nii.gz with the label",
        "names in regions.json) plus the scanner models (sites.json).",
        "",
    ] + ([
        "Resting-state fMRI (--bold): sub-*/func (BIDS) and derivatives/fmriprep (preprocessed",
        "BOLD in MNI space + desc-confounds_timeseries.tsv with the injected motion, global, WM",
        "and CSF signals); the parcellation in derivatives/cogimg_atlas; the perturbed edges",
        "per subject in derivatives/groundtruth/sub-*/func/*_edges.tsv.",
        "",
    ] if "bold" in config else []) + [
        "Anatomy: MNI152 2009a symmetric template and tissue maps as shipped with nilearn",
        "(Fonov et al. 2009, 2011; Copyright (C) 1993-2009 Louis Collins, McConnell Brain",
        "Imaging Centre, Montreal Neurological Institute, McGill University).",
        "",
    ]
    atomic_write_text(root / "README", "\n".join(lines))
