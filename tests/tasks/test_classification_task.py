"""ClassificationTask: learns easy class signals, scores subjects, weights classes, handles
missing modalities, and rebuilds from a weights-only checkpoint."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cogimg.data.datamodules import VolumeDataModule
from cogimg.tasks.classification import ClassificationTask
from tests.classification_tree import build_classification_tree

SHAPE = (16, 16, 16)  # 4 mm
TINY_RESNET = {"block_inplanes": [8, 16, 32, 32]}


def trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def datamodule(root, cache_dir, preset="ad_binary", modalities=("T1w",), **kw) -> VolumeDataModule:
    args = {"preset": preset, "cache_dir": cache_dir, "spacing_mm": 4.0, "target_shape": SHAPE,
            "batch_size": 4, "n_folds": 2, "test_fraction": 0.2, "modalities": list(modalities),
            "augmentation": "none"}
    return VolumeDataModule(root, **{**args, **kw})


def task(classes=("CN", "AD"), modalities=("T1w",), **kw) -> ClassificationTask:
    args = {"model": "resnet10_3d", "classes": classes, "modalities": modalities,
            "input_shape": SHAPE, "model_kwargs": TINY_RESNET, "lr": 1e-2, "warmup_steps": 2}
    return ClassificationTask(**{**args, **kw})


@pytest.fixture(scope="module")
def binary_tree(tmp_path_factory):
    return build_classification_tree(tmp_path_factory.mktemp("cls_binary"), n_per_class=10,
                                     diagnoses=("CN", "AD"))


@pytest.fixture(scope="module")
def trained_binary(binary_tree, tmp_path_factory):
    """CN vs AD from T1w with the default 3D CNN (narrowed): (task, datamodule, BA before)."""
    tmp = tmp_path_factory.mktemp("cls_fit")
    L.seed_everything(0)
    dm = datamodule(binary_tree, tmp / "cache")
    model = task()
    before = trainer(tmp).validate(model, datamodule=dm, verbose=False)[0]["val/balanced_accuracy"]
    fitter = trainer(tmp, max_epochs=20, check_val_every_n_epoch=100)
    fitter.fit(model, datamodule=dm)
    fitter.save_checkpoint(tmp / "binary.ckpt")
    return model, dm, before, tmp / "binary.ckpt"


def test_learns_cn_vs_ad_and_scores_every_subject(trained_binary, tmp_path):
    model, dm, before, _ = trained_binary
    after = trainer(tmp_path).validate(model, datamodule=dm, verbose=False)[0]
    assert before <= 0.75
    assert after["val/balanced_accuracy"] >= 0.9, after
    assert after["val/auroc"] >= 0.9 and after["val/loss"] < 0.5
    rows = model.subject_rows["val"]
    assert sorted(r["subject_id"] for r in rows) == sorted(s["subject_id"] for s in dm.subjects["val"])
    for row in rows:
        assert set(row) == {"subject_id", "label", "pred", "prob_CN", "prob_AD", "loss"}
        assert row["prob_CN"] + row["prob_AD"] == pytest.approx(1.0, abs=1e-5)
        assert row["pred"] == max(("CN", "AD"), key=lambda c: row[f"prob_{c}"])
        truth = next(s["diagnosis"] for s in dm.subjects["val"] if s["subject_id"] == row["subject_id"])
        assert row["label"] == truth


def test_test_stage_logs_bootstrap_interval(trained_binary, tmp_path):
    model, dm, _, _ = trained_binary
    result = trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    assert {"test/balanced_accuracy", "test/auroc", "test/f1_macro", "test/accuracy"} <= set(result)
    low, high = result["test/balanced_accuracy_ci_low"], result["test/balanced_accuracy_ci_high"]
    assert 0.0 <= low <= result["test/balanced_accuracy"] <= high <= 1.0
    assert len(model.subject_rows["test"]) == len(dm.subjects["test"])


def test_weights_only_checkpoint_rebuilds_the_same_model(trained_binary):
    model, dm, _, ckpt = trained_binary
    loaded = ClassificationTask.load_from_checkpoint(ckpt, weights_only=True, map_location="cpu")
    batch = next(iter(dm.val_dataloader()))
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["image"]), model(batch["image"]))


@pytest.fixture(scope="module")
def staging_tree(tmp_path_factory):
    return build_classification_tree(tmp_path_factory.mktemp("cls_stage"), n_per_class=8,
                                     diagnoses=("CN", "MCI", "AD"))


def test_three_class_staging_from_clinical_features(staging_tree, tmp_path):
    """CN/MCI/AD from MMSE (tabular-only fusion): multi-class metrics, the tabular width
    read from the datamodule and kept in the hyperparameters for checkpoints."""
    L.seed_everything(0)
    dm = datamodule(staging_tree, tmp_path / "cache", preset="ad")
    model = task(classes=("CN", "MCI", "AD"), fusion="tabular", use_tabular=True)
    assert model.model is None  # width unknown until setup
    fitter = trainer(tmp_path, max_epochs=40, check_val_every_n_epoch=100)
    fitter.fit(model, datamodule=dm)
    assert model.hparams.tabular_features == len(dm.tabular_features) == 9
    result = fitter.validate(model, datamodule=dm, verbose=False)[0]
    assert result["val/balanced_accuracy"] >= 0.75, result  # chance: 0.33
    assert result["val/auroc"] >= 0.9
    fitter.save_checkpoint(tmp_path / "tab.ckpt")
    loaded = ClassificationTask.load_from_checkpoint(tmp_path / "tab.ckpt", weights_only=True)
    assert loaded.model is not None and loaded.hparams.tabular_features == 9


def test_balanced_class_weights_come_from_training_labels(tmp_path):
    root = build_classification_tree(tmp_path / "bids", n_per_class=6, diagnoses=("CN", "AD"))
    extra = build_classification_tree(tmp_path / "extra", n_per_class=6, diagnoses=("CN",), seed=1)
    # 12 CN + 6 AD: add the extra CN participants under new ids.
    lines = (extra / "participants.tsv").read_text(encoding="utf-8").splitlines()[1:]
    with (root / "participants.tsv").open("a", encoding="utf-8") as table:
        for line in lines:
            old = line.split("\t")[0]
            new = old.replace("sub-", "sub-9")
            for path in (extra / old).rglob("*.nii.gz"):
                target = root / new / path.parent.name / path.name.replace(old, new)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
            table.write(line.replace(old, new) + "\n")
    dm = datamodule(root, tmp_path / "cache")
    model = task(class_weights="balanced")
    trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(model, datamodule=dm)
    counts = dm.class_counts()
    n = np.array([counts["CN"], counts["AD"]], dtype=float)
    assert n[0] > n[1]
    np.testing.assert_allclose(model.class_weight.numpy(), n.sum() / (2 * n), rtol=1e-6)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no trainer here
def test_loss_uses_class_weights_and_label_smoothing():
    model = task(class_weights=[1.0, 3.0], label_smoothing=0.1)
    batch = {"image": torch.randn(4, 1, *SHAPE), "label": torch.tensor([0, 1, 1, 0])}
    model.eval()  # deterministic BatchNorm for the comparison
    expected = F.cross_entropy(model(batch["image"]), batch["label"],
                               weight=torch.tensor([1.0, 3.0]), label_smoothing=0.1)
    torch.testing.assert_close(model.training_step(batch, 0), expected)


def test_missing_pet_at_test_time_predicts_and_warns_once(tmp_path):
    root = build_classification_tree(tmp_path / "bids", n_per_class=6, diagnoses=("CN", "AD"),
                                     missing_pet=[f"sub-{i:03d}" for i in range(1, 13)])
    dm = datamodule(root, tmp_path / "cache", modalities=("T1w", "pet_amyloid"))
    dm.setup("test")
    model = task(modalities=("T1w", "pet_amyloid"), fusion="intermediate", fusion_head="gated")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    assert np.isfinite(result["test/loss"])
    assert len(model.subject_rows["test"]) == len(dm.subjects["test"])
    assert all(np.isfinite(r["prob_AD"]) for r in model.subject_rows["test"])
    missing = [w for w in caught if "lack modality" in str(w.message)]
    assert len(missing) == 1 and "pet_amyloid" in str(missing[0].message)


def test_configuration_errors_are_named(binary_tree, tmp_path):
    with pytest.raises(ValueError, match="fusion"):
        task(fusion="mid")
    with pytest.raises(ValueError, match="use_tabular"):
        task(fusion="tabular")
    with pytest.raises(ValueError, match="class_weights"):
        task(class_weights=[1.0])
    with pytest.raises(ValueError, match="class_weights"):
        task(class_weights="inverse")
    with pytest.raises(ValueError, match="single"):
        task(modalities=("T1w", "pet_amyloid"), fusion="single")
    dm = datamodule(binary_tree, tmp_path / "cache")
    with pytest.raises(ValueError, match="classes"):
        trainer(tmp_path).validate(task(classes=("CN", "MCI", "AD")), datamodule=dm)
    with pytest.raises(ValueError, match="image channels"):
        trainer(tmp_path).validate(task(modalities=("FLAIR",)), datamodule=dm)
    with pytest.raises(ValueError, match="input_shape"):
        trainer(tmp_path).validate(task(input_shape=(32, 32, 32)), datamodule=dm)
