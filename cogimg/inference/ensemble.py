"""Ensembles of segmentation checkpoints: several models, one prediction per case.

nnU-Net's practice (Isensee et al., Nature Methods 18:203, 2021): the softmax probabilities of
models trained with different folds or seeds are averaged before the argmax, which removes
much of the run-to-run variance of a single model. Members must read the same inputs (preset,
modalities and preprocessing); the first member's post-processing (``min_lesion_ml``) turns
the mean probabilities into the mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from cogimg.inference.checkpoint import load_task

#: The data settings that define a model's inputs (the rest, e.g. the training streams' random
#: states, differs between any two runs).
INPUT_KEYS = ("preset", "modalities", "preprocessing")


def checkpoint_list(ckpt: str | Path | Sequence[str | Path]) -> list[Path]:
    """``ckpt`` as a non-empty list of paths (one checkpoint or several)."""
    ckpts = [Path(ckpt)] if isinstance(ckpt, (str, Path)) else [Path(c) for c in ckpt]
    if not ckpts:
        raise ValueError("no checkpoint given")
    return ckpts


def load_ensemble(ckpts: Sequence[str | Path]) -> tuple[list, dict]:
    """The tasks (eval mode) of ``ckpts`` and the first one's data settings
    (:func:`~cogimg.inference.checkpoint.load_task`). Several members must all be
    segmentation checkpoints with equal :data:`INPUT_KEYS`; the error names the first that
    is not."""
    tasks, data = [], None
    for ckpt in ckpts:
        task, settings = load_task(ckpt)
        if len(ckpts) > 1 and task.kind != "segmentation":
            raise ValueError(f"{ckpt}: an ensemble needs segmentation checkpoints, got a "
                             f"{task.kind or type(task).__name__} one")
        if data is not None and any(settings.get(k) != data.get(k) for k in INPUT_KEYS):
            raise ValueError(f"{ckpt}: preset, modalities or preprocessing differ from {ckpts[0]}; "
                             "ensemble members must read the same inputs")
        tasks.append(task)
        data = settings
    return tasks, data


def predict_ensemble_case(tasks: Sequence, image: torch.Tensor, spacing_mm=None) -> dict:
    """``predict_case`` of one preprocessed case ``image`` ``(1, C, X, Y, Z)``: the single
    task's own, or for several segmentation tasks ``probabilities`` ``(K, X, Y, Z)``, the mean
    of theirs, and ``mask`` ``(X, Y, Z)``, the first task's ``predicted_mask`` of that mean."""
    if len(tasks) == 1:
        return tasks[0].predict_case(image, spacing_mm=spacing_mm)
    probs = torch.stack([t.predict_volume(image)[0] for t in tasks]).mean(dim=0)
    return {"probabilities": probs, "mask": tasks[0].predicted_mask(probs, spacing_mm)}
