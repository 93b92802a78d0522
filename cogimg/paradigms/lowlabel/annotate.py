"""Automated annotation: pre-label unlabelled scans, score their uncertainty, rank for review.

:func:`annotate_dataset` applies one segmentation checkpoint with MC dropout, or several
(an ensemble), to every scan of a NIfTI / BIDS input — by default only those without a
ground-truth mask — through :mod:`cogimg.inference`'s loading, preprocessing and native-grid
inversion. Per subject it writes, into an output folder outside the dataset:

- ``<subject_id>_pred_msk.nii.gz``: the mask of the mean probabilities (native grid);
- ``<subject_id>_entropy.nii.gz``: voxel-wise predictive entropy in nats (native grid);
- ``<subject_id>_annotate.json``: lesion report, uncertainty scores
  (:func:`~cogimg.paradigms.lowlabel.uncertainty.subject_uncertainty`), the samples used;

and ``review_list.csv``: every subject ranked by ``uncertainty``, highest first — the scans
an expert should label (or correct) next. Nothing is written when any target exists,
unless ``overwrite``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cogimg.diseases import get_preset
from cogimg.inference import (
    load_ensemble,
    mask_report,
    preprocessed_subjects,
    preprocessing_config,
    subjects_from_input,
    to_native,
)
from cogimg.io import atomic_save_nifti, atomic_write_text
from cogimg.paradigms.lowlabel.pseudo_labels import check_outside_dataset
from cogimg.paradigms.lowlabel.uncertainty import (
    enable_mc_dropout,
    probability_samples,
    subject_uncertainty,
    uncertainty_maps,
)

REVIEW_LIST = "review_list.csv"


def load_members(ckpts: list[str | Path], mc_samples: int, device: str) -> tuple[list, dict, list[int]]:
    """Tasks of ``ckpts`` (same preset, modalities and preprocessing:
    :func:`~cogimg.inference.load_ensemble`), each in eval mode with dropout active when
    ``mc_samples`` > 1; returns ``(tasks, data settings, samples each)``."""
    tasks, data = load_ensemble(ckpts)
    for ckpt, task in zip(ckpts, tasks):
        if task.kind != "segmentation":
            raise ValueError(f"{ckpt}: annotate needs a segmentation checkpoint, got a "
                             f"{task.kind or type(task).__name__} one")
        task.to(device)
    samples = [mc_samples if mc_samples > 1 and enable_mc_dropout(t.model) else 1 for t in tasks]
    if sum(samples) < 2:
        raise ValueError("uncertainty needs ≥ 2 samples: pass several --ckpt (an ensemble) or a "
                         "model with dropout (model_kwargs: {dropout: 0.1}) and --mc-samples ≥ 2")
    return tasks, data, samples


def annotate_dataset(ckpts: list[str | Path], input_path: str | Path, output_dir: str | Path,
                     mc_samples: int = 8, device: str = "cpu", overwrite: bool = False,
                     include_labelled: bool = False, seed: int = 0) -> pd.DataFrame:
    """Pre-label, score and rank (see module doc). Returns the review list."""
    tasks, data, samples = load_members(list(ckpts), mc_samples, device)
    preset = get_preset(data["preset"])
    modalities = tuple(data["modalities"])
    source = Path(input_path)
    out = check_outside_dataset(output_dir, source if source.is_dir() else source.parent)
    subjects = subjects_from_input(source, modalities, preset.name)
    if not include_labelled:
        subjects = [s for s in subjects if not any(k in s for k in preset.label_keys)]
        if not subjects:
            raise ValueError(f"every scan under {input_path} has a ground-truth mask; nothing to "
                             "annotate (pass --include-labelled to score them anyway)")
    names = [f"{s['subject_id']}_{kind}" for s in subjects
             for kind in ("pred_msk.nii.gz", "entropy.nii.gz", "annotate.json")] + [REVIEW_LIST]
    if not overwrite and (existing := [n for n in names if (out / n).exists()]):
        raise FileExistsError(f"{out / existing[0]} exists ({len(existing)} file(s)); pass "
                              "--overwrite to replace them")
    rows = []
    for subject, processed, image in preprocessed_subjects(subjects, preprocessing_config(data),
                                                           modalities, device):
        sid = str(subject["subject_id"])
        probs = torch.cat([probability_samples(lambda t=t, x=image: t.predict_volume(x)[0], n, seed)
                           for t, n in zip(tasks, samples)])
        maps = uncertainty_maps(probs)
        voxel_ml = float(np.prod(processed[modalities[0]].spacing)) / 1000.0
        scores = subject_uncertainty(maps, voxel_ml)
        mask = to_native(maps["mean"].argmax(0).to(torch.uint8).cpu(), processed, is_label=True)
        entropy = to_native(maps["entropy"].cpu(), processed, is_label=False)
        report = {"subject_id": sid, "checkpoints": [str(c) for c in ckpts],
                  "samples": int(probs.shape[0]), "mask": f"{sid}_pred_msk.nii.gz",
                  "entropy": f"{sid}_entropy.nii.gz", **scores,
                  **mask_report(mask, subject, preset.label_keys)}
        atomic_save_nifti(mask, out / report["mask"])
        atomic_save_nifti(entropy, out / report["entropy"])
        atomic_write_text(out / f"{sid}_annotate.json", json.dumps(report, indent=2, default=float))
        rows.append({k: report[k] for k in ("subject_id", *scores, "n_lesions", "total_volume_ml",
                                            "mask", "entropy")})
    review = rank_for_review(pd.DataFrame(rows))
    atomic_write_text(out / REVIEW_LIST, review.to_csv(index=False, lineterminator="\n"))
    return review


def rank_for_review(table: pd.DataFrame, score: str = "uncertainty") -> pd.DataFrame:
    """``table`` sorted by ``score`` (highest first, ties by ``subject_id``) with a 1-based ``rank``."""
    ranked = table.sort_values([score, "subject_id"], ascending=[False, True], kind="stable")
    ranked = ranked.reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked
