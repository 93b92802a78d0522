"""``cogimg predict --ckpt A B …``: an ensemble averages its members' probabilities (checked by
hand on tiny U-Nets), one member twice is that member, and members must read the same inputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from cogimg.cli import main
from cogimg.inference import (
    load_task,
    predict_dataset,
    preprocessed_subjects,
    preprocessing_config,
    subjects_from_input,
    to_native,
)
from tests.inference.test_predict_tta import balance_classes, save_checkpoint, tiny_task, write_case


@pytest.fixture
def members(tmp_path):
    """A case folder, two tiny balanced U-Nets saved as checkpoints, and the mask of their
    mean probabilities on the native grid, computed by hand."""
    case = write_case(tmp_path / "case")
    paths = [tmp_path / "a.ckpt", tmp_path / "b.ckpt"]
    tasks = [tiny_task(3), tiny_task(4)]
    save_checkpoint(tasks[0], paths[0])
    _, data = load_task(paths[0])
    subjects = subjects_from_input(case, ("dwi", "adc"), "stroke")
    frames = preprocessed_subjects(subjects, preprocessing_config(data), ("dwi", "adc"))
    with torch.no_grad():
        _, processed, image = next(frames)
        probs = []
        for task, path in zip(tasks, paths):
            balance_classes(task, image)
            save_checkpoint(task, path)
            probs.append(task.predict_volume(image)[0])
        masks = {name: to_native(p.argmax(0).to(torch.uint8), processed, is_label=True)
                 for name, p in (("a", probs[0]), ("b", probs[1]),
                                 ("mean", (probs[0] + probs[1]) / 2))}
    frames.close()
    return case, paths, {k: np.asarray(v.dataobj) for k, v in masks.items()}


def _mask(out) -> np.ndarray:
    (path,) = out.glob("*_pred_msk.nii.gz")
    return np.asarray(nib.load(path).dataobj)


def test_ensemble_writes_the_mask_of_the_mean_probabilities(members, tmp_path):
    case, paths, expected = members
    out = tmp_path / "ensemble"
    assert main(["predict", "--ckpt", *map(str, paths), "--input", str(case), "--out", str(out),
                 "--device", "cpu"]) == 0
    mask = _mask(out)
    np.testing.assert_array_equal(mask, expected["mean"])
    assert 0.05 < mask.mean() < 0.95
    # the members disagree, so the mean is neither of them
    assert (mask != expected["a"]).any() and (mask != expected["b"]).any()
    (report,) = out.glob("*_pred.json")
    written = json.loads(report.read_text())
    assert written["checkpoints"] == [str(p) for p in paths] and "checkpoint" not in written


def test_one_member_twice_is_that_member(members, tmp_path):
    case, paths, expected = members
    (report,) = predict_dataset([paths[0], paths[0]], case, tmp_path / "twice")
    np.testing.assert_array_equal(_mask(tmp_path / "twice"), expected["a"])
    assert report["checkpoints"] == [str(paths[0])] * 2


def test_members_must_read_the_same_inputs(members, tmp_path):
    case, paths, _ = members
    other = tmp_path / "coarse.ckpt"
    state = torch.load(paths[1], weights_only=True)
    state["PatchDataModule"]["preprocessing"]["spacing_mm"] = 3.0
    torch.save(state, other)
    with pytest.raises(ValueError, match=r"coarse\.ckpt: preset, modalities or preprocessing"):
        predict_dataset([paths[0], other], case, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no checkpoint"):
        predict_dataset([], case, tmp_path / "out")


def test_members_may_differ_in_their_training_random_states(members, tmp_path):
    """Trained checkpoints store their training streams' random states (tensors) beside the
    data settings; they differ between any two runs and do not stop an ensemble (nor
    ``cogimg annotate``'s)."""
    from cogimg.paradigms.lowlabel.annotate import load_members

    case, paths, expected = members
    for k, path in enumerate(paths):
        state = torch.load(path, weights_only=True)
        state["PatchDataModule"]["training_streams"] = [{"labelled": {"state": torch.arange(k, k + 4)}}]
        torch.save(state, path)
    predict_dataset(paths, case, tmp_path / "out")
    np.testing.assert_array_equal(_mask(tmp_path / "out"), expected["mean"])
    tasks, _, samples = load_members(paths, mc_samples=1, device="cpu")
    assert len(tasks) == 2 and samples == [1, 1]
