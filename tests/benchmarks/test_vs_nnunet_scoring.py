"""benchmarks/scoring.py's scoring and table (``nnunet_support/scoring.py``): both
contenders' masks scored by cogimg's ISLES'22 metric code, cogimg's also with its chosen
lesion-size threshold, and the rows and headline the result file holds."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SPACING = 2.0  # mm: one voxel is 0.008 mL


@pytest.fixture(scope="module")
def scoring():
    """The scoring and reporting module of the benchmark."""
    from benchmarks.nnunet_support import scoring

    return scoring


def _save(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.diag([SPACING] * 3 + [1.0])), str(path))
    return path


@pytest.fixture
def masks(tmp_path: Path):
    """Two subjects, each with one 4×4×4 lesion (64 voxels, 0.512 mL). cogimg finds it and
    adds one isolated voxel (0.008 mL); nnU-Net finds half of it."""
    truths, cg, nn = {}, tmp_path / "cogimg", tmp_path / "nnunet"
    for sid in ("sub-01", "sub-02"):
        truth = np.zeros((16, 16, 16), bool)
        truth[4:8, 4:8, 4:8] = True
        truths[sid] = _save(tmp_path / "truth" / f"{sid}.nii.gz", truth)
        extra = truth.copy()
        extra[13, 13, 13] = True
        _save(cg / f"{sid}_pred_msk.nii.gz", extra)
        half = np.zeros_like(truth)
        half[4:8, 4:8, 4:6] = True
        _save(nn / f"{sid}.nii.gz", half)
    return truths, cg, nn


def test_cogimg_is_scored_raw_and_with_its_lesion_size_threshold(scoring, masks):
    truths, cg, nn = masks
    scores = scoring.score_arms(cg, nn, truths, min_lesion_ml=0.05, n_boot=200)
    raw, post, ref = (scores[arm]["summary"] for arm in ("cogimg", "cogimg_pp", "nnunet"))
    # raw: Dice 2·64 / (65 + 64); one of two predicted lesions is true → lesion F1 2/3
    assert raw["dice"]["mean"] == pytest.approx(128 / 129)
    assert raw["lesion_f1"]["mean"] == pytest.approx(2 / 3)
    assert raw["lesion_count_difference"]["mean"] == 1
    # the 0.008 mL voxel is under the 0.05 mL threshold: removed
    assert post["dice"]["mean"] == pytest.approx(1.0)
    assert post["lesion_f1"]["mean"] == pytest.approx(1.0)
    assert post["absolute_volume_difference_ml"]["mean"] == pytest.approx(0.0)
    # nnU-Net: 32 of 64 voxels → Dice 2·32 / 96
    assert ref["dice"]["mean"] == pytest.approx(2 / 3)
    delta = scores["paired_cogimg_pp_minus_nnunet"]["dice"]
    assert delta["delta"] == pytest.approx(1 / 3) and delta["n"] == 2
    assert scores["paired_cogimg_minus_nnunet"]["dice"]["delta"] == pytest.approx(128 / 129 - 2 / 3)


def test_rows_and_headline_of_a_budget(scoring, masks):
    truths, cg, nn = masks
    scores = scoring.score_arms(cg, nn, truths, min_lesion_ml=0.05, n_boot=200)
    measured = {"peak_rss_gb": 1.0}
    record = {"budget_min": 10.0, "scores_test_mirror": scores,
              "cogimg_train": {**measured, "train_s": 601.2},
              "nnunet_train": {**measured, "train_s": 612.0, "peak_rss_gb": 3.5},
              "cogimg_predict_test_mirror": {**measured, "per_case_s": 4.0},
              "nnunet_predict_test_mirror": {**measured, "per_case_s": 16.0}}
    rows = scoring.result_rows([record])
    assert [r["model"] for r in rows] == ["cogimg", "cogimg+pp", "nnU-Net"]
    assert {r["subjects"] for r in rows} == {"test"} and {r["tta"] for r in rows} == {"mirror"}
    pp = rows[1]
    assert pp["Dice"].startswith("1 [1, 1]") and pp["train s"] == 601
    assert pp["ΔDice vs nnU-Net [CI]"].startswith("+0.333 [")
    assert rows[2]["ΔDice vs nnU-Net [CI]"] == "" and rows[2]["peak RSS GB"] == 3.5
    head = scoring.headline([record])
    assert head["test Dice cogimg / cogimg+pp / nnU-Net, 10 min, mirror TTA"] == (
        "0.992 / 1.000 / 0.667")
    assert head["inference per case cogimg / nnU-Net, 10 min, mirror TTA"] == "0.25"
    table = scoring.markdown_table(rows, "test")
    assert table.splitlines()[2].startswith("| budget_min | tta | model | Dice |")
    assert len(table.splitlines()) == 4 + 3


def test_network_step_time_of_cogimg_in_both_precisions(tmp_path: Path):
    """nnunet_support/step_time.py times cogimg's U-Net alone, float32 and bf16-mixed."""
    import json
    import statistics
    import subprocess

    out = tmp_path / "step.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "nnunet_support" /
                                               "step_time.py"),
                           "cogimg", "--patch", "32", "16", "16", "--batch", "1", "--steps", "2",
                           "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text(encoding="utf-8"))
    assert (record["tool"], record["batch"], record["patch"]) == ("cogimg", 1, [32, 16, 16])
    assert record["parameters"] > 10**5
    for precision in ("float32", "bf16-mixed"):
        times = record[precision]["steps_s"]
        assert len(times) == 2 and all(t > 0 for t in times)
        assert record[precision]["step_s"] == pytest.approx(statistics.median(times), abs=1e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["step.json"]  # no temporary file left
