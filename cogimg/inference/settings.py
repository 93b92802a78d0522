"""Inference-time settings of a checkpoint's task: test-time mirroring, window overlap and
lesion-size post-processing.

``cogimg predict --tta {none,flip} --overlap F --sw-batch-size N --min-lesion-ml V`` override
what the checkpoint stored (its ``tta_flip_axes``, ``sw_overlap``, ``sw_batch_size`` and
``min_lesion_ml`` hyper-parameters); a setting left ``None`` keeps the checkpoint's own —
except ``min_lesion_ml``, which then comes from the choice ``cogimg postprocess`` wrote beside
the checkpoint, when there is one (:func:`cogimg.inference.postprocess.read_choice`).
"""

from __future__ import annotations

from pathlib import Path

from cogimg.inference.checkpoint import CheckpointError
from cogimg.inference.postprocess import read_choice
from cogimg.models.postprocess import check_min_lesion_ml
from cogimg.tasks.base import BaseTask

#: ``--tta`` modes → mirrored spatial axes (0, 1, 2 = X, Y, Z). ``flip``: every combination of
#: the three axes (8 copies averaged), nnU-Net's default test-time mirroring.
TTA_MODES: dict[str, tuple[int, ...]] = {"none": (), "flip": (0, 1, 2)}


def apply_inference_settings(task: BaseTask, ckpt: str | Path, tta: str | None = None,
                             overlap: float | None = None,
                             sw_batch_size: int | None = None,
                             min_lesion_ml: float | None = None) -> BaseTask:
    """Set ``task``'s test-time mirroring (``tta``: a key of :data:`TTA_MODES`), sliding-window
    ``overlap`` (fraction, 0 ≤ overlap < 1), windows per forward pass and the smallest lesion
    kept (``min_lesion_ml``, mL ≥ 0; :mod:`cogimg.models.postprocess`); returns ``task``.

    Raises ``ValueError`` for a value out of range and :class:`CheckpointError` (naming
    ``ckpt``) when the checkpoint's task has no such setting (e.g. ``--tta flip`` on a
    detector); ``tta="none"`` is accepted by every task.
    """
    hparams = task.hparams
    name = type(task).__name__
    if tta is not None:
        if tta not in TTA_MODES:
            raise ValueError(f"tta {tta!r} is not one of {', '.join(TTA_MODES)}")
        if "tta_flip_axes" in hparams:
            hparams.tta_flip_axes = TTA_MODES[tta]
        elif TTA_MODES[tta]:
            raise CheckpointError(f"{ckpt}: its {name} has no test-time mirroring; "
                                  "--tta flip applies to segmentation checkpoints")
    if overlap is not None:
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap {overlap} is not in [0, 1)")
        if "sw_overlap" not in hparams:
            raise CheckpointError(f"{ckpt}: its {name} predicts without sliding windows; "
                                  "--overlap does not apply")
        hparams.sw_overlap = float(overlap)
    if sw_batch_size is not None:
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size {sw_batch_size} is not a positive integer")
        if "sw_batch_size" not in hparams:
            raise CheckpointError(f"{ckpt}: its {name} predicts without sliding windows; "
                                  "--sw-batch-size does not apply")
        hparams.sw_batch_size = int(sw_batch_size)
    if min_lesion_ml is None and "min_lesion_ml" in hparams:
        min_lesion_ml = read_choice(ckpt)  # None without a choice file: the checkpoint's own
    if min_lesion_ml is not None:
        value = check_min_lesion_ml(min_lesion_ml)
        if "min_lesion_ml" not in hparams:
            raise CheckpointError(f"{ckpt}: its {name} makes no lesion masks; "
                                  "--min-lesion-ml applies to segmentation checkpoints")
        hparams.min_lesion_ml = value
    return task
