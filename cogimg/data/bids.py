"""Load a BIDS-like tree into TorchIO subjects, validating it on the way.

Layout (``[]`` = optional; ISLES'22 puts raw data under ``rawdata/`` and its masks directly
under ``derivatives/sub-*``)::

    participants.tsv                       participant_id, diagnosis, site, [age, sex, MMSE …]
    [rawdata/]sub-X/[ses-Y/][anat|dwi|pet/]sub-X[_ses-Y][_trc-T]…_<suffix>.nii[.gz]
    derivatives/[<pipeline>/]sub-X/[ses-Y/][anat|dwi|pet/]sub-X[_ses-Y][_desc-D]…_<suffix>.<ext>

Keys (see :mod:`cogimg.diseases`): an image's modality is its suffix, in any case (``T1w``, ``FLAIR``,
``T2starw``, ``dwi``, ``adc``), or ``pet_<tracer>`` for ``_trc-<tracer>_pet``. Derivative
files are keyed ``<pipeline>_[<desc>_]<suffix>`` (parts left out when absent): ``_msk``
(binary) and ``_dseg`` (integer) NIfTIs become label maps (``lesions_msk``, or ``msk`` in
ISLES'22), everything else (``lesions_boxes``, ``truth_atrophy_map``, ``truth_effects``) is
recorded by path in ``subject["files"]``. Files that match no rule are listed in
``BIDSDataset.skipped`` with the reason.
"""

from __future__ import annotations

import functools
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torchio as tio

from cogimg.data.nifti import NiftiSummary, inspect_nifti
from cogimg.data.validation import (
    DatasetError,
    Problem,
    check_column_names,
    check_coverage,
    check_file,
    check_label_grid,
    check_required_modalities,
    load_participants,
)
from cogimg.diseases import normalise_diagnosis

__all__ = ["BIDSDataset", "DatasetError", "Problem", "forget_inspections", "load_dataset"]

IMAGE_SUFFIXES = ("T1w", "T2w", "FLAIR", "T2starw", "dwi", "adc", "pet")
#: Suffixes are matched in any case (ISLES'22 writes ``_flair``): lower case -> the key's spelling.
_IMAGE_SUFFIX_SPELLINGS = {s.lower(): s for s in IMAGE_SUFFIXES}
LABEL_SUFFIXES = ("msk", "dseg")
#: BIDS datatype folders holding the images above; other datatypes are skipped whole.
IMAGE_DATATYPES = frozenset({"anat", "dwi", "pet"})
OTHER_DATATYPES = frozenset({"func", "fmap", "perf", "beh", "eeg", "meg", "ieeg", "nirs", "micr"})
#: Files and folders BIDS defines that cogimg does not read (skipped without a warning).
METADATA_FILES = frozenset({"dataset_description.json", "participants.json", "README",
                            "README.md", "README.txt", "CHANGES", "LICENSE", "CITATION.cff"})
METADATA_DIRS = frozenset({"code", "sourcedata", "stimuli", "phenotype"})
_NAME = re.compile(r"^(?P<entities>(?:[A-Za-z0-9]+-[A-Za-z0-9]+_)+)(?P<suffix>[A-Za-z0-9]+)"
                   r"(?P<ext>\..+)$")
#: Session maps: subject_id -> role ("image", "unloaded", "label", "file") -> key -> entry.
Sessions = dict[str, dict[str, dict[str, "_Entry"]]]


@dataclass
class BIDSDataset:
    """A loaded dataset: subjects, their participants table, and everything found wrong.

    Attributes:
        root: the dataset folder.
        subjects: one ``tio.Subject`` per participant-session, sorted by ``subject_id``.
        participants: ``participants.tsv`` rows of the participants in ``subjects``, indexed
            by ``participant_id`` (diagnosis normalised, numeric columns float, NaN = n/a).
        problems: every error and warning (errors only appear when ``strict=False``).
        skipped: ``(path relative to root, reason)`` for every file or folder not loaded.
        summaries: absolute path → :class:`NiftiSummary` of every NIfTI that was inspected
            (shape, affine, spacing in mm, label values), so reports need not re-read headers.
    """

    root: Path
    subjects: list[tio.Subject]
    participants: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    summaries: dict[str, NiftiSummary] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self) -> Iterator[tio.Subject]:
        return iter(self.subjects)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def modalities(self) -> list[str]:
        """Sorted modality keys present in at least one subject."""
        return sorted({m for s in self.subjects for m in s["modalities"]})

    def label_keys(self) -> list[str]:
        """Sorted label-map keys present in at least one subject."""
        return sorted({k for s in self.subjects for k in s["labels"]})

    def subject(self, subject_id: str) -> tio.Subject:
        for s in self.subjects:
            if s["subject_id"] == subject_id:
                return s
        raise KeyError(f"no subject {subject_id!r} in {self.root}")


@dataclass(frozen=True)
class _Entry:
    """One recognised file: which participant-session it belongs to and under which key."""

    path: Path
    rel: str
    participant_id: str
    session_id: str
    role: str  # "image" | "label" | "file"
    key: str
    kind: str  # "image" | "msk" | "dseg" | "file"

    @property
    def subject_id(self) -> str:
        if self.session_id:
            return f"{self.participant_id}_{self.session_id}"
        return self.participant_id


@dataclass
class _Scan:
    entries: list[_Entry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def skip(self, rel: str, reason: str, *, warn: bool) -> None:
        """List a file or folder as not loaded; ``warn`` for ones that match no known pattern."""
        self.skipped.append((rel, reason))
        if warn:
            self.problems.append(Problem("warning", rel, f"skipped: {reason}"))


def load_dataset(root: str | Path, *, required_modalities: Iterable[str] = (),
                 modalities: Iterable[str] | None = None, diagnoses: Iterable[str] | None = None,
                 strict: bool = True, validate_voxels: bool = True,
                 num_workers: int | None = None) -> BIDSDataset:
    """Load and validate a BIDS-like dataset.

    Args:
        root: dataset folder (holding ``participants.tsv``).
        required_modalities: every subject-session must have these modality keys.
        modalities: load only these modality keys (plus the required ones); ``None`` = all.
            Sessions with none of them are left out; labels are still checked against the
            grids of every image of their session.
        diagnoses: keep only participants with these diagnoses (any case; ``ValueError`` on
            an unknown one).
        strict: raise :class:`DatasetError` listing every problem if any is an error.
            Otherwise return the dataset with ``problems`` recorded and the subjects
            concerned excluded (each exclusion is listed as a warning).
        validate_voxels: decode every NIfTI to check for truncation, NaN/Inf and label
            values (read once per file, threaded); ``False`` checks headers only.
        num_workers: threads that read files; default: the usable CPUs, at most 8.

    Each subject holds ``tio.ScalarImage`` per modality and ``tio.LabelMap`` per label key
    (lazily loaded), plus metadata: ``subject_id`` (``sub-X`` or ``sub-X_ses-Y``),
    ``participant_id``, ``session_id`` (``""`` if none), ``diagnosis``, ``site``, every other
    ``participants.tsv`` column (float with NaN for numbers, ``"n/a"`` for missing text),
    ``modalities`` and ``labels`` (tuples of keys) and ``files`` (key → path string, with
    the same keys in every subject of the dataset, ``""`` where a subject lacks that file,
    so batches collate).
    """
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a directory")
    required = tuple(required_modalities)
    wanted = None if modalities is None else set(modalities) | set(required)
    wanted_dx = None if diagnoses is None else {normalise_diagnosis(d) for d in diagnoses}

    table, problems = load_participants(root / "participants.tsv")
    scan = _scan(root)
    problems += scan.problems
    entries = scan.entries
    if table is not None:
        # resting-state BOLD counts as a participant's images (cogimg.data.func reads it)
        func = {p.name for p in root.glob("sub-*") if p.is_dir()
                and next(p.glob("**/func/*_bold.nii*"), None) is not None}
        problems += check_coverage(table.index, {e.participant_id for e in entries} | func)
        if wanted_dx is not None:
            table = table[table["diagnosis"].isin(wanted_dx)]
            entries = [e for e in entries if e.participant_id in table.index]
        keys = {e.key for e in entries if e.role != "file"}
        table, clashes = check_column_names(table, keys, lambda c: hasattr(tio.Subject, c))
        problems += clashes
    sessions = _group_sessions(entries, wanted, problems)

    to_read = [e for r in sessions.values() for e in [*r["image"].values(), *r["label"].values()]]
    headers = [e for r in sessions.values() for e in r["unloaded"].values()]
    summaries = _inspect_all(to_read, validate_voxels, num_workers)
    summaries |= _inspect_all(headers, False, num_workers)
    for sid, roles in sorted(sessions.items()):
        problems += _check_session(sid, roles, summaries, required)
    if strict and any(p.severity == "error" for p in problems):
        raise DatasetError(root, problems)

    subject_ids = [] if table is None else _usable_sessions(sessions, table, problems)
    file_keys = sorted({k for sid in subject_ids for k in sessions[sid]["file"]})
    subjects = [_make_subject(sessions[sid], table, file_keys) for sid in subject_ids]
    if table is None:
        participants = pd.DataFrame(columns=["diagnosis", "site"])
    else:
        participants = table.loc[sorted({s["participant_id"] for s in subjects})]
    participants.index.name = "participant_id"
    return BIDSDataset(root, subjects, participants, problems, scan.skipped,
                       {str(path): summary for path, summary in summaries.items()})


def _group_sessions(entries: list[_Entry], wanted: set[str] | None,
                    problems: list[Problem]) -> Sessions:
    """Entries by subject-session, role and key; a second file for one key is an error."""
    sessions: Sessions = defaultdict(lambda: defaultdict(dict))
    for e in entries:
        # images left out by `modalities` still give their grid to label checks, unloaded
        unloaded = e.role == "image" and wanted is not None and e.key not in wanted
        slot = sessions[e.subject_id]["unloaded" if unloaded else e.role]
        if e.key in slot:
            problems.append(Problem("error", e.rel, f"{e.key!r} of {e.subject_id} is also given "
                                    f"by {slot[e.key].rel}; one file per key", e.subject_id))
        else:
            slot[e.key] = e
    return sessions


def _usable_sessions(sessions: Sessions, table: pd.DataFrame, problems: list[Problem]) -> list[str]:
    """Sessions with a participants row, a loaded image and no error; exclusions are listed."""
    bad = {p.subject_id for p in problems if p.severity == "error"}
    usable = []
    for sid, roles in sorted(sessions.items()):
        pid = next(e for r in roles.values() for e in r.values()).participant_id
        if pid not in table.index or not roles["image"]:
            continue  # no row: an error from check_coverage; no image: none of `modalities`
        if sid in bad or pid in bad:
            problems.append(Problem("warning", sid, "excluded from the dataset because of the "
                                    "error(s) above"))
        else:
            usable.append(sid)
    return usable


def _inspect_all(entries: list[_Entry], read_voxels: bool,
                 num_workers: int | None) -> dict[Path, NiftiSummary]:
    """Inspect every NIfTI once, in threads (zlib decoding and numpy release the GIL)."""
    with ThreadPoolExecutor(num_workers or min(8, _usable_cpus())) as pool:
        results = pool.map(lambda e: _inspect(e.path, e.role == "label", read_voxels), entries)
        return {e.path: s for e, s in zip(entries, results, strict=True)}


def _inspect(path: Path, is_label: bool, read_voxels: bool) -> NiftiSummary:
    """:func:`inspect_nifti`, remembered for this process while the file's inode, size,
    modification and change times stay the same (a study or a federated run sets up the same
    dataset for every fit); a file that cannot be stat-ed is inspected afresh."""
    try:
        st = os.stat(path)
    except OSError:
        return inspect_nifti(path, is_label=is_label, read_voxels=read_voxels)
    return _inspect_unchanged(path, is_label, read_voxels,
                              (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


@functools.lru_cache(maxsize=1 << 14)
def _inspect_unchanged(path: Path, is_label: bool, read_voxels: bool,
                       stamp: tuple[int, ...]) -> NiftiSummary:
    return inspect_nifti(path, is_label=is_label, read_voxels=read_voxels)


def forget_inspections() -> None:
    """Forget every file inspection this process remembers, so the next :func:`load_dataset`
    reads each NIfTI again (what a benchmark of the reads needs)."""
    _inspect_unchanged.cache_clear()


def _usable_cpus() -> int:
    """CPUs this process may run on (respects taskset / cgroup pinning where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _check_session(sid: str, roles: dict[str, dict[str, _Entry]],
                   summaries: dict[Path, NiftiSummary], required: tuple[str, ...]) -> list[Problem]:
    """File checks, label grids against every image of the session, required modalities."""
    problems = []
    for e in roles["image"].values():
        problems += check_file(summaries[e.path], e.rel, "image", sid)
    grids = {k: summaries[e.path] for r in ("image", "unloaded") for k, e in roles[r].items()}
    for e in roles["label"].values():
        problems += check_file(summaries[e.path], e.rel, e.kind, sid)
        problems += check_label_grid(summaries[e.path], e.rel, grids, sid)
    if not grids:
        found = ", ".join(sorted(roles["label"]) + sorted(roles["file"]))
        problems.append(Problem("error", sid, f"{sid} has derivatives ({found}) but no image", sid))
    else:
        problems += check_required_modalities(sid, roles["image"], required)
    return problems


def _make_subject(roles: dict[str, dict[str, _Entry]], table: pd.DataFrame,
                  file_keys: list[str]) -> tio.Subject:
    first = next(iter(roles["image"].values()))
    meta: dict[str, object] = {"subject_id": first.subject_id,
                               "participant_id": first.participant_id,
                               "session_id": first.session_id}
    for column, value in table.loc[first.participant_id].items():
        numeric = pd.api.types.is_float_dtype(table[column])
        meta[str(column)] = float(value) if numeric else str(value)
    images = {k: tio.ScalarImage(e.path) for k, e in sorted(roles["image"].items())}
    labels = {k: tio.LabelMap(e.path) for k, e in sorted(roles["label"].items())}
    files = {k: str(roles["file"][k].path) if k in roles["file"] else "" for k in file_keys}
    return tio.Subject(**images, **labels, **meta, modalities=tuple(images), labels=tuple(labels),
                       files=files)


# --------------------------------------------------------------------------- layout scan


def _scan(root: Path) -> _Scan:
    """Classify every file under ``root`` (no voxel reading)."""
    scan = _Scan()
    for top in sorted(root.iterdir()):
        if top.name == "participants.tsv":
            continue
        if top.is_dir() and top.name in ("rawdata", "derivatives"):
            _scan_container(root, top, "", top.name == "derivatives", scan)
        elif top.is_dir() and top.name.startswith("sub-"):
            _scan_subject(root, top, "", False, scan)
        else:
            _skip(root, top, scan)
    return scan


def _scan_container(root: Path, folder: Path, pipeline: str, derivative: bool,
                    scan: _Scan) -> None:
    """``rawdata/``, ``derivatives/`` or ``derivatives/<pipeline>/``: subject folders, metadata."""
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.startswith("sub-"):
            _scan_subject(root, child, pipeline, derivative, scan)
        elif derivative and not pipeline and child.is_dir() and not child.name.startswith("."):
            _scan_container(root, child, child.name, True, scan)
        elif pipeline and not child.name.startswith("."):  # e.g. truth/sites.json, a README
            scan.skip(child.relative_to(root).as_posix(),
                      f"pipeline-level file of derivatives/{pipeline}/ (not read)", warn=False)
        else:
            _skip(root, child, scan)


def _skip(root: Path, path: Path, scan: _Scan) -> None:
    """Skip a file or folder outside the subject folders, saying why."""
    rel = path.relative_to(root).as_posix()
    if path.name.startswith("."):
        scan.skip(rel, "hidden file or folder", warn=False)
    elif path.name in METADATA_FILES or path.name.endswith(("_sessions.tsv", "_scans.tsv")):
        scan.skip(rel, "dataset metadata (not read)", warn=False)
    elif path.is_dir() and path.name in METADATA_DIRS:
        scan.skip(rel, f"BIDS {path.name}/ folder (not read)", warn=False)
    else:
        scan.skip(rel, "unknown file or folder: not part of the BIDS layout cogimg reads",
                  warn=True)


def _scan_subject(root: Path, sub_dir: Path, pipeline: str, derivative: bool,
                  scan: _Scan) -> None:
    for child in sorted(sub_dir.iterdir()):
        if child.is_dir() and child.name.startswith("ses-"):
            for grandchild in sorted(child.iterdir()):
                _scan_item(root, grandchild, sub_dir.name, child.name, pipeline, derivative, scan)
        else:
            _scan_item(root, child, sub_dir.name, "", pipeline, derivative, scan)


def _scan_item(root: Path, path: Path, pid: str, ses: str, pipeline: str, derivative: bool,
               scan: _Scan) -> None:
    rel = path.relative_to(root).as_posix()
    if not path.is_dir():
        _classify_file(root, path, pid, ses, pipeline, derivative, scan)
    elif path.name in IMAGE_DATATYPES:
        for f in sorted(path.iterdir()):
            if f.is_dir():
                scan.skip(f.relative_to(root).as_posix(),
                          "unknown folder inside a datatype folder", warn=True)
            else:
                _classify_file(root, f, pid, ses, pipeline, derivative, scan)
    elif path.name in OTHER_DATATYPES:
        scan.skip(rel, f"BIDS datatype {path.name}/ is not used by cogimg", warn=False)
    else:
        scan.skip(rel, "unknown folder: expected ses-<label>/ or anat/, dwi/, pet/", warn=True)


def _classify_file(root: Path, path: Path, pid: str, ses: str, pipeline: str, derivative: bool,
                   scan: _Scan) -> None:
    """Record ``path`` as an image, label map or derivative file of ``pid``/``ses``, or skip it."""
    rel = path.relative_to(root).as_posix()
    match = _NAME.match(path.name)
    if path.name.startswith(".") or path.name.endswith(("_sessions.tsv", "_scans.tsv")):
        _skip(root, path, scan)
    elif match is None:
        scan.skip(rel, "unknown file name: expected sub-<label>[_ses-<label>]"
                  "[_<key>-<value>…]_<suffix>.<ext>", warn=True)
    else:
        entities = dict(pair.split("-", 1) for pair in match["entities"].rstrip("_").split("_"))
        _record(scan, _Entry(path, rel, pid, ses, "", "", ""), entities, match["suffix"],
                match["ext"], pipeline, derivative)


def _record(scan: _Scan, where: _Entry, entities: dict[str, str], suffix: str, ext: str,
            pipeline: str, derivative: bool) -> None:
    """Key a BIDS-named file (``where`` gives its path and folder's participant and session)."""
    path, rel, pid, ses = where.path, where.rel, where.participant_id, where.session_id
    named_ses = f"ses-{entities['ses']}" if "ses" in entities else ""
    ext = ext.lower()  # ISLES'22 and scanners write .nii.gz, .NII, .nii.GZ …
    nifti = ext in (".nii", ".nii.gz")
    suffix = _IMAGE_SUFFIX_SPELLINGS.get(suffix.lower(), suffix)
    if f"sub-{entities.get('sub', '')}" != pid or named_ses != ses:
        folder = f"{pid}/{ses}/" if ses else f"{pid}/"
        scan.problems.append(Problem("error", rel, f"file name entities (sub-{entities.get('sub')},"
                                     f" ses-{entities.get('ses', '<none>')}) disagree with its "
                                     f"folder {folder}", pid))
    elif not nifti and (ext in (".bval", ".bvec") or (ext == ".json" and _has_nifti_sibling(path))):
        scan.skip(rel, "sidecar metadata (not read)", warn=False)
    elif derivative:
        key = "_".join(part for part in (pipeline, entities.get("desc", ""), suffix) if part)
        role, kind = ("label", suffix) if nifti and suffix in LABEL_SUFFIXES else ("file", "file")
        scan.entries.append(_Entry(path, rel, pid, ses, role, key, kind))
    elif not nifti:
        scan.skip(rel, f"unknown raw file type {ext!r}: expected .nii or .nii.gz images", warn=True)
    elif suffix not in IMAGE_SUFFIXES:
        scan.skip(rel, f"unknown image suffix {suffix!r}: expected one of {list(IMAGE_SUFFIXES)}",
                  warn=True)
    else:
        key = f"pet_{entities['trc']}" if suffix == "pet" and "trc" in entities else suffix
        scan.entries.append(_Entry(path, rel, pid, ses, "image", key, "image"))


def _has_nifti_sibling(path: Path) -> bool:
    stem = path.name[: -len(".json")]
    return path.with_name(stem + ".nii.gz").exists() or path.with_name(stem + ".nii").exists()
