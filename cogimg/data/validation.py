"""Validation rules for BIDS-like datasets: each rule returns :class:`Problem` records.

Rules never raise on bad data; :func:`cogimg.data.bids.load_dataset` collects every problem
and decides (``strict``) whether to raise :class:`DatasetError` or exclude the subjects
concerned. Each problem names one file or key and says what is wrong with it, so a user can
fix a dataset from one ``cogimg check`` run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cogimg.data.nifti import NiftiSummary
from cogimg.diseases import DIAGNOSES, PRESETS, normalise_diagnosis

Severity = Literal["error", "warning"]

#: Values of ``participants.tsv`` that mean "missing" (BIDS writes ``n/a``).
MISSING_VALUES = frozenset({"n/a", ""})
#: What a missing text value becomes in subject metadata (``None`` would break collation).
MISSING_TEXT = "n/a"
REQUIRED_COLUMNS = ("participant_id", "diagnosis")
#: Subject metadata keys the loader sets itself; a TSV column may not reuse them.
RESERVED_KEYS = frozenset(
    {"subject_id", "participant_id", "session_id", "modalities", "labels", "files"}
)

#: Grid tolerance: two affines agree when every entry is within ``atol + rtol * |entry|``
#: (1e-3 mm absorbs float32 header round-off; real misregistration is ≥ 0.1 mm).
AFFINE_ATOL_MM = 1e-3
AFFINE_RTOL = 1e-4


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        severity: ``"error"`` (the data cannot be used as is) or ``"warning"``.
        path_or_key: the file (relative to the dataset root) or key (``participants.tsv:
            sub-01``, ``sub-01_ses-1``) the problem is about.
        message: what is wrong, with the offending values.
        subject_id: the subject-session (``sub-X_ses-Y``) or participant (``sub-X``) an
            error makes unusable; ``""`` for dataset-wide problems.
    """

    severity: Severity
    path_or_key: str
    message: str
    subject_id: str = ""

    def __str__(self) -> str:
        return f"{self.severity}: {self.path_or_key}: {self.message}"


class DatasetError(ValueError):
    """A dataset has errors; ``problems`` holds all of them (the message lists them, one a line)."""

    def __init__(self, root: str | Path, problems: Sequence[Problem]):
        self.root = str(root)
        self.problems = list(problems)
        n_err = sum(p.severity == "error" for p in self.problems)
        lines = [str(p) for p in sorted(self.problems, key=lambda p: p.severity != "error")]
        super().__init__(f"dataset {self.root} has {n_err} error(s):\n  " + "\n  ".join(lines))


def load_participants(
    path: Path, table_key: str = "participants.tsv"
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read and check ``participants.tsv``.

    Returns:
        ``(table, problems)``. ``table`` is indexed by ``participant_id`` (first row wins for
        duplicated IDs, which are reported), ``diagnosis`` is normalised to
        :data:`cogimg.diseases.DIAGNOSES` spelling (unknown labels are kept verbatim and
        reported), columns whose present values are all numbers become float with NaN for
        ``n/a``, other columns stay text with ``n/a`` for missing. ``table`` is ``None``
        when the file is missing or unusable.
    """
    if not path.is_file():
        return None, [
            Problem(
                "error",
                table_key,
                "participants.tsv is missing: every participant needs a row "
                "with participant_id and diagnosis",
            )
        ]
    try:
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    except Exception as exc:  # noqa: BLE001 -- ParserError, UnicodeDecodeError, EmptyDataError …
        return None, [Problem("error", table_key, f"cannot parse as tab-separated values: {exc}")]
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        return None, [
            Problem(
                "error",
                table_key,
                f"missing column(s) {missing}; found columns {list(raw.columns)}",
            )
        ]

    problems: list[Problem] = []
    raw = raw.apply(lambda col: col.str.strip())
    clashes = sorted(RESERVED_KEYS.intersection(raw.columns) - {"participant_id"})
    if clashes:
        problems.append(
            Problem(
                "error",
                table_key,
                f"column(s) {clashes} are reserved for metadata the loader sets; not loaded",
            )
        )
        raw = raw.drop(columns=clashes)
    if "site" not in raw.columns:
        problems.append(
            Problem(
                "warning",
                table_key,
                f"no 'site' column: every site is set to {MISSING_TEXT!r} "
                "(leave-site-out splits and site adaptation need it)",
            )
        )
        raw["site"] = MISSING_TEXT

    keep = np.ones(len(raw), dtype=bool)
    for row, pid in enumerate(raw["participant_id"]):
        line = row + 2  # 1-based, after the header line
        if not pid.startswith("sub-") or len(pid) <= 4:
            problems.append(
                Problem(
                    "error",
                    f"{table_key}:{line}",
                    f"participant_id {pid!r} must look like 'sub-<label>'",
                )
            )
            keep[row] = False
    dup = raw["participant_id"].duplicated(keep=False) & keep
    for pid in sorted(set(raw.loc[dup, "participant_id"])):
        lines = [int(i) + 2 for i in np.flatnonzero(raw["participant_id"].to_numpy() == pid)]
        problems.append(
            Problem(
                "error", f"{table_key}: {pid}", f"duplicate participant_id on lines {lines}", pid
            )
        )
    keep &= ~raw["participant_id"].duplicated(keep="first").to_numpy()
    table = raw[keep].set_index("participant_id")

    diagnoses = []
    for pid, label in table["diagnosis"].items():
        try:
            diagnoses.append(normalise_diagnosis(label))
        except ValueError:
            problems.append(
                Problem(
                    "error",
                    f"{table_key}: {pid}",
                    f"unknown diagnosis {label!r}; expected one of {list(DIAGNOSES)}",
                    pid,
                )
            )
            diagnoses.append(label)
    table["diagnosis"] = diagnoses
    for column in table.columns.drop(["diagnosis", "site"]):
        table[column] = _typed_column(table[column])
    table["site"] = table["site"].replace(list(MISSING_VALUES), MISSING_TEXT)
    return table, problems


def check_column_names(table: pd.DataFrame, keys: set[str],
                       is_reserved: Callable[[str], bool]) -> tuple[pd.DataFrame, list[Problem]]:
    """Drop (and report) columns that would collide with subject keys.

    Columns, image keys and label keys share one ``tio.Subject`` namespace, and subject keys
    become attributes: a column named like an image would overwrite it, one named like a
    method (``is_reserved``, e.g. ``plot``) would shadow it.
    """
    problems, clashing = [], []
    for column in table.columns:
        if column in keys:
            reason = "has the same name as an image or label key"
        elif is_reserved(column):
            reason = "cannot be a subject key: it is a tio.Subject attribute"
        else:
            continue
        clashing.append(column)
        message = f"column {column!r} {reason}; not loaded"
        problems.append(Problem("error", "participants.tsv", message))
    return table.drop(columns=clashing), problems


def _typed_column(column: pd.Series) -> pd.Series:
    """Float column (NaN for missing) when every present value is a number, else text."""
    present = ~column.isin(MISSING_VALUES)
    numbers = pd.to_numeric(column[present], errors="coerce")
    if present.any() and numbers.notna().all():
        return pd.to_numeric(column.where(present), errors="coerce").astype(float)
    return column.where(present, MISSING_TEXT).astype(object)


def check_file(
    summary: NiftiSummary, key: str, kind: Literal["image", "msk", "dseg"], subject_id: str
) -> list[Problem]:
    """Readability, non-finite voxels and label values of one file (``key`` names it)."""
    if summary.error:
        return [Problem("error", key, summary.error, subject_id)]
    problems = []
    if summary.sform_qform_mm:
        problems.append(
            Problem(
                "warning",
                key,
                f"sform and qform disagree by up to {summary.sform_qform_mm:.4g} mm; cogimg "
                "reads, checks and writes the sform geometry (as nibabel does)",
                subject_id,
            )
        )
    if summary.nan_voxels or summary.inf_voxels:
        problems.append(
            Problem(
                "error",
                key,
                f"{summary.nan_voxels} NaN and {summary.inf_voxels} Inf voxels",
                subject_id,
            )
        )
    if (
        kind != "image"
        and len(summary.spatial_shape) == 3
        and any(s != 1 for s in summary.shape[3:])
    ):
        problems.append(
            Problem(
                "error",
                key,
                f"a label map must be 3D (X, Y, Z), got shape {summary.shape}",
                subject_id,
            )
        )
    if kind != "image" and summary.voxels_read:
        values = summary.label_values
        shown = _format_values(values, summary.label_values_truncated)
        if kind == "msk" and not set(values) <= {0.0, 1.0}:
            problems.append(
                Problem(
                    "error",
                    key,
                    f"label values {shown} but a _msk must be binary {{0, 1}}",
                    subject_id,
                )
            )
        if kind == "dseg" and not summary.labels_nonnegative_integers:
            problems.append(
                Problem(
                    "error",
                    key,
                    f"label values {shown} but a _dseg must hold non-negative integers",
                    subject_id,
                )
            )
    return problems


def _format_values(values: Iterable[float], truncated: bool) -> str:
    text = ", ".join(str(int(v)) if float(v).is_integer() else f"{v:g}" for v in values)
    return "{" + text + (", …" if truncated else "") + "}"


def affine_difference(affine: np.ndarray, reference: np.ndarray) -> str:
    """``""`` when two 4 × 4 voxel-to-world affines agree within :data:`AFFINE_RTOL` /
    :data:`AFFINE_ATOL_MM`, else how far apart they are (rotation/zoom part, translation in mm)."""
    if np.allclose(affine, reference, rtol=AFFINE_RTOL, atol=AFFINE_ATOL_MM):
        return ""
    delta = np.abs(np.asarray(affine) - np.asarray(reference))
    return (f"affine differs by up to {delta[:3, :3].max():.4g} in rotation/zoom and "
            f"{delta[:3, 3].max():.4g} mm in translation")


def same_grid(a: NiftiSummary, b: NiftiSummary) -> bool:
    """Whether two files share a voxel grid: equal ``(X, Y, Z)`` and affines within tolerance."""
    return a.spatial_shape == b.spatial_shape and not affine_difference(a.affine, b.affine)


def check_label_grid(
    label: NiftiSummary, label_key: str, images: Mapping[str, NiftiSummary], subject_id: str
) -> list[Problem]:
    """A label map must sit on the grid of at least one image of its session.

    Images of one session may each have their own grid (a native anisotropic FLAIR beside
    a 2 mm DWI), so one match is enough; the message lists how every image differs.
    """
    readable = {m: s for m, s in images.items() if s.ok}
    if not label.ok or not readable or any(same_grid(label, s) for s in readable.values()):
        return []
    diffs = "; ".join(f"{m} {_grid_difference(label, s)}" for m, s in sorted(readable.items()))
    return [
        Problem(
            "error",
            label_key,
            f"grid (shape {label.spatial_shape}) matches no image of {subject_id}: {diffs}",
            subject_id,
        )
    ]


def _grid_difference(label: NiftiSummary, image: NiftiSummary) -> str:
    parts = []
    if label.spatial_shape != image.spatial_shape:
        parts.append(f"has shape {image.spatial_shape}")
    if affine := affine_difference(label.affine, image.affine):
        parts.append(affine)
    return " and ".join(parts)


def check_required_modalities(
    subject_id: str, present: Iterable[str], required: Iterable[str]
) -> list[Problem]:
    present = sorted(present)
    return [
        Problem(
            "error",
            subject_id,
            f"missing required modality {m!r} for {subject_id} "
            f"(found: {', '.join(present) or 'none'})",
            subject_id,
        )
        for m in required
        if m not in present
    ]


def preset_modalities(diagnosis: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(presets, modalities)``: the presets made for ``diagnosis`` and the modalities all of
    them require.

    The presets are the image presets (segmentation, classification; not detection, which
    screens every diagnosis) that include ``diagnosis`` with the fewest diagnoses: ``stroke``
    -> ``stroke`` (dwi, adc); ``AD`` -> ``ad_binary`` (T1w); ``CN`` -> ``ad_binary``, ``pd``,
    ``stroke_binary`` (none in common: a control needs what its cohort's ``--preset`` asks).
    ``((), ())`` for a diagnosis no preset names.
    """
    candidates = [p for p in PRESETS.values() if p.task != "detection" and diagnosis in p.diagnoses]
    if not candidates:
        return (), ()
    fewest = min(len(p.diagnoses) for p in candidates)
    chosen = [p for p in candidates if len(p.diagnoses) == fewest]
    common = [m for m in chosen[0].modalities if all(m in p.modalities for p in chosen)]
    return tuple(p.name for p in chosen), tuple(common)


def check_preset_modalities(subjects: Iterable[Mapping], preset: str | None = None) -> list[Problem]:
    """A preset's required modalities missing from a subject-session are errors.

    ``preset``: the preset every subject must satisfy; ``None``: per subject, the presets
    made for its diagnosis (:func:`preset_modalities`). ``subjects``: mappings with
    ``subject_id``, ``diagnosis`` and ``modalities`` (loaded ``tio.Subject`` objects).
    """
    problems = []
    for subject in subjects:
        if preset is not None:
            names, required = (preset,), PRESETS[preset].modalities
        else:
            names, required = preset_modalities(str(subject.get("diagnosis", "")))
        sid, present = str(subject["subject_id"]), sorted(subject["modalities"])
        problems += [
            Problem(
                "error",
                sid,
                f"missing required modality {m!r} for {sid} (preset {'/'.join(names)} of "
                f"diagnosis {subject.get('diagnosis')}; found: {', '.join(present) or 'none'})",
                sid,
            )
            for m in required
            if m not in present
        ]
    return problems


def check_coverage(
    table_ids: Iterable[str], image_ids: Iterable[str], table_key: str = "participants.tsv"
) -> list[Problem]:
    """Participants listed without images and images without a participant row: both errors
    (nothing is silently dropped; remove the row or add the images)."""
    table_ids, image_ids = set(table_ids), set(image_ids)
    problems = [
        Problem("error", f"{table_key}: {pid}",
                "participant has a row but no image files (remove the row or add the images)")
        for pid in sorted(table_ids - image_ids)
    ]
    problems += [
        Problem(
            "error",
            pid,
            f"files found for {pid} but {table_key} has no row for it "
            "(its diagnosis and site are unknown)",
            pid,
        )
        for pid in sorted(image_ids - table_ids)
    ]
    return problems
