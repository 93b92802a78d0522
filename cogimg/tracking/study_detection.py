"""The study runner ``seg_detect``: detection from segmentation, the baseline a detector must beat.

An arm ``{name: seg_unet, config: experiments/microbleeds/seg_unet.yaml, runner: seg_detect,
options: {threshold: 0.1}}`` fits the arm's segmentation experiment YAML (with the study's
arguments, as the ``fit`` runner does) in a temporary folder, then scores the
held-out scans of every stage the comparisons use (``val``: the validation fold; ``test``: the
test set) as a detector: the connected components of ``foreground probability ≥ threshold``
(:func:`cogimg.tasks.detection.segmentation_detections`, sliding windows), each scored by
its peak probability, matched to the mask's components by the same code and settings as the
detection experiments (:func:`cogimg.metrics.detection.match_scan`, ``scan_row``). The
result is a run directory of kind ``detection`` in ``runs/<arm>/seed<k>/``
(:func:`cogimg.tracking.run.write_run`), so ``metric: cpm`` comparisons pair it with the
detectors' runs scan by scan.

``options`` (all optional): ``threshold`` (foreground probability of a component, default
0.1: low-confidence components fill the high-false-positive end of the FROC), ``min_voxels``
(default 1), ``match`` (``centre`` or ``iou``, default ``centre``), ``match_threshold`` (mm
or IoU, default 4.0), ``ap_thresholds`` (default ``[4.0, 8.0]``), ``report_score_threshold``
(operating point of the per-scan counts, default 0.5). Scored are the scans the trainer
scores (``--trainer.limit_val_batches`` / ``limit_test_batches`` apply, as to the detectors'
runs). The segmentation's own validation metrics (Dice …) go into the detection run's
manifest (``segmentation_metrics``); its weights are not kept (an interrupted arm refits).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from cogimg.tracking.study_registry import StudyContext, arm_overrides, register_runner

DEFAULTS = {"threshold": 0.1, "min_voxels": 1, "match": "centre", "match_threshold": 4.0,
            "ap_thresholds": [4.0, 8.0], "report_score_threshold": 0.5}


def score_scans(task, loader, options: dict) -> tuple[list[dict], dict[str, float]]:
    """Detection from segmentation on every whole volume of ``loader`` (batches with
    ``image`` (B, C, X, Y, Z), ``label`` (B, 1, X, Y, Z), ``subject_id``, ``spacing_mm``):
    one :func:`~cogimg.metrics.detection.scan_row` per scan and the FROC/CPM/AP summary
    (:func:`~cogimg.metrics.detection.detection_summary`) over them."""
    import torch

    from cogimg.metrics.detection import detection_summary, match_scan, scan_row
    from cogimg.tasks.detection import segmentation_detections, targets_from_labels

    rows, scans = [], []
    task.eval()
    with torch.no_grad():
        for batch in loader:
            found = segmentation_detections(task, batch["image"].to(task.device),
                                            options["threshold"], options["min_voxels"])
            truths = targets_from_labels(batch["label"])
            spacing = torch.as_tensor(batch["spacing_mm"], dtype=torch.float64).reshape(-1, 3)
            for i, ((boxes, scores), truth) in enumerate(zip(found, truths)):
                scan = (boxes, scores, truth["boxes"].cpu().double().numpy(),
                        tuple(float(v) for v in spacing[i]))
                match = match_scan(*scan[:3], options["match"], options["match_threshold"], scan[3])
                rows.append(scan_row(str(batch["subject_id"][i]), match,
                                     options["report_score_threshold"]))
                scans.append(scan)
    summary = detection_summary([(b, s) for b, s, _, _ in scans], [t for _, _, t, _ in scans],
                                criterion=options["match"], froc_threshold=options["match_threshold"],
                                ap_thresholds=tuple(options["ap_thresholds"]),
                                spacing_mm=[sp for *_, sp in scans])
    return rows, summary


def _keeper():
    """A Lightning callback that keeps the fitted task and its datamodule (``.task``, ``.data``)."""
    from lightning.pytorch.callbacks import Callback

    class Keep(Callback):
        task = data = trainer = None

        def setup(self, trainer, pl_module, stage: str) -> None:
            self.task, self.data, self.trainer = pl_module, trainer.datamodule, trainer

    return Keep()


@register_runner("seg_detect")
def seg_detect_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext) -> Path:
    """Fit the arm's segmentation YAML, score the held-out scans as detections, write the
    detection run directory into ``run_dir`` (module docstring)."""
    from cogimg.tracking.experiment import run_experiment
    from cogimg.tracking.run import write_run

    if not arm.get("config"):
        raise ValueError(f"arm {arm['name']!r}: runner 'seg_detect' needs a config (a "
                         "segmentation experiment YAML)")
    options = {**DEFAULTS, **(arm.get("options") or {})}
    if unknown := sorted(set(options) - set(DEFAULTS)):
        raise ValueError(f"arm {arm['name']!r}: options {unknown} unknown; known: {sorted(DEFAULTS)}")
    keep = _keeper()
    with tempfile.TemporaryDirectory(prefix="seg_detect_") as fit_dir:
        result = run_experiment(arm["config"], fit_dir, name=arm["name"], budget_s=arm.get("budget_s"),
                                overrides=arm_overrides(arm, seed, context), callbacks=[keep])
    task, data = keep.task, keep.data
    subjects, metrics = {}, {}
    for stage in context.stages:
        data.setup("test" if stage == "test" else "validate")
        loader = data.test_dataloader() if stage == "test" else data.val_dataloader()
        limit = getattr(keep.trainer, f"limit_{stage if stage == 'test' else 'val'}_batches")
        if isinstance(limit, int) or limit < 1.0:  # the scans the trainer limits itself to
            loader = itertools.islice(loader, limit if isinstance(limit, int)
                                      else int(len(loader) * limit))
        rows, summary = score_scans(task, loader, options)
        subjects[stage] = rows
        metrics[stage] = {f"{stage}/{k}": float(v) for k, v in summary.items()}
    return write_run(run_dir, None, experiment=arm["name"], variant=f"threshold {options['threshold']:g}",
                     seed=seed, subjects=subjects, metrics=metrics, kind="detection",
                     task="cogimg.tasks.detection.segmentation_detections",
                     model=str(task.hparams.model), segmentation_metrics=result.metrics,
                     wall_s=result.train_s, options=options)
