"""``min_lesion_ml``: the task applies it when scoring and predicting, ``cogimg postprocess``
chooses it on the run's validation subjects, ``cogimg predict`` reads the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from cogimg.cli import main
from cogimg.inference import (
    CheckpointError,
    choice_path,
    choose_for_checkpoint,
    predict_dataset,
    read_checkpoint,
    read_choice,
)
from cogimg.metrics.segmentation import dice
from cogimg.tasks.segmentation import SegmentationTask

SMALL = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


def speck_task(min_lesion_ml: float) -> tuple[SegmentationTask, np.ndarray]:
    """A task whose network output is replaced by a fixed cube + one-voxel speck, and the cube."""
    task = SegmentationTask("unet", patch_size=(16, 16, 16), model_kwargs=SMALL,
                            min_lesion_ml=min_lesion_ml)
    truth = np.zeros((16, 16, 16), dtype=bool)
    truth[4:9, 4:9, 4:9] = True  # 125 voxels at 2 mm = 1.0 mL
    pred = truth.copy()
    pred[14, 14, 14] = True  # 0.008 mL
    probs = torch.stack([torch.from_numpy(~pred), torch.from_numpy(pred)]).float()[None]
    task.predict_volume = lambda image: probs.expand(image.shape[0], -1, -1, -1, -1)
    return task, truth


def test_task_applies_min_lesion_ml_when_scoring_and_predicting():
    image = torch.zeros(1, 2, 16, 16, 16)
    for threshold, expected_dice in ((0.0, 250 / 251), (0.05, 1.0)):
        task, truth = speck_task(threshold)
        batch = {"image": image, "label": torch.from_numpy(truth)[None, None].long(),
                 "spacing_mm": torch.tensor([[2.0, 2.0, 2.0]]), "subject_id": ["s1"]}
        (row,) = task.evaluate_batch(batch, "val")
        assert row["dice"] == pytest.approx(expected_dice)
        mask = task.predict_case(image, spacing_mm=(2.0, 2.0, 2.0))["mask"].numpy()
        assert dice(mask == 1, truth) == pytest.approx(expected_dice)
    with pytest.raises(ValueError, match="spacing_mm"):
        task.predict_case(image)  # a threshold in mL needs the voxel size
    with pytest.raises(ValueError, match="min_lesion_ml"):
        SegmentationTask("unet", patch_size=(16, 16, 16), model_kwargs=SMALL, min_lesion_ml=-1)


def test_checkpoint_without_the_hparam_loads_with_it_off(trained, tmp_path):
    _, _, ckpt, _ = trained
    state = torch.load(ckpt, weights_only=True)
    assert state["hyper_parameters"].pop("min_lesion_ml") == 0.0
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    assert read_checkpoint(old).task.hparams.min_lesion_ml == 0.0


def _run_folder(trained, tmp_path, easy_stroke_tree):
    """``trained``'s checkpoint in a run folder with the config.yaml of its datamodule."""
    _, dm, ckpt, _ = trained
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    copy = run / "checkpoints" / "last.ckpt"
    copy.write_bytes(ckpt.read_bytes())
    init = {"data_root": str(easy_stroke_tree), "preset": "stroke", "cache_dir": str(dm.cache_dir),
            "patch_size": [24, 24, 24], "n_folds": 3, "test_fraction": 0.2, "seed": 0,
            "augmentation": "none"}
    config = {"data": {"class_path": "cogimg.data.datamodules.PatchDataModule", "init_args": init}}
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return copy


def test_postprocess_chooses_on_validation_subjects_and_predict_reads_it(
        trained, easy_stroke_tree, tmp_path, capsys):
    task, dm, _, _ = trained
    ckpt = _run_folder(trained, tmp_path, easy_stroke_tree)
    assert main(["postprocess", "--ckpt", str(ckpt), "--candidates", "0.05,500",
                 "--device", "cpu"]) == 0
    assert "chose min_lesion_ml" in capsys.readouterr().out
    record = json.loads(choice_path(ckpt).read_text(encoding="utf-8"))
    val_ids = sorted(str(s["subject_id"]) for s in dm.subjects["val"])
    assert sorted(record["subjects"]) == val_ids  # validation only, never test
    assert not set(record["subjects"]) & {str(s["subject_id"]) for s in dm.subjects["test"]}
    assert [r["min_lesion_ml"] for r in record["table"]] == [0.0, 0.05, 500.0]
    # Row 0 is the task's own unprocessed validation scoring; 500 mL removes every lesion.
    rows = [r for b in dm.val_dataloader() for r in task.evaluate_batch(b, "val")]
    assert record["table"][0]["dice"] == pytest.approx(np.mean([r["dice"] for r in rows]))
    assert record["table"][2]["volume_pred_ml"] == 0.0
    assert record["table"][2]["hausdorff95_mm"] is None  # undefined: null, plain JSON
    assert record["min_lesion_ml"] in (0.0, 0.05)
    assert main(["postprocess", "--ckpt", str(ckpt), "--device", "cpu"]) == 2  # in the way

    case = easy_stroke_tree / "sub-01"
    choice_path(ckpt).write_text(json.dumps({"min_lesion_ml": 500.0}), encoding="utf-8")
    (chosen,) = predict_dataset(ckpt, case, tmp_path / "chosen")
    assert chosen["min_lesion_ml"] == 500.0 and chosen["n_lesions"] == 0
    (explicit,) = predict_dataset(ckpt, case, tmp_path / "explicit", min_lesion_ml=0.0)
    assert explicit["min_lesion_ml"] == 0.0 and explicit["n_lesions"] >= 1
    choice_path(ckpt).write_text(json.dumps({"min_lesion_ml": "big"}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="postprocess.json"):
        read_choice(ckpt)
    elsewhere = tmp_path / "elsewhere.json"
    again = choose_for_checkpoint(ckpt, [0.05, 500.0], out=elsewhere)
    assert json.loads(elsewhere.read_text(encoding="utf-8"))["table"] == record["table"] == \
        again["table"]  # the same predictions and scores, written where asked


@pytest.mark.parametrize("argv", [
    ["predict", "--min-lesion-ml", "-1"],
    ["predict", "--min-lesion-ml", "nan"],
    ["predict", "--min-lesion-ml", "lots"],
    ["postprocess", "--candidates", "0.1,-2"],
])
def test_cli_refuses_bad_thresholds(argv, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([argv[0], "--ckpt", str(tmp_path / "x.ckpt"), "--input", str(tmp_path), *argv[1:]]
             if argv[0] == "predict" else [argv[0], "--ckpt", str(tmp_path / "x.ckpt"), *argv[1:]])
    assert exc.value.code == 2


def test_postprocess_without_run_config_is_a_usage_error(trained, tmp_path, capsys):
    _, _, ckpt, _ = trained
    alone = tmp_path / "alone" / "last.ckpt"
    alone.parent.mkdir()
    alone.write_bytes(ckpt.read_bytes())
    assert main(["postprocess", "--ckpt", str(alone), "--device", "cpu"]) == 2
    assert "config.yaml" in capsys.readouterr().err
