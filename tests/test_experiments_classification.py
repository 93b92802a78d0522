"""Every shipped classification experiment (experiments/{ad,pd,multi}) parses and runs a
training and validation step (``fast_dev_run``) on a tiny generated cohort, its saved split
keeps every participant in one subset, and every classification backbone has a config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cogimg import models
from cogimg.cli import main
from cogimg.data.splits import LeakageError, check_leakage, load_split, save_split
from tests.classification_tree import build_classification_tree

ROOT = Path(__file__).resolve().parents[1] / "experiments"
EXPERIMENTS = sorted(p for d in ("ad", "pd", "multi") for p in (ROOT / d).glob("*.yaml")
                     if yaml.safe_load(p.read_text(encoding="utf-8"))["model"]["class_path"]
                     == "cogimg.tasks.classification.ClassificationTask")


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory) -> Path:
    return build_classification_tree(tmp_path_factory.mktemp("cls_experiments"), n_per_class=5)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for all runs: entries are keyed by preprocessing config, splits by preset."""
    return tmp_path_factory.mktemp("cls_cache")


def run_fit(config: Path, tree: Path, out: Path, cache: Path, *extra: str) -> int:
    # 4 mm: the tiny cohort becomes 16³ volumes; DenseNet needs ≥ 32 per axis, so 2 mm for it.
    dense = "densenet" in config.stem
    shape, spacing = ("[32, 32, 32]", "2.0") if dense else ("[16, 16, 16]", "4.0")
    return main(["fit", "--config", str(config), "--trainer.fast_dev_run", "1",
                 "--trainer.default_root_dir", str(out),
                 "--trainer.enable_progress_bar", "false",
                 "--data.init_args.target_shape", shape,
                 "--data.init_args.spacing_mm", spacing,
                 "--data.init_args.data_root", str(tree),
                 "--data.init_args.cache_dir", str(cache),
                 "--data.init_args.num_workers", "0",
                 "--data.init_args.n_folds", "2", "--data.init_args.batch_size", "2",
                 "--data.init_args.test_fraction", "0.25", *extra])


def saved_split(cache: Path, config: Path):
    preset = yaml.safe_load(config.read_text(encoding="utf-8"))["data"]["init_args"]["preset"]
    (path,) = (cache / "splits").glob(f"{preset}_kfold2_seed0_*.json")
    return load_split(path)


def test_every_classification_backbone_has_an_experiment():
    used = {yaml.safe_load(p.read_text(encoding="utf-8"))["model"]["init_args"]["model"] for p in EXPERIMENTS}
    assert set(models.available("classification")) <= used


def test_fusion_experiments_have_their_unimodal_baselines():
    """Fusion is only claimed against each single modality: T1w, PET and clinical alone."""
    ad = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8"))["model"]["init_args"] for p in EXPERIMENTS
          if p.parent.name == "ad"}
    assert {"cls_resnet10_t1", "cls_resnet10_pet", "cls_tabular"} <= set(ad)
    assert ad["cls_resnet10_pet"]["use_modalities"] == ["pet_amyloid"]
    assert {a["fusion"] for a in ad.values()} >= {"single", "early", "intermediate", "late", "tabular"}


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_runs_and_its_split_does_not_leak(config, tiny_tree, shared_cache, tmp_path):
    assert run_fit(config, tiny_tree, tmp_path, shared_cache) == 0
    split = saved_split(shared_cache, config)
    check_leakage(split)  # raises LeakageError if a participant sits in two subsets
    for k in range(len(split.folds)):
        fold = split.fold(k)
        subsets = [set(fold[s]) for s in ("train", "val", "test")]
        assert not (subsets[0] & subsets[1] or subsets[0] & subsets[2] or subsets[1] & subsets[2])


def test_a_leaking_split_file_is_refused(tiny_tree, shared_cache, tmp_path):
    config = ROOT / "ad" / "cls_resnet10_t1.yaml"
    assert run_fit(config, tiny_tree, tmp_path, shared_cache) == 0
    split = saved_split(shared_cache, config)
    data = split.to_dict()
    data["folds"][0]["val"] = sorted(set(data["folds"][0]["val"]) | {data["folds"][0]["train"][0]})
    leaking = tmp_path / "leaking.json"
    with pytest.raises(LeakageError):
        save_split(type(split).from_dict(data), leaking)
    leaking.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(LeakageError):
        run_fit(config, tiny_tree, tmp_path, shared_cache, "--data.init_args.split_file", str(leaking))
