"""Study runner ``real_cases``: a trained segmentation model on an external folder of real scans.

An arm ``{runner: real_cases, options: {model_from: <fit arm>, cases: PATH}}`` takes the last
checkpoint of the study arm ``options.model_from`` for the same seed (an earlier ``fit`` arm,
as the ``explain`` runner does) and applies it, through the product inference path
(:func:`cogimg.inference.predict_dataset`, what ``cogimg predict`` runs: the checkpoint's
preprocessing, sliding-window inference, the mask back on the scan's native grid), to every
case under ``options.cases`` — a folder in the ISLES'22 layout (``rawdata/`` +
``derivatives/`` + ``participants.tsv``), any BIDS root or subject folder, or a folder of case
folders (:func:`cogimg.inference.subjects_from_input`). ``cases`` is absolute or relative to
the repository root; ``{data}`` in it is replaced by the study's BIDS root (a tiny preset can
point at a synthetic subject written in the same layout). A missing folder stops the arm with
one error naming it.

Per case (one row of ``subjects_test.csv``, native grid, ISLES'22 definitions of
:mod:`cogimg.metrics.segmentation`): the segmentation scorer's columns (Dice, absolute volume
difference in mL, lesion count difference, lesion-wise F1, HD95 in mm, predicted and true
volume in mL, lesion counts), where the errors lie
(:func:`~cogimg.metrics.segmentation.detection_by_volume`: false-positive and missed volume in
mL, true and found lesions per lesion-volume bin), ``volume_ratio`` (predicted / true volume;
``nan`` for an empty truth), and cogimg's out-of-distribution score of the scan against the
checkpoint's training inputs (``ood_score`` in robust SDs, ``ood_flag`` 1/0:
:func:`cogimg.data.ood.ood_report`, what ``cogimg clinical`` flags). Cases without a lesion mask cannot be scored: they are listed in
the manifest under ``unscored``. The run directory is of kind ``segmentation``, so leaderboards
and comparisons rank real-case arms like any segmentation run (stage ``test``).

``options.finetune_steps > 0``: leave-one-case-out fine-tuning on the real cases. For each
case the checkpoint is fine-tuned for that many optimizer steps (AdamW, ``finetune_lr``,
default the task's ``lr``; ``finetune_batch`` patches of the task's patch size per step, half
centred on lesion voxels) on the *other* cases, preprocessed as in training, and the held-out
case is predicted by the fine-tuned weights through the same inference path; its row gains
``finetuned_<metric>`` columns. With fewer than 2 cases nothing can be held out: the run's
manifest and ``metrics.json`` say so under ``finetune`` (and the runner prints it), and the
rows carry only the zero-shot scores — no fine-tuned column is invented.

``options.model_from`` may list several fit arms: their checkpoints for the same seed are one
ensemble (:mod:`cogimg.inference.ensemble`: mean probabilities; the OOD score is against the
first member's training inputs; no fine-tuning). ``options.ensemble_seeds: true``: the
members are those arms' checkpoints for every seed of the study (a seed ensemble, as nnU-Net
ensembles its folds); each seed's run then scores that same ensemble, so that comparisons pair
it with each single-seed model. ``options.tta``: ``none`` or ``flip``
(``cogimg predict --tta``; default: each checkpoint's own setting).

Other options: ``max_cases`` (0 = all; the first cases with a mask by subject ID),
``finetune_batch`` (default 2), ``presets: {<preset>: {option: value}}`` (options that replace
these under that study preset, e.g. a tiny ``cases``). Inference and fine-tuning run on the GPU
when the study's command line asks for one (``--accelerator gpu``), else on the CPU.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cogimg.tracking.study_registry import StudyContext, register_runner

REPO = Path(__file__).resolve().parents[2]
SCORED = ("dice", "lesion_f1", "absolute_volume_difference_ml", "volume_ratio")


def cases_folder(cases: str | Path, data: str | Path | None = None, where: str = "options.cases"
                 ) -> Path:
    """``cases`` as a path: ``{data}`` replaced by ``data``, relative to the repository root;
    raises :class:`FileNotFoundError` naming it when it does not exist."""
    if not cases:
        raise ValueError(f"{where}: give the folder of real cases (e.g. ../shared/data/isles22)")
    text = str(cases).replace("{data}", str(data)) if data is not None else str(cases)
    path = Path(text)
    path = path if path.is_absolute() else (REPO / path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{where}: real cases folder {path} does not exist (an ISLES'22-"
                                "layout folder, a BIDS root or a folder of case folders)")
    return path


def case_row(report: dict, ood: dict | None) -> dict:
    """One case's row from a :func:`~cogimg.inference.predict_dataset` report (its ISLES'22
    ``metrics``: :func:`~cogimg.metrics.segmentation.segmentation_report`) and its OOD report:
    the metrics, its ``detection_by_volume`` counts and volumes (where the report has them),
    ``volume_ratio`` (pred / true volume, ``nan`` for an empty truth),
    ``ood_score`` (robust SDs) and ``ood_flag`` (1/0; ``nan`` without a training summary)."""
    if "metrics" not in report:
        raise ValueError(f"{report.get('subject_id')}: no ground-truth mask found, so no "
                         "metrics (a real case needs its lesion mask)")
    row = {**report["metrics"], **report.get("detection_by_volume", {})}
    truth = float(row["volume_truth_ml"])
    row["volume_ratio"] = float(row["volume_pred_ml"]) / truth if truth > 0 else math.nan
    row["ood_score"] = float(ood["score"]) if ood else math.nan
    row["ood_flag"] = float(bool(ood["flag"])) if ood else math.nan
    return row


def _case_input(cases: Path, subject) -> Path:
    """The narrowest input path holding ``subject`` (its BIDS participant folder), else the
    whole ``cases`` folder."""
    pid = subject.get("participant_id")
    for folder in (cases / "rawdata" / str(pid), cases / str(pid)):
        if pid and folder.is_dir():
            return folder
    return cases


def _cases(ckpt: Path, cases: Path, max_cases: int = 0) -> tuple[list, list[str], dict, dict]:
    """The subjects under ``cases`` with a lesion mask (the first ``max_cases`` by subject ID;
    0 = all), the IDs of those without one, and for each chosen case its OOD report and its
    preprocessed ``(image (C, X, Y, Z), label (1, X, Y, Z))`` tensors (as in training)."""
    from cogimg.data.ood import ood_report, scan_features
    from cogimg.diseases import get_preset
    from cogimg.inference import (
        preprocessed_subjects,
        preprocessing_config,
        read_checkpoint,
        subjects_from_input,
    )

    loaded = read_checkpoint(ckpt)
    modalities = tuple(loaded.data["modalities"])
    preset = get_preset(loaded.data["preset"])
    subjects = sorted(subjects_from_input(cases, modalities, preset.name),
                      key=lambda s: str(s["subject_id"]))
    has_mask = [any(k in s for k in preset.label_keys) for s in subjects]
    labelled = [s for s, mask in zip(subjects, has_mask) if mask]
    unscored = [str(s["subject_id"]) for s, mask in zip(subjects, has_mask) if not mask]
    chosen = labelled[:max_cases or None]
    oods, tensors = {}, {}
    for subject, processed, image in preprocessed_subjects(
            chosen, preprocessing_config(loaded.data), modalities):
        sid = str(subject["subject_id"])
        oods[sid] = ood_report(scan_features(processed["cache_entry"], modalities),
                               loaded.input_summary)
        key = next(k for k in preset.label_keys if k in processed)
        tensors[sid] = (image[0].clone(), processed[key].data.clone())
    return chosen, unscored, oods, tensors


def finetune(ckpt: Path, cases: list[tuple[torch.Tensor, torch.Tensor]], steps: int, seed: int,
             out: Path, lr: float | None = None, batch: int = 2, device: str = "cpu") -> Path:
    """Fine-tune the checkpoint's task for ``steps`` AdamW steps on patches of ``cases``
    (``(image (C, X, Y, Z), label (1, X, Y, Z))`` on the model's grid; half the patches centred
    on a lesion voxel) and write the checkpoint with those weights to ``out``."""
    import torchio as tio

    from cogimg.inference import load_task

    torch.manual_seed(seed)
    task, _ = load_task(ckpt)
    task.to(device)
    patch = tuple(int(p) for p in task.hparams.patch_size)
    subjects = []
    for image, label in cases:
        size = tuple(max(p, s) for p, s in zip(patch, image.shape[1:]))
        pad = tio.CropOrPad(size)
        subjects.append(pad(tio.Subject(image=tio.ScalarImage(tensor=image.float()),
                                        label=tio.LabelMap(tensor=label.long()))))
    sampler = tio.LabelSampler(patch, "label", label_probabilities={0: 1, 1: 1})
    streams = [iter(sampler(s)) for s in subjects]
    optimizer = torch.optim.AdamW(task.parameters(), lr=float(lr or task.hparams.lr))
    rng = np.random.default_rng(seed)
    task.train()
    for _ in range(int(steps)):
        patches = [next(streams[int(rng.integers(len(streams)))]) for _ in range(batch)]
        data = {"image": torch.stack([p["image"].data for p in patches]).float().to(device),
                "label": torch.stack([p["label"].data for p in patches]).long().to(device)}
        loss = task.loss(task.logits(data), data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["state_dict"] = {k: v.detach().cpu() for k, v in task.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


def evaluate_cases(ckpt: Path | list[Path], cases: Path, out: Path, finetune_steps: int = 0,
                   seed: int = 0, max_cases: int = 0, lr: float | None = None, batch: int = 2,
                   device: str = "cpu", tta: str | None = None) -> tuple[list[dict], dict]:
    """Rows (:func:`case_row`; with ``finetune_steps > 0`` and at least 2 cases also the
    ``finetuned_<metric>`` columns of leave-one-case-out fine-tuning) of the cases under
    ``cases`` that have a lesion mask (the first ``max_cases`` by subject ID; 0 = all),
    predictions written to ``out``; and ``{"finetune": note, "unscored": [cases without a
    mask]}``. ``ckpt``: one checkpoint or an ensemble's list (OOD against the first; no
    fine-tuning). ``device``: where inference and fine-tuning run (``cpu``, ``cuda``);
    ``tta``: :func:`~cogimg.inference.predict_dataset`'s."""
    from cogimg.inference import predict_dataset

    members = ckpt if isinstance(ckpt, list) else [ckpt]
    if finetune_steps > 0 and len(members) > 1:
        raise ValueError("fine-tuning applies to one checkpoint, not an ensemble of "
                         f"{len(members)}")
    ckpt = members[0]
    subjects, unscored, oods, tensors = _cases(ckpt, cases, max_cases)
    by_id = {str(s["subject_id"]): s for s in subjects}
    chosen = sorted(by_id)
    reports = []
    for folder in dict.fromkeys(_case_input(cases, by_id[sid]) for sid in chosen):
        reports += [r for r in predict_dataset(members, folder, out, device, overwrite=True,
                                               tta=tta)
                    if str(r["subject_id"]) in by_id]
    rows = [{"subject_id": str(r["subject_id"]),
             **{k: v for k, v in case_row(r, oods.get(str(r["subject_id"]))).items()
                if k != "subject_id"}} for r in sorted(reports, key=lambda r: str(r["subject_id"]))]
    info: dict = {"unscored": unscored}
    if finetune_steps <= 0:
        return rows, info
    if len(chosen) < 2:
        info["finetune"] = {
            "possible": False, "steps": int(finetune_steps), "n_cases": len(chosen),
            "reason": f"leave-one-case-out fine-tuning needs at least 2 real cases with a "
                      f"lesion mask; {cases} has {len(chosen)}: no fine-tuned scores"}
        print(f"  fine-tuning not possible: {info['finetune']['reason']}", flush=True)
        return rows, info
    with tempfile.TemporaryDirectory(prefix="cogimg-finetune-") as scratch:
        for row in rows:
            held = row["subject_id"]
            tuned = finetune(ckpt, [tensors[s] for s in chosen if s != held], finetune_steps,
                             seed, Path(scratch) / "finetuned.ckpt", lr, batch, device)
            found = [r for r in predict_dataset(tuned, _case_input(cases, by_id[held]),
                                                Path(scratch) / "pred", device, overwrite=True,
                                                tta=tta)
                     if str(r["subject_id"]) == held]
            tuned_row = case_row(found[0], None)
            row.update({f"finetuned_{k}": tuned_row[k] for k in SCORED})
    info["finetune"] = {"possible": True, "steps": int(finetune_steps), "n_cases": len(chosen),
                        "protocol": "leave-one-case-out"}
    return rows, info


def _device(context: StudyContext) -> str:
    """``cuda`` when the command line asked for a GPU accelerator and one is there, else ``cpu``."""
    args = list(context.trainer_overrides)
    accelerator = args[args.index("--trainer.accelerator") + 1] if "--trainer.accelerator" in args else ""
    return "cuda" if accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"


@register_runner("real_cases")
def real_cases_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext) -> Path:
    """Score the arm ``options.model_from``'s checkpoint on real cases (module docstring)."""
    from cogimg.inference import load_task
    from cogimg.tracking.run import write_run
    from cogimg.tracking.study_explain import last_checkpoint
    from cogimg.tracking.study_spec import read_resolved

    options = dict(arm.get("options") or {})
    resolved = read_resolved(context.out) or {}
    preset = resolved.get("preset")
    options.update((options.pop("presets", None) or {}).get(preset) or {})
    where = f"arm {arm['name']!r}: options"
    source = options.get("model_from")
    if not source:
        raise ValueError(f"{where}.model_from: name the fit arm whose checkpoint is evaluated")
    sources = [source] if isinstance(source, str) else list(source)
    cases = cases_folder(options.get("cases"), context.data, f"{where}.cases")
    seeds = resolved.get("seeds", [seed]) if options.get("ensemble_seeds") else [seed]
    checkpoints = []
    for name in sources:
        for member_seed in seeds:
            folder = Path(context.out) / "runs" / name / f"seed{member_seed}"
            if not folder.is_dir():
                raise FileNotFoundError(f"{where}.model_from {name!r} has no run for seed "
                                        f"{member_seed} ({folder}); list that arm before this one")
            checkpoints.append(last_checkpoint(folder))
    steps = int(options.get("finetune_steps", 0))
    start = time.perf_counter()
    rows, info = evaluate_cases(checkpoints, cases, run_dir / "predictions", steps, seed,
                                int(options.get("max_cases", 0)), options.get("finetune_lr"),
                                int(options.get("finetune_batch", 2)), _device(context),
                                options.get("tta"))
    if not rows:
        raise ValueError(f"{where}.cases: no case with a lesion mask under {cases}")
    metrics = {"test": {f"test/{k}": float(np.nanmean([r[k] for r in rows]))
                        for k in rows[0] if k != "subject_id"
                        and np.isfinite([r[k] for r in rows]).any()}}
    note = info.get("finetune") or {}
    if note:
        metrics["finetune"] = note
    task, _ = load_task(checkpoints[0])
    return write_run(run_dir, task, experiment=arm["name"],
                     variant="real_cases", seed=seed,
                     subjects={"test": rows}, metrics=metrics,
                     checkpoint=str(checkpoints[0]) if len(checkpoints) == 1
                     else [str(c) for c in checkpoints],
                     model_from=source, cases=str(cases), finetune=note or None,
                     tta=options.get("tta"),
                     unscored=info["unscored"],
                     eval_s=round(time.perf_counter() - start, 1))
