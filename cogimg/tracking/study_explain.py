"""Study runner ``explain``: how faithful are a trained model's saliency maps?

An arm ``{runner: explain, config: <experiment YAML>, options: {method: ig, ...}}`` takes a
trained model — the last checkpoint of the arm named by ``options.model_from`` for the same
seed (an earlier ``fit`` arm of the study, on the same config and split), or, without it, a
model it fits itself into ``out/models/<arm>/seed<k>/`` — and explains the held-out subjects of
every stage the study scores (``test``: the seed's test set, as the datamodule of the arm's
config and overrides splits it) with :func:`cogimg.paradigms.explain.pipeline.explain_volume`
(``method``: ``gradcam``, ``ig``, ``occlusion``, ``rollout``, or ``random``: a uniform random
map, the chance level). Explained are the subjects of the diagnoses ``options.classes``;
by default a classifier's classes but the first (the patients: the disease class logit is
explained) and, for segmentation, every diagnosis but CN; at most ``options.max_subjects``
per stage (0 = all). Segmentation models explain the
lesion-logit sum over their predicted lesion.

Each map is put back on the subject's native grid and scored against the synthetic cohort's
ground truth (``options.truth``: ``atrophy`` — the atrophy map > ``options.atrophy_threshold``,
default 0.1 — or ``lesion`` — the lesion mask) with the pointing game (tolerance
``options.tolerance_vox``, default 0) and relevance mass, and on the model's input grid by
deletion / insertion AUC (``options.curve_steps`` + 1 points, baseline 0 = the z-score
mean) of the target class probability (classifiers) or of the mean lesion probability over
the originally predicted lesion (segmentation). ``options.method_options`` go to the method
(e.g. ``{n_steps: 16}`` for IG).

The arm's run directory (:func:`cogimg.tracking.run.write_run`, kind ``explanation``,
:data:`cogimg.tracking.leaderboard.SCORED_KINDS`) holds one row per explained subject (``pointing_game``,
``relevance_mass``, ``deletion_auc``, ``insertion_auc``, ``seconds``, plus the explained
``target`` and its probability ``target_prob``), so that leaderboards and comparisons rank
methods from run directories alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cogimg.tracking.study_registry import StudyContext, arm_overrides, register_runner

METRICS = ("pointing_game", "relevance_mass", "deletion_auc", "insertion_auc", "seconds")


def truth_region(root: str | Path, subject_id: str, truth: str, threshold: float = 0.1) -> np.ndarray:
    """Ground-truth region ``(X, Y, Z)`` bool on the subject's native grid: the synthetic
    cohort's lesion mask (``truth: lesion``) or its atrophy map > ``threshold`` (``atrophy``)."""
    import nibabel as nib

    root = Path(root)
    if truth == "lesion":
        path = root / "derivatives" / "lesions" / subject_id / "anat" / f"{subject_id}_msk.nii.gz"
    elif truth == "atrophy":
        path = root / "derivatives" / "truth" / subject_id / f"{subject_id}_desc-atrophy_map.nii.gz"
    else:
        raise ValueError(f"options.truth: {truth!r}; choose 'atrophy' or 'lesion'")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ground truth for {subject_id} (a synthetic cohort "
                                "written by cogimg synth has it)")
    values = np.asarray(nib.load(path).dataobj)
    return values > 0 if truth == "lesion" else values > threshold


def last_checkpoint(folder: str | Path) -> Path:
    """The newest ``last*.ckpt`` under ``folder``."""
    found = sorted(Path(folder).rglob("checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{folder}: no checkpoints/last.ckpt (fit the model first)")
    return found[-1]


def _model(arm: dict, seed: int, context: StudyContext) -> Path:
    """The checkpoint to explain (module docstring)."""
    from cogimg.tracking.experiment import run_experiment

    source = (arm.get("options") or {}).get("model_from")
    if source:
        folder = Path(context.out) / "runs" / source / f"seed{seed}"
        if not folder.is_dir():
            raise FileNotFoundError(f"arm {arm['name']!r}: options.model_from {source!r} has no "
                                    f"run for seed {seed} ({folder}); list that arm before this one")
        return last_checkpoint(folder)
    folder = Path(context.out) / "models" / arm["name"] / f"seed{seed}"
    try:
        return last_checkpoint(folder)
    except FileNotFoundError:
        run_experiment(arm["config"], folder, name=arm["name"], budget_s=arm.get("budget_s"),
                       overrides=arm_overrides(arm, seed, context))
        return last_checkpoint(folder)


def _datamodule(arm: dict, seed: int, context: StudyContext, scratch: Path):
    """The arm's datamodule (its config + overrides: the seed's split), set up."""
    from cogimg.tracking.experiment_cli import build_cli

    cli = build_cli(["--config", str(arm["config"]), "--trainer.default_root_dir", str(scratch),
                     "--trainer.logger", "false", *arm_overrides(arm, seed, context)],
                    experiment=arm["name"])
    data = cli.datamodule
    data.prepare_data()
    data.setup("test")
    return data


def _score_fn(scorer, image: torch.Tensor, target: int):
    """``batch (B, C, X, Y, Z) → (B,)``: the target class probability (classifiers) or the
    mean lesion probability over the originally predicted lesion (segmentation)."""
    from cogimg.paradigms.explain import SegmentationScore

    if isinstance(scorer, SegmentationScore):
        region = scorer.region
        mask = region if region is not None else torch.ones(1, *image.shape[2:], dtype=torch.bool)

        def lesion(batch):
            prob = scorer.logits(batch).softmax(dim=1)[:, 1]
            return (prob * mask).flatten(1).sum(1) / mask.sum()
        return lesion
    return lambda batch: scorer(batch).float().softmax(dim=1)[:, target]


def explain_subject(task, image: torch.Tensor, meta: dict, region: np.ndarray, method: str,
                    target: int, options: dict, rng: np.random.Generator) -> dict:
    """One explained subject's row (module docstring). ``image`` ``(1, C, X, Y, Z)`` on the
    model's grid, ``meta`` its cache entry's metadata, ``region`` the native-grid truth."""
    from cogimg.paradigms.explain import (
        curve_auc,
        deletion_curve,
        insertion_curve,
        pointing_game,
        relevance_mass,
        scorer_for_task,
    )
    from cogimg.paradigms.explain.export import saliency_to_native
    from cogimg.paradigms.explain.pipeline import explain_volume

    start = time.perf_counter()
    if method == "random":
        saliency = torch.from_numpy(rng.random(image.shape[2:]).astype(np.float32))
    else:
        saliency, _ = explain_volume(task, image, method, target, options.get("method_options"))
    seconds = time.perf_counter() - start
    scorer, _ = scorer_for_task(task, image, windowed=method != "gradcam")
    score = _score_fn(scorer, image, target)
    with torch.no_grad():
        target_prob = float(score(image)[0])
    native = np.asarray(saliency_to_native(saliency, meta).dataobj)
    steps = int(options.get("curve_steps", 10))
    with torch.no_grad():
        deletion = curve_auc(*deletion_curve(score, image, saliency, steps=steps))
        insertion = curve_auc(*insertion_curve(score, image, saliency, steps=steps))
    return {"pointing_game": float(pointing_game(native, region,
                                                 tolerance_vox=float(options.get("tolerance_vox", 0)))),
            "relevance_mass": float(relevance_mass(native, region)),
            "deletion_auc": float(deletion), "insertion_auc": float(insertion),
            "seconds": round(seconds, 4), "target_prob": target_prob}


def _nanmean(values: list[float]) -> float:
    """Mean of the defined values; NaN when there is none (e.g. the relevance mass of
    all-zero maps), without numpy's empty-slice warning."""
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


@register_runner("explain")
def explain_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext) -> Path:
    """Explain the arm's model on the seed's held-out subjects (module docstring)."""
    import tempfile

    from cogimg.data.cache import read_meta
    from cogimg.inference import load_task
    from cogimg.paradigms.explain import METHODS
    from cogimg.tracking.run import write_run

    options = dict(arm.get("options") or {})
    method = options.get("method")
    if method not in (*METHODS, "random"):
        raise ValueError(f"arm {arm['name']!r}: options.method {method!r}; choose one of "
                         f"{[*METHODS, 'random']}")
    if not arm.get("config"):
        raise ValueError(f"arm {arm['name']!r}: runner 'explain' needs a config (an experiment YAML)")
    checkpoint = _model(arm, seed, context)
    task, _ = load_task(checkpoint)
    task.eval()
    classes = list(getattr(task, "classes", ()) or ())
    wanted = [str(c) for c in options.get("classes") or classes[1:]]  # [] for segmentation
    limit = int(options.get("max_subjects", 0))
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cogimg-explain-") as scratch:
        data = _datamodule(arm, seed, context, Path(scratch))
        for stage in context.stages:
            chosen = [s for s in data.subjects[stage]
                      if (str(s.get("diagnosis")) in wanted if wanted else s.get("diagnosis") != "CN")]
            rows[stage] = []
            for subject in chosen[:limit or None]:
                image = torch.cat([subject[m].data.float() for m in data.modalities])[None]
                target = classes.index(str(subject["diagnosis"])) if classes else 0
                region = truth_region(context.data, str(subject["subject_id"]),
                                      options.get("truth", "atrophy"),
                                      float(options.get("atrophy_threshold", 0.1)))
                row = explain_subject(task, image, read_meta(subject["cache_entry"]), region,
                                      method, target, options, rng)
                rows[stage].append({"subject_id": str(subject["subject_id"]),
                                    "target": classes[target] if classes else "lesion", **row})
    metrics = {stage: {f"{stage}/{m}": _nanmean([r[m] for r in stage_rows]) for m in METRICS}
               for stage, stage_rows in rows.items()}
    return write_run(run_dir, None, experiment=arm["name"], variant=method, seed=seed,
                     subjects=rows, metrics=metrics, kind="explanation",
                     task="explanation",
                     model=str(task.hparams.get("model", type(task).__name__)), method=method,
                     checkpoint=str(checkpoint), truth=options.get("truth", "atrophy"),
                     wall_s=round(time.perf_counter() - start, 1))
