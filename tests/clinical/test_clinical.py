"""``cogimg clinical`` end to end: the one-page report and its numbers, calibrated
probabilities, the OOD flag, batch errors, exit codes and refusal to overwrite."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil

import numpy as np
import pytest
import torch
from scipy.special import softmax

from cogimg.cli import main
from tests.clinical.conftest import make_patient


def run(tmp_path, checkpoints, source, out="out", *extra):
    return main(["clinical", "--seg-ckpt", str(checkpoints["seg"]), "--cls-ckpt", str(checkpoints["cls"]),
                 "--input", str(source), "--out", str(tmp_path / out), "--device", "cpu",
                 "--no-progress", *extra])


def test_report_of_one_patient_holds_every_section_and_its_numbers(cohorts, checkpoints, tmp_path, capsys):
    patient = make_patient(tmp_path / "patient-1", cohorts)
    assert run(tmp_path, checkpoints, patient) == 0
    folder = tmp_path / "out" / "patient-1"
    report = json.loads((folder / "patient-1_report.json").read_text(encoding="utf-8"))
    page = (folder / "patient-1_report.html").read_text(encoding="utf-8")
    # segmentation: volumes, lesions and the mask on the DICOM series' grid
    seg = report["segmentation"]
    assert seg["n_lesions"] >= 1 and seg["total_volume_ml"] > 0
    assert sum(les["volume_ml"] for les in seg["lesions"]) == pytest.approx(seg["total_volume_ml"])
    assert (folder / seg["mask"]).exists() and report["scan"]["shape"] == [64, 40, 40]
    assert f"{seg['total_volume_ml']:.2f} mL" in page and f">{seg['n_lesions']}<" in page
    # classification: calibrated with the checkpoint's temperature
    cls = report["classification"][0]
    state = torch.load(checkpoints["cls"], weights_only=True)
    temperature = state["cogimg"]["calibration"]["temperature"]
    assert cls["calibrated"] and cls["temperature"] == pytest.approx(temperature)
    expected = softmax(np.array(cls["logits"]) / temperature)
    assert list(cls["probabilities"].values()) == pytest.approx(list(expected))
    assert sum(cls["probabilities"].values()) == pytest.approx(1.0)
    assert f"{100 * cls['confidence']:.1f} %" in page and f"T = {temperature:.2f}" in page
    # input check: in distribution for both models
    assert report["ood"]["flag"] is False and report["ood"]["reasons"] == []
    assert len(report["ood"]["checked_by"]) == 2 and "Input check passed" in page
    # one self-contained page: sections, embedded PNGs, no external resource
    for section in ("Lesion segmentation", "Disease classification", "Models", "Lesion</th>",
                    "Volume (mL)", "Centroid x, y, z (mm, RAS)"):
        assert section in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r'(src|href)="(?!data:)', page)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 0 and summary["n_written"] == 1 and summary["errors"] == []
    assert "patient-1: patient-1/patient-1_report.html" in capsys.readouterr().out


def test_batch_lists_failures_flags_ood_and_sets_exit_codes(cohorts, checkpoints, tmp_path):
    batch = tmp_path / "batch"
    make_patient(batch / "good", cohorts)
    make_patient(batch / "noisy", cohorts, noise=1.0)
    (batch / "notes.txt").write_text("not an image", encoding="utf-8")
    shutil.copytree(batch / "good", batch / "no-t1")
    (batch / "no-t1" / "T1w.nii.gz").unlink()
    assert run(tmp_path, checkpoints, batch, "out", "--saliency", "none") == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert sorted(w["case_id"] for w in summary["written"]) == ["good", "noisy"]
    reasons = {e["input"].rsplit("/", 1)[1]: e["reason"] for e in summary["errors"]}
    assert set(reasons) == {"notes.txt", "no-t1"} and "no T1w image" in reasons["no-t1"]
    assert not (tmp_path / "out" / "no-t1").exists()  # a failed case leaves no folder
    assert summary["ood_flagged"] == ["noisy"] and summary["exit_code"] == 1
    noisy = json.loads((tmp_path / "out" / "noisy" / "noisy_report.json").read_text(encoding="utf-8"))
    assert noisy["ood"]["flag"] and noisy["ood"]["score"] > noisy["ood"]["threshold"]
    assert any("roughness" in r for r in noisy["ood"]["reasons"])
    assert "OUT OF DISTRIBUTION" in (tmp_path / "out" / "noisy" / "noisy_report.html").read_text(encoding="utf-8")
    # outputs in the way: nothing run (2); --overwrite replaces them; OOD alone gives 3
    before = (tmp_path / "out" / "summary.json").read_text(encoding="utf-8")
    assert run(tmp_path, checkpoints, batch) == 2
    assert (tmp_path / "out" / "summary.json").read_text(encoding="utf-8") == before
    (batch / "notes.txt").unlink()
    for name in ("no-t1", "good"):
        shutil.rmtree(batch / name)
    assert run(tmp_path, checkpoints, batch, "out", "--overwrite", "--saliency", "none") == 3


def test_bad_checkpoints_and_bad_arguments_exit_2(checkpoints, cohorts, tmp_path, capsys):
    patient = make_patient(tmp_path / "p", cohorts)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    base = ["clinical", "--input", str(patient), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*base, "--seg-ckpt", str(tmp_path / "junk.ckpt")]) == 2
    assert main([*base, "--seg-ckpt", str(checkpoints["cls"])]) == 2  # a classifier as --seg-ckpt
    assert "classification checkpoint, given as the segmentation" in capsys.readouterr().err
    assert main([*base, "--input", str(tmp_path / "missing"), "--seg-ckpt", str(checkpoints["seg"])]) == 2
    assert main(base) == 2  # no checkpoint at all
    with pytest.raises(SystemExit) as exc:
        main([*base, "--seg-ckpt", str(checkpoints["seg"]), "--saliency", "magic"])
    assert exc.value.code == 2
    assert not (tmp_path / "o").exists()


def test_checkpoint_without_summary_or_temperature_reports_null_and_warns(checkpoints, cohorts, tmp_path):
    state = torch.load(checkpoints["cls"], weights_only=True)
    del state["cogimg"]["calibration"]
    for value in state.values():
        if isinstance(value, dict):
            value.pop("input_summary", None)
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    patient = make_patient(tmp_path / "p", cohorts)
    with pytest.warns(UserWarning, match="ood: null"):
        code = main(["clinical", "--cls-ckpt", str(old), "--input", str(patient), "--out",
                     str(tmp_path / "o"), "--saliency", "none", "--no-progress"])
    assert code == 0
    report = json.loads((tmp_path / "o" / "p" / "p_report.json").read_text(encoding="utf-8"))
    assert report["ood"] is None and report["classification"][0]["ood"] is None
    cls = report["classification"][0]
    assert not cls["calibrated"] and cls["probabilities"] == cls["uncalibrated_probabilities"]
    page = html.unescape((tmp_path / "o" / "p" / "p_report.html").read_text(encoding="utf-8"))
    assert "Input check not done" in page and "NOT calibrated" in page
    assert len(report["warnings"]) == 2


@pytest.mark.slow
@pytest.mark.real_data
def test_report_of_the_real_isles22_case_lands_on_its_grid(isles22_root, checkpoints, tmp_path):
    import nibabel as nib

    code = main(["clinical", "--seg-ckpt", str(checkpoints["seg"]), "--input", str(isles22_root),
                 "--out", str(tmp_path / "o"), "--no-progress", "--device", "cpu"])
    sid = "sub-strokecase0001_ses-0001"
    summary = json.loads((tmp_path / "o" / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_written"] == 1 and code == summary["exit_code"] == (3 if summary["ood_flagged"] else 0)
    report = json.loads((tmp_path / "o" / sid / f"{sid}_report.json").read_text(encoding="utf-8"))
    dwi = nib.load(next(isles22_root.rglob("*_dwi.nii.gz")))
    mask = nib.load(tmp_path / "o" / sid / report["segmentation"]["mask"])
    assert mask.shape == dwi.shape == tuple(report["scan"]["shape"]) == (112, 112, 73)
    np.testing.assert_allclose(mask.affine, dwi.affine, atol=1e-5)
    assert report["ood"] is not None and report["ood"]["score"] is not None
    page = (tmp_path / "o" / sid / f"{sid}_report.html").read_text(encoding="utf-8")
    assert "112 × 112 × 73 voxels of 2.00 × 2.00 × 2.00 mm" in page


def test_detection_checkpoint_adds_its_boxes_and_an_unchecked_ood_entry(checkpoints, cohorts, tmp_path):
    from cogimg.data.transforms import PreprocessingConfig
    from cogimg.tasks.detection import DetectionTask
    from tests.paradigms.test_explain_command import save_checkpoint

    torch.manual_seed(0)
    task = DetectionTask("centernet_3d", in_channels=2, patch_size=(16, 16, 16), score_threshold=0.0,
                         max_detections=3, model_kwargs={"channels": [8, 16], "strides": [2]}).eval()
    det = save_checkpoint(task, tmp_path / "det.ckpt", "stroke", ["dwi", "adc"],
                          PreprocessingConfig(spacing_mm=2.0, reference="dwi"))
    patient = make_patient(tmp_path / "p", cohorts)
    with pytest.warns(UserWarning, match="no training-input summary"):
        code = main(["clinical", "--seg-ckpt", str(checkpoints["seg"]), "--det-ckpt", str(det),
                     "--input", str(patient), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 0
    report = json.loads((tmp_path / "o" / "p" / "p_report.json").read_text(encoding="utf-8"))
    found = report["detection"]["detections"]
    assert report["detection"]["n_detections"] == len(found) == 3 and report["detection"]["ood"] is None
    assert report["ood"]["checked_by"] == ["segmentation (seg.ckpt)"]
    assert report["ood"]["not_checked"] == ["detection (det.ckpt)"]
    page = (tmp_path / "o" / "p" / "p_report.html").read_text(encoding="utf-8")
    assert "Not checked (no training summary): detection (det.ckpt)" in page
    assert "Detected abnormal regions (3)" in page and f"<td>{found[0]['score']:.2f}</td>" in page
