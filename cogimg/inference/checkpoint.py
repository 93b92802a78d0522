"""Rebuild a trained task from a cogimg checkpoint, safely (no pickled code runs).

A cogimg checkpoint (``trainer.save_checkpoint`` of a task fitted on a cogimg datamodule)
holds the task class path (``state["cogimg"]["task"]``), its hyper-parameters and weights, and
the datamodule's settings: disease preset, modalities and preprocessing (what
``_CachedDataModule.state_dict`` stores). :func:`read_checkpoint` turns it back into a task in
eval mode plus those settings, so that a new scan can be preprocessed exactly as in training.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from cogimg.data.transforms import PreprocessingConfig
from cogimg.tasks.base import BaseTask


class CheckpointError(ValueError):
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
    (see ``_CachedDataModule.state_dict``). ``calibration``: the temperature fitted on the
    validation logits (classification, :mod:`cogimg.metrics.calibration`); ``input_summary``:
    the training inputs' statistics for :func:`cogimg.data.ood.ood_report`. Both are ``None``
    in checkpoints written before they existed.
    """
    ckpt = Path(ckpt)
    try:
        state = torch.load(ckpt, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{ckpt}: cannot read checkpoint ({exc})") from exc
    info = state.get("cogimg")
    data = next((v for k, v in state.items()
                 if isinstance(v, dict) and {"preset", "preprocessing"} <= set(v)), None)
    if not info or data is None or "hyper_parameters" not in state:
        raise CheckpointError(f"{ckpt}: not a cogimg checkpoint (needs the task class, "
                              "hyper-parameters and the datamodule's preprocessing)")
    module_name, _, class_name = info["task"].rpartition(".")
    if not module_name.startswith("cogimg.tasks."):
        raise CheckpointError(f"{ckpt}: task class {info['task']!r} is outside cogimg.tasks")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, BaseTask)):
        raise CheckpointError(f"{ckpt}: {info['task']!r} is not a cogimg task")
    # LightningCLI adds bookkeeping keys such as "_class_path" to the hyper-parameters. Training
    # add-ons (site classifiers, teachers …) play no part in inference: none is rebuilt.
    hparams = {k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")}
    task = cls(**{**hparams, "addons": None} if "addons" in hparams else hparams)
    task.load_state_dict({k: v for k, v in state["state_dict"].items() if not k.startswith("addons.")})
    settings = {k: v for k, v in data.items() if k != "input_summary"}
    return Checkpoint(ckpt, task.eval(), settings, info.get("calibration"), data.get("input_summary"))


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
