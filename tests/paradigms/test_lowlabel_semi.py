"""Semi-supervised training: EMA and ramp-up math, losses, config checks, and mean teacher /
pseudo-labelling training real tasks on tiny cohorts with most labels hidden."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cogimg.data.datamodules import VolumeDataModule
from cogimg.data.splits import make_kfold_split, save_split
from cogimg.paradigms.lowlabel.pseudo_labels import check_outside_dataset
from cogimg.paradigms.lowlabel.semi_supervised import (
    SemiSupervised,
    SemiSupervisedConfig,
    consistency_loss,
    ema_update,
    pseudo_label_loss,
    sigmoid_rampup,
)
from cogimg.tasks.classification import ClassificationTask
from tests.classification_tree import build_classification_tree

SHAPE = (16, 16, 16)
TINY = {"block_inplanes": [4, 8, 8, 8]}


def test_ema_update_is_the_weighted_average_and_copies_buffers():
    torch.manual_seed(0)
    teacher, student = (nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)) for _ in range(2))
    student[1].running_mean.fill_(5.0)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, decay=0.9)
    for t, t0, s in zip(teacher.parameters(), before, student.parameters()):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * s)
    torch.testing.assert_close(teacher[1].running_mean, torch.full((2,), 5.0))
    ema_update(teacher, student, decay=0.0)
    for t, s in zip(teacher.parameters(), student.parameters()):
        torch.testing.assert_close(t, s)


def test_rampup_and_losses():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(500, 100) == sigmoid_rampup(3, 0) == 1.0
    student = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    teacher = torch.tensor([[5.0, 0.0], [0.0, 0.2], [0.0, 9.0]])  # confident, unsure, confident
    loss, accepted = pseudo_label_loss(student, teacher, threshold=0.9)
    ce = F.cross_entropy(student, torch.tensor([0, 1, 1]), reduction="none")
    assert float(accepted) == pytest.approx(2 / 3)
    assert float(loss) == pytest.approx(float((ce[0] + ce[2]) / 3))
    assert float(consistency_loss(teacher, teacher)) == 0.0
    dense = torch.randn(2, 2, 4, 4, 4)
    assert float(consistency_loss(dense, dense + 1.0)) == pytest.approx(0.0, abs=1e-6)  # softmax shift



def test_class_balanced_pseudo_labels_weigh_a_rare_class_like_the_background():
    # 1 lesion voxel among 63 confident background voxels, all accepted: unbalanced, the
    # student's mistake on the lesion voxel is diluted 64-fold; balanced, it is half the loss.
    teacher = torch.zeros(1, 2, 4, 4, 4)
    teacher[:, 0] = 5.0
    teacher[0, :, 0, 0, 0] = torch.tensor([0.0, 5.0])
    student = teacher.clone()
    student[0, :, 0, 0, 0] = torch.tensor([2.0, 0.0])  # wrong on the lesion voxel
    ce = F.cross_entropy(student, teacher.argmax(1), reduction="none")[0]
    plain, accepted = pseudo_label_loss(student, teacher, threshold=0.9)
    balanced, accepted_b = pseudo_label_loss(student, teacher, threshold=0.9, class_balanced=True)
    assert float(accepted) == float(accepted_b) == 1.0
    assert float(plain) == pytest.approx(float(ce.mean()))
    background = ce.flatten()[1:].mean()
    assert float(balanced) == pytest.approx(float((ce[0, 0, 0] + background) / 2))
    assert float(balanced) > 10 * float(plain)
    nothing, none_accepted = pseudo_label_loss(student, teacher, threshold=1.1, class_balanced=True)
    assert float(nothing) == 0.0 and float(none_accepted) == 0.0


def test_pseudo_label_rounds_can_follow_optimizer_steps_not_epochs():
    # At 10 % labels a patch epoch can be 4 steps: rounds of 5 epochs would freeze the first
    # teacher after 20 steps. round_steps counts optimizer steps whatever the epoch length.
    semi = SemiSupervised("pseudo_label", round_steps=10)
    model = nn.Linear(3, 2)
    task = SimpleNamespace(model=model, global_step=0, current_epoch=0)
    semi._update_teacher(task)
    assert semi.round == 0
    with torch.no_grad():
        model.weight.add_(1.0)
    task.global_step, task.current_epoch = 9, 7  # many short epochs, still round 0
    semi._update_teacher(task)
    assert semi.round == 0 and not torch.equal(semi.teacher.weight, model.weight)
    task.global_step = 10
    semi._update_teacher(task)
    assert semi.round == 1 and torch.equal(semi.teacher.weight, model.weight)
    with pytest.raises(ValueError, match="round_steps"):
        SemiSupervisedConfig.from_dict({"method": "pseudo_label", "round_steps": 0})

def test_config_names_bad_keys():
    with pytest.raises(ValueError, match="unknown key"):
        SemiSupervisedConfig.from_dict({"method": "mean_teacher", "alpha": 0.9})
    with pytest.raises(ValueError, match="method"):
        SemiSupervisedConfig.from_dict({"method": "fixmatch"})
    with pytest.raises(ValueError, match="ema_decay"):
        SemiSupervisedConfig.from_dict({"method": "mean_teacher", "ema_decay": 1.0})
    with pytest.raises(ValueError, match="given more than once"):
        ClassificationTask(classes=("CN", "AD"), input_shape=SHAPE, model_kwargs=TINY,
                           addons=[SemiSupervised("mean_teacher"), SemiSupervised("mean_teacher")])
    with pytest.raises(TypeError, match="is not a TrainingAddon"):
        ClassificationTask(classes=("CN", "AD"), input_shape=SHAPE, model_kwargs=TINY,
                           addons=[{"class_path": "cogimg.tasks.base.BaseTask"}])


@pytest.fixture(scope="module")
def low_label_tree(tmp_path_factory):
    """CN/AD cohort, 10 per class, 2-fold split with a held-out test set."""
    tmp = tmp_path_factory.mktemp("lowlabel_cls")
    root = build_classification_tree(tmp / "bids", n_per_class=10, diagnoses=("CN", "AD"), seed=1)
    split, _ = save_split(make_kfold_split(root / "participants.tsv", n_folds=2, test_fraction=0.2),
                          tmp / "split.json")
    return root, split, tmp / "cache"


def _fit(low_label_tree, tmp_path, semi, steps=40, fraction=0.25):
    root, split, cache = low_label_tree
    L.seed_everything(0)
    dm = VolumeDataModule(root, preset="ad_binary", split_file=split, cache_dir=cache,
                          spacing_mm=4.0, target_shape=SHAPE, modalities=["T1w"], batch_size=4,
                          augmentation="none", label_fraction=fraction)
    task = ClassificationTask(classes=("CN", "AD"), modalities=("T1w",), input_shape=SHAPE,
                              fusion="single", model_kwargs=TINY, lr=3e-3, scheduler="constant",
                              addons=[SemiSupervised(**semi)])
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_steps=steps, logger=False,
                        limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(task, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    logged.update(trainer.test(task, datamodule=dm, verbose=False)[0])
    return task, dm, logged


def test_mean_teacher_learns_an_easy_task_from_few_labels(low_label_tree, tmp_path):
    semi = {"method": "mean_teacher", "weight": 1.0, "rampup_steps": 10, "ema_decay": 0.9}
    task, dm, metrics = _fit(low_label_tree, tmp_path, semi, steps=20, fraction=0.5)
    assert len(dm.subjects["train"]) == 4 and len(dm.subjects["unlabelled"]) == 4
    assert metrics["test/balanced_accuracy"] >= 0.75
    assert metrics["train/unsupervised_weight"] == pytest.approx(1.0)
    assert metrics["train/mean_teacher_loss"] > 0
    # The teacher trails the student (an EMA of it), and stays out of the task's state dict.
    teacher = task.addons[0].teacher
    gap = sum(float((t - s).abs().sum()) for t, s in zip(teacher.parameters(), task.model.parameters()))
    assert gap > 0 and not any(k.startswith("addons") for k in task.state_dict())


def test_pseudo_label_rounds_write_a_table_and_never_label_labelled_subjects(low_label_tree, tmp_path):
    semi = {"method": "pseudo_label", "threshold": 0.6, "round_epochs": 1, "rampup_steps": 0,
            "pseudo_label_dir": str(tmp_path / "pseudo")}
    _, dm, metrics = _fit(low_label_tree, tmp_path, semi, steps=3)  # one step per epoch: 3 rounds
    assert 0.0 <= metrics["train/pseudo_accepted"] <= 1.0

    unlabelled = {s["subject_id"] for s in dm.subjects["unlabelled"]}
    for r in (1, 2):
        table = pd.read_csv(tmp_path / "pseudo" / f"round-{r}" / "pseudo_labels.csv")
        assert set(table["subject_id"]) == unlabelled
        assert set(table["pseudo_label"]) <= {"CN", "AD"}
        assert (table["accepted"] == (table["confidence"] >= 0.6)).all()
    assert not (tmp_path / "pseudo" / "round-0").exists()  # round 0 is supervised only
    with pytest.raises(ValueError, match="inside the dataset"):
        check_outside_dataset(low_label_tree[0] / "derivatives" / "pseudo", low_label_tree[0])
