"""Atomic file writes: a reader sees the old file or the complete new one, never half of it.

Every file cogimg writes (splits, cache config, metric tables, boxes, figures, predicted
masks, synthetic cohorts …) goes through :func:`atomic_path`: the writer fills a hidden
temporary file in the target's directory, which is flushed to disk and ``os.replace``d onto
the target only when the writer finished without error. ``os.replace`` is atomic because the
temporary file lies on the same file system as the target.

Example::

    with atomic_path("figures/dice.png", suffix=".png") as tmp:
        fig.savefig(tmp)        # matplotlib picks PNG from the temporary name
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nibabel is imported where it is used, so `cogimg --help` stays fast
    import nibabel as nib


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path`` and publish it there on success.

    The temporary file (``.NAME.<random>.tmp<suffix>``, created empty) lies in the same
    directory as ``path``; give ``suffix`` (e.g. ``".nii.gz"``, ``".png"``) when the writer
    picks its format from the file name. When the ``with`` block ends normally the file is
    fsynced and ``os.replace``d onto ``path`` (replacing an existing file); when it raises,
    the temporary file is removed and the exception propagates, leaving ``path`` untouched.
    Creates the parent directory. The file gets the permissions of a plain ``open()``
    (``0o666`` minus the umask), not ``tempfile.mkstemp``'s owner-only ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")
    # O_EXCL: two concurrent writers of the same target never share a temporary file.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8, line ends as given). Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return path


def atomic_save_nifti(image: nib.Nifti1Image, path: str | os.PathLike) -> Path:
    """``nib.save`` ``image`` to ``path`` atomically. Returns the path.

    The temporary name keeps the ``.nii.gz`` / ``.nii`` ending, from which nibabel picks the
    format and whether to gzip.
    """
    import nibabel as nib

    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(image, tmp)
    return path


#: Every folder cogimg publishes holds this file; ``--overwrite`` replaces only such folders.
MARKER = ".cogimg-output"


def mark_output(folder: str | os.PathLike) -> None:
    """Mark ``folder`` as written by cogimg (see :data:`MARKER`)."""
    (Path(folder) / MARKER).write_text("written by cogimg; --overwrite may replace this folder\n",
                                       encoding="utf-8")


def refuse_foreign_folder(path: str | os.PathLike, also_ours: Iterator[str] | tuple = ()) -> None:
    """``FileExistsError`` when ``path`` is a non-empty folder that cogimg did not write.

    cogimg's own folders hold :data:`MARKER` (or one of the file names in ``also_ours``,
    for outputs written before the marker existed); an empty folder may be replaced."""
    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        return
    if (path / MARKER).is_file() or any((path / name).is_file() for name in also_ours):
        return
    raise FileExistsError(f"{path} holds files cogimg did not write (no {MARKER}); --overwrite "
                          "replaces only cogimg's own outputs: move it away or choose another path")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary/old siblings of ``path`` (``.NAME.<pid>.<token>.tmp|old``)
    that a killed process left behind: those whose process no longer runs. Returns them."""
    import shutil

    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for sibling in path.parent.glob(f".{path.name}.*"):
        parts = sibling.name[len(path.name) + 2:].split(".")
        if len(parts) == 3 and parts[0].isdigit() and parts[2] in ("tmp", "old") \
                and not _pid_alive(int(parts[0])):
            shutil.rmtree(sibling, ignore_errors=True) if sibling.is_dir() else sibling.unlink()
            removed.append(sibling)
    return removed


def temporary_sibling(path: Path, kind: str = "tmp") -> Path:
    """``.NAME.<pid>.<token>.<kind>`` beside ``path`` (what :func:`remove_stale_temporaries`
    recognises)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.{kind}")


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary folder next to ``path``, renamed to ``path`` on success: a
    reader sees no folder, the old one or the complete new one, never a half-filled one.

    ``FileExistsError`` up front when ``path`` exists and not ``overwrite``, or when it is a
    folder cogimg did not write (:func:`refuse_foreign_folder`). With ``overwrite`` the old
    folder is moved aside, the new one renamed in, then the old one deleted. The new folder
    holds :data:`MARKER`. When the ``with`` block raises, the temporary folder is removed;
    temporary folders of killed runs are removed on the next call.
    """
    import shutil

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    refuse_foreign_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        mark_output(tmp)
        if path.exists():
            old = temporary_sibling(path, "old")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync(path: Path) -> None:
    # Flush the data to disk before the rename publishes it, so a power loss cannot leave
    # the new name pointing at an empty file. O_RDWR because Windows refuses fsync on a
    # read-only descriptor.
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["MARKER", "atomic_directory", "atomic_path", "atomic_save_nifti", "atomic_write_text",
           "mark_output", "refuse_foreign_folder", "remove_stale_temporaries", "temporary_sibling"]
