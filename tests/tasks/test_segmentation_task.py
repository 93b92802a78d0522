"""SegmentationTask: learns an easy lesion task, and evaluates with the ISLES'22 metrics."""

from __future__ import annotations

import pytest
import torch

from cogimg.tasks.segmentation import SegmentationTask
from tests.tasks.conftest import trainer


def test_training_raises_validation_dice(trained, tmp_path):
    task, dm, _, before = trained
    after = trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]
    assert before < 0.3
    assert after["val/dice"] > 0.7, after
    assert after["val/dice"] > before + 0.4
    rows = task.subject_rows["val"]
    assert {r["subject_id"] for r in rows} == {s["subject_id"] for s in dm.subjects["val"]}
    assert all(0.0 <= r["lesion_f1"] <= 1.0 for r in rows)


def test_deep_supervision_loss_is_finite():
    task = SegmentationTask("dynunet", in_channels=2, num_classes=2, patch_size=(32, 32, 32),
                            model_kwargs={"deep_supervision": True})
    batch = {"image": torch.randn(2, 2, 32, 32, 32),
             "label": (torch.rand(2, 1, 32, 32, 32) > 0.9).long()}
    loss = task.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)


def test_bad_arguments():
    with pytest.raises(ValueError, match="count background"):
        SegmentationTask("unet", num_classes=1)
    with pytest.raises(ValueError, match="optimizer"):
        SegmentationTask("unet", optimizer="lion")
    with pytest.raises(KeyError, match="unet"):
        SegmentationTask("no_such_model")


def test_multi_label_maps_are_scored_per_class(monkeypatch):
    """Three classes: rows per subject and class, logged overall and per class name."""
    task = SegmentationTask("unet", in_channels=1, num_classes=3, patch_size=(16, 16, 16),
                            class_names=("core", "penumbra"),
                            model_kwargs={"channels": [4, 8], "strides": [2]})
    label = torch.zeros(1, 1, 16, 16, 16, dtype=torch.long)
    label[0, 0, 2:6, 2:6, 2:6] = 1
    label[0, 0, 9:13, 9:13, 9:13] = 2
    logits = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 4, 1, 2, 3).float() * 10
    monkeypatch.setattr(task, "predict_volume", lambda image: torch.softmax(logits, 1))
    logged = {}
    monkeypatch.setattr(task, "log", lambda key, value, **kw: logged.__setitem__(key, value))
    task.on_validation_epoch_start()
    task.validation_step({"image": torch.zeros(1, 1, 16, 16, 16), "label": label,
                          "spacing_mm": torch.ones(1, 3), "subject_id": ["s1"]}, 0)
    task.on_validation_epoch_end()
    assert [r["class"] for r in task.subject_rows["val"]] == ["core", "penumbra"]
    assert logged["val/dice"] == logged["val/dice_core"] == logged["val/dice_penumbra"] == 1.0
    assert logged["val/volume_truth_ml_core"] == pytest.approx(64 / 1000)
