"""Label fractions: nested, stratified, seeded subsets of training folds; never val/test;
wired into the datamodules as ``label_fraction`` with an unlabelled pool without labels."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from cogimg.data.datamodules import VolumeDataModule
from cogimg.data.label_fractions import (
    check_label_fractions,
    label_fractions_path,
    labelled_subset,
    load_label_fractions,
    make_label_fractions,
    save_label_fractions,
)
from cogimg.data.splits import load_split, make_kfold_split, save_split
from tests.classification_tree import build_classification_tree

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)


@pytest.fixture
def cohort(tmp_path):
    """80 participants: 60 CN, 20 AD (imbalanced), 5-fold split with a held-out test set."""
    ids = [f"sub-{i:03d}" for i in range(80)]
    table = pd.DataFrame({"participant_id": ids, "diagnosis": ["CN"] * 60 + ["AD"] * 20,
                          "site": ["A", "B"] * 40})
    split = make_kfold_split(table, n_folds=5, test_fraction=0.2, seed=0)
    path, _ = save_split(split, tmp_path / "split.json")
    return table, split, path


def test_fractions_are_nested_stratified_and_inside_the_training_fold(cohort):
    table, split, _ = cohort
    data = make_label_fractions(split, table, FRACTIONS, seed=0)
    dx = dict(zip(table["participant_id"], table["diagnosis"]))
    for name in split.fold_names:
        fold = split.fold(name)
        subsets = [set(data["folds"][name]["labelled"][f"{f:g}"]) for f in FRACTIONS]
        for small, large in itertools.pairwise(subsets):
            assert small < large  # strictly nested
        assert subsets[-1] == set(fold["train"])
        for labelled in subsets:
            assert not labelled & (set(fold["val"]) | set(fold["test"]))
        n_train = {c: sum(dx[i] == c for i in fold["train"]) for c in ("CN", "AD")}
        ten = data["folds"][name]["labelled"]["0.1"]
        assert {c: sum(dx[i] == c for i in ten) for c in ("CN", "AD")} == {
            c: max(1, round(0.1 * n)) for c, n in n_train.items()}


def test_same_seed_same_file_other_seed_other_subset_and_independent_of_other_fractions(cohort, tmp_path):
    table, split, _ = cohort
    a = make_label_fractions(split, table, FRACTIONS, seed=3)
    b = make_label_fractions(split, table.sample(frac=1, random_state=1), FRACTIONS, seed=3)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    only_ten = make_label_fractions(split, table, [0.1], seed=3)
    assert only_ten["folds"]["fold0"]["labelled"]["0.1"] == a["folds"]["fold0"]["labelled"]["0.1"]
    other = make_label_fractions(split, table, FRACTIONS, seed=4)
    ten, ten_other = (set(d["folds"]["fold0"]["labelled"]["0.1"]) for d in (a, other))
    assert ten != ten_other and len(ten) == len(ten_other)


def test_saved_file_is_checked_for_leakage_and_nesting(cohort, tmp_path):
    table, split, path = cohort
    data = make_label_fractions(split, table, FRACTIONS, seed=0)
    target = label_fractions_path(path, 0)
    assert target.parent == path.parent and target.name == "split.labels-seed0.json"
    save_label_fractions(data, split, target, path.name)
    assert load_label_fractions(target, split)["folds"] == data["folds"]
    with pytest.raises(FileExistsError):
        save_label_fractions(data, split, target)
    leaky = json.loads(json.dumps(data))
    leaky["folds"]["fold0"]["labelled"]["0.1"].append(split.fold(0)["val"][0])
    with pytest.raises(ValueError, match="labels val participant"):
        check_label_fractions(leaky, split)
    broken = json.loads(json.dumps(data))
    labelled = broken["folds"]["fold0"]["labelled"]
    labelled["0.25"].remove(labelled["0.1"][0])
    with pytest.raises(ValueError, match="not nested"):
        check_label_fractions(broken, split)


def test_labelled_subset_keeps_val_and_test_and_reuses_the_saved_file(cohort):
    table, split, path = cohort
    full = split.fold(1)
    parts = {f: labelled_subset(path, 1, f, seed=0, participants=table) for f in (0.1, 0.3, 1.0)}
    assert label_fractions_path(path, 0).exists()
    for ids in parts.values():
        assert ids["val"] == full["val"] and ids["test"] == full["test"]
        assert sorted(ids["train"] + ids["unlabelled"]) == sorted(full["train"])
        assert not set(ids["train"]) & set(ids["unlabelled"])
    # 0.3 was not in the saved defaults: cut from the saved order, it still nests.
    assert set(parts[0.1]["train"]) < set(parts[0.3]["train"]) < set(parts[1.0]["train"])
    assert np.isclose(len(parts[0.3]["train"]), 0.3 * len(full["train"]), atol=2)
    assert labelled_subset(path, 1, 0.1, seed=0) == parts[0.1]  # read back, no table needed


def test_datamodule_label_fraction_serves_unlabelled_images_without_labels(tmp_path):
    root = build_classification_tree(tmp_path / "bids", n_per_class=6, diagnoses=("CN", "AD"))
    split_path, _ = save_split(make_kfold_split(root / "participants.tsv", n_folds=2,
                                                test_fraction=0.25), tmp_path / "split.json")
    kwargs = {"preset": "ad_binary", "split_file": split_path, "cache_dir": tmp_path / "cache",
              "spacing_mm": 4.0, "target_shape": (16, 16, 16), "modalities": ["T1w"],
              "batch_size": 2, "augmentation": "none"}
    full = VolumeDataModule(root, **kwargs)
    low = VolumeDataModule(root, label_fraction=0.25, **kwargs)
    full.setup("fit")
    low.setup("fit")
    ids = {k: {s["subject_id"] for s in v} for k, v in low.subjects.items()}
    assert ids["val"] == {s["subject_id"] for s in full.subjects["val"]}
    assert ids["test"] == {s["subject_id"] for s in full.subjects["test"]}
    assert ids["train"] | ids["unlabelled"] == {s["subject_id"] for s in full.subjects["train"]}
    assert len(ids["train"]) == 2 and not ids["train"] & ids["unlabelled"]  # one per class
    assert sum(low.class_counts().values()) == 2
    batch = next(iter(low.unlabelled_dataloader()))
    assert "label" not in batch and set(batch["subject_id"]) <= ids["unlabelled"]
    assert batch["image"].shape[1:] == (1, 16, 16, 16) and "tabular" in batch
    assert label_fractions_path(split_path, 0).exists()
    split = load_split(split_path)
    load_label_fractions(label_fractions_path(split_path, 0), split)
    with pytest.raises(ValueError, match="label_fraction"):
        full.unlabelled_dataloader()
