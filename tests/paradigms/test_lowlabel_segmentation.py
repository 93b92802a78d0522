"""Low-label segmentation: pseudo-label rounds never touch ground truth; self-supervised
weights pretrain on unlabelled patches and load into a task (bad files fail clearly)."""

from __future__ import annotations

import copy
import hashlib

import lightning as L
import nibabel as nib
import numpy as np
import pytest
import torch

from cogimg.data.cache import load_subject
from cogimg.data.datamodules import PatchDataModule
from cogimg.paradigms.lowlabel import SemiSupervised
from cogimg.paradigms.lowlabel.pretrain import (
    PretrainedWeights,
    PretrainedWeightsError,
    load_pretrained,
    pretrain_encoder,
    random_block_mask,
)
from cogimg.tasks.segmentation import SegmentationTask
from tests.tasks.conftest import SHAPE, build_easy_stroke_tree

PATCH = (16, 16, 16)
SMALL = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


@pytest.fixture(scope="module")
def stroke(tmp_path_factory):
    """Easy stroke tree (10 subjects) and a datamodule with half the training fold labelled."""
    tmp = tmp_path_factory.mktemp("lowlabel_seg")
    root = build_easy_stroke_tree(tmp / "bids")
    dm = PatchDataModule(root, preset="stroke", cache_dir=tmp / "cache", spacing_mm=4.0,
                         patch_size=PATCH, samples_per_volume=2, queue_length=4, batch_size=2,
                         n_folds=2, augmentation="none", label_fraction=0.5)
    dm.setup("fit")
    return root, dm


def _task(**kw) -> SegmentationTask:
    return SegmentationTask("unet", in_channels=2, num_classes=2, patch_size=PATCH, model_kwargs=SMALL,
                            scheduler="constant", **kw)


def _digest(paths) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_pseudo_labels_go_to_their_own_folder_and_never_overwrite_ground_truth(stroke, tmp_path):
    root, dm = stroke
    truth_files = sorted((root / "derivatives").rglob("*_msk.nii.gz"))
    before = _digest(truth_files)
    labelled = {s["subject_id"]: load_subject(copy.deepcopy(s))[dm.label_key].data.clone()
                for s in dm.subjects["train"]}
    L.seed_everything(0)
    task = _task(addons=[SemiSupervised("pseudo_label", threshold=0.5, round_epochs=1,
                                        pseudo_label_dir=str(tmp_path / "pseudo"))])
    L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=2, limit_train_batches=1,
              limit_val_batches=0, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False).fit(task, datamodule=dm)
    written = sorted((tmp_path / "pseudo" / "round-1").glob("*_pseudo_dseg.nii.gz"))
    unlabelled = {s["subject_id"] for s in dm.subjects["unlabelled"]}
    assert {p.name.split("_pseudo")[0] for p in written} == unlabelled and not unlabelled & set(labelled)
    for path in written:  # the subject's native grid, pseudo classes or "ignore"
        sid = path.name.split("_pseudo")[0]
        image = nib.load(path)
        native = nib.load(next(root.glob(f"{sid}/dwi/{sid}_dwi.nii.gz")))
        assert image.shape == SHAPE and np.allclose(image.affine, native.affine)
        assert set(np.unique(np.asarray(image.dataobj))) <= {0, 1, 255}
    assert _digest(truth_files) == before  # ground-truth files untouched
    assert sorted((root / "derivatives").rglob("*.nii.gz")) == truth_files  # nothing added there
    for s in dm.subjects["train"]:  # labelled subjects keep their own labels in training
        assert torch.equal(load_subject(copy.deepcopy(s))[dm.label_key].data, labelled[s["subject_id"]])
    batch = next(iter(dm.unlabelled_dataloader()))
    assert "label" not in batch and set(batch["subject_id"]) <= unlabelled


def test_block_mask_hides_the_requested_share():
    mask = random_block_mask((2, 1, 32, 32, 30), 0.5, 4, torch.Generator().manual_seed(0))
    assert mask.shape == (2, 1, 32, 32, 30) and 0.3 < float(mask.float().mean()) < 0.7
    cube = mask[0, 0, :4, :4, :4]
    assert bool(cube.all()) or not bool(cube.any())  # whole cubes


def test_pretraining_learns_and_loads_into_a_task(stroke, tmp_path):
    _, dm = stroke
    batches = [next(iter(dm.unlabelled_dataloader()))]
    path = pretrain_encoder(batches, tmp_path / "ssl.pt", model="unet", in_channels=2,
                            patch_size=PATCH, model_kwargs=SMALL, steps=25, lr=1e-2)
    payload = torch.load(path, weights_only=True)
    assert np.mean(payload["loss"][-5:]) < np.mean(payload["loss"][:5])  # reconstruction improves
    assert payload["head_keys"] and not set(payload["head_keys"]) & set(payload["state_dict"])
    task = _task(addons=[PretrainedWeights(str(path))])
    head_before = {k: task.model.state_dict()[k].clone() for k in payload["head_keys"]}
    # what Lightning's configure_model does when fitting starts (before restoring a checkpoint)
    task.addons[0].setup(task, dm, "fit")
    own = task.model.state_dict()
    for key, value in payload["state_dict"].items():
        assert torch.equal(own[key], value), key
    for key, value in head_before.items():  # the task's own output layer is left as built
        assert torch.equal(own[key], value), key
    with torch.no_grad():
        probs = task.predict_volume(batches[0]["image"][:1])
    assert probs.shape == (1, 2, *PATCH)


def test_bad_weights_files_fail_with_the_keys_named(stroke, tmp_path):
    _, dm = stroke
    path = pretrain_encoder([next(iter(dm.unlabelled_dataloader()))], tmp_path / "ssl.pt",
                            model="unet", in_channels=2, patch_size=PATCH, model_kwargs=SMALL, steps=1)
    other = SegmentationTask("unet", in_channels=2, num_classes=2, patch_size=PATCH,
                             model_kwargs={**SMALL, "channels": [8, 8, 16]}).model
    with pytest.raises(PretrainedWeightsError, match="shape-mismatched keys"):
        load_pretrained(other, path)
    payload = torch.load(path, weights_only=True)
    key = min(payload["state_dict"])
    del payload["state_dict"][key]
    payload["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(PretrainedWeightsError, match=rf"missing keys \['{key}'\].*unexpected keys \['extra.weight'\]"):
        load_pretrained(_task().model, tmp_path / "edited.pt")
    with pytest.raises(PretrainedWeightsError, match="builds 'dynunet'"):
        load_pretrained(_task().model, path, model="dynunet")
    torch.save({"format": "cogimg-pretrained", "evil": SegmentationTask}, tmp_path / "pickled.pt")
    with pytest.raises(PretrainedWeightsError, match="cannot read"):  # weights_only refuses classes
        load_pretrained(_task().model, tmp_path / "pickled.pt")
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        task = _task(addons=[PretrainedWeights(str(tmp_path / "missing.pt"))])
        task.addons[0].setup(task, dm, "fit")
