"""``cogimg check`` through ``cogimg.cli.main``: summary, problems, exit codes, options."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from cogimg.cli import main


def check(capsys, *args: str) -> tuple[int, str]:
    code = main(["check", *map(str, args)])
    return code, capsys.readouterr().out


def row(out: str, first_cell: str) -> list[str]:
    """Cells of the summary table row starting with ``first_cell`` (columns are 2+ spaces apart)."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    (match,) = [r for r in rows if r[0] == first_cell]
    return match


def test_valid_tree_summary_and_exit_zero(bids_root, capsys):
    code, out = check(capsys, bids_root)
    assert code == 0, out
    assert "7 subject-session(s) from 6 participant(s) loaded" in out
    assert row(out, "AD") == [
        "AD",
        "2",
        "3",
    ]  # participants sub-02, sub-03; sessions: sub-03 has two
    assert row(out, "B") == ["B", "3", "4"]
    assert row(out, "T1w") == ["T1w", "5", "12×12×12 [5]", "2×2×2 [5]"]
    # sub-04: 8 voxels, sub-05: 12 voxels of 2 mm (0.008 mL each); one component each
    assert row(out, "lesions_msk") == [
        "lesions_msk",
        "2",
        "2",
        "10 [8–12]",
        "0.08 [0.064–0.096]",
        "1",
    ]
    assert (
        "Skipped: 1 file(s) or folder(s)\n  dataset_description.json: dataset metadata (not read)"
        in out
    )
    assert out.rstrip().endswith("OK: no errors")


def test_required_modalities_fail_with_exit_one(bids_root, capsys):
    code, out = check(capsys, bids_root, "--required", "dwi,adc")
    assert code == 1
    assert "error: sub-01: missing required modality 'dwi' for sub-01 (found: T1w)" in out
    assert "warning: sub-01: excluded from the dataset because of the error(s) above" in out
    assert "2 subject-session(s) from 2 participant(s) loaded" in out
    assert out.rstrip().endswith("FAILED: fix the errors above")


def test_json_output_is_written(bids_root, tmp_path, capsys):
    out_json = tmp_path / "reports" / "check.json"
    code, _ = check(capsys, bids_root, "--out", out_json)
    assert code == 0
    report = json.loads(out_json.read_text(encoding="utf-8"))
    assert report["ok"] is True and report["sessions"] == 7 and report["participants"] == 6
    assert report["diagnoses"]["stroke"] == {"participants": 2, "sessions": 2}
    assert report["modalities"]["dwi"] == {
        "sessions": 2,
        "shapes": {"12×12×12": 2},
        "spacings_mm": {"2×2×2": 2},
    }
    assert report["labels"]["lesions_msk"]["per_subject"] == [
        {"subject_id": "sub-04", "voxels": 8, "volume_ml": 0.064, "components": 1},
        {"subject_id": "sub-05", "voxels": 12, "volume_ml": 0.096, "components": 1},
    ]
    assert [p.name for p in out_json.parent.iterdir()] == ["check.json"]  # no temp file left


def test_components_use_26_connectivity(bids_root, capsys, nifti_writer):
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[2, 2, 2] = mask[3, 3, 3] = 1  # touch at a corner: one 26-connected lesion
    mask[8, 8, 8] = 1  # a second, separate lesion
    nifti_writer(bids_root / "derivatives/lesions/sub-04/dwi/sub-04_msk.nii.gz", mask)
    code, _ = check(capsys, bids_root, "--out", bids_root.parent / "r.json")
    assert code == 0
    per = json.loads((bids_root.parent / "r.json").read_text(encoding="utf-8"))["labels"]["lesions_msk"][
        "per_subject"
    ]
    assert per[0] == {"subject_id": "sub-04", "voxels": 3, "volume_ml": 0.024, "components": 2}


def write_split(path, folds, test=()):
    path.write_text(json.dumps({"kind": "custom", "test": list(test), "folds": folds}), encoding="utf-8")
    return path


def test_split_without_leakage(bids_root, tmp_path, capsys):
    split = write_split(
        tmp_path / "split.json",
        [{"train": ["sub-01", "sub-02", "sub-03"], "val": ["sub-04", "sub-05"]}],
        test=["sub-06"],
    )
    code, out = check(capsys, bids_root, "--split", split)
    assert code == 0, out
    assert f"Split {split}: no leakage" in out


def test_split_with_leakage_names_participants(bids_root, tmp_path, capsys):
    split = write_split(
        tmp_path / "split.json",
        [{"name": "f0", "train": ["sub-01", "sub-03"], "val": ["sub-03", "sub-04"]}],
    )
    code, out = check(capsys, bids_root, "--split", split)
    assert code == 1
    assert "error: fold 'f0': in both train and val: sub-03" in out


def test_split_with_unknown_ids_and_bad_files(bids_root, tmp_path, capsys):
    split = write_split(
        tmp_path / "split.json", [{"train": ["sub-01", "sub-42"], "val": ["sub-02"]}]
    )
    code, out = check(capsys, bids_root, "--split", split)
    assert code == 1
    assert "1 participant_id value(s) in the split have no subject in the dataset: sub-42" in out
    code, out = check(capsys, bids_root, "--split", tmp_path / "missing.json")
    assert code == 1 and "split file" in out and "does not exist" in out


def test_headers_only_skips_voxel_checks(bids_root, capsys):
    t1 = bids_root / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    t1.write_bytes(t1.read_bytes()[:2000])  # header intact, voxels cut
    code, out = check(capsys, bids_root, "--headers-only")
    assert code == 0
    assert row(out, "lesions_msk") == ["lesions_msk", "2", "-", "-", "-", "-"]
    code, out = check(capsys, bids_root)
    assert code == 1 and "error: sub-01/anat/sub-01_T1w.nii.gz: cannot read voxel data" in out


def test_missing_root_is_one_clean_error(tmp_path, capsys):
    code = main(["check", str(tmp_path / "nowhere")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1  # nothing run
    assert err.startswith("cogimg check: error: dataset root") and "is not a directory" in err


@pytest.mark.real_data
def test_isles22_real_case(isles22_root, tmp_path, capsys):
    code, out = check(
        capsys, isles22_root, "--required", "dwi,adc", "--out", tmp_path / "isles.json"
    )
    assert code == 0, out
    assert row(out, "dwi") == ["dwi", "1", "112×112×73 [1]", "2×2×2 [1]"]
    assert row(out, "msk") == ["msk", "1", "1", "835", "6.68", "31"]
    report = json.loads((tmp_path / "isles.json").read_text(encoding="utf-8"))
    (lesion,) = report["labels"]["msk"]["per_subject"]
    # reference: ISLES'22 README of ../shared/data (6.68 mL, 31 components at 26-connectivity)
    assert lesion == {
        "subject_id": "sub-strokecase0001_ses-0001",
        "voxels": 835,
        "volume_ml": 6.68,
        "components": 31,
    }


@pytest.mark.real_data
def test_isles22_broken_copy_names_every_problem(isles22_root, tmp_path, capsys):
    root = tmp_path / "isles22"
    shutil.copytree(isles22_root, root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the shared copy is read-only
    ses = "sub-strokecase0001/ses-0001"
    dwi = root / "rawdata" / ses / "dwi" / "sub-strokecase0001_ses-0001_dwi.nii.gz"
    dwi.write_bytes(dwi.read_bytes()[:100_000])  # truncated download
    msk_path = root / "derivatives" / ses / "sub-strokecase0001_ses-0001_msk.nii.gz"
    msk = nib.load(msk_path)
    data = np.asanyarray(msk.dataobj).copy()
    data[data.nonzero()[0][0], data.nonzero()[1][0], data.nonzero()[2][0]] = 2
    flipped = msk.affine @ np.diag([-1.0, 1.0, 1.0, 1.0])  # left-right flip
    nib.save(nib.Nifti1Image(data, flipped, msk.header), msk_path)

    code, out = check(capsys, root)
    assert code == 1
    dwi_rel = f"rawdata/{ses}/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz"
    msk_rel = f"derivatives/{ses}/sub-strokecase0001_ses-0001_msk.nii.gz"
    assert f"error: {dwi_rel}: cannot read voxel data (truncated or corrupt file?)" in out
    assert f"error: {msk_rel}: label values {{0, 1, 2}} but a _msk must be binary {{0, 1}}" in out
    assert (
        f"error: {msk_rel}: grid (shape (112, 112, 73)) matches no image of "
        "sub-strokecase0001_ses-0001: "
        "adc affine differs by up to 3.995 in rotation/zoom and 0 mm in translation"
    ) in out
    assert "warning: sub-strokecase0001_ses-0001: excluded from the dataset" in out
    assert "Problems: 3 error(s), 1 warning(s)" in out
