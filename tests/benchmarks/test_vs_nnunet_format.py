"""benchmarks/vs_nnunet.py's nnU-Net side that needs no nnU-Net: the raw-format writer and the
split handed to nnU-Net (``splits_final.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.nnunet_support.raw_format import (
    dataset_name,
    write_case_folder,
    write_raw_dataset,
    write_splits_final,
)
from cogimg.data.bids import load_dataset
from cogimg.data.splits import make_kfold_split

N_SUBJECTS = 10
SHAPE = (9, 8, 7)
#: Oblique, anisotropic grid: geometry must survive the copy exactly.
AFFINE = np.array([[1.5, 0.2, 0.0, -10.0], [0.0, 1.2, 0.1, -8.0], [0.0, 0.0, 3.0, 5.0],
                   [0, 0, 0, 1]])


def _save(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    """10 stroke subjects with DWI, ADC (distinct constant intensities per channel) and a
    float32 0/1 lesion mask of a subject-specific size."""
    root = tmp_path / "cohort"
    rows = ["participant_id\tdiagnosis\tsite"]
    for i in range(1, N_SUBJECTS + 1):
        pid = f"sub-{i:02d}"
        rows.append(f"{pid}\tstroke\tA")
        _save(root / pid / "dwi" / f"{pid}_dwi.nii.gz", np.full(SHAPE, 100.0 + i, np.float32))
        _save(root / pid / "dwi" / f"{pid}_adc.nii.gz", np.full(SHAPE, 900.0 + i, np.float32))
        mask = np.zeros(SHAPE, np.float32)
        mask[1:1 + (i % 4) + 1, 2:4, 3:5] = 1.0
        _save(root / "derivatives" / "lesions" / pid / "dwi" / f"{pid}_msk.nii.gz", mask)
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_raw_format_and_splits_follow_cogimg_split(cohort: Path, tmp_path: Path):
    ds = load_dataset(cohort, modalities=["dwi", "adc"])
    split = make_kfold_split(ds.participants, n_folds=2, test_fraction=0.2, seed=0)
    fold = split.fold(0)
    assert len(fold["test"]) == 2
    raw = tmp_path / "raw" / dataset_name(501)
    assert raw.name == "Dataset501_cogimgStroke"
    content = write_raw_dataset(ds.subjects, raw, fold["train"] + fold["val"], fold["test"],
                                ["dwi", "adc"], ["lesions_msk", "msk"])

    # dataset.json as nnU-Net reads it, channels in the order given.
    on_disk = json.loads((raw / "dataset.json").read_text())
    assert on_disk == content
    assert on_disk["channel_names"] == {"0": "DWI", "1": "ADC"}
    assert on_disk["labels"] == {"background": 0, "lesion": 1}
    assert on_disk["file_ending"] == ".nii.gz"
    assert on_disk["numTraining"] == N_SUBJECTS - 2

    trainval = sorted(fold["train"] + fold["val"])
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == sorted(
        f"{s}_{c:04d}.nii.gz" for s in trainval for c in (0, 1))
    assert sorted(p.name for p in (raw / "labelsTr").iterdir()) == [f"{s}.nii.gz" for s in trainval]
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == sorted(
        f"{s}_{c:04d}.nii.gz" for s in fold["test"] for c in (0, 1))

    for sid in trainval:
        i = int(sid[-2:])
        dwi = nib.load(str(raw / "imagesTr" / f"{sid}_0000.nii.gz"))
        adc = nib.load(str(raw / "imagesTr" / f"{sid}_0001.nii.gz"))
        label = nib.load(str(raw / "labelsTr" / f"{sid}.nii.gz"))
        # channel 0 is DWI and channel 1 ADC, of this subject
        assert float(dwi.get_fdata().mean()) == pytest.approx(100.0 + i)
        assert float(adc.get_fdata().mean()) == pytest.approx(900.0 + i)
        for img in (dwi, adc, label):
            assert img.shape == SHAPE
            np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)
        data = np.asarray(label.dataobj)
        assert data.dtype == np.uint8
        assert set(np.unique(data)) == {0, 1}
        assert int(data.sum()) == ((i % 4) + 1) * 2 * 2

    # nnU-Net's split is cogimg's train/val, and no test subject anywhere in it.
    path = tmp_path / "preprocessed" / raw.name / "splits_final.json"
    write_splits_final(path, [fold])
    folds = json.loads(path.read_text())
    assert folds == [{"train": sorted(fold["train"]), "val": sorted(fold["val"])}]
    listed = set(folds[0]["train"]) | set(folds[0]["val"])
    assert listed == set(trainval)
    assert not listed & set(fold["test"])


def test_writer_refuses_overlap_and_unlabelled_training_subject(cohort: Path, tmp_path: Path):
    ds = load_dataset(cohort, modalities=["dwi", "adc"])
    with pytest.raises(ValueError, match="sub-01"):
        write_raw_dataset(ds.subjects, tmp_path / "a", ["sub-01", "sub-02"], ["sub-01"],
                          ["dwi", "adc"], ["lesions_msk"])
    with pytest.raises(KeyError, match="sub-99"):
        write_raw_dataset(ds.subjects, tmp_path / "b", ["sub-99"], [], ["dwi", "adc"],
                          ["lesions_msk"])
    with pytest.raises(FileNotFoundError, match="sub-01"):
        write_raw_dataset(ds.subjects, tmp_path / "c", ["sub-01"], [], ["dwi", "adc"],
                          ["no_such_label"])
    with pytest.raises(ValueError, match="1..999"):
        dataset_name(1000)


def test_case_folder_names_files_by_modality(cohort: Path, tmp_path: Path):
    ds = load_dataset(cohort, modalities=["dwi", "adc"])
    subject = ds.subject("sub-03")
    images = [Path(subject["dwi"].path), Path(subject["adc"].path)]
    write_case_folder(images, ["dwi", "adc"], tmp_path / "cases" / "sub-03")
    assert sorted(p.name for p in (tmp_path / "cases" / "sub-03").iterdir()) == [
        "adc.nii.gz", "dwi.nii.gz"]
    assert float(nib.load(str(tmp_path / "cases" / "sub-03" / "adc.nii.gz")).get_fdata().mean()
                 ) == pytest.approx(903.0)
