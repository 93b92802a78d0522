"""Rebuild a trained task from a cogimg checkpoint, safely (no pickled code runs).

A cogimg checkpoint (``trainer.save_checkpoint`` of a task fitted on a cogimg datamodule)
holds the task class path (``state["cogimg"]["task"]``), its hyper-parameters and weights, and
the datamodule's settings: disease preset, modalities and preprocessing (what
:meth:`~cogimg.data.datamodules.base.CachedDataModule.state_dict` stores).
:func:`read_checkpoint` turns it back into a task in eval mode plus those settings, so that a
new scan can be preprocessed exactly as in training.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from cogimg.data.bids import IMAGE_SUFFIXES
from cogimg.data.transforms import PreprocessingConfig
from cogimg.diseases import PRESETS, DiseasePreset
from cogimg.errors import UnusableFileError
from cogimg.tasks.base import BaseTask


class CheckpointError(UnusableFileError):
    """A checkpoint that ``cogimg predict`` cannot use (names the file and what is missing)."""


@dataclass
class Checkpoint:
    """What a cogimg checkpoint holds for inference (see :func:`read_checkpoint`)."""

    path: Path
    task: BaseTask
    data: dict
    calibration: dict | None = None
    input_summary: dict | None = None


def read_checkpoint(ckpt: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Rebuild a task, its data settings, its calibration and training-input summary.

    The file is read with ``torch.load(weights_only=True)`` (no pickled code runs), the task
    class must live in ``cogimg.tasks`` and the data settings are those the datamodule stored
    (:meth:`~cogimg.data.datamodules.base.CachedDataModule.state_dict`). ``calibration``: the
    temperature fitted on the validation logits (classification,
    :mod:`cogimg.metrics.calibration`); ``input_summary``: the training inputs' statistics for
    :func:`cogimg.data.ood.ood_report`. Both are ``None`` in checkpoints written before they
    existed.
    """
    ckpt = Path(ckpt)
    try:
        state = torch.load(ckpt, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{ckpt}: cannot read checkpoint ({exc})") from exc
    info = state.get("cogimg") if isinstance(state, dict) else None
    data = next((v for k, v in state.items()
                 if isinstance(v, dict) and {"preset", "preprocessing"} <= set(v)), None) if info else None
    if not info or data is None or "hyper_parameters" not in state:
        raise CheckpointError(f"{ckpt}: not a cogimg checkpoint (needs the task class, "
                              "hyper-parameters and the datamodule's preprocessing)")
    settings = {k: v for k, v in data.items() if k != "input_summary"}
    check_data_settings(ckpt, settings)  # before any of them is used
    task_path = info.get("task") if isinstance(info, dict) else None
    module_name, _, class_name = str(task_path).rpartition(".")
    if not (isinstance(task_path, str) and module_name.startswith("cogimg.tasks.")):
        raise CheckpointError(f"{ckpt}: stored task class {task_path!r} is outside cogimg.tasks")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{ckpt}: stored task class {task_path!r} does not exist") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseTask)):
        raise CheckpointError(f"{ckpt}: {task_path!r} is not a cogimg task")
    if not isinstance(state["hyper_parameters"], dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError(f"{ckpt}: stored hyper_parameters or state_dict is not a mapping")
    # LightningCLI adds bookkeeping keys such as "_class_path" to the hyper-parameters. Training
    # add-ons (site classifiers, teachers …) play no part in inference: none is rebuilt.
    hparams = {k: v for k, v in state["hyper_parameters"].items() if not str(k).startswith("_")}
    try:
        task = cls(**{**hparams, "addons": None} if "addons" in hparams else hparams)
        task.load_state_dict({k: v for k, v in state["state_dict"].items()
                              if not k.startswith("addons.")})
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt}: stored hyper_parameters/state_dict do not rebuild "
                              f"{class_name} ({_first_line(exc)})") from exc
    calibration = info.get("calibration")
    _check_calibration(ckpt, calibration)
    return Checkpoint(ckpt, task.eval(), settings, calibration, data.get("input_summary"))


#: A stored name that may become part of a file name (``<modality>.npy`` in the cache):
#: letters, digits and ``_`` only, so no separator, no ``..``, no absolute path.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
#: Modality keys the BIDS loader gives images besides every preset's (``pet_<tracer>``).
_PET_KEY = re.compile(r"^pet_[A-Za-z0-9]+$")


def known_modalities(preset: DiseasePreset) -> set[str]:
    """Modality keys a checkpoint of ``preset`` may read: the preset's required and optional
    modalities and the keys the BIDS loader gives images (``cogimg.data.bids``)."""
    return {*preset.modalities, *preset.optional_modalities, *IMAGE_SUFFIXES}


def check_data_settings(ckpt: str | Path, data: dict) -> None:
    """Validate the data settings read from checkpoint ``ckpt`` before anything uses them.

    ``preset`` must name a preset of :data:`cogimg.diseases.PRESETS`; ``modalities`` a
    non-empty list of distinct plain modality names known for it (:func:`known_modalities`,
    or ``pet_<tracer>``); ``preprocessing.reference`` ``None`` or one of those modalities;
    ``preprocessing.foreground`` ``mean``, ``nonzero`` or a plain label name;
    ``preprocessing.histogram_landmarks`` ``None`` or a ``.json`` path. Raises
    :class:`CheckpointError` naming the file and the key.
    """
    preset_name = data.get("preset")
    if not isinstance(preset_name, str) or preset_name not in PRESETS:
        raise CheckpointError(f"{ckpt}: stored preset {preset_name!r} is not a known preset "
                              f"({', '.join(sorted(PRESETS))})")
    preset = PRESETS[preset_name]
    modalities = data.get("modalities")
    known = known_modalities(preset)
    if (not isinstance(modalities, (list, tuple)) or not modalities
            or len(set(map(str, modalities))) != len(modalities)):
        raise CheckpointError(f"{ckpt}: stored modalities {modalities!r} are not a list of "
                              "distinct modality names")
    for name in modalities:
        if not (isinstance(name, str) and _PLAIN_NAME.match(name)
                and (name in known or _PET_KEY.match(name))):
            raise CheckpointError(f"{ckpt}: stored modalities hold {name!r}, not a modality "
                                  f"name of preset {preset.name} ({', '.join(sorted(known))}, "
                                  "pet_<tracer>)")
    preprocessing = data.get("preprocessing")
    if not isinstance(preprocessing, dict):
        raise CheckpointError(f"{ckpt}: stored preprocessing is not a mapping")
    reference = preprocessing.get("reference")
    if reference is not None and reference not in modalities:
        raise CheckpointError(f"{ckpt}: stored preprocessing.reference {reference!r} is not one "
                              f"of the stored modalities {list(modalities)}")
    foreground = preprocessing.get("foreground", "mean")
    if not (isinstance(foreground, str) and _PLAIN_NAME.match(foreground)):
        raise CheckpointError(f"{ckpt}: stored preprocessing.foreground {foreground!r} is not "
                              "'mean', 'nonzero' or a label name")
    landmarks = preprocessing.get("histogram_landmarks")
    if landmarks is not None and not (isinstance(landmarks, str) and landmarks.endswith(".json")):
        raise CheckpointError(f"{ckpt}: stored preprocessing.histogram_landmarks {landmarks!r} "
                              "is not a .json file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_calibration(ckpt: Path, calibration) -> None:
    if calibration is None or calibration == {}:
        return
    temperature = calibration.get("temperature") if isinstance(calibration, dict) else None
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise CheckpointError(f"{ckpt}: stored calibration.temperature {temperature!r} is not a "
                              "positive number")


def load_task(ckpt: str | Path, map_location: str = "cpu") -> tuple[BaseTask, dict]:
    """The task in eval mode and ``{"preset", "modalities", "preprocessing"}`` of a checkpoint
    (:func:`read_checkpoint`)."""
    loaded = read_checkpoint(ckpt, map_location)
    return loaded.task, loaded.data


def preprocessing_config(data: dict) -> PreprocessingConfig:
    """The :class:`~cogimg.data.transforms.PreprocessingConfig` of a checkpoint's data settings
    (``data["preprocessing"]``; keys the config does not know are ignored)."""
    names = {f.name for f in fields(PreprocessingConfig)}
    return PreprocessingConfig(**{k: v for k, v in data["preprocessing"].items() if k in names})
