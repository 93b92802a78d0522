"""Choose a checkpoint's lesion-size threshold on its run's validation subjects, and read it back.

``cogimg postprocess --ckpt CKPT`` (:func:`choose_for_checkpoint`) rebuilds the datamodule of
the run that wrote ``CKPT`` (its ``config.yaml``, next to ``checkpoints/``), predicts every
validation subject once, applies :func:`cogimg.models.postprocess.choose_min_lesion_ml` and
writes ``<ckpt stem>.postprocess.json`` next to the checkpoint::

    {"min_lesion_ml": 0.2, "metric": "dice", "candidates": [...], "subjects": [...],
     "table": [{"min_lesion_ml": 0.0, "dice": ..., ...}, ...], "checkpoint": "last.ckpt"}

(a mean that is undefined for every subject, e.g. HD95 once every lesion is removed, is
``null``).

``cogimg predict`` reads that file when it exists (:func:`read_choice`; an explicit
``--min-lesion-ml`` wins, and without either the checkpoint's own ``min_lesion_ml`` applies).
Only validation subjects are used: the test split is never read.

Multi-class label maps are scored per foreground class: each (subject, class) pair is one
binary case, so the mean Dice is the task's ``val/dice`` (the mean over subjects and classes),
and one threshold applies to every class.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from cogimg.inference.checkpoint import CheckpointError, load_task
from cogimg.io import atomic_write_text
from cogimg.models.postprocess import (
    DEFAULT_CANDIDATES_ML,
    check_min_lesion_ml,
    choose_min_lesion_ml,
)


def choice_path(ckpt: str | Path) -> Path:
    """Where the choice for checkpoint ``ckpt`` lives: ``<ckpt stem>.postprocess.json`` beside it."""
    ckpt = Path(ckpt)
    return ckpt.with_name(f"{ckpt.stem}.postprocess.json")


def read_choice(ckpt: str | Path) -> float | None:
    """The ``min_lesion_ml`` chosen for ``ckpt`` (:func:`choice_path`), or ``None`` when no
    choice was written. A file that is not a JSON object with a number ≥ 0 under
    ``min_lesion_ml`` raises :class:`CheckpointError` naming it."""
    path = choice_path(ckpt)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return check_min_lesion_ml(record["min_lesion_ml"] if isinstance(record, dict) else None)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a post-processing choice (needs min_lesion_ml, a "
                              f"number ≥ 0): {err}") from err


def run_config(ckpt: str | Path) -> Path:
    """The ``config.yaml`` of the run that wrote ``ckpt`` (``<run>/checkpoints/<name>.ckpt`` or
    beside the checkpoint); :class:`CheckpointError` when there is none."""
    ckpt = Path(ckpt)
    for folder in (ckpt.parent.parent, ckpt.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise CheckpointError(f"{ckpt}: no config.yaml of its run in {ckpt.parent.parent} or "
                          f"{ckpt.parent} (the validation subjects come from the run's data "
                          "settings)")


def validation_datamodule(config_file: str | Path):
    """The run's datamodule (``data.class_path`` in ``cogimg.data``, its ``init_args``; no
    loader workers), set up for validation."""
    config = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    data = config.get("data") if isinstance(config, dict) else None
    class_path = str((data or {}).get("class_path", ""))
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name.startswith("cogimg.data"):
        raise CheckpointError(f"{config_file}: data.class_path {class_path!r} is not a cogimg "
                              "datamodule")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if cls is None:
        raise CheckpointError(f"{config_file}: data.class_path {class_path!r} does not exist")
    datamodule = cls(**{**(data.get("init_args") or {}), "num_workers": 0})
    datamodule.prepare_data()
    datamodule.setup("validate")
    return datamodule


def validation_predictions(task, datamodule, device: str = "cpu") -> dict[str, list]:
    """Argmax masks (no post-processing), truths and spacings of every validation subject.

    Returns ``{"subject_id", "prediction", "truth", "spacing_mm"}`` lists; a multi-class task
    gives one binary entry per (subject, foreground class), ``subject_id`` ``<id>:<class>``.
    """
    from cogimg.tasks.segmentation import _as_spacing

    out: dict[str, list] = {"subject_id": [], "prediction": [], "truth": [], "spacing_mm": []}
    task.to(device)
    for batch in datamodule.val_dataloader():
        with torch.inference_mode():
            pred = task.predict_volume(batch["image"].to(device)).argmax(dim=1).cpu().numpy()
        truth = batch["label"][:, 0].cpu().numpy()
        spacing = _as_spacing(batch.get("spacing_mm"), pred.shape[0])
        for i, sid in enumerate(batch["subject_id"]):
            for k in range(1, task.num_classes):
                name = str(sid) if task.num_classes == 2 else f"{sid}:{k}"
                out["subject_id"].append(name)
                out["prediction"].append(pred[i] == k)
                out["truth"].append(truth[i] == k)
                out["spacing_mm"].append(spacing[i])
    if not out["subject_id"]:
        raise ValueError("the run's datamodule has no validation subjects to choose on")
    return out


def choose_for_checkpoint(ckpt: str | Path, candidates: Sequence[float] = DEFAULT_CANDIDATES_ML,
                          device: str = "cpu", overwrite: bool = False,
                          out: str | Path | None = None) -> dict:
    """Choose ``min_lesion_ml`` for segmentation checkpoint ``ckpt`` on its run's validation
    subjects (module docstring) and write it to ``out`` (default :func:`choice_path`, where
    ``cogimg predict`` looks); returns the record written.

    The task's own test-time settings (mirroring, overlap) are those it predicts with.
    """
    ckpt = Path(ckpt)
    path = Path(out) if out is not None else choice_path(ckpt)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    task, _ = load_task(ckpt)
    if getattr(task, "kind", None) != "segmentation":
        raise CheckpointError(f"{ckpt}: its {type(task).__name__} makes no lesion masks; "
                              "post-processing applies to segmentation checkpoints")
    config_file = run_config(ckpt)
    cases = validation_predictions(task, validation_datamodule(config_file), device)
    chosen, table = choose_min_lesion_ml(cases["prediction"], cases["truth"],
                                         cases["spacing_mm"], candidates)
    # Undefined means (HD95 once every lesion is removed) are written as null: plain JSON.
    table = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
             for row in table]
    record = {"min_lesion_ml": chosen, "metric": "dice",
              "rule": "best mean validation Dice; ties to the smaller threshold (0 = off)",
              "checkpoint": ckpt.name, "config": str(config_file),
              "candidates": [row["min_lesion_ml"] for row in table],
              "subjects": cases["subject_id"], "table": table}
    atomic_write_text(path, json.dumps(record, indent=2, default=float) + "\n")
    return record
