"""``cogimg lsm`` end to end on a tiny SOOP-like folder: maps, figure, summary, recovery."""

from __future__ import annotations

import argparse
import json

import nibabel as nib
import numpy as np
import pytest

from cogimg.commands import lsm
from cogimg.paradigms.lsm.synthetic import random_lesions, recovery
from tests.conftest import write_nifti

AFFINE = np.array([[-1.0, 0, 0, 10], [0, 1, 0, -10], [0, 0, 1, -8], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def tiny_masks(tmp_path_factory):
    root = tmp_path_factory.mktemp("lsm_masks")
    maps = random_lesions(60, (20, 20, 16), seed=3, radius_vox=(3.0, 6.0))
    rows = ["participant_id\tnihss"]
    for i, m in enumerate(maps, start=1):
        write_nifti(root / "lesions" / f"sub-{i}_lesion.nii.gz", m.astype(np.uint8), AFFINE)
        rows.append(f"sub-{i}\t{int(m[:10, :10].sum() > 20) * 8 + i % 3}")
    (root / "scores.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    lsm.add_arguments(parser)
    return lsm.run(parser.parse_args(list(argv)))


def test_real_scores_write_maps_on_the_downsampled_grid(tiny_masks, tmp_path, capsys):
    out = tmp_path / "lsm"
    assert run("--mask-dir", str(tiny_masks / "lesions"), "--scores", str(tiny_masks / "scores.tsv"),
               "--stat", "ttest", "--n-perm", "100", "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["subjects"] == 60 and summary["min_count"] == 3  # ⌈5 % of 60⌉
    t = nib.load(out / "t.nii.gz")
    assert t.shape == (10, 10, 8)
    np.testing.assert_allclose(np.diag(t.affine)[:3], [-2, 2, 2])  # 2 mm blocks, LAS kept
    assert summary["significant_voxels"] > 0  # the score tracks lesions in one corner
    assert (out / "lsm.png").stat().st_size > 0
    assert "significant voxels" in capsys.readouterr().out


def test_synthetic_regions_report_recovery(tiny_masks, tmp_path):
    out = tmp_path / "synthetic"
    assert run("--mask-dir", str(tiny_masks / "lesions"), "--synthetic-regions", "1",
               "--downsample", "1", "--noise-sd", "1", "--n-perm", "100", "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["peak_distance_mm"] <= 2.0 and summary["sensitivity"][0] > 0.2
    assert summary["dice"] > 0.2 and (out / "truth.nii.gz").is_file()


def test_recovery_measures():
    truth = np.zeros((6, 6, 6), bool)
    truth[1:3, 1:3, 1:3] = True
    t = truth.astype(float) * 5 + 0.1
    t[5, 5, 5] = 2.0
    significant = t > 1.0  # truth (8 voxels) + one stray voxel
    result = recovery(t, significant, [truth], voxel_mm=2.0)
    assert result["dice"] == pytest.approx(16 / 17)
    assert result["sensitivity"] == [1.0] and result["peak_distance_mm"] == 0.0
    assert result["top_dice"] == 1.0


def test_needs_scores_or_synthetic_regions(tiny_masks, tmp_path, capsys):
    from cogimg.cli import main

    assert main(["lsm", "--mask-dir", str(tiny_masks / "lesions"), "--out", str(tmp_path)]) == 2
    assert "give --scores" in capsys.readouterr().err
