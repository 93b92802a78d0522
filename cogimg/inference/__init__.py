"""Inference on new scans with a trained checkpoint: below the paradigms, above the tasks.

- :mod:`~cogimg.inference.checkpoint`: rebuild a task and its data settings from a checkpoint
  (weights only, task class checked).
- :mod:`~cogimg.inference.inputs`: the subjects of a ``--input`` path (BIDS, NIfTI, DICOM, case
  folders).
- :mod:`~cogimg.inference.native`: the training preprocessing of a scan, and a volume back on
  its native grid.
- :mod:`~cogimg.inference.reports`: lesion, mask and detection reports (mL, mm, voxels).
- :mod:`~cogimg.inference.settings`: test-time mirroring, sliding-window and post-processing
  overrides.
- :mod:`~cogimg.inference.postprocess`: the lesion-size threshold chosen on a run's validation
  subjects (``cogimg postprocess``), written beside the checkpoint and read by ``predict``.
- :mod:`~cogimg.inference.ensemble`: several segmentation checkpoints as one model (mean
  probabilities).
- :mod:`~cogimg.inference.predict`: :func:`predict_dataset`, the loop behind ``cogimg predict``.

The sliding-window primitive that tasks call is below the tasks, in
:mod:`cogimg.models.sliding_window`.
"""

from cogimg.inference.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_task,
    preprocessing_config,
    read_checkpoint,
)
from cogimg.inference.ensemble import load_ensemble, predict_ensemble_case
from cogimg.inference.inputs import subjects_from_input
from cogimg.inference.native import preprocessed_subjects, to_native
from cogimg.inference.postprocess import choice_path, choose_for_checkpoint, read_choice
from cogimg.inference.predict import predict_dataset, report_line
from cogimg.inference.reports import detection_report, lesion_report, mask_report
from cogimg.inference.settings import TTA_MODES, apply_inference_settings

__all__ = [
    "TTA_MODES",
    "Checkpoint",
    "CheckpointError",
    "apply_inference_settings",
    "choice_path",
    "choose_for_checkpoint",
    "detection_report",
    "lesion_report",
    "load_ensemble",
    "load_task",
    "mask_report",
    "predict_dataset",
    "predict_ensemble_case",
    "preprocessed_subjects",
    "preprocessing_config",
    "read_checkpoint",
    "read_choice",
    "report_line",
    "subjects_from_input",
    "to_native",
]
