"""Checkpoints and patient folders for the clinical-command tests.

``checkpoints``: a segmentation U-Net (DWI + ADC) and a CN-vs-AD classifier (T1w), each
briefly *fitted* through Lightning, so the checkpoints hold what real ones hold: the
datamodule's training-input summary (OOD reference) and, for the classifier, the
temperature fitted on the validation logits. ``patient``: a case folder holding a DWI DICOM
series, an ADC NIfTI and a T1w NIfTI, drawn from held-out subjects of both cohorts.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import nibabel as nib
import numpy as np
import pytest

from cogimg.tasks.segmentation import SegmentationTask
from tests.classification_tree import build_classification_tree
from tests.data.test_inputs import write_dicom_series
from tests.tasks.conftest import build_easy_stroke_tree, make_datamodule
from tests.tasks.test_classification_task import datamodule as cls_datamodule
from tests.tasks.test_classification_task import task as cls_task


def _trainer(root: Path, **kw) -> L.Trainer:
    return L.Trainer(default_root_dir=root, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


@pytest.fixture(scope="session")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("clinical_cohorts")
    return (build_easy_stroke_tree(root / "stroke", n=6),
            build_classification_tree(root / "ad", n_per_class=5, diagnoses=("CN", "AD")))


@pytest.fixture(scope="session")
def checkpoints(cohorts, tmp_path_factory):
    """``{"seg": path, "cls": path}`` of briefly trained checkpoints."""
    stroke, ad = cohorts
    root = tmp_path_factory.mktemp("clinical_fit")
    L.seed_everything(0)
    seg = SegmentationTask("unet", in_channels=2, num_classes=2, patch_size=(24, 24, 24),
                           model_kwargs={"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
                           lr=1e-2, warmup_steps=2)
    fitter = _trainer(root, max_epochs=3, limit_val_batches=0, num_sanity_val_steps=0)
    fitter.fit(seg, datamodule=make_datamodule(stroke, root / "seg_cache"))
    fitter.save_checkpoint(root / "seg.ckpt")
    cls = cls_task(model_kwargs={"block_inplanes": [4, 4, 8, 8]})
    # Validation once, at the end: the checkpoint saved then holds the temperature it fits.
    fitter = _trainer(root, max_epochs=3, check_val_every_n_epoch=3, num_sanity_val_steps=0)
    fitter.fit(cls, datamodule=cls_datamodule(ad, root / "cls_cache", n_folds=2))
    fitter.save_checkpoint(root / "cls.ckpt")
    return {"seg": root / "seg.ckpt", "cls": root / "cls.ckpt"}


def make_patient(folder: Path, cohorts, stroke_id: str = "sub-06", noise: float = 0.0) -> Path:
    """Case folder: ``DWI/`` (DICOM, ×1000 as int16), ``adc.nii.gz``, ``T1w.nii.gz``;
    ``noise`` adds Gaussian noise of that many image SDs to every image."""
    stroke, ad = cohorts
    rows = [line.split("\t") for line in (ad / "participants.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    ad_id = [r[0] for r in rows if r[1] == "AD"][-1]
    rng = np.random.default_rng(0)
    sources = {"dwi": stroke / stroke_id / "dwi" / f"{stroke_id}_dwi.nii.gz",
               "adc": stroke / stroke_id / "dwi" / f"{stroke_id}_adc.nii.gz",
               "T1w": next((ad / ad_id).rglob("*_T1w.nii.gz"))}
    for key, path in sources.items():
        image = nib.load(path)
        data = image.get_fdata().astype(np.float32)
        data = data + rng.normal(0, noise * data.std(), data.shape).astype(np.float32) if noise else data
        if key == "dwi":
            write_dicom_series(folder / "DWI", np.round(data * 1000), image.affine)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, image.affine), folder / f"{key}.nii.gz")
    return folder
