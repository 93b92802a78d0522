"""DetectionTask on an easy synthetic microbleed cohort: targets from masks, evaluation rows
and FROC summary, training raises sensitivity, detection from segmentation, the shipped
detection experiments (one fast run per YAML) and ``cogimg predict`` with a detection
checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from cogimg.cli import main
from cogimg.data.datamodules import PatchDataModule
from cogimg.metrics.detection import match_from_row
from cogimg.tasks.detection import DetectionTask, segmentation_detections, targets_from_labels
from cogimg.tasks.segmentation import SegmentationTask
from tests.tasks.conftest import SMALL_UNET, sphere, trainer, write_nifti

SHAPE = (32, 32, 32)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -32.0
REPO = Path(__file__).resolve().parents[2]


def build_easy_microbleeds_tree(root: Path, n: int = 8, seed: int = 0) -> Path:
    """``n`` subjects, 32³ at 2 mm: T2starw ≈ 1 ± 0.1 with 3–5 dark foci (0.2, radius
    1.2–1.8 voxels, ≥ 2 voxels apart) and their mask under derivatives/microbleeds."""
    rng = np.random.default_rng(seed)
    rows = ["participant_id\tdiagnosis\tsite\tage\tsex"]
    for i in range(1, n + 1):
        pid = f"sub-{i:02d}"
        rows.append(f"{pid}\tCN\tsite-{1 + i % 2}\t{60 + i}\t{'MF'[i % 2]}")
        mask = np.zeros(SHAPE, np.uint8)
        for _ in range(int(rng.integers(3, 6))):
            for _attempt in range(20):
                focus = sphere(SHAPE, rng.integers(5, 27, 3), rng.uniform(1.2, 1.8))
                if not _near(focus, mask):
                    mask |= focus
                    break
        image = 1.0 - 0.8 * mask + rng.normal(0, 0.1, SHAPE)
        write_nifti(root / pid / "anat" / f"{pid}_T2starw.nii.gz", image.astype(np.float32), AFFINE)
        write_nifti(root / "derivatives" / "microbleeds" / pid / "anat" / f"{pid}_msk.nii.gz", mask, AFFINE)
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "easy microbleeds"}), encoding="utf-8")
    return root


def _near(focus: np.ndarray, mask: np.ndarray) -> bool:
    from scipy.ndimage import binary_dilation

    return bool((binary_dilation(focus, iterations=2) & (mask > 0)).any())


@pytest.fixture(scope="module")
def easy_microbleeds_tree(tmp_path_factory) -> Path:
    return build_easy_microbleeds_tree(tmp_path_factory.mktemp("easy_microbleeds"))


def microbleeds_datamodule(root, cache_dir, patch=(16, 16, 16)) -> PatchDataModule:
    return PatchDataModule(root, preset="microbleeds", cache_dir=cache_dir, patch_size=patch,
                           samples_per_volume=4, queue_length=16, batch_size=4, n_folds=3,
                           test_fraction=0.2, augmentation="none", seed=0,
                           label_probabilities={0: 0.3, 1: 0.7}, centre_jitter=patch[0] // 3)


def test_targets_from_labels_one_box_per_component_and_class():
    label = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    label[0, 0, 1:3, 1:3, 1:3] = 1
    label[0, 0, 5, 5, 5:7] = 2
    label[0, 0, 7, 0, 0] = 1  # 1 voxel: dropped by min_voxels=2
    first, second = targets_from_labels(label, num_classes=3, min_voxels=2)
    torch.testing.assert_close(first["boxes"], torch.tensor([[1.0, 1, 1, 3, 3, 3], [5, 5, 5, 6, 6, 7]]))
    assert first["labels"].tolist() == [0, 1]
    assert second["boxes"].shape == (0, 6) and second["labels"].shape == (0,)
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y, Z\)"):
        targets_from_labels(label[:, 0])


def test_detection_from_segmentation_scores_components_by_peak_probability(monkeypatch):
    seg = SegmentationTask("unet", in_channels=1, num_classes=2, patch_size=(16, 16, 16),
                           model_kwargs=SMALL_UNET)
    probs = torch.zeros(1, 2, 16, 16, 16)
    probs[0, 1, 2:4, 2:4, 2:4] = 0.7
    probs[0, 1, 10, 10, 10:13] = 0.95
    probs[0, 1, 6, 6, 6] = 0.3  # below 0.5: background
    probs[:, 0] = 1 - probs[:, 1]
    monkeypatch.setattr(seg, "predict_volume", lambda image: probs)
    ((boxes, scores),) = segmentation_detections(seg, torch.zeros(1, 1, 16, 16, 16))
    np.testing.assert_array_equal(boxes, [[2, 2, 2, 4, 4, 4], [10, 10, 10, 11, 11, 13]])
    np.testing.assert_allclose(scores, [0.7, 0.95], rtol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="not a detection model"):
        DetectionTask(model="unet")
    with pytest.raises(ValueError, match="match="):
        DetectionTask(match="dice")
    with pytest.raises(ValueError, match="class_names"):
        DetectionTask(num_classes=2, class_names=("a", "b"))


@pytest.mark.slow
def test_brief_training_raises_sensitivity(easy_microbleeds_tree, tmp_path):
    L.seed_everything(0)
    dm = microbleeds_datamodule(easy_microbleeds_tree, tmp_path / "cache")
    # score_threshold 0: the untrained model reports its 100 highest heatmap peaks too, so
    # its sensitivity is measured rather than zero by construction.
    task = DetectionTask("centernet_3d", in_channels=1, patch_size=(16, 16, 16), lr=1e-2,
                         warmup_steps=2, match="centre", match_threshold=4.0, ap_thresholds=(4.0,),
                         score_threshold=0.0, model_kwargs={"channels": [8, 16, 32], "strides": [2, 2]})
    before = trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]
    trainer(tmp_path, max_epochs=5, limit_val_batches=0).fit(task, datamodule=dm)  # 20 steps
    after = trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]
    # The foci are the darkest voxels, so even an untrained network's peaks find some of
    # them at 8 FP/scan (0.56 here): the gain is read at 1 FP/scan and over the whole FROC.
    assert after["val/sens_1fp"] > before["val/sens_1fp"] + 0.3
    assert after["val/sens_8fp"] >= before["val/sens_8fp"]
    assert after["val/cpm"] > before["val/cpm"] + 0.3
    rows = task.subject_rows["val"]
    assert {r["subject_id"] for r in rows} == {s["subject_id"] for s in dm.subjects["val"]}
    truth = [int((np.asarray(s["microbleeds_msk"].data) > 0).any()) for s in dm.subjects["val"]]
    assert all(r["n_targets"] >= t for r, t in zip(rows, truth))
    assert sum(match_from_row(r).n_targets for r in rows) == sum(r["n_targets"] for r in rows)


DETECTION_EXPERIMENTS = sorted([*(REPO / "experiments" / "stroke").glob("det_*.yaml"),
                                *(REPO / "experiments" / "microbleeds").glob("det_*.yaml")])


def test_one_experiment_per_detection_model_and_disease():
    from cogimg import models

    for disease in ("stroke", "microbleeds"):
        configs = [p for p in DETECTION_EXPERIMENTS if p.parent.name == disease]
        names = {yaml.safe_load(p.read_text(encoding="utf-8"))["model"]["init_args"]["model"] for p in configs}
        assert names == set(models.available("detection")), disease


@pytest.mark.parametrize("config", DETECTION_EXPERIMENTS, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_detection_experiment_runs(config, easy_stroke_tree, easy_microbleeds_tree, tmp_path):
    root = easy_microbleeds_tree if config.parent.name == "microbleeds" else easy_stroke_tree
    patch = "[16, 16, 16]"
    assert main(["fit", "--config", str(config), "--trainer.fast_dev_run", "1",
                 "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.enable_progress_bar", "false",
                 "--data.init_args.patch_size", patch,
                 "--data.init_args.data_root", str(root),
                 "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--data.init_args.centre_jitter", "5",  # ≤ (16 - 1) // 2 for the small patch
                 "--data.init_args.num_workers", "0"]) == 0


def test_predict_writes_boxes_in_native_voxels_and_mm(easy_microbleeds_tree, tmp_path, capsys):
    import nibabel as nib

    from cogimg.data.boxes import voxel_box_to_mm

    dm = microbleeds_datamodule(easy_microbleeds_tree, tmp_path / "cache")
    task = DetectionTask("centernet_3d", patch_size=(16, 16, 16), score_threshold=0.0, max_detections=5,
                         model_kwargs={"channels": [8, 16], "strides": [2]})
    fitter = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    fitter.fit(task, datamodule=dm)
    ckpt = tmp_path / "det.ckpt"
    fitter.save_checkpoint(ckpt)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(easy_microbleeds_tree / "sub-01"),
                 "--out", str(out), "--device", "cpu"]) == 0
    assert "sub-01: 5 detection(s)" in capsys.readouterr().out
    report = json.loads((out / "sub-01_pred_boxes.json").read_text(encoding="utf-8"))
    assert report["n_detections"] == 5 and report["preset"] == "microbleeds"
    affine = nib.load(easy_microbleeds_tree / "sub-01" / "anat" / "sub-01_T2starw.nii.gz").affine
    scores = [d["score"] for d in report["detections"]]
    assert scores == sorted(scores, reverse=True)
    for d in report["detections"]:
        assert d["label"] == "class1" and d["class"] == 1
        np.testing.assert_allclose(voxel_box_to_mm(d["voxel"], affine), d["mm"], atol=1e-2)
        assert all(0 <= v <= 32 for v in d["voxel"])
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(easy_microbleeds_tree / "sub-01"),
                 "--out", str(out), "--device", "cpu"]) == 2  # outputs in the way
    assert "--overwrite" in capsys.readouterr().err
