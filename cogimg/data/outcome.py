"""Lesion → outcome cohorts: a folder of binary lesion masks plus a table of scores.

Two layouts are read:

* ``soop`` — the Stroke Outcome Optimization Project demo layout
  (``../shared/data/soop_masks``): ``<mask_dir>/sub-N_lesion.nii.gz`` and a TSV
  (``participants_cleaned.tsv``) with ``participant_id`` and score columns;
* ``bids`` — ``<root>/participants.tsv`` and one mask per participant under
  ``<root>/derivatives/<name>/sub-*/[ses-*/][anat|dwi/]*_msk.nii.gz`` (any depth).

:func:`load_outcome_dataset` reads every mask **once** and, in the same pass, validates it
(readable, 3-D, finite, binary {0, 1}, on the cohort's grid) and summarises it: lesion
volume (mL), the fraction of each arterial territory it damages (with an atlas on the same
grid) and a block-averaged lesion map at ``downsample`` × the voxel size, stored as
uint8 counts of lesioned voxels per block (``0 … downsample³``). Every problem of every file
is collected and raised together as one :class:`~cogimg.data.validation.DatasetError`.

Participants with a mask but no score, and scores without a mask, are **listed**: an error
by default (``unmatched="error"``); with ``unmatched="exclude"`` they are left out, named in
``OutcomeCohort.excluded`` and announced in one ``UserWarning`` (the SOOP demo ships 1,160
masks but 889 score rows, 733 of them matching).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cogimg.data.participants import listed
from cogimg.data.validation import DatasetError, Problem, affine_difference

Layout = Literal["soop", "bids"]
_SOOP_MASK = re.compile(r"^(sub-[A-Za-z0-9]+)_lesion\.nii(\.gz)?$")
_BIDS_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)(_|$)")


@dataclass
class OutcomeCohort:
    """Matched lesion masks and scores, one entry per participant, sorted by ID.

    Attributes:
        ids: ``(N,)`` participant IDs.
        scores: ``(N,)`` float64 outcome (e.g. NIHSS).
        covariates: ``(N, C)`` float64 table columns named in ``covariate_names`` (e.g. age).
        lesion_volume_ml: ``(N,)`` lesion volume in mL.
        territory_load: ``(N, T)`` fraction of each atlas territory lesioned (T = 0 without atlas).
        territory_names: T names (``"1_ACAL"`` …) matching ``territory_load``'s columns.
        maps: ``(N, X', Y', Z')`` uint8 lesioned voxels per ``downsample``³ block.
        map_affine: (4, 4) voxel → mm of ``maps`` (the mask affine with ``downsample``× zooms).
        downsample: block size in voxels per axis.
        mask_affine / mask_shape: the full-resolution grid every mask shares.
        excluded: participant ID → why it was left out (``unmatched="exclude"``).
    """

    ids: list[str]
    scores: np.ndarray
    covariates: np.ndarray
    covariate_names: list[str]
    lesion_volume_ml: np.ndarray
    territory_load: np.ndarray
    territory_names: list[str]
    maps: np.ndarray
    map_affine: np.ndarray
    downsample: int
    mask_affine: np.ndarray
    mask_shape: tuple[int, int, int]
    score_name: str = "score"
    excluded: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lesion_fraction(self) -> np.ndarray:
        """``(N, X', Y', Z')`` float32 lesioned fraction of each block, in [0, 1]."""
        return self.maps.astype(np.float32) / float(self.downsample**3)

    def binary_maps(self) -> np.ndarray:
        """``(N, X', Y', Z')`` bool: a block counts as lesioned when ≥ half its voxels are."""
        return self.maps * 2 >= self.downsample**3

    def coarsen(self, factor: int) -> OutcomeCohort:
        """The cohort with ``maps`` summed over ``factor``³ blocks (e.g. 2 mm → 6 mm with 3),
        so one read of the masks serves several resolutions; counts must stay ≤ 255."""
        total = self.downsample * int(factor)
        if factor < 1 or total**3 > 255:
            raise ValueError(f"coarsen factor {factor} on {self.downsample}-voxel blocks gives "
                             f"{total}³ voxels per block; at most 255 fit the uint8 counts")
        maps = np.stack([_block_counts(m, int(factor), binary=False) for m in self.maps])
        scale = np.diag([factor, factor, factor, 1.0])
        scale[:3, 3] = (factor - 1) / 2.0
        return replace(self, maps=maps, map_affine=self.map_affine @ scale, downsample=total)

    def table(self) -> pd.DataFrame:
        """Per-participant table: score, covariates, lesion volume (mL), territory loads."""
        data = {self.score_name: self.scores, "lesion_volume_ml": self.lesion_volume_ml}
        data.update(dict(zip(self.covariate_names, self.covariates.T)))
        data.update(dict(zip(self.territory_names, self.territory_load.T)))
        return pd.DataFrame(data, index=pd.Index(self.ids, name="participant_id"))

    def subset(self, ids) -> OutcomeCohort:
        """The participants ``ids`` (in that order); an unknown ID is a ``KeyError``."""
        position = {pid: i for i, pid in enumerate(self.ids)}
        if missing := [i for i in ids if i not in position]:
            raise KeyError(f"{len(missing)} ID(s) not in the cohort: {listed(missing)}")
        idx = np.array([position[i] for i in ids], dtype=np.int64)
        return OutcomeCohort(
            ids=[self.ids[i] for i in idx], scores=self.scores[idx], covariates=self.covariates[idx],
            covariate_names=self.covariate_names, lesion_volume_ml=self.lesion_volume_ml[idx],
            territory_load=self.territory_load[idx], territory_names=self.territory_names,
            maps=self.maps[idx], map_affine=self.map_affine, downsample=self.downsample,
            mask_affine=self.mask_affine, mask_shape=self.mask_shape, score_name=self.score_name,
            excluded=dict(self.excluded))


# --------------------------------------------------------------------------- finding files


def find_soop_masks(mask_dir: str | os.PathLike) -> dict[str, Path]:
    """``sub-N`` → ``<mask_dir>/sub-N_lesion.nii[.gz]``; other files are ignored."""
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"lesion mask folder not found: {mask_dir}")
    found = {}
    for path in sorted(mask_dir.iterdir()):
        if match := _SOOP_MASK.match(path.name):
            found[match.group(1)] = path
    if not found:
        raise FileNotFoundError(f"{mask_dir}: no lesion masks named sub-<label>_lesion.nii[.gz]")
    return found


def find_bids_masks(root: str | os.PathLike, derivative: str | None = None,
                    suffix: str = "_msk") -> dict[str, Path]:
    """``sub-X`` → its ``*<suffix>.nii[.gz]`` under ``<root>/derivatives/<derivative>``.

    ``derivative=None`` searches every derivative folder. More than one mask for a
    participant (sessions, several pipelines) is an error naming the files: an outcome
    score belongs to one lesion map, and picking one silently would hide the choice.
    """
    base = Path(root) / "derivatives"
    if derivative is not None:
        base = base / derivative
    if not base.is_dir():
        raise FileNotFoundError(f"derivatives folder not found: {base}")
    by_id: dict[str, list[Path]] = {}
    for path in sorted(base.rglob(f"sub-*{suffix}.nii*")):
        if path.name.endswith((f"{suffix}.nii", f"{suffix}.nii.gz")) and (
                match := _BIDS_SUBJECT.match(path.name)):
            by_id.setdefault(match.group(1), []).append(path)
    if not by_id:
        raise FileNotFoundError(f"{base}: no sub-*{suffix}.nii[.gz] lesion masks")
    if several := {pid: p for pid, p in by_id.items() if len(p) > 1}:
        raise DatasetError(base, [
            Problem("error", pid, "several masks (one per participant expected): "
                    + ", ".join(str(p.relative_to(base)) for p in paths), pid)
            for pid, paths in sorted(several.items())])
    return {pid: paths[0] for pid, paths in sorted(by_id.items())}


# --------------------------------------------------------------------------- scores


def read_scores(path: str | os.PathLike, score: str,
                covariates: tuple[str, ...] = ()) -> tuple[pd.DataFrame, list[Problem]]:
    """Read a score table: ``participant_id`` + numeric ``score`` and ``covariates`` columns.

    Returns the table (indexed by ``participant_id``, float columns, NaN for ``n/a`` / empty)
    and problems: missing columns, malformed or duplicate IDs, non-numeric values (each
    naming its line) are errors; a missing value is reported with the participant.
    """
    path = Path(path)
    key = path.name
    if not path.is_file():
        raise FileNotFoundError(f"score table not found: {path}")
    try:
        raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    except Exception as exc:  # noqa: BLE001 -- ParserError, UnicodeDecodeError, EmptyDataError …
        raise DatasetError(path.parent, [Problem("error", key, f"cannot parse as TSV: {exc}")]) \
            from None
    raw.columns = [str(c).strip() for c in raw.columns]
    needed = ["participant_id", score, *covariates]
    if missing := [c for c in needed if c not in raw.columns]:
        raise DatasetError(path.parent, [Problem(
            "error", key, f"missing column(s) {missing}; found columns {list(raw.columns)}")])
    raw = raw[needed].apply(lambda col: col.str.strip())
    problems: list[Problem] = []
    for row, pid in enumerate(raw["participant_id"]):
        if not re.fullmatch(r"sub-[A-Za-z0-9]+", pid):
            problems.append(Problem("error", f"{key}:{row + 2}",
                                    f"participant_id {pid!r} must look like 'sub-<label>'"))
    for pid in sorted(set(raw["participant_id"][raw["participant_id"].duplicated()])):
        lines = [int(i) + 2 for i in np.flatnonzero(raw["participant_id"].to_numpy() == pid)]
        problems.append(Problem("error", f"{key}: {pid}", f"duplicate participant_id on lines "
                                f"{lines}", pid))
    table = pd.DataFrame(index=pd.Index(raw["participant_id"], name="participant_id"))
    for column in needed[1:]:
        text = raw[column]
        missing_value = text.str.lower().isin(["n/a", "na", "nan", ""])
        numbers = pd.to_numeric(text.where(~missing_value), errors="coerce")
        for row in np.flatnonzero((numbers.isna() & ~missing_value).to_numpy()):
            problems.append(Problem("error", f"{key}:{row + 2}",
                                    f"{column} = {text.iloc[row]!r} is not a number"))
        table[column] = numbers.to_numpy(dtype=float)
    return table[~table.index.duplicated(keep="first")], problems


# --------------------------------------------------------------------------- loading


def load_outcome_dataset(
    layout: Layout = "soop", *, root: str | os.PathLike | None = None,
    mask_dir: str | os.PathLike | None = None, scores: str | os.PathLike | None = None,
    score: str = "nihss", covariates: tuple[str, ...] = ("age",), derivative: str | None = None,
    atlas: str | os.PathLike | None = None, downsample: int = 2,
    unmatched: Literal["error", "exclude"] = "error",
) -> OutcomeCohort:
    """Match masks to scores, validate every mask and summarise it (see module doc).

    Args:
        layout: ``soop`` (``mask_dir`` + ``scores``) or ``bids`` (``root``; ``scores``
            defaults to ``<root>/participants.tsv``, masks under ``derivatives/<derivative>``).
        score: the outcome column (e.g. ``nihss``).
        covariates: further numeric columns to carry (e.g. ``age``).
        atlas: a label volume on the masks' grid (``ArterialAtlas136.nii.gz``); its ``.txt``
            label table, when present, names the territories. ``None``: no territory loads.
        downsample: block size (voxels per axis) of ``maps``; 1 keeps full resolution.
        unmatched: ``error`` raises on masks without a score and scores without a mask;
            ``exclude`` leaves them out, lists them in ``excluded`` and warns once.

    Raises:
        DatasetError: every problem found, one a line (files named).
    """
    if layout == "soop":
        if mask_dir is None or scores is None:
            raise ValueError("layout='soop' needs mask_dir and scores")
        masks, source = find_soop_masks(mask_dir), Path(mask_dir)
    elif layout == "bids":
        if root is None:
            raise ValueError("layout='bids' needs root")
        masks, source = find_bids_masks(root, derivative), Path(root)
        scores = scores if scores is not None else Path(root) / "participants.tsv"
    else:
        raise ValueError(f"layout={layout!r}; choose 'soop' or 'bids'")
    if unmatched not in ("error", "exclude"):
        raise ValueError(f"unmatched={unmatched!r}; choose 'error' or 'exclude'")
    if int(downsample) < 1:
        raise ValueError(f"downsample must be a positive number of voxels, got {downsample}")

    table, problems = read_scores(scores, score, tuple(covariates))
    excluded = _match(masks, table, score, Path(scores).name, unmatched, problems)
    if errors := [p for p in problems if p.severity == "error"]:
        raise DatasetError(source, errors)
    ids = sorted((pid for pid in masks if pid not in excluded), key=_natural)
    if not ids:
        raise DatasetError(source, [Problem("error", str(scores), "no participant has both a "
                                            "mask and a score")])
    if excluded:
        warnings.warn(f"{source}: {len(excluded)} participant(s) left out (unmatched='exclude'): "
                      + listed([f"{k} ({v})" for k, v in sorted(excluded.items())]), stacklevel=2)

    stack = read_lesion_stack([masks[i] for i in ids], ids, source, atlas, int(downsample))
    return OutcomeCohort(
        ids=ids, scores=table.loc[ids, score].to_numpy(float),
        covariates=table.loc[ids, list(covariates)].to_numpy(float).reshape(len(ids), -1),
        covariate_names=list(covariates), score_name=score, excluded=excluded, **stack)


# --------------------------------------------------------------------------- reading masks


def read_lesion_stack(paths: list[Path], ids: list[str], source: Path,
                      atlas: str | os.PathLike | None = None, downsample: int = 2) -> dict:
    """Read each mask once: validate it, measure it and block-average it.

    The cohort's grid is the atlas's when one is given, else the first mask's. Returns the
    :class:`OutcomeCohort` fields ``lesion_volume_ml``, ``territory_load``,
    ``territory_names``, ``maps``, ``map_affine``, ``downsample``, ``mask_affine``,
    ``mask_shape``; raises :class:`DatasetError` listing every bad file.
    """
    import nibabel as nib

    atlas_labels, names = _read_atlas(atlas) if atlas is not None else (None, [])
    reference = None if atlas is None else (atlas_labels.shape, nib.load(atlas).affine)
    problems: list[Problem] = []
    maps, volumes, loads = None, np.zeros(len(paths)), np.zeros((len(paths), len(names)))
    if atlas_labels is not None:
        territory_size = np.bincount(atlas_labels.ravel(), minlength=len(names) + 1)[1:]
        territory_size = np.maximum(territory_size, 1)
    for i, (path, pid) in enumerate(zip(paths, ids)):
        key = _relative(path, source)
        try:
            image = nib.load(path)
            data = np.asanyarray(image.dataobj)
        except Exception as exc:  # noqa: BLE001 -- nibabel/gzip raise many types for bad files
            problems.append(Problem("error", key, f"cannot read as NIfTI: {exc}", pid))
            continue
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            problems.append(Problem("error", key, f"a lesion mask must be 3-D (X, Y, Z), "
                                    f"got shape {data.shape}", pid))
            continue
        if reference is None:
            reference = (data.shape, image.affine)
        if grid := _grid_problem(data.shape, image.affine, *reference):
            problems.append(Problem("error", key, f"{grid} (every mask must share one grid"
                                    f"{'' if atlas is None else ', the atlas’s'})", pid))
            continue
        if bad := int(np.count_nonzero((data != 0) & (data != 1))):
            shown = np.unique(data[(data != 0) & (data != 1)])[:5].tolist()
            problems.append(Problem("error", key, f"{bad} voxels are not 0 or 1 (e.g. {shown}): "
                                    "a lesion mask must be binary", pid))
            continue
        mask = data.astype(bool)
        volumes[i] = mask.sum() * abs(np.linalg.det(image.affine[:3, :3])) / 1000.0
        if atlas_labels is not None:
            hit = np.bincount(atlas_labels[mask], minlength=len(names) + 1)[1:]
            loads[i] = hit / territory_size
        blocks = _block_counts(mask, downsample)
        if maps is None:
            maps = np.zeros((len(paths), *blocks.shape), dtype=np.uint8)
        maps[i] = blocks
    if problems:
        raise DatasetError(source, problems)
    shape, affine = reference
    scale = np.diag([downsample, downsample, downsample, 1.0])
    scale[:3, 3] = (downsample - 1) / 2.0  # block centre, in full-resolution voxels
    return {"lesion_volume_ml": volumes, "territory_load": loads, "territory_names": names,
            "maps": maps, "map_affine": affine @ scale, "downsample": downsample,
            "mask_affine": np.asarray(affine, dtype=float), "mask_shape": tuple(shape)}


def _block_counts(mask: np.ndarray, f: int, binary: bool = True) -> np.ndarray:
    """``(X, Y, Z)`` bool (or uint8 counts) → ``(⌈X/f⌉, ⌈Y/f⌉, ⌈Z/f⌉)`` uint8 sums per f³
    block (zero-padded at the far edges)."""
    if f == 1:
        return mask.astype(np.uint8)
    pad = [(0, -s % f) for s in mask.shape]
    padded = np.pad(mask, pad).astype(np.uint8 if binary else np.uint16)
    x, y, z = (s // f for s in padded.shape)
    return padded.reshape(x, f, y, f, z, f).sum(axis=(1, 3, 5), dtype=np.uint16).astype(np.uint8)


def _grid_problem(shape, affine, ref_shape, ref_affine) -> str:
    if tuple(shape) != tuple(ref_shape):
        return f"shape {tuple(shape)} differs from {tuple(ref_shape)}"
    return affine_difference(affine, ref_affine)


def _read_atlas(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Integer labels ``(X, Y, Z)`` and one name per label 1…K (``"<id>_<acronym>"`` from the
    ``.txt`` table next to it, as the SOOP territory table names its columns; else ``"<id>"``)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"atlas not found: {path}")
    labels = np.asarray(nib.load(path).dataobj)
    if labels.ndim != 3 or labels.min() < 0 or not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{path}: an atlas must be a 3-D volume of non-negative integer labels")
    labels = labels.astype(np.intp)
    names = [str(k) for k in range(1, int(labels.max()) + 1)]
    table = path.with_name(path.name.removesuffix(".gz").removesuffix(".nii") + ".txt")
    if table.is_file():
        for line in table.read_text(encoding="utf-8").splitlines():
            fields = line.split("|")
            if len(fields) >= 2 and fields[0].strip().isdigit() and \
                    0 < int(fields[0]) <= len(names):
                names[int(fields[0]) - 1] = f"{int(fields[0])}_{fields[1].strip()}"
    return labels, names


def _relative(path: Path, source: Path) -> str:
    try:
        return str(Path(path).relative_to(source))
    except ValueError:
        return str(path)


def _match(masks: dict[str, Path], table: pd.DataFrame, score: str, key: str,
           unmatched: str, problems: list[Problem]) -> dict[str, str]:
    """Record masks without scores and scores without masks (errors or exclusions)."""
    reasons = {}
    for pid in masks:
        if pid not in table.index:
            reasons[pid] = f"mask but no row in {key}"
        elif table.loc[pid].isna().any():
            empty = list(table.columns[table.loc[pid].isna().to_numpy()])
            reasons[pid] = f"missing {', '.join(empty)} in {key}"
    for pid in table.index:
        if pid not in masks:
            reasons[pid] = "row in the score table but no lesion mask"
    if unmatched == "error":
        problems.extend(Problem("error", pid, reason, pid)
                        for pid, reason in sorted(reasons.items(), key=lambda kv: _natural(kv[0])))
        return {}
    return reasons


def _natural(pid: str) -> tuple:
    """Sort ``sub-2`` before ``sub-10``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", pid))


__all__ = ["OutcomeCohort", "find_bids_masks", "find_soop_masks", "load_outcome_dataset",
           "read_lesion_stack", "read_scores"]
