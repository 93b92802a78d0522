"""Loading BIDS-like trees into TorchIO subjects (layouts, keys, metadata, filters, collation)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torchio as tio

from cogimg.data.bids import DatasetError, load_dataset


def test_tiny_tree_loads_one_subject_per_session(bids_root):
    ds = load_dataset(bids_root)
    assert [s["subject_id"] for s in ds.subjects] == [
        "sub-01",
        "sub-02",
        "sub-03_ses-1",
        "sub-03_ses-2",
        "sub-04",
        "sub-05",
        "sub-06",
    ]
    assert ds.errors == [] and ds.warnings == []
    assert ds.modalities() == ["T1w", "adc", "dwi"]
    assert ds.label_keys() == ["lesions_msk"]
    # participants: one row per participant with data, diagnosis normalised ("ad" -> "AD")
    assert list(ds.participants.index) == [
        "sub-01",
        "sub-02",
        "sub-03",
        "sub-04",
        "sub-05",
        "sub-06",
    ]
    assert ds.participants.loc["sub-02", "diagnosis"] == "AD"
    assert math.isnan(ds.participants.loc["sub-04", "MMSE"])
    assert ds.participants["age"].dtype == float
    # skipped, with reasons, not silently ignored
    assert ds.skipped == [("dataset_description.json", "dataset metadata (not read)")]


def test_subject_metadata_and_keys(bids_root):
    ds = load_dataset(bids_root)
    s = ds.subject("sub-03_ses-2")
    assert (s["participant_id"], s["session_id"], s["diagnosis"], s["site"]) == (
        "sub-03",
        "ses-2",
        "AD",
        "B",
    )
    assert s["age"] == 68.5 and isinstance(s["age"], float)
    assert s["sex"] == "n/a"  # missing text stays a string so batches collate
    assert math.isnan(s["NIHSS"])
    assert s["modalities"] == ("T1w",) and s["labels"] == ()
    assert isinstance(s["T1w"], tio.ScalarImage)

    stroke = ds.subject("sub-04")
    assert stroke["session_id"] == "" and stroke["NIHSS"] == 7.0
    assert stroke["modalities"] == ("adc", "dwi") and stroke["labels"] == ("lesions_msk",)
    assert isinstance(stroke["lesions_msk"], tio.LabelMap)
    assert int(stroke["lesions_msk"].data.sum()) == 8  # the 2×2×2 cube of conftest
    # every subject has the same `files` keys ("" where absent), so batches collate
    assert stroke["files"]["lesions_boxes"].endswith(
        "derivatives/lesions/sub-04/dwi/sub-04_boxes.json"
    )
    assert stroke["files"]["truth_atrophy_map"] == ""
    ad = ds.subject("sub-02")
    assert set(ad["files"]) == {"lesions_boxes", "truth_atrophy_map", "truth_effects"}
    assert ad["files"]["truth_effects"].endswith("sub-02_effects.json")
    assert ad["files"]["truth_atrophy_map"].endswith("sub-02_desc-atrophy_map.nii.gz")


def test_diagnosis_and_modality_filters(bids_root):
    ds = load_dataset(bids_root, diagnoses=["cn", "AD"])
    assert [s["subject_id"] for s in ds.subjects] == [
        "sub-01",
        "sub-02",
        "sub-03_ses-1",
        "sub-03_ses-2",
        "sub-06",
    ]
    assert list(ds.participants.index) == ["sub-01", "sub-02", "sub-03", "sub-06"]
    ds = load_dataset(bids_root, diagnoses=["stroke"], modalities=["dwi"])
    assert [s["modalities"] for s in ds.subjects] == [("dwi",), ("dwi",)]
    # sessions without any of `modalities` are left out (a choice, not a problem), and a mask on
    # the grid of a modality that is not loaded is still on a valid grid
    ds = load_dataset(bids_root, modalities=["T1w"])
    assert [s["subject_id"] for s in ds.subjects] == [
        "sub-01",
        "sub-02",
        "sub-03_ses-1",
        "sub-03_ses-2",
        "sub-06",
    ]
    assert ds.problems == []
    ds = load_dataset(bids_root, modalities=["adc"], diagnoses=["stroke"])
    assert [(s["modalities"], s["labels"]) for s in ds.subjects] == [
        (("adc",), ("lesions_msk",))
    ] * 2
    with pytest.raises(ValueError, match="unknown diagnosis 'alzheimer'"):
        load_dataset(bids_root, diagnoses=["alzheimer"])


def test_required_modality_missing_is_an_error(bids_root):
    (bids_root / "sub-05" / "dwi" / "sub-05_adc.nii.gz").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(bids_root, required_modalities=("dwi", "adc"), diagnoses=["stroke"])
    assert "error: sub-05: missing required modality 'adc' for sub-05 (found: dwi)" in str(
        err.value
    )
    ds = load_dataset(
        bids_root, required_modalities=("dwi", "adc"), diagnoses=["stroke"], strict=False
    )
    assert [s["subject_id"] for s in ds.subjects] == ["sub-04"]
    assert any(p.path_or_key == "sub-05" and "excluded" in p.message for p in ds.warnings)


def test_subjects_collate_with_torchio_and_torch_loaders(bids_root):
    ds = load_dataset(bids_root, diagnoses=["stroke"])
    dataset = tio.SubjectsDataset(ds.subjects)
    batch = next(iter(tio.SubjectsLoader(dataset, batch_size=2)))
    assert batch["dwi"]["data"].shape == (2, 1, 12, 12, 12)
    assert batch["lesions_msk"]["data"].sum().item() == 8 + 12
    assert batch["subject_id"] == ["sub-04", "sub-05"]
    assert batch["NIHSS"].tolist() == [7.0, 3.0]
    assert batch["files"]["lesions_boxes"][0].endswith("sub-04_boxes.json")
    # plain torch DataLoader with its default collate works too
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["dwi"]["data"].shape == (2, 1, 12, 12, 12)
    assert batch["site"] == ["A", "B"]
    assert torch.isnan(batch["MMSE"]).all()


def test_isles_flat_layout_rawdata_and_pipelineless_derivatives(tmp_path, nifti_writer):
    root = tmp_path / "isles"
    root.mkdir()
    (root / "participants.tsv").write_text(
        "participant_id\tdiagnosis\tsite\nsub-strokecase0007\tstroke\tc1\n", encoding="utf-8"
    )
    ses = root / "rawdata" / "sub-strokecase0007" / "ses-0001"
    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    nifti_writer(
        ses / "sub-strokecase0007_ses-0001_dwi.nii.gz", np.ones((10, 10, 8), np.float32), grid
    )
    nifti_writer(
        ses / "sub-strokecase0007_ses-0001_adc.nii", np.ones((10, 10, 8), np.float32), grid
    )  # plain .nii
    # native FLAIR on its own anisotropic grid (as in real ISLES'22) is accepted
    flair_grid = np.diag([0.45, 0.45, 5.0, 1.0])
    nifti_writer(
        ses / "sub-strokecase0007_ses-0001_FLAIR.nii.gz",
        np.ones((44, 44, 3), np.float32),
        flair_grid,
    )
    mask = np.zeros((10, 10, 8), np.uint16)
    mask[2:4, 2:4, 2:4] = 1
    nifti_writer(
        root
        / "derivatives"
        / "sub-strokecase0007"
        / "ses-0001"
        / "sub-strokecase0007_ses-0001_msk.nii.gz",
        mask,
        grid,
    )
    ds = load_dataset(root, required_modalities=("dwi", "adc"))
    (s,) = ds.subjects
    assert s["subject_id"] == "sub-strokecase0007_ses-0001"
    assert s["modalities"] == ("FLAIR", "adc", "dwi") and s["labels"] == ("msk",)
    assert s["FLAIR"].spatial_shape == (44, 44, 3) and s["dwi"].spatial_shape == (10, 10, 8)
    assert ds.problems == [] and ds.skipped == []
    # FLAIR alone: the mask sits on the (not loaded) DWI grid, which is still a valid grid
    (s,) = load_dataset(root, modalities=["FLAIR"]).subjects
    assert s["modalities"] == ("FLAIR",) and s["labels"] == ("msk",)


def test_pet_tracer_keys_and_sidecars(bids_root, nifti_writer):
    pet = bids_root / "sub-01" / "pet"
    nifti_writer(pet / "sub-01_trc-amyloid_pet.nii.gz", np.ones((12, 12, 12), np.float32))
    (pet / "sub-01_trc-amyloid_pet.json").write_text("{}", encoding="utf-8")
    (bids_root / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}", encoding="utf-8")
    s = load_dataset(bids_root).subject("sub-01")
    assert s["modalities"] == ("T1w", "pet_amyloid")
    ds = load_dataset(bids_root)
    assert ("sub-01/pet/sub-01_trc-amyloid_pet.json", "sidecar metadata (not read)") in ds.skipped
    assert ds.warnings == []  # known BIDS files are listed as skipped, without a warning


def test_pipeline_level_derivative_files_are_listed_without_warning(bids_root):
    (bids_root / "derivatives" / "truth" / "sites.json").write_text("{}", encoding="utf-8")
    (bids_root / "derivatives" / "lesions" / "dataset_description.json").write_text("{}", encoding="utf-8")
    ds = load_dataset(bids_root)
    assert ("derivatives/truth/sites.json",
            "pipeline-level file of derivatives/truth/ (not read)") in ds.skipped
    assert ("derivatives/lesions/dataset_description.json",
            "pipeline-level file of derivatives/lesions/ (not read)") in ds.skipped
    assert ds.warnings == []


def test_unknown_files_are_skipped_with_a_warning(bids_root):
    (bids_root / "sub-01" / "anat" / "notes.txt").write_text("scanner broke", encoding="utf-8")
    (bids_root / "sub-01" / "anat" / "sub-01_bold.nii.gz").write_bytes(b"")
    (bids_root / "extra").mkdir()
    ds = load_dataset(bids_root)
    skipped = dict(ds.skipped)
    assert skipped["sub-01/anat/notes.txt"].startswith("unknown file name")
    assert skipped["sub-01/anat/sub-01_bold.nii.gz"].startswith("unknown image suffix 'bold'")
    assert skipped["extra"].startswith("unknown file or folder")
    assert {p.path_or_key for p in ds.warnings} == set(skipped) - {"dataset_description.json"}
    assert len(ds.subjects) == 7


def test_two_files_for_one_key_is_an_error_not_an_overwrite(bids_root):
    shutil.copy(
        bids_root / "sub-01" / "anat" / "sub-01_T1w.nii.gz",
        bids_root / "sub-01" / "anat" / "sub-01_run-2_T1w.nii.gz",
    )
    with pytest.raises(
        DatasetError,
        match=r"sub-01/anat/sub-01_run-2_T1w.nii.gz: 'T1w' of sub-01 is also given by "
        r"sub-01/anat/sub-01_T1w.nii.gz; one file per key",
    ):
        load_dataset(bids_root)


def test_file_name_must_agree_with_its_folder(bids_root):
    shutil.move(
        bids_root / "sub-06" / "anat" / "sub-06_T1w.nii.gz",
        bids_root / "sub-06" / "anat" / "sub-07_T1w.nii.gz",
    )
    ds = load_dataset(bids_root, strict=False)
    err, orphan = ds.errors  # the misnamed file, and sub-06's row now without images
    assert err.path_or_key == "sub-06/anat/sub-07_T1w.nii.gz"
    assert "disagree with its folder sub-06/" in err.message
    assert orphan.path_or_key == "participants.tsv: sub-06"


def test_strict_error_lists_every_problem_and_non_strict_excludes(bids_root, nifti_writer):
    nifti_writer(
        bids_root / "sub-01" / "anat" / "sub-01_T1w.nii.gz",
        np.full((12, 12, 12), np.nan, np.float32),
    )
    (bids_root / "derivatives" / "lesions" / "sub-05" / "dwi" / "sub-05_msk.nii.gz").write_bytes(
        b"not a nifti"
    )
    with pytest.raises(DatasetError) as err:
        load_dataset(bids_root)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("has 2 error(s):")
    assert "  error: sub-01/anat/sub-01_T1w.nii.gz: 1728 NaN and 0 Inf voxels" in lines[1:]
    assert any(
        line.startswith(
            "  error: derivatives/lesions/sub-05/dwi/sub-05_msk.nii.gz: cannot read as NIfTI"
        )
        for line in lines
    )
    assert len(err.value.problems) == 2

    ds = load_dataset(bids_root, strict=False)
    assert "sub-01" not in [s["subject_id"] for s in ds.subjects]
    assert "sub-05" not in [s["subject_id"] for s in ds.subjects]
    assert sorted(p.path_or_key for p in ds.warnings if "excluded" in p.message) == [
        "sub-01",
        "sub-05",
    ]
    assert list(ds.participants.index) == ["sub-02", "sub-03", "sub-04", "sub-06"]


def test_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_dataset(tmp_path / "nowhere")


def test_boxes_json_path_is_recorded_not_parsed(bids_root):
    path = load_dataset(bids_root).subject("sub-05")["files"]["lesions_boxes"]
    with open(path, encoding="utf-8") as f:
        assert json.load(f)[0]["label"] == 1


@pytest.mark.real_data
def test_isles22_real_case(isles22_root):
    ds = load_dataset(isles22_root, required_modalities=("dwi", "adc"))
    (s,) = ds.subjects
    assert (
        s["subject_id"] == "sub-strokecase0001_ses-0001"
        and s["diagnosis"] == "stroke"
        and s["site"] == "isles22"
    )
    assert s["modalities"] == ("adc", "dwi") and s["labels"] == ("msk",)
    assert s["dwi"].spatial_shape == (112, 112, 73) and s["dwi"].spacing == pytest.approx(
        (2.0, 2.0, 2.0)
    )
    info = ds.summaries[str(s["msk"].path)]
    assert info.label_values == (0.0, 1.0) and info.foreground_voxels == 835
    assert info.foreground_voxels * info.voxel_volume_ml == pytest.approx(6.68)
    assert ds.problems == [] and ds.skipped == []
