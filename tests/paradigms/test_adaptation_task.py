"""ClassificationTask with the DomainAdaptation add-on: DANN/CORAL/MMD train on a tiny two-site cohort,
target-site batches carry no labels, and a checkpoint rebuilds the site classifier."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from cogimg.data.datamodules import VolumeDataModule
from cogimg.data.splits import make_leave_site_out_split, save_split
from cogimg.paradigms.adaptation import DomainAdaptation
from cogimg.paradigms.adaptation.datamodule import TargetSiteVolumeDataModule
from cogimg.tasks.classification import ClassificationTask
from tests.classification_tree import build_classification_tree

SHAPE = (16, 16, 16)
TINY = {"block_inplanes": [4, 8, 8, 8]}


@pytest.fixture(scope="module")
def lso(tmp_path_factory):
    """Two-site CN/AD tree and its leave-site-out split (fold 0 holds out site-1)."""
    tmp = tmp_path_factory.mktemp("adapt")
    root = build_classification_tree(tmp / "bids", n_per_class=6, diagnoses=("CN", "AD"))
    split = tmp / "lso.json"
    save_split(make_leave_site_out_split(root / "participants.tsv", val_fraction=0.25), split)
    return root, split, tmp / "cache"


def _dm(cls, lso, **kw):
    root, split, cache = lso
    return cls(root, preset="ad_binary", split_file=split, fold=0, cache_dir=cache, spacing_mm=4.0,
               target_shape=SHAPE, batch_size=4, modalities=["T1w"], augmentation="none", **kw)


def _task(adaptation) -> ClassificationTask:
    return ClassificationTask(model="resnet10_3d", classes=("CN", "AD"), modalities=("T1w",),
                              input_shape=SHAPE, model_kwargs=TINY, addons=[DomainAdaptation(**adaptation)],
                              scheduler="constant")


def _trainer(tmp_path, steps=2) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, max_steps=steps,
                     limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)


def test_target_batches_hold_the_held_out_site_without_labels(lso):
    dm = _dm(TargetSiteVolumeDataModule, lso)
    dm.setup("fit")
    dm.request_streams({"target": None})
    batch, _, _ = next(iter(dm.train_dataloader()))
    target = batch["target"]
    sites = {s["subject_id"]: s["site"] for s in dm.subjects["test"]}
    assert "label" not in target and target["image"].shape[1:] == (1, *SHAPE)
    assert {sites[i] for i in target["subject_id"]} == {"site-1"}
    assert {s["site"] for s in dm.subjects["train"]} == {"site-2"}


def test_dann_with_target_site_trains_and_rebuilds_from_checkpoint(lso, tmp_path):
    L.seed_everything(0)
    model = _task({"method": "dann", "weight": 0.5, "gamma": 0.0})
    trainer = _trainer(tmp_path)
    assert model.addons[0].site_classifier is None  # built at setup, once the sites are known
    trainer.fit(model, datamodule=_dm(TargetSiteVolumeDataModule, lso))
    assert model.addons[0].config()["sites"] == ["site-1", "site-2"]
    metrics = trainer.callback_metrics
    assert {"train/dann_loss", "train/supervised_loss", "train/site_accuracy"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss"])
    trainer.save_checkpoint(tmp_path / "dann.ckpt")
    ckpt = torch.load(tmp_path / "dann.ckpt", weights_only=True)
    rebuilt = ClassificationTask(**ckpt["hyper_parameters"])
    rebuilt.addons[0].setup(rebuilt, None, "validate")  # what Lightning's configure_model does
    rebuilt.load_state_dict(ckpt["state_dict"])
    w = "addons.0.site_classifier.2.weight"
    assert torch.equal(rebuilt.state_dict()[w], model.state_dict()[w])
    assert rebuilt.addons[0].site_classifier[2].out_features == 2


@pytest.mark.parametrize("method", ["coral", "mmd"])
def test_alignment_losses_train_across_training_and_target_sites(lso, tmp_path, method):
    L.seed_everything(0)
    model = _task({"method": method, "weight": 1.0})
    trainer = _trainer(tmp_path, steps=1)
    trainer.fit(model, datamodule=_dm(TargetSiteVolumeDataModule, lso))
    value = trainer.callback_metrics[f"train/{method}_loss"]
    assert torch.isfinite(value) and (method == "mmd" or float(value) >= 0.0)  # MMD: the unbiased estimate


def test_adaptation_errors_name_the_problem(lso, tmp_path):
    with pytest.raises(ValueError, match="adaptation.method"):
        _task({"method": "adabn"})
    model = _task({"method": "dann", "feature_module": "encoder"})
    with pytest.raises(ValueError, match="feature_module 'encoder'"):
        _trainer(tmp_path).fit(model, datamodule=_dm(VolumeDataModule, lso))
