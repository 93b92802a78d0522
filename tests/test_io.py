"""Atomic writes (cogimg.io): a target is either untouched or complete, never partial."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cogimg.io import atomic_path, atomic_save_nifti, atomic_write_text


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
