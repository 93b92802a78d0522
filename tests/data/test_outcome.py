"""Lesion → outcome adapter: both layouts, measurements, and one clear error per bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cogimg.data.outcome import load_outcome_dataset, read_lesion_stack
from cogimg.data.validation import DatasetError
from tests.conftest import write_nifti

SHAPE = (8, 8, 6)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # 2 mm voxels: 8 mm³ = 0.008 mL each


def mask(corner, size=(2, 2, 2)) -> np.ndarray:
    m = np.zeros(SHAPE, dtype=np.uint8)
    m[tuple(slice(c, c + s) for c, s in zip(corner, size))] = 1
    return m


def soop_tree(root: Path, rows: str, masks: dict[str, np.ndarray]) -> tuple[Path, Path]:
    for pid, data in masks.items():
        write_nifti(root / "lesions" / f"{pid}_lesion.nii.gz", data, AFFINE)
    (root / "scores.tsv").write_text("participant_id\tage\tnihss\n" + rows, encoding="utf-8")
    return root / "lesions", root / "scores.tsv"


def atlas(root: Path) -> Path:
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[:4] = 1   # left half: territory 1
    labels[4:] = 2   # right half: territory 2
    path = write_nifti(root / "atlas.nii.gz", labels, AFFINE)
    (root / "atlas.txt").write_text("1|LEFTA|left a|1\n2|RIGHTA|right a|2\n", encoding="utf-8")
    return path


def test_soop_layout_is_matched_measured_and_downsampled(tmp_path):
    masks = {"sub-10": mask((0, 0, 0)), "sub-2": mask((4, 4, 2), (4, 2, 2))}
    mask_dir, scores = soop_tree(tmp_path, "sub-2\t70\t5\nsub-10\t61\tn/a\n", masks)
    with pytest.raises(DatasetError) as err:
        load_outcome_dataset(mask_dir=mask_dir, scores=scores, atlas=atlas(tmp_path))
    assert "sub-10: missing nihss in scores.tsv" in str(err.value)

    scores.write_text("participant_id\tage\tnihss\nsub-2\t70\t5\nsub-10\t61\t12\n", encoding="utf-8")
    cohort = load_outcome_dataset(mask_dir=mask_dir, scores=scores, atlas=atlas(tmp_path),
                                  downsample=2)
    assert cohort.ids == ["sub-2", "sub-10"]  # natural order
    np.testing.assert_array_equal(cohort.scores, [5, 12])
    np.testing.assert_array_equal(cohort.covariates[:, 0], [70, 61])
    np.testing.assert_allclose(cohort.lesion_volume_ml, [16 * 0.008, 8 * 0.008])
    assert cohort.territory_names == ["1_LEFTA", "2_RIGHTA"]
    # sub-10: 8 voxels of the 4·8·6 = 192 in territory 1; sub-2: 16 of 192 in territory 2
    np.testing.assert_allclose(cohort.territory_load, [[0, 16 / 192], [8 / 192, 0]])
    assert cohort.maps.shape == (2, 4, 4, 3) and cohort.maps.dtype == np.uint8
    assert cohort.maps[1, 0, 0, 0] == 8 and cohort.maps[1].sum() == 8
    assert cohort.binary_maps()[0].sum() == 2  # two full 2³ blocks
    # Block (0, 0, 0) covers voxels 0–1, centred at voxel 0.5 → 1 mm; zooms are 4 mm.
    np.testing.assert_allclose(cohort.map_affine[:3, 3], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.diag(cohort.map_affine)[:3], [4.0, 4.0, 4.0])
    table = cohort.table()
    assert list(table.index) == ["sub-2", "sub-10"] and table.loc["sub-10", "1_LEFTA"] > 0
    assert cohort.subset(["sub-10"]).ids == ["sub-10"]


def test_unmatched_ids_are_listed_as_errors_or_excluded_with_a_warning(tmp_path):
    masks = {"sub-1": mask((0, 0, 0)), "sub-2": mask((2, 2, 2)), "sub-3": mask((4, 4, 0))}
    mask_dir, scores = soop_tree(tmp_path, "sub-1\t50\t3\nsub-2\t60\t4\nsub-9\t70\t8\n", masks)
    with pytest.raises(DatasetError) as err:
        load_outcome_dataset(mask_dir=mask_dir, scores=scores)
    text = str(err.value)
    assert "sub-3: mask but no row in scores.tsv" in text
    assert "sub-9: row in the score table but no lesion mask" in text
    with pytest.warns(UserWarning, match="2 participant"):
        cohort = load_outcome_dataset(mask_dir=mask_dir, scores=scores, unmatched="exclude")
    assert cohort.ids == ["sub-1", "sub-2"]
    assert set(cohort.excluded) == {"sub-3", "sub-9"}
    assert cohort.territory_load.shape == (2, 0)  # no atlas, no territories


def test_bad_masks_are_all_reported_in_one_error(tmp_path):
    non_binary = mask((0, 0, 0)) * 2
    masks = {"sub-1": mask((0, 0, 0)), "sub-2": non_binary, "sub-3": np.zeros((8, 8, 5), np.uint8)}
    mask_dir, scores = soop_tree(tmp_path, "".join(f"sub-{i}\t50\t{i}\n" for i in (1, 2, 3, 4)),
                                 masks)
    write_nifti(mask_dir / "sub-4_lesion.nii.gz", mask((1, 1, 1)), np.diag([2, 2, 2.5, 1]))
    with pytest.raises(DatasetError) as err:
        load_outcome_dataset(mask_dir=mask_dir, scores=scores)
    problems = {p.path_or_key: p.message for p in err.value.problems}
    assert "not 0 or 1 (e.g. [2])" in problems["sub-2_lesion.nii.gz"]
    assert "shape (8, 8, 5) differs from (8, 8, 6)" in problems["sub-3_lesion.nii.gz"]
    assert "affine differs" in problems["sub-4_lesion.nii.gz"]
    assert "sub-1_lesion.nii.gz" not in problems


def test_bad_score_tables(tmp_path):
    mask_dir, scores = soop_tree(tmp_path, "sub-1\t50\tsevere\nsub-1\t50\t3\nsub1\t4\t4\n",
                                 {"sub-1": mask((0, 0, 0))})
    with pytest.raises(DatasetError) as err:
        load_outcome_dataset(mask_dir=mask_dir, scores=scores, unmatched="exclude")
    text = str(err.value)
    assert "scores.tsv:2: nihss = 'severe' is not a number" in text
    assert "duplicate participant_id on lines [2, 3]" in text
    assert "participant_id 'sub1' must look like 'sub-<label>'" in text
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['mrs'\]"):
        load_outcome_dataset(mask_dir=mask_dir, scores=scores, score="mrs")
    with pytest.raises(FileNotFoundError, match="score table not found"):
        load_outcome_dataset(mask_dir=mask_dir, scores=tmp_path / "none.tsv")


def test_bids_layout_and_several_masks_per_participant(tmp_path):
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tdiagnosis\tage\tNIHSS\nsub-01\tstroke\t66\t7\nsub-02\tstroke\t59\t3\n", encoding="utf-8")
    deriv = tmp_path / "derivatives" / "lesions"
    write_nifti(deriv / "sub-01" / "dwi" / "sub-01_msk.nii.gz", mask((0, 0, 0)), AFFINE)
    write_nifti(deriv / "sub-02" / "ses-1" / "sub-02_ses-1_msk.nii.gz", mask((2, 2, 2)), AFFINE)
    cohort = load_outcome_dataset("bids", root=tmp_path, score="NIHSS", downsample=1)
    assert cohort.ids == ["sub-01", "sub-02"] and cohort.maps.shape == (2, *SHAPE)
    np.testing.assert_array_equal(cohort.scores, [7, 3])
    write_nifti(deriv / "sub-02" / "ses-2" / "sub-02_ses-2_msk.nii.gz", mask((2, 2, 2)), AFFINE)
    with pytest.raises(DatasetError, match="several masks"):
        load_outcome_dataset("bids", root=tmp_path, score="NIHSS")


SOOP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "soop_masks"


@pytest.mark.real_data
@pytest.mark.skipif(not SOOP.is_dir(), reason="../shared/data/soop_masks is absent")
def test_real_soop_territory_loads_equal_the_source_table():
    table = pd.read_csv(SOOP / "merged_artery_participants.tsv", sep="\t").set_index("participant_id")
    ids = ["sub-1000", "sub-1001", "sub-1003"]
    stack = read_lesion_stack([SOOP / "lesions" / f"{i}_lesion.nii.gz" for i in ids], ids, SOOP,
                              SOOP / "ArterialAtlas136.nii.gz", downsample=4)
    columns = [c for c in table.columns if c[0].isdigit()]  # 1_ACAL … 31_LVL
    np.testing.assert_allclose(stack["territory_load"][:, :len(columns)],
                               table.loc[ids, columns].to_numpy(), atol=1e-12)
    # The source table gives lesion volume in mm³ (1 mm voxels); ours is in mL.
    np.testing.assert_allclose(stack["lesion_volume_ml"] * 1000, table.loc[ids, "lesion_volume"])
    assert stack["maps"].shape == (3, 40, 48, 34)
