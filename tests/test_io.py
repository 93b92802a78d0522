"""Atomic writes (cogimg.io): a target is either untouched or complete, never partial."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from cogimg.io import (
    MARKER,
    atomic_directory,
    atomic_path,
    atomic_save_nifti,
    atomic_write_text,
    remove_stale_temporaries,
)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_text_creates_parent_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "table.tsv"
    assert atomic_write_text(target, "x\ty\n1\t2\r\n") == target
    assert target.read_bytes() == b"x\ty\n1\t2\r\n"  # line ends written as given
    assert _names(target.parent) == ["table.tsv"]


def test_write_text_replaces_existing_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old", encoding="utf-8")
    atomic_write_text(str(target), "new ü")
    assert target.read_text(encoding="utf-8") == "new ü"
    assert _names(tmp_path) == ["r.json"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, error):
    target = tmp_path / "split.json"
    target.write_text("complete old content", encoding="utf-8")
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_text("half of the new", encoding="utf-8")
        raise error("writer crashed")
    assert target.read_text(encoding="utf-8") == "complete old content"
    assert _names(tmp_path) == ["split.json"]


def test_failed_first_write_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "mask.nii.gz"
    with pytest.raises(ValueError, match="boom"), atomic_path(target, suffix=".nii.gz") as tmp:
        assert tmp.exists()  # created empty, so no other writer can take the name
        raise ValueError("boom")
    assert not target.exists()
    assert _names(target.parent) == []


def test_temp_name_is_hidden_sibling_with_suffix(tmp_path):
    target = tmp_path / "fig.png"
    with atomic_path(target, suffix=".png") as first, atomic_path(target, suffix=".png") as second:
        for tmp in (first, second):
            assert tmp.parent == tmp_path
            assert tmp.name.startswith(".fig.png.") and tmp.name.endswith(".tmp.png")
        assert first != second  # two writers of one target never share a temporary file
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert target.read_bytes() == b"1"  # the last writer to finish wins, whole
    with atomic_path(tmp_path / "plain.txt") as tmp:
        assert tmp.name.endswith(".tmp")


def test_permissions_match_a_plain_open(tmp_path):
    reference = tmp_path / "plain.txt"
    reference.write_text("x", encoding="utf-8")
    target = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert target.stat().st_mode == reference.stat().st_mode  # not mkstemp's 0o600


@pytest.mark.parametrize("name", ["sub-01_msk.nii.gz", "sub-01_msk.nii"])
def test_nifti_round_trip(tmp_path, name):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-4.0, 5.0, 6.0]
    target = atomic_save_nifti(nib.Nifti1Image(data, affine), tmp_path / "sub" / name)
    assert target == tmp_path / "sub" / name
    # nibabel picked the format from the temporary name: gzip magic only for .nii.gz
    assert (target.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    loaded = nib.load(target)
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), data)
    np.testing.assert_allclose(loaded.affine, affine)
    assert _names(target.parent) == [name]


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_atomic_directory_marks_its_folder_and_replaces_only_marked_ones(tmp_path):
    with atomic_directory(tmp_path / "case") as tmp:
        (tmp / "a.txt").write_text("1", encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == [MARKER, "a.txt"]
    with pytest.raises(FileExistsError, match="pass --overwrite"), atomic_directory(tmp_path / "case"):
        pass
    with atomic_directory(tmp_path / "case", overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2", encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == [MARKER, "b.txt"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("user", encoding="utf-8")
    with pytest.raises(FileExistsError, match=f"{foreign}.*did not write"), \
            atomic_directory(foreign, overwrite=True):
        pass
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "mine"]


def test_temporaries_of_killed_processes_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "out"
    dead = tmp_path / f".out.{_dead_pid()}.0123456789ab.tmp"
    dead_old = tmp_path / f".out.{_dead_pid()}.0123456789ab.old"
    live = tmp_path / f".out.{os.getpid()}.0123456789ab.tmp"
    unrelated = tmp_path / ".out.notes"
    for folder in (dead, dead_old, live, unrelated):
        folder.mkdir()
    assert sorted(remove_stale_temporaries(target)) == sorted([dead, dead_old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])
