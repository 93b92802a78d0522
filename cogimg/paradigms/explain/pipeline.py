"""Explain a trained task's output for preprocessed subjects, and whole inputs end to end.

:func:`explain_volume` is the unit: task + preprocessed image ``(1, C, X, Y, Z)`` → saliency
``(X, Y, Z)`` on that grid plus what was explained (target class and probabilities, or
the number of predicted lesion voxels). :func:`explain_inputs` is what ``cogimg explain``
runs: checkpoint + NIfTI/BIDS input → per subject a saliency NIfTI on the native grid of
the scan, a PNG overlay and a JSON record, preprocessed exactly as in training.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from cogimg.paradigms.explain.attribution import METHODS, explain
from cogimg.paradigms.explain.targets import SegmentationScore, scorer_for_task


def explain_volume(task, image: torch.Tensor, method: str, target: int | str | None = None,
                   options: dict | None = None) -> tuple[torch.Tensor, dict]:
    """Saliency of ``task`` for ``image`` ``(1, C, X, Y, Z)`` and a description of the target.

    Args:
        task: ``ClassificationTask`` or ``SegmentationTask`` in eval mode.
        method: one of :data:`~cogimg.paradigms.explain.attribution.METHODS`.
        target: classification: class name or index (default: the predicted class);
            segmentation: ignored (the lesion-logit sum over the predicted lesion).
        options: method options (see :func:`~cogimg.paradigms.explain.attribution.explain`).

    Returns ``(saliency (X, Y, Z) ≥ 0, info)``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {list(METHODS)}")
    scorer, predicted = scorer_for_task(task, image, windowed=method != "gradcam")
    info: dict = {"method": method, "options": dict(options or {})}
    if isinstance(scorer, SegmentationScore):
        region = scorer.region
        info.update(target="lesion logit sum",
                    region_voxels=int(region.sum()) if region is not None else None)
        index = 0
    else:
        classes = list(getattr(task, "classes", ()))
        index = predicted if target is None else _class_index(target, classes)
        with torch.no_grad():
            prob = scorer(image).float().softmax(dim=1)[0]
        info.update(target=classes[index] if classes else index, target_index=index,
                    predicted=classes[predicted] if classes else predicted,
                    probabilities={(classes[i] if classes else str(i)): float(p)
                                   for i, p in enumerate(prob)})
    saliency = explain(scorer, image, method, index, **(options or {}))
    return saliency, info


def _class_index(target: int | str, classes: Sequence[str]) -> int:
    if isinstance(target, str) and target in classes:
        return list(classes).index(target)
    try:
        index = int(target)
    except (TypeError, ValueError):
        raise ValueError(f"target {target!r} is not one of the model's classes {list(classes)}") from None
    if not 0 <= index < len(classes):
        raise ValueError(f"target index {index} out of range for classes {list(classes)}")
    return index


def explain_inputs(ckpt: str | Path, input_path: str | Path, output_dir: str | Path, method: str,
                   target: str | None = None, options: dict | None = None, device: str = "cpu",
                   overwrite: bool = False) -> list[dict]:
    """Explain every subject of ``input_path`` (NIfTI, BIDS subject folder or BIDS tree).

    Writes per subject, in ``output_dir``: ``<id>_desc-<method>_saliency.nii.gz`` (native
    grid and affine of the model's reference modality, values in [0, 1]),
    ``<id>_desc-<method>_saliency.png`` (overlay) and ``<id>_desc-<method>_saliency.json``.
    Existing files are not replaced unless ``overwrite``. Returns the JSON records.
    """
    from cogimg.data.cache import VolumeCache, read_meta
    from cogimg.data.inputs import native_nifti
    from cogimg.inference import load_task, preprocessing_config, subjects_from_input
    from cogimg.io import atomic_write_text
    from cogimg.paradigms.explain.export import save_overlay_png, save_saliency_nifti

    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {list(METHODS)}")
    task, data = load_task(ckpt)
    task.to(device)
    modalities = tuple(data["modalities"])
    subjects = subjects_from_input(input_path, modalities, data["preset"])
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory(prefix="cogimg-explain-") as tmp:
        cache = VolumeCache(tmp, preprocessing_config(data))
        for subject in subjects:
            sid = subject["subject_id"]
            stem = out / f"{sid}_desc-{method}_saliency"
            paths = {ext: Path(f"{stem}{ext}") for ext in (".nii.gz", ".png", ".json")}
            if not overwrite and (taken := [p for p in paths.values() if p.exists()]):
                raise FileExistsError(f"{taken[0]} exists; pass --overwrite to replace it")
            processed = cache.get(subject)
            meta = read_meta(processed["cache_entry"])
            image = torch.cat([processed[m].data.float() for m in modalities])[None].to(device)
            saliency, info = explain_volume(task, image, method, target, options)
            native = save_saliency_nifti(saliency, meta, paths[".nii.gz"])
            reference = meta["reference"]
            background = native_nifti(subject[reference])
            title = f"{sid} · {method} · {info['target']}"
            save_overlay_png(native, background, paths[".png"], title=title)
            record = {"subject_id": sid, "checkpoint": str(ckpt), "preset": data["preset"],
                      "modalities": list(modalities), "reference_modality": reference,
                      "saliency": paths[".nii.gz"].name, "overlay": paths[".png"].name, **info}
            atomic_write_text(paths[".json"], json.dumps(record, indent=2))
            records.append(record)
    return records
