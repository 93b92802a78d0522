"""Finding resting-state BOLD runs in a BIDS tree or its fMRIPrep derivatives.

Two layouts are read (BIDS entities ``ses``, ``run``, ``acq`` … may appear in the names):

* fMRIPrep: ``derivatives/fmriprep/sub-*/[ses-*/]func/*_task-rest_*space-MNI152NLin2009cAsym
  _desc-preproc_bold.nii.gz`` with ``*_task-rest_*desc-confounds_timeseries.tsv`` (same
  entities before ``_space-``) — preferred when present;
* raw BIDS: ``sub-*/[ses-*/]func/*_task-rest_bold.nii.gz`` (no confounds).

The repetition time comes from the NIfTI header (``pixdim[4]``, seconds) or the JSON sidecar
(``RepetitionTime``: the file's own sidecar, else a top-level ``task-rest_bold.json``); when
both are given they must agree. :func:`scan_func` reports every problem as a
:class:`~cogimg.data.validation.Problem` naming the file; :func:`find_bold_runs` raises
:class:`FuncDataError` listing them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from cogimg.data.func.atlas import Parcellation, ParcellationError
from cogimg.data.func.rules import check_atlas_grid, check_bold_header, check_confounds_rows
from cogimg.data.validation import Problem

FMRIPREP_DIR = Path("derivatives") / "fmriprep"
SPACE = "MNI152NLin2009cAsym"
PREPROC_GLOB = f"*_task-rest*_space-{SPACE}*_desc-preproc_bold.nii.gz"
RAW_GLOB = "*_task-rest*_bold.nii.gz"
#: Where ``cogimg synth --bold`` writes its parcellation (relative to the dataset root).
ATLAS_DIR = Path("derivatives") / "cogimg_atlas"
ATLAS_IMAGE = "atlas-cogimg_res-4mm_dseg.nii.gz"
ATLAS_TABLE = "atlas-cogimg_dseg.tsv"
#: Fewer volumes than this make an unstable correlation estimate (default of ``cogimg check``).
MIN_VOLUMES = 50
TR_RTOL = 0.01


class FuncDataError(ValueError):
    """Functional data that cannot be used; ``problems`` lists every issue (one a line)."""

    def __init__(self, root: str | Path, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n  ".join(str(p) for p in self.problems)
        super().__init__(f"functional data in {root} has {len(self.problems)} error(s):\n  {lines}")


@dataclass(frozen=True)
class BoldRun:
    """One resting-state run.

    Attributes:
        subject: ``sub-<label>``.
        session: ``ses-<label>`` or ``None``.
        bold: 4D NIfTI (X, Y, Z, T).
        confounds: fMRIPrep confounds TSV (T rows), ``None`` for raw BIDS.
        tr_s: repetition time in seconds.
        n_volumes: T.
        source: ``"fmriprep"`` or ``"bids"``.
    """

    subject: str
    session: str | None
    bold: Path
    confounds: Path | None
    tr_s: float
    n_volumes: int
    source: str

    @property
    def run_id(self) -> str:
        """``sub-X`` or ``sub-X_ses-Y``: the key of this run's series."""
        return self.subject if self.session is None else f"{self.subject}_{self.session}"


def _entity(name: str, key: str) -> str | None:
    m = re.search(rf"(?:^|_)({key}-[A-Za-z0-9]+)", name)
    return m.group(1) if m else None


def _sidecar_tr(bold: Path, root: Path) -> tuple[float | None, str | None]:
    """``(RepetitionTime, sidecar path)`` from the nearest JSON sidecar, or ``(None, None)``."""
    stem = bold.name[: -len(".nii.gz")] if bold.name.endswith(".nii.gz") else bold.stem
    for candidate in (bold.with_name(stem + ".json"), root / "task-rest_bold.json"):
        if candidate.is_file():
            try:
                meta = json.loads(candidate.read_text())
            except (OSError, ValueError):
                continue
            if "RepetitionTime" in meta:
                try:
                    return float(meta["RepetitionTime"]), str(candidate)
                except (TypeError, ValueError):
                    return None, str(candidate)
    return None, None


def header_tr(img: nib.Nifti1Image) -> float | None:
    """Repetition time (s) from ``pixdim[4]`` honouring ``xyzt_units``; ``None`` if unset (≤ 0)."""
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] or zooms[3] <= 0:
        return None
    unit = img.header.get_xyzt_units()[1]
    scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    return float(zooms[3]) * scale


def _confounds_for(bold: Path) -> Path:
    prefix = re.split(r"_space-|_desc-preproc", bold.name)[0]
    return bold.with_name(f"{prefix}_desc-confounds_timeseries.tsv")


def _candidates(root: Path) -> tuple[list[Path], str]:
    deriv = root / FMRIPREP_DIR
    found = sorted(deriv.glob(f"sub-*/func/{PREPROC_GLOB}")) + sorted(
        deriv.glob(f"sub-*/ses-*/func/{PREPROC_GLOB}"))
    if found:
        return sorted(found), "fmriprep"
    raw = sorted(root.glob(f"sub-*/func/{RAW_GLOB}")) + sorted(root.glob(f"sub-*/ses-*/func/{RAW_GLOB}"))
    return sorted(raw), "bids"


def scan_func(
    root: str | Path, parcellation: Parcellation | None = None, min_volumes: int = MIN_VOLUMES
) -> tuple[list[BoldRun], list[Problem]]:
    """Find and check every resting-state run under ``root``.

    Checks: readable 4D NIfTI, a repetition time (header or sidecar, agreeing within 1 %),
    at least ``min_volumes`` volumes, confounds TSV present with one row per volume
    (fMRIPrep), and — given ``parcellation`` — the atlas on the BOLD grid (shape and
    affine). Runs with an error are not returned.

    Returns:
        ``(runs, problems)``; problem keys are paths relative to ``root``.
    """
    root = Path(root)
    paths, source = _candidates(root)
    runs, problems = [], []
    atlas_img = None
    if parcellation is not None:
        atlas_img = parcellation.label_image()
    seen: set[str] = set()
    for bold in paths:
        key = str(bold.relative_to(root))
        subject = _entity(bold.name, "sub") or bold.name.split("_")[0]
        session = _entity(bold.name, "ses")
        sid = subject if session is None else f"{subject}_{session}"
        try:
            img = nib.load(bold)
        except Exception as exc:  # noqa: BLE001 -- nibabel raises many types on corrupt files
            problems.append(Problem("error", key, f"cannot read as NIfTI: {exc}", sid))
            continue
        tr_json, sidecar = _sidecar_tr(bold, root)
        tr_head = header_tr(img)
        found = check_bold_header(key, img.shape, tr_head, tr_json, min_volumes, sid,
                                  sidecar=sidecar and str(Path(sidecar).relative_to(root)))
        confounds = None
        if source == "fmriprep":
            confounds = _confounds_for(bold)
            if not confounds.is_file():
                found.append(Problem("error", str(confounds.relative_to(root)),
                                     f"confounds TSV for {bold.name} not found", sid))
                confounds = None
            elif len(img.shape) == 4:
                with confounds.open() as f:
                    n_rows = sum(1 for line in f if line.strip()) - 1
                found += check_confounds_rows(str(confounds.relative_to(root)), n_rows,
                                              img.shape[3], sid)
        if atlas_img is not None and len(img.shape) >= 3:
            found += check_atlas_grid(str(parcellation.image), atlas_img.shape[:3], atlas_img.affine,
                                      key, img.shape[:3], img.affine, sid)
        if sid in seen:
            found.append(Problem("warning", key, f"another resting-state run of {sid} comes first; "
                                 "this one is not used"))
        problems += found
        if any(p.severity == "error" for p in found) or sid in seen:
            continue
        seen.add(sid)
        runs.append(BoldRun(subject, session, bold, confounds, float(tr_head or tr_json),
                            int(img.shape[3]), source))
    return runs, problems


def find_bold_runs(root: str | Path, min_volumes: int = 1) -> list[BoldRun]:
    """Every usable resting-state run under ``root`` (fMRIPrep derivatives if any, else BIDS).

    Raises:
        FuncDataError: a run has an error (3D image, no TR, confounds rows ≠ volumes …) or
            no run was found.
    """
    runs, problems = scan_func(root, min_volumes=min_volumes)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise FuncDataError(root, errors)
    if not runs:
        raise FuncDataError(root, [Problem("error", str(root), "no resting-state BOLD run found "
                                           f"(looked for {FMRIPREP_DIR}/sub-*/func/{PREPROC_GLOB} "
                                           f"and sub-*/func/{RAW_GLOB})")])
    return runs


def default_parcellation(root: str | Path) -> Parcellation:
    """The parcellation ``cogimg synth --bold`` writes beside the data (``derivatives/cogimg_atlas``).

    Raises:
        ParcellationError: it is not there (pass a parcellation explicitly) or is invalid.
    """
    folder = Path(root) / ATLAS_DIR
    image, table = folder / ATLAS_IMAGE, folder / ATLAS_TABLE
    if not image.is_file():
        raise ParcellationError(f"{image}: no parcellation beside the data; pass a label NIfTI "
                                "and its TSV (index, name, network)")
    return Parcellation.load(image, table)


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    """Whether two images share their spatial grid (shape and affine within 1e-3 mm)."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=1e-3, rtol=1e-4)
