"""Patch and volume datamodules (cogimg.data.datamodules) on a small generated BIDS tree."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from cogimg.data.datamodules import PatchDataModule, VolumeDataModule
from cogimg.data.splits import load_split

SHAPE = (32, 32, 32)  # 2 mm voxels
AFFINE = np.array([[-2.0, 0, 0, 32.0], [0, 2.0, 0, -32.0], [0, 0, 2.0, -32.0], [0, 0, 0, 1]])  # LAS
AD_DIAGNOSES = ["CN"] * 10 + ["MCI"] * 5 + ["AD"] * 5  # imbalanced on purpose


def _ball(centre, radius) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) < radius**2


def _write(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))


def build_tree(root: Path) -> Path:
    """8 stroke subjects (dwi, adc, lesion mask) and 20 CN/MCI/AD subjects (T1w, amyloid PET
    for every other one), with age, sex, MMSE (one n/a), APOE4 and NIHSS columns."""
    rng = np.random.default_rng(0)
    brain = _ball((15.5, 15.5, 15.5), 13)
    rows = ["participant_id\tdiagnosis\tsite\tage\tsex\tMMSE\tAPOE4\tNIHSS"]
    for i in range(8):
        pid = f"sub-s{i:02d}"
        lesion = _ball(rng.integers(10, 22, 3), 3.5)
        _write(root / pid / "dwi" / f"{pid}_dwi.nii.gz",
               (brain * rng.normal(100, 10, SHAPE) * (1 + lesion)).astype(np.float32))
        _write(root / pid / "dwi" / f"{pid}_adc.nii.gz",
               (brain * rng.normal(800, 40, SHAPE) * (1 - 0.5 * lesion)).astype(np.float32))
        _write(root / "derivatives" / "lesions" / pid / "dwi" / f"{pid}_msk.nii.gz", lesion.astype(np.uint8))
        rows.append(f"{pid}\tstroke\t{'AB'[i % 2]}\t{60 + i}\t{'MF'[i % 2]}\tn/a\tn/a\t{i + 2}")
    for i, dx in enumerate(AD_DIAGNOSES):
        pid = f"sub-a{i:02d}"
        t1 = (brain * rng.normal(100, 10, SHAPE)).astype(np.float32)
        _write(root / pid / "anat" / f"{pid}_T1w.nii.gz", t1)
        if i % 2 == 0:
            _write(root / pid / "pet" / f"{pid}_trc-amyloid_pet.nii.gz", 2 * t1)
        mmse = "n/a" if i == 3 else {"CN": 29, "MCI": 25, "AD": 19}[dx] + i % 2
        rows.append(f"{pid}\t{dx}\t{'AB'[i % 2]}\t{60 + 1.5 * i}\t{'FM'[i % 3 > 0]}\t{mmse}\t{i % 3}\tn/a")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_tree(tmp_path_factory.mktemp("bids"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def patch_dm(tree, cache_dir, **kw) -> PatchDataModule:
    args = {"preset": "stroke", "cache_dir": cache_dir, "patch_size": (16, 16, 16),
            "samples_per_volume": 4, "queue_length": 8, "batch_size": 2, "n_folds": 2,
            "test_fraction": 0.25, "augmentation": "light"}
    dm = PatchDataModule(tree, **{**args, **kw})
    dm.setup("fit")
    return dm


def volume_dm(tree, cache_dir, **kw) -> VolumeDataModule:
    args = {"preset": "ad", "cache_dir": cache_dir, "spacing_mm": 4.0, "target_shape": (16, 16, 16),
            "batch_size": 4, "n_folds": 2, "test_fraction": 0.34, "modalities": ["T1w", "pet_amyloid"]}
    dm = VolumeDataModule(tree, **{**args, **kw})
    dm.setup("fit")
    return dm


def take(loader, n):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            return out
    return out


# --------------------------------------------------------------------------- patches
def test_patch_batches_have_documented_shapes(tree, cache_dir):
    dm = patch_dm(tree, cache_dir)
    assert {k: len(v) for k, v in dm.subjects.items()} == {"train": 3, "val": 3, "test": 2}
    assert dm.label_key == "lesions_msk"
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 2, 16, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 1, 16, 16, 16) and batch["label"].dtype == torch.int64
    assert set(batch["label"].unique().tolist()) <= {0, 1}
    assert len(batch["subject_id"]) == 2 and batch["location"].shape == (2, 6)
    assert len(dm.train_dataloader()) == 3 * 4 // 2  # subjects × samples_per_volume / batch
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (1, 2, *SHAPE) and val["label"].shape == (1, 1, *SHAPE)
    assert Path(val["cache_entry"][0]).parent.name == dm.cache.dir.name
    # Channels in preset order: dwi (bright lesion) then adc (dark lesion).
    lesion = val["label"][0, 0].bool()
    assert val["image"][0, 0][lesion].mean() > 0 > val["image"][0, 1][lesion].mean()


def test_split_is_saved_and_reused(tree, cache_dir, tmp_path):
    dm = patch_dm(tree, cache_dir)
    assert dm.split_path.parent == cache_dir / "splits" and dm.split_path.exists()
    split = load_split(dm.split_path)
    again = patch_dm(tree, cache_dir)
    assert again.split_path == dm.split_path
    assert [s["participant_id"] for s in again.subjects["train"]] == split.fold(0)["train"]
    other = patch_dm(tree, cache_dir, split_file=dm.split_path, fold=1)
    assert [s["participant_id"] for s in other.subjects["val"]] == split.fold(1)["val"]


def test_label_sampler_centres_patches_on_lesion_at_requested_rate(tree, cache_dir):
    dm = patch_dm(tree, cache_dir, label_probabilities={0: 0.3, 1: 0.7}, samples_per_volume=32,
                  queue_length=32, batch_size=8, augmentation="none")
    centres, any_lesion = [], []
    for batch in dm.train_dataloader():
        centres += batch["label"][:, 0, 8, 8, 8].tolist()  # TorchIO centre voxel: index size // 2
        any_lesion += batch["label"].flatten(1).any(1).tolist()
    assert len(centres) == 96
    assert np.mean(centres) == pytest.approx(0.7, abs=0.12)
    assert np.mean(any_lesion) >= np.mean(centres)


def test_patches_are_deterministic_given_seed_for_any_worker_count(tree, cache_dir):
    state = torch.random.get_rng_state()
    a = take(patch_dm(tree, cache_dir, augmentation="default", seed=3).train_dataloader(), 3)
    b = take(patch_dm(tree, cache_dir, augmentation="default", seed=3, num_workers=1).train_dataloader(), 3)
    c = take(patch_dm(tree, cache_dir, augmentation="default", seed=4).train_dataloader(), 3)
    for x, y in zip(a, b):
        assert x["subject_id"] == y["subject_id"] and torch.equal(x["location"], y["location"])
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    assert not all(torch.equal(x["image"], z["image"]) for x, z in zip(a, c))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone


def test_training_reads_the_cache_not_nifti(tree, cache_dir, monkeypatch):
    dm = patch_dm(tree, cache_dir)

    def forbidden(*args, **kwargs):
        raise AssertionError("a NIfTI was decoded in the training loop")

    monkeypatch.setattr(nib, "load", forbidden)
    monkeypatch.setattr("torchio.data.image.read_image", forbidden)
    assert len(take(dm.train_dataloader(), 2)) == 2


def test_patch_module_errors(tree, cache_dir):
    with pytest.raises(KeyError, match="unknown disease preset"):
        PatchDataModule(tree, preset="flu")
    dm = PatchDataModule(tree, cache_dir=cache_dir)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


# --------------------------------------------------------------------------- volumes
def test_volume_batches_labels_and_missing_modality(tree, cache_dir):
    dm = volume_dm(tree, cache_dir)
    batch = next(iter(dm.val_dataloader()))
    n = len(batch["subject_id"])
    assert batch["image"].shape == (n, 2, 16, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (n,)
    assert batch["tabular"].shape == (n, len(dm.tabular_features)) and batch["tabular"].dtype == torch.float32
    table = pd.read_csv(tree / "participants.tsv", sep="\t", index_col="participant_id")
    for i, sid in enumerate(batch["subject_id"]):
        assert batch["label"][i] == ["CN", "MCI", "AD"].index(table.loc[sid, "diagnosis"])
        has_pet = int(sid[-2:]) % 2 == 0
        assert batch["availability"][i].tolist() == [1.0, float(has_pet)]
        assert (batch["image"][i, 1].abs().sum() > 0) == has_pet  # zeros, not a crash
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape[1:] == (2, 16, 16, 16)


def test_tabular_uses_training_statistics_only(tree, cache_dir):
    dm = volume_dm(tree, cache_dir, tabular=["age", "MMSE", "sex"])
    table = pd.read_csv(tree / "participants.tsv", sep="\t", index_col="participant_id", na_values="n/a")
    train_ids = [s["participant_id"] for s in dm.subjects["train"]]
    train_sexes = sorted(set(table.loc[train_ids, "sex"]))
    assert dm.tabular_features == ["age", "age_missing", "MMSE", "MMSE_missing",
                                   *[f"sex={v}" for v in train_sexes], "sex_missing"]
    mean, std = table.loc[train_ids, "age"].mean(), table.loc[train_ids, "age"].std(ddof=0)
    for subset in ("train", "val", "test"):
        for subject in dm.subjects[subset]:
            row, pid = subject["tabular"], subject["participant_id"]
            assert row[0] == pytest.approx((table.loc[pid, "age"] - mean) / std, abs=1e-5)
            one_hot = row[4:-1].tolist()
            sex = table.loc[pid, "sex"]
            assert one_hot == [float(sex == v) for v in train_sexes]  # unseen in train → zeros
    mmse_missing = {s["participant_id"]: s["tabular"][2:4] for ss in dm.subjects.values() for s in ss}
    assert mmse_missing["sub-a03"].tolist() == [0.0, 1.0]  # imputed to the train mean + flagged
    ages = np.stack([s["tabular"] for s in dm.subjects["train"]])[:, 0]
    assert abs(ages.mean()) < 1e-5 and ages.std() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"tabular column\(s\) \['UPDRS'\]"):
        volume_dm(tree, cache_dir, tabular=["UPDRS"])


def test_balanced_sampling_evens_out_classes(tree, cache_dir):
    dm = volume_dm(tree, cache_dir, balanced_sampling=True, n_folds=3)
    counts = dm.class_counts()
    assert counts["CN"] > counts["AD"]  # the training fold is imbalanced
    sampler = dm.train_dataloader().sampler
    drawn = [dm.subjects["train"][i]["class_index"] for _ in range(200) for i, _seed in sampler]
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(shares, 1 / 3, atol=0.05)


def test_volume_batches_are_deterministic_given_seed(tree, cache_dir):
    a = take(volume_dm(tree, cache_dir, seed=1).train_dataloader(), 2)
    b = take(volume_dm(tree, cache_dir, seed=1, num_workers=1).train_dataloader(), 2)
    for x, y in zip(a, b):
        assert x["subject_id"] == y["subject_id"] and torch.equal(x["image"], y["image"])


# --------------------------------------------------------------------------- end to end
def test_built_from_config_and_trained_with_lightning(tree, cache_dir, tmp_path):
    """LightningCLI-style construction from a config dict, then two training steps."""
    import lightning as L
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    config = parser.parse_object({"data": {
        "class_path": "cogimg.data.datamodules.PatchDataModule",
        "init_args": {"data_root": str(tree), "cache_dir": str(cache_dir), "patch_size": [16, 16, 16],
                      "samples_per_volume": 2, "queue_length": 4, "n_folds": 2,
                      "test_fraction": 0.25, "label_probabilities": {"0": 0.2, "1": 0.8}}}})
    dm = parser.instantiate(config)["data"]
    assert isinstance(dm, PatchDataModule) and dm.label_probabilities == {0: 0.2, 1: 0.8}

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Conv3d(2, 2, 3, padding=1)

        def training_step(self, batch, _):
            return torch.nn.functional.cross_entropy(self.net(batch["image"]), batch["label"][:, 0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = L.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 2
