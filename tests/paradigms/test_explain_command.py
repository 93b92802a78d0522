"""``cogimg explain`` end to end on small checkpoints: files on the scan's native grid, JSON
records, class targets, refusal to overwrite."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cogimg.commands import explain as command
from cogimg.data.transforms import PreprocessingConfig
from cogimg.tasks.base import _plain
from cogimg.tasks.classification import ClassificationTask
from cogimg.tasks.segmentation import SegmentationTask
from tests.paradigms.test_explain import OBLIQUE_SHAPE, oblique_affine


def save_checkpoint(task, path, preset, modalities, config: PreprocessingConfig):
    """What Lightning writes for a cogimg task, without a training run."""
    cls = type(task)
    torch.save({"cogimg": {"task": f"{cls.__module__}.{cls.__qualname__}"},
                "hyper_parameters": _plain(dict(task.hparams)), "state_dict": task.state_dict(),
                "DataModule": {"preset": preset, "modalities": list(modalities),
                               "preprocessing": config.to_dict()}}, path)
    return path


def parse(argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def classifier_ckpt(tmp_path):
    torch.manual_seed(0)
    task = ClassificationTask("resnet10_3d", classes=["CN", "AD"], input_shape=(16, 16, 16),
                              model_kwargs={"block_inplanes": [4, 4, 8, 8]}).eval()
    config = PreprocessingConfig(spacing_mm=4.0, target_shape=(16, 16, 16), reference="T1w")
    return save_checkpoint(task, tmp_path / "cls.ckpt", "ad_binary", ["T1w"], config)


@pytest.fixture
def oblique_t1(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "sub-07_T1w.nii.gz"
    nib.save(nib.Nifti1Image(rng.normal(100, 10, OBLIQUE_SHAPE).astype(np.float32), oblique_affine()), path)
    return path


@pytest.mark.parametrize("method", ["gradcam", "ig", "occlusion"])
def test_classifier_saliency_lands_on_the_oblique_native_grid(method, classifier_ckpt, oblique_t1,
                                                              tmp_path, capsys):
    out = tmp_path / "out"
    args = parse(["--ckpt", str(classifier_ckpt), "--input", str(oblique_t1), "--method", method,
                  "--out", str(out), "--target", "AD", "--ig-steps", "2", "--window", "8",
                  "--stride", "8", "--device", "cpu"])
    assert command.run(args) == 0
    stem = out / f"sub-07_T1w_desc-{method}_saliency"
    image = nib.load(f"{stem}.nii.gz")
    assert image.shape == OBLIQUE_SHAPE
    np.testing.assert_allclose(image.affine, oblique_affine(), atol=1e-5)
    values = np.asarray(image.dataobj)
    assert values.min() >= 0 and values.max() <= 1
    record = json.loads(Path(f"{stem}.json").read_text(encoding="utf-8"))
    assert record["target"] == "AD" and record["target_index"] == 1
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert Path(f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
    assert "sub-07_T1w: " + method in capsys.readouterr().out


def test_refuses_to_overwrite_and_rejects_unknown_classes(classifier_ckpt, oblique_t1, tmp_path):
    argv = ["--ckpt", str(classifier_ckpt), "--input", str(oblique_t1), "--method", "gradcam",
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert command.run(parse(argv)) == 0
    with pytest.raises(FileExistsError, match="--overwrite"):
        command.run(parse(argv))
    assert command.run(parse([*argv, "--overwrite"])) == 0
    with pytest.raises(ValueError, match="not one of the model's classes"):
        command.run(parse([*argv, "--overwrite", "--target", "PD"]))


def test_segmentation_checkpoint_explains_the_lesion_logit_sum(bids_root, tmp_path):
    # Only the stroke subjects: the loader refuses a tree whose others lack DWI/ADC.
    for pid in ("sub-01", "sub-02", "sub-03", "sub-06"):
        shutil.rmtree(bids_root / pid)
    shutil.rmtree(bids_root / "derivatives" / "truth")
    rows = (bids_root / "participants.tsv").read_text(encoding="utf-8").splitlines()
    (bids_root / "participants.tsv").write_text(
        "\n".join([rows[0], *(r for r in rows[1:] if r.startswith(("sub-04", "sub-05")))]) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    task = SegmentationTask("unet", in_channels=2, num_classes=2, patch_size=(16, 16, 16),
                            model_kwargs={"channels": [4, 8, 8], "strides": [2, 2],
                                          "num_res_units": 1}).eval()
    last = [m for m in task.model.modules() if isinstance(m, torch.nn.ConvTranspose3d)][-1]
    with torch.no_grad():  # biased towards "lesion", so that the predicted region is not empty
        last.bias.copy_(torch.tensor([0.0, 5.0]))
    config = PreprocessingConfig(spacing_mm=2.0, reference="dwi")
    ckpt = save_checkpoint(task, tmp_path / "seg.ckpt", "stroke", ["dwi", "adc"], config)
    args = parse(["--ckpt", str(ckpt), "--input", str(bids_root / "sub-04"), "--method", "gradcam",
                  "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert command.run(args) == 0
    record = json.loads((tmp_path / "out" / "sub-04_desc-gradcam_saliency.json").read_text(encoding="utf-8"))
    assert record["target"] == "lesion logit sum" and record["region_voxels"] > 0
    image = nib.load(tmp_path / "out" / "sub-04_desc-gradcam_saliency.nii.gz")
    source = nib.load(bids_root / "sub-04" / "dwi" / "sub-04_dwi.nii.gz")
    assert image.shape == source.shape
    np.testing.assert_allclose(image.affine, source.affine)
