"""Every validation rule: one clear problem naming the file or key (see cogimg.data.validation)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from cogimg.data.bids import DatasetError, forget_inspections, load_dataset
from cogimg.data.nifti import inspect_nifti
from cogimg.data.validation import Problem

T1_01 = "sub-01/anat/sub-01_T1w.nii.gz"
MSK_04 = "derivatives/lesions/sub-04/dwi/sub-04_msk.nii.gz"
#: the grid of every file in the ``bids_root`` fixture (tests/conftest.py): 2 mm, origin -12 mm
FIXTURE_AFFINE = np.array([[2.0, 0, 0, -12], [0, 2.0, 0, -12], [0, 0, 2.0, -12], [0, 0, 0, 1]])


def errors_of(root, **kwargs) -> list[Problem]:
    return load_dataset(root, strict=False, **kwargs).errors


def only_error(root, **kwargs) -> Problem:
    errors = errors_of(root, **kwargs)
    assert len(errors) == 1, errors
    return errors[0]


# 1. unreadable / truncated / not a NIfTI ---------------------------------------------------


def test_truncated_gz_is_caught_by_reading_voxels(bids_root):
    path = bids_root / T1_01
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # header intact, data cut
    err = only_error(bids_root)
    assert err.path_or_key == T1_01 and err.subject_id == "sub-01"
    assert err.message.startswith("cannot read voxel data (truncated or corrupt file?)")
    # a header-only scan cannot see it: that is what validate_voxels=True is for
    assert errors_of(bids_root, validate_voxels=False) == []


def test_a_file_changed_after_a_clean_load_is_inspected_again(bids_root, nifti_writer):
    """Summaries are remembered per process; a rewrite (same path) must not reuse them."""
    assert errors_of(bids_root) == []
    nifti_writer(bids_root / T1_01, np.full((12, 12, 12), np.nan, np.float32))
    assert "NaN" in only_error(bids_root).message
    raw = (bids_root / T1_01).read_bytes()
    (bids_root / T1_01).write_bytes(raw[:100])
    assert only_error(bids_root).message.startswith("cannot read as NIfTI")


def test_forgotten_inspections_are_read_again(bids_root, monkeypatch):
    from cogimg.data import bids

    reads = []
    monkeypatch.setattr(bids, "inspect_nifti", lambda path, **kw: reads.append(path) or inspect_nifti(path, **kw))
    forget_inspections()
    assert errors_of(bids_root) == []
    first = len(reads)
    assert first > 0 and errors_of(bids_root) == [] and len(reads) == first  # remembered
    forget_inspections()
    assert errors_of(bids_root) == [] and len(reads) == 2 * first


def test_truncated_uncompressed_nii(bids_root, nifti_writer):
    path = nifti_writer(
        bids_root / "sub-06" / "anat" / "sub-06_T1w.nii", np.ones((12, 12, 12), np.float32)
    )
    (bids_root / "sub-06" / "anat" / "sub-06_T1w.nii.gz").unlink()
    path.write_bytes(path.read_bytes()[:1000])
    err = only_error(bids_root)
    assert err.path_or_key == "sub-06/anat/sub-06_T1w.nii"
    assert "truncated" in err.message


def test_not_a_nifti(bids_root):
    (bids_root / T1_01).write_bytes(gzip.compress(b"this is a text file, not an image" * 20))
    err = only_error(bids_root)
    assert err.path_or_key == T1_01 and err.message.startswith("cannot read as NIfTI")


def test_2d_image_is_rejected(bids_root, nifti_writer):
    nifti_writer(bids_root / T1_01, np.ones((12, 12), np.float32), np.eye(4))
    assert (
        only_error(bids_root).message
        == "expected a 3D (X, Y, Z) or 4D (X, Y, Z, C) image, got shape (12, 12)"
    )


# 2. NaN / Inf --------------------------------------------------------------------------------


def test_nan_and_inf_voxels(bids_root, nifti_writer):
    data = np.ones((12, 12, 12), np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = -np.inf
    nifti_writer(bids_root / T1_01, data)
    err = only_error(bids_root)
    assert (err.path_or_key, err.message) == (T1_01, "3 NaN and 1 Inf voxels")
    summary = inspect_nifti(bids_root / T1_01)
    assert summary.intensity_range == (1.0, 1.0)  # range of the finite voxels


# 3. label values -----------------------------------------------------------------------------


def test_msk_must_be_binary(bids_root, nifti_writer):
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[2, 2, 2], mask[3, 3, 3] = 1, 2
    nifti_writer(bids_root / MSK_04, mask)
    err = only_error(bids_root)
    assert (err.path_or_key, err.message) == (
        MSK_04,
        "label values {0, 1, 2} but a _msk must be binary {0, 1}",
    )


def test_float_msk_with_values_0_and_1_is_fine_but_fractions_are_not(bids_root, nifti_writer):
    mask = np.zeros((12, 12, 12), np.float32)
    mask[2, 2, 2] = 1.0
    nifti_writer(bids_root / MSK_04, mask)
    assert errors_of(bids_root) == []
    mask[4, 4, 4] = 0.5
    nifti_writer(bids_root / MSK_04, mask)
    assert (
        only_error(bids_root).message == "label values {0, 0.5, 1} but a _msk must be binary {0, 1}"
    )


def test_dseg_must_hold_non_negative_integers(bids_root, nifti_writer):
    dseg = "derivatives/regions/sub-06/anat/sub-06_dseg.nii.gz"
    labels = np.zeros((12, 12, 12), np.int16)
    labels[:2] = 3
    nifti_writer(bids_root / dseg, labels)
    ds = load_dataset(bids_root)
    assert ds.subject("sub-06")["labels"] == ("regions_dseg",)
    assert ds.summaries[str(bids_root / dseg)].label_values == (0.0, 3.0)
    labels[3, :, :] = np.arange(144).reshape(12, 12)  # instance maps may hold many labels
    nifti_writer(bids_root / dseg, labels)
    assert errors_of(bids_root) == []
    labels[5, 5, 5] = -1
    labels[3] = 0
    nifti_writer(bids_root / dseg, labels)
    err = only_error(bids_root)
    assert (err.path_or_key, err.message) == (
        dseg,
        "label values {-1, 0, 3} but a _dseg must hold non-negative integers",
    )


def test_label_map_must_be_3d(bids_root, nifti_writer):
    nifti_writer(bids_root / MSK_04, np.zeros((12, 12, 12, 2), np.uint8))
    assert (
        only_error(bids_root).message
        == "a label map must be 3D (X, Y, Z), got shape (12, 12, 12, 2)"
    )


# 4. image-label grids ------------------------------------------------------------------------


def test_label_on_another_shape(bids_root, nifti_writer):
    nifti_writer(bids_root / MSK_04, np.zeros((12, 12, 10), np.uint8))
    err = only_error(bids_root)
    assert err.path_or_key == MSK_04
    assert err.message == (
        "grid (shape (12, 12, 10)) matches no image of sub-04: "
        "adc has shape (12, 12, 12); dwi has shape (12, 12, 12)"
    )


def test_label_with_a_flipped_affine(bids_root, nifti_writer):
    flipped = FIXTURE_AFFINE.copy()
    flipped[0, 0], flipped[0, 3] = -2.0, 10.0
    nifti_writer(bids_root / MSK_04, np.zeros((12, 12, 12), np.uint8), flipped)
    err = only_error(bids_root)
    assert err.message == (
        "grid (shape (12, 12, 12)) matches no image of sub-04: "
        "adc affine differs by up to 4 in rotation/zoom and 22 mm in translation; "
        "dwi affine differs by up to 4 in rotation/zoom and 22 mm in translation"
    )


def test_affine_within_tolerance_is_the_same_grid(bids_root, nifti_writer):
    nudged = FIXTURE_AFFINE.copy()
    nudged[:3, 3] += 5e-4  # float32 round-off level, not misregistration
    nifti_writer(bids_root / MSK_04, np.zeros((12, 12, 12), np.uint8), nudged)
    assert errors_of(bids_root) == []


def test_label_needs_one_matching_image_only(bids_root, nifti_writer):
    """A FLAIR on its own grid next to a matching DWI is fine: images of a session may differ."""
    nifti_writer(
        bids_root / "sub-04" / "anat" / "sub-04_FLAIR.nii.gz",
        np.ones((24, 24, 4), np.float32),
        np.diag([1.0, 1.0, 6.0, 1.0]),
    )
    ds = load_dataset(bids_root)
    assert ds.subject("sub-04")["modalities"] == ("FLAIR", "adc", "dwi")


def test_derivatives_without_any_image(bids_root, nifti_writer):
    nifti_writer(
        bids_root / "derivatives" / "lesions" / "sub-01" / "ses-9" / "sub-01_ses-9_msk.nii.gz",
        np.zeros((12, 12, 12), np.uint8),
    )
    err = only_error(bids_root)
    assert (err.path_or_key, err.message) == (
        "sub-01_ses-9",
        "sub-01_ses-9 has derivatives (lesions_msk) but no image",
    )


# 5-9. participants.tsv and coverage ------------------------------------------------------------


def append_row(root, row: str) -> None:
    with open(root / "participants.tsv", "a", encoding="utf-8") as f:
        f.write(row + "\n")


def test_duplicate_participant_ids(bids_root):
    append_row(bids_root, "sub-02\tCN\tB\t50\tF\t30\tn/a")
    err = only_error(bids_root)
    assert (err.path_or_key, err.message) == (
        "participants.tsv: sub-02",
        "duplicate participant_id on lines [3, 8]",
    )
    ds = load_dataset(bids_root, strict=False)
    assert "sub-02" not in ds.participants.index


def test_participant_without_images_is_an_error(bids_root):
    append_row(bids_root, "sub-99\tCN\tA\t50\tF\t30\tn/a")
    err = only_error(bids_root)  # never silently dropped
    assert (err.path_or_key, err.message) == (
        "participants.tsv: sub-99",
        "participant has a row but no image files (remove the row or add the images)")


def test_images_without_participant_row_are_an_error(bids_root):
    text = (bids_root / "participants.tsv").read_text(encoding="utf-8").splitlines()
    (bids_root / "participants.tsv").write_text(
        "\n".join(line for line in text if not line.startswith("sub-06")) + "\n", encoding="utf-8"
    )
    err = only_error(bids_root)
    assert (err.path_or_key, err.message) == (
        "sub-06",
        (
            "files found for sub-06 but participants.tsv has no row for it "
            "(its diagnosis and site are unknown)"
        ),
    )
    assert "sub-06" not in [
        s["participant_id"] for s in load_dataset(bids_root, strict=False).subjects
    ]


def test_unknown_diagnosis(bids_root):
    text = (bids_root / "participants.tsv").read_text(encoding="utf-8").replace("sub-06\tCN", "sub-06\tdementia")
    (bids_root / "participants.tsv").write_text(text, encoding="utf-8")
    err = only_error(bids_root)
    assert err.path_or_key == "participants.tsv: sub-06"
    assert (
        err.message
        == "unknown diagnosis 'dementia'; expected one of ['CN', 'MCI', 'AD', 'PD', 'stroke']"
    )


def test_missing_required_modality_names_subject_and_found(bids_root):
    errors = errors_of(bids_root, diagnoses=["stroke"], required_modalities=("dwi", "FLAIR"))
    assert [e.message for e in errors] == [
        "missing required modality 'FLAIR' for sub-04 (found: adc, dwi)",
        "missing required modality 'FLAIR' for sub-05 (found: adc, dwi)",
    ]


def test_missing_participants_tsv(bids_root):
    (bids_root / "participants.tsv").unlink()
    with pytest.raises(DatasetError, match="participants.tsv: participants.tsv is missing"):
        load_dataset(bids_root)
    ds = load_dataset(bids_root, strict=False)
    assert ds.subjects == [] and [e.path_or_key for e in ds.errors] == ["participants.tsv"]


def test_participants_tsv_without_required_columns(bids_root):
    (bids_root / "participants.tsv").write_text("participant_id\tgroup\nsub-01\tCN\n", encoding="utf-8")
    err = only_error(bids_root)
    assert (
        err.message == "missing column(s) ['diagnosis']; found columns ['participant_id', 'group']"
    )


def test_malformed_participant_id_and_reserved_columns(bids_root):
    append_row(bids_root, "07\tCN\tA\t50\tF\t30\tn/a")
    errors = errors_of(bids_root)
    assert [(e.path_or_key, e.message) for e in errors] == [
        ("participants.tsv:8", "participant_id '07' must look like 'sub-<label>'")
    ]
    text = (bids_root / "participants.tsv").read_text(encoding="utf-8").replace("\tNIHSS", "\tfiles", 1)
    (bids_root / "participants.tsv").write_text(text, encoding="utf-8")
    assert any("column(s) ['files'] are reserved" in e.message for e in errors_of(bids_root))


def test_column_that_would_shadow_a_subject_method(bids_root):
    text = (bids_root / "participants.tsv").read_text(encoding="utf-8").replace("\tNIHSS", "\tplot", 1)
    (bids_root / "participants.tsv").write_text(text, encoding="utf-8")
    err = only_error(bids_root)
    assert (
        err.message
        == "column 'plot' cannot be a subject key: it is a tio.Subject attribute; not loaded"
    )
    assert "plot" not in load_dataset(bids_root, strict=False).subject("sub-01")


def test_missing_site_column_is_a_warning(bids_root):
    (bids_root / "participants.tsv").write_text(
        "participant_id\tdiagnosis\n" + "".join(f"sub-0{i}\tCN\n" for i in range(1, 7)), encoding="utf-8"
    )
    ds = load_dataset(bids_root)
    assert ds.subject("sub-01")["site"] == "n/a"
    assert [p.path_or_key for p in ds.warnings] == ["participants.tsv"]


# inspect_nifti unit checks -------------------------------------------------------------------


def test_inspect_nifti_summary(bids_root):
    s = inspect_nifti(bids_root / MSK_04, is_label=True)
    assert (
        s.ok and s.shape == (12, 12, 12) and s.spacing_mm == (2.0, 2.0, 2.0) and s.dtype == "uint8"
    )
    assert s.foreground_voxels == 8 and s.label_values == (0.0, 1.0) and s.voxel_volume_ml == 0.008
    header_only = inspect_nifti(bids_root / MSK_04, is_label=True, read_voxels=False)
    assert header_only.ok and not header_only.voxels_read and header_only.foreground_voxels is None
    assert inspect_nifti(bids_root / "nope.nii.gz").error.startswith(
        "cannot read as NIfTI: FileNotFoundError"
    )
