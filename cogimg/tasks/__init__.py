"""Tasks: one LightningModule per task, all speaking one protocol (:mod:`cogimg.tasks.base`).

Adding a task is one module (a :class:`~cogimg.tasks.base.BaseTask` subclass with its
``kind``) plus its line in :data:`TASKS`; leaderboards, reports, ``cogimg predict`` and the
run tracker find it through :func:`task_class`.
"""

from __future__ import annotations

import importlib

#: Every task kind and the class path of its task (imported on first use).
TASKS = {
    "segmentation": "cogimg.tasks.segmentation.SegmentationTask",
    "classification": "cogimg.tasks.classification.ClassificationTask",
    "detection": "cogimg.tasks.detection.DetectionTask",
    "regression": "cogimg.tasks.regression.RegressionTask",
    "brain_age": "cogimg.tasks.brain_age.BrainAgeTask",
}


def task_class(kind: str) -> type:
    """The task class of ``kind`` (a key of :data:`TASKS`)."""
    if kind not in TASKS:
        raise KeyError(f"unknown task kind {kind!r}; known: {sorted(TASKS)}")
    module, _, name = TASKS[kind].rpartition(".")
    return getattr(importlib.import_module(module), name)


__all__ = ["TASKS", "task_class"]
