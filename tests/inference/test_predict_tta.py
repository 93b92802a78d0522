"""``cogimg predict --tta {none,flip}``: mirrored test-time augmentation, checked by hand on a
tiny U-Net, and the batched-mirror sliding window against the sequential one."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from cogimg.cli import main
from cogimg.data.transforms import PreprocessingConfig
from cogimg.inference import (
    CheckpointError,
    apply_inference_settings,
    load_task,
    preprocessed_subjects,
    preprocessing_config,
    subjects_from_input,
    to_native,
)
from cogimg.models.sliding_window import (
    flip_combinations,
    sliding_window_logits,
    sliding_window_predict,
)
from cogimg.tasks.segmentation import SegmentationTask
from tests.tasks.conftest import AFFINE, sphere, write_nifti

PATCH = (32, 32, 32)
SHAPE = (48, 40, 36)  # not a multiple of the window: the window grid is not mirror-symmetric


def tiny_task(seed: int = 0) -> SegmentationTask:
    torch.manual_seed(seed)
    return SegmentationTask("unet", in_channels=2, num_classes=2, patch_size=PATCH,
                            model_kwargs={"channels": [4, 8], "strides": [2],
                                          "num_res_units": 1}).eval()


def balance_classes(task: SegmentationTask, image: torch.Tensor) -> None:
    """Shift the last layer's bias so that about half the voxels of ``image`` are foreground
    (a random network would otherwise predict one class everywhere)."""
    last = [m for m in task.model.modules()
            if isinstance(getattr(m, "bias", None), torch.Tensor) and m.bias.shape == (2,)][-1]
    with torch.no_grad():
        logits = task.model(image[..., :PATCH[0], :PATCH[1], :PATCH[2]])
        last.bias[1] -= (logits[0, 1] - logits[0, 0]).median()


def write_case(root):
    """A two-modality case folder (``dwi``, ``adc``) with a lesion off the mid-planes."""
    rng = np.random.default_rng(0)
    brain = sphere(SHAPE, (22, 20, 18), 15).astype(np.float32)
    lesion = sphere(SHAPE, (30, 12, 22), 5)
    for name, scale in (("dwi", 1.5), ("adc", -0.5)):
        data = brain * (1 + scale * lesion) + rng.normal(0, 0.2, SHAPE).astype(np.float32)
        write_nifti(root / f"{name}.nii.gz", data, AFFINE)
    return root


def save_checkpoint(task: SegmentationTask, path) -> None:
    """A cogimg checkpoint as ``trainer.save_checkpoint`` writes one (task class, hparams,
    weights and the datamodule's data settings)."""
    config = PreprocessingConfig(spacing_mm=2.0)
    torch.save({"cogimg": {"task": "cogimg.tasks.segmentation.SegmentationTask"},
                "hyper_parameters": dict(task.hparams), "state_dict": task.state_dict(),
                "PatchDataModule": {"preset": "stroke", "modalities": ["dwi", "adc"],
                                    "preprocessing": config.to_dict()}}, path)


def mirrored_mean(model, image: torch.Tensor) -> torch.Tensor:
    """Mean softmax of the model over the 8 mirrored copies of a one-window ``image``."""
    total = 0
    with torch.no_grad():
        for dims in ([], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]):
            probs = torch.softmax(model(torch.flip(image, dims)), 1)
            total = total + torch.flip(probs, dims)
    return total / 8


def test_flip_is_the_mean_of_the_eight_mirrored_predictions():
    task = tiny_task()
    image = torch.randn(1, 2, *PATCH)  # one window: the Gaussian weights cancel out
    balance_classes(task, image)
    apply_inference_settings(task, "tiny.ckpt", tta="flip")
    assert tuple(task.hparams.tta_flip_axes) == (0, 1, 2)
    flipped = task.predict_case(image)["probabilities"]
    torch.testing.assert_close(flipped, mirrored_mean(task.model, image)[0], atol=1e-5, rtol=0)
    apply_inference_settings(task, "tiny.ckpt", tta="none")
    plain = task.predict_case(image)["probabilities"]
    with torch.no_grad():
        torch.testing.assert_close(plain, torch.softmax(task.model(image), 1)[0], atol=1e-5,
                                   rtol=0)
    # the network is not mirror-symmetric, so mirroring changes the probabilities
    assert (plain - flipped).abs().max() > 1e-2


def test_no_flag_keeps_the_checkpoint_setting_and_bad_settings_are_refused():
    task = tiny_task()
    task.hparams.tta_flip_axes = (0,)
    apply_inference_settings(task, "tiny.ckpt")
    assert tuple(task.hparams.tta_flip_axes) == (0,) and task.hparams.sw_overlap == 0.5
    apply_inference_settings(task, "tiny.ckpt", overlap=0.25, sw_batch_size=8)
    assert (task.hparams.sw_overlap, task.hparams.sw_batch_size) == (0.25, 8)
    with pytest.raises(ValueError, match="sideways"):
        apply_inference_settings(task, "tiny.ckpt", tta="sideways")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        apply_inference_settings(task, "tiny.ckpt", overlap=1.0)
    no_windows = SimpleNamespace(hparams={})  # a task without sliding windows or mirroring
    with pytest.raises(CheckpointError, match="no.ckpt.*--tta flip"):
        apply_inference_settings(no_windows, "no.ckpt", tta="flip")
    with pytest.raises(CheckpointError, match="no.ckpt.*--overlap"):
        apply_inference_settings(no_windows, "no.ckpt", overlap=0.25)
    apply_inference_settings(no_windows, "no.ckpt", tta="none")  # nothing to switch off


@pytest.mark.parametrize("axes", [(0, 1, 2), (1,)])
def test_batched_mirrors_equal_the_sequential_passes(axes):
    task = tiny_task(1)
    roi = (16, 16, 16)
    image = torch.randn(2, 2, 26, 20, 18)  # two volumes, 3 × 2 × 2 windows each
    batched = sliding_window_predict(task.model, image, roi, overlap=0.5, sw_batch_size=3,
                                     tta_flip_axes=axes)
    total = 0
    with torch.no_grad():
        for combo in flip_combinations(axes):
            dims = [a + 2 for a in combo]
            logits = sliding_window_logits(task.model, torch.flip(image, dims), roi, 0.5, 3)
            total = total + torch.flip(torch.softmax(logits, 1), dims)
    torch.testing.assert_close(batched, total / len(flip_combinations(axes)), atol=1e-5, rtol=0)


def test_cli_flip_writes_the_mirrored_mask(tmp_path):
    case = write_case(tmp_path / "case")
    task = tiny_task(2)
    subjects = subjects_from_input(case, ("dwi", "adc"), "stroke")
    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(task, ckpt)
    _, data = load_task(ckpt)
    frames = preprocessed_subjects(subjects, preprocessing_config(data), ("dwi", "adc"))
    with torch.no_grad():
        _, processed, image = next(frames)  # its temporary cache lives until frames.close()
        balance_classes(task, image)
        save_checkpoint(task, ckpt)  # stores tta_flip_axes=() and the balanced bias
        expected = {}
        for tta in ("none", "flip"):  # the task's own path, mirroring set by hand
            task.hparams.tta_flip_axes = (0, 1, 2) if tta == "flip" else ()
            labels = task.predict_volume(image)[0].argmax(0).to(torch.uint8)
            expected[tta] = to_native(labels, processed, is_label=True)
    frames.close()
    masks = {}
    for tta, flags in (("none", []), ("flip", ["--tta", "flip"])):
        out = tmp_path / tta
        assert main(["predict", "--ckpt", str(ckpt), "--input", str(case), "--out", str(out),
                     "--device", "cpu", *flags]) == 0
        (path,) = out.glob("*_pred_msk.nii.gz")
        masks[tta] = np.asarray(nib.load(path).dataobj)
        np.testing.assert_array_equal(masks[tta], np.asarray(expected[tta].dataobj))
    assert 0.05 < masks["flip"].mean() < 0.95
    assert (masks["flip"] != masks["none"]).any()


@pytest.mark.parametrize("flags", [["--tta", "sideways"], ["--overlap", "1.5"],
                                   ["--sw-batch-size", "0"]])
def test_cli_refuses_bad_values_with_exit_2(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--ckpt", str(tmp_path / "x.ckpt"), "--input", str(tmp_path),
              *flags])
    assert exc.value.code == 2
    assert flags[0] in capsys.readouterr().err
