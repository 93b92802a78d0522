"""An easy stroke cohort for task tests: bright-DWI / dark-ADC spheres on noise.

``easy_stroke_tree``: 10 stroke participants over two sites, 64×40×40 voxels at 2 mm (64 along
X so that SwinUNETR's smallest trainable patch, 64×32×32, fits), DWI + ADC
and a binary lesion mask (one or two spheres of radius 3–6 voxels), in the BIDS layout the
data layer reads. Easy enough that a small U-Net learns it in a few dozen steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import nibabel as nib
import numpy as np
import pytest

from cogimg.data.datamodules import PatchDataModule
from cogimg.tasks.segmentation import SegmentationTask

SHAPE = (64, 40, 40)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -40.0


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def sphere(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return (np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius).astype(np.uint8)


def build_easy_stroke_tree(root: Path, n: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = ["participant_id\tdiagnosis\tsite\tage\tsex"]
    for i in range(1, n + 1):
        pid = f"sub-{i:02d}"
        rows.append(f"{pid}\tstroke\tsite-{1 + i % 2}\t{60 + i}\t{'MF'[i % 2]}")
        mask = np.zeros(SHAPE, np.uint8)
        for _ in range(1 + i % 2):
            mask |= sphere(SHAPE, rng.integers(10, 30, 3) + [12, 0, 0], rng.uniform(3, 6))
        brain = sphere(SHAPE, (32, 20, 20), 18).astype(np.float32)
        noise = rng.normal(0, 0.15, (2, *SHAPE)).astype(np.float32)
        dwi = brain * (1.0 + 1.5 * mask) + noise[0]
        adc = brain * (1.0 - 0.5 * mask) + noise[1]
        write_nifti(root / pid / "dwi" / f"{pid}_dwi.nii.gz", dwi, AFFINE)
        write_nifti(root / pid / "dwi" / f"{pid}_adc.nii.gz", adc, AFFINE)
        write_nifti(root / "derivatives" / "lesions" / pid / "dwi" / f"{pid}_msk.nii.gz", mask, AFFINE)
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "easy stroke"}), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def easy_stroke_tree(tmp_path_factory) -> Path:
    return build_easy_stroke_tree(tmp_path_factory.mktemp("easy_stroke"))


SMALL_UNET = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}


def make_datamodule(root, cache_dir) -> PatchDataModule:
    return PatchDataModule(root, preset="stroke", cache_dir=cache_dir, patch_size=(24, 24, 24),
                           samples_per_volume=4, queue_length=16, batch_size=4, n_folds=3,
                           test_fraction=0.2, augmentation="none", seed=0)


def trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


@pytest.fixture(scope="session")
def trained(easy_stroke_tree, tmp_path_factory):
    """A small U-Net trained on the easy cohort: (task, datamodule, checkpoint, Dice before)."""
    tmp_path = tmp_path_factory.mktemp("seg_train")
    L.seed_everything(0)
    dm = make_datamodule(easy_stroke_tree, tmp_path / "cache")
    task = SegmentationTask("unet", in_channels=2, num_classes=2, patch_size=(24, 24, 24),
                            model_kwargs=SMALL_UNET, lr=1e-2, warmup_steps=2)
    before = trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]["val/dice"]
    fitter = trainer(tmp_path, max_epochs=6)
    fitter.fit(task, datamodule=dm)
    ckpt = tmp_path / "easy.ckpt"
    fitter.save_checkpoint(ckpt)
    return task, dm, ckpt, before
