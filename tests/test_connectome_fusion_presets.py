"""The PD (T1w + DAT PET) and stroke (lesion map, NIHSS) structure–function fusion presets:
the lesion branch of the datamodule against hand-computed maps and scores, its errors, and
both YAMLs through ``cogimg fit``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from cogimg.cli import main
from cogimg.data.connectome import ConnectomeDataModule
from cogimg.data.structure_function import StructureFunctionDataModule
from tests.classification_tree import build_classification_tree

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "connectome"
R, T, GRID = 6, 40, (8, 8, 8)
NARROW = ["--model.init_args.model_kwargs.backbone_kwargs", '{"block_inplanes": [4, 4, 4, 4]}',
          "--model.init_args.model_kwargs.connectome_kwargs", '{"hidden": [8], "dropout": 0.0}']


def _series(ids, seed=0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(subjects=sorted(ids), series={s: rng.normal(size=(T, R)) for s in ids},
                           motion=None, region_names=[f"r{i}" for i in range(R)])


@pytest.fixture(scope="module")
def stroke(tmp_path_factory):
    """Eight stroke participants: NIHSS 2·i, a box lesion of i + 1 voxel rows in an 8³ mask
    (2 mm voxels) under derivatives/lesions; a control without a mask."""
    root = tmp_path_factory.mktemp("stroke_sf")
    rows, masks = [], {}
    for i in range(8):
        pid = f"sub-s{i}"
        mask = np.zeros(GRID, np.uint8)
        mask[: i + 1, :2, :2] = 1
        path = root / "derivatives" / "lesions" / pid / "anat" / f"{pid}_msk.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
        masks[pid] = mask
        rows.append({"participant_id": pid, "diagnosis": "stroke", "age": 70, "NIHSS": 2 * i})
    rows.append({"participant_id": "sub-c0", "diagnosis": "CN", "age": 70, "NIHSS": "n/a"})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root, masks, _series([r["participant_id"] for r in rows])


def test_lesion_structure_batches_maps_scores_and_connectomes(stroke, tmp_path):
    root, masks, dataset = stroke
    dm = StructureFunctionDataModule(root, preset="stroke", structure="lesion",
                                     lesion_downsample=2, cache_dir=tmp_path, n_folds=2,
                                     test_fraction=0.25, batch_size=16, withhold_connectome=0.5,
                                     func_dataset=dataset)
    dm.setup("fit")
    assert dm.model_defaults() == {"modalities": ["lesion"], "input_shape": [4, 4, 4]}
    np.testing.assert_allclose(dm.train_targets(), [2.0 * int(s[-1]) for s in
                                                    dm.connectome.subjects["train"]])
    for loader, subset in ((dm.val_dataloader(), "val"), (dm.test_dataloader(), "test")):
        batch = next(iter(loader))
        ids = batch["subject_id"]
        assert ids == dm.connectome.subjects[subset] and batch["image"].shape[1:] == (1, 4, 4, 4)
        for i, sid in enumerate(ids):
            # lesioned fraction of each 2³ block, by hand from the mask
            blocks = masks[sid].reshape(4, 2, 4, 2, 4, 2).mean(axis=(1, 3, 5))
            np.testing.assert_allclose(batch["image"][i, 0].numpy(), blocks)
            assert batch["target"][i].item() == 2.0 * int(sid[-1])
        sf = batch["structure_function"]
        assert sf["image"] is batch["image"] and sf["connectome"].shape == (len(ids), R * 5 // 2)
    assert batch["connectome_available"].tolist() == [0.0 if s in dm.withheld else 1.0
                                                      for s in ids] and len(dm.withheld) == 1
    assert "sub-c0" not in dm.lesions  # CN: not in the stroke preset


def test_lesion_structure_errors_name_the_subject_and_the_preset(stroke, tmp_path):
    root, _, dataset = stroke
    lacking = _series([*dataset.subjects, "sub-s9"])
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    other = tmp_path / "tree"
    (other / "derivatives").mkdir(parents=True)
    (root / "derivatives" / "lesions").rename(other / "derivatives" / "lesions")
    try:
        extra = {"participant_id": "sub-s9", "diagnosis": "stroke", "age": 70, "NIHSS": 3}
        pd.concat([table, pd.DataFrame([extra])]).to_csv(other / "participants.tsv", sep="\t",
                                                         index=False)
        dm = StructureFunctionDataModule(other, preset="stroke", structure="lesion",
                                         cache_dir=tmp_path / "c", n_folds=2, func_dataset=lacking)
        with pytest.raises(ValueError, match=r"no lesion mask .* sub-s9"):
            dm.setup("fit")
    finally:
        (other / "derivatives" / "lesions").rename(root / "derivatives" / "lesions")
    with pytest.raises(ValueError, match="classification preset"):
        StructureFunctionDataModule(root, preset="ad", structure="lesion", cache_dir=tmp_path,
                                    n_folds=2, func_dataset=dataset).setup("fit")
    with pytest.raises(ValueError, match="structure='mask'"):
        StructureFunctionDataModule(root, structure="mask")


def test_stroke_lesion_fusion_yaml_runs_and_learns_the_score_scale(stroke, tmp_path,
                                                                   monkeypatch):
    root, _, dataset = stroke
    monkeypatch.setattr(ConnectomeDataModule, "_load_func", lambda self: dataset)
    config = CONFIGS / "stroke_fusion_lesion_connectome.yaml"
    assert main(["fit", "--config", str(config), "--trainer.max_epochs", "1",
                 "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.enable_progress_bar", "false", *NARROW,
                 "--data.init_args.data_root", str(root),
                 "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--data.init_args.n_folds", "2", "--data.init_args.batch_size", "4"]) == 0
    (ckpt,) = tmp_path.rglob("last.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    train = [2.0 * i for i in range(8)]  # the score scaling is fitted on training subjects
    mean = saved["state_dict"]["target_mean"].item()
    assert min(train) < mean < max(train)
    assert saved["hyper_parameters"]["model_kwargs"]["modalities"] == ["lesion"]


def test_pd_t1_dat_fusion_yaml_runs_through_the_cli(tmp_path, monkeypatch):
    root = build_classification_tree(tmp_path / "pd", n_per_class=4, diagnoses=("CN", "PD"))
    dataset = _series([p.name for p in root.glob("sub-*")])
    monkeypatch.setattr(ConnectomeDataModule, "_load_func", lambda self: dataset)
    config = CONFIGS / "pd_fusion_t1_dat_connectome.yaml"
    assert main(["fit", "--config", str(config), "--trainer.fast_dev_run", "1",
                 "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.enable_progress_bar", "false", *NARROW,
                 "--data.init_args.data_root", str(root),
                 "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--data.init_args.target_shape", "[16, 16, 16]",
                 "--data.init_args.n_folds", "2", "--data.init_args.batch_size", "4"]) == 0
    dm = StructureFunctionDataModule(root, preset="pd", modalities=["T1w", "pet_dat"],
                                     target_shape=(16, 16, 16), cache_dir=tmp_path / "cache",
                                     n_folds=2, augmentation="none", func_dataset=dataset)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == (2, 16, 16, 16) and batch["availability"].eq(1).all()
    assert set(dm.preset.classes) == {"CN", "PD"} and dm.model_defaults()["modalities"] == [
        "T1w", "pet_dat"]
