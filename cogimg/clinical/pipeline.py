"""Per-patient clinical run: every model on one case, files and a one-page report per case.

:func:`run_batch` is what ``cogimg clinical`` runs. Per case it writes one folder
``<output>/<case_id>/`` (built under a hidden temporary name and renamed when complete, so a
case folder is always whole):

- ``<case_id>_report.html``: the one-page, self-contained report (:mod:`.report`);
- ``<case_id>_report.json``: everything the page shows, machine-readable;
- ``<case_id>_lesion_msk.nii.gz`` + ``<case_id>_lesions.png`` (segmentation checkpoint);
- ``<case_id>_<disease>_<method>_saliency.nii.gz`` + ``.png`` per classifier;

and ``<output>/summary.json``: the cases written, the inputs that failed with their reason,
the cases flagged out of distribution and the exit code.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime
from pathlib import Path

from cogimg import __version__
from cogimg.clinical.figures import cheap_gc, native_summary, save_lesion_overlay_png
from cogimg.clinical.models import Model, classify, detect, input_check, prepare, segment
from cogimg.clinical.report import write_html
from cogimg.data.inputs import Case, InputError, find_cases, native_nifti
from cogimg.io import atomic_directory, atomic_save_nifti, atomic_write_text

SUMMARY_FILE = "summary.json"

#: Exit codes of ``cogimg clinical`` (also in its help and the README).
EXIT_OK = 0            # every input has its report, none flagged out of distribution
EXIT_SOME_FAILED = 1   # at least one input failed (listed in summary.json); the others written
EXIT_USAGE = 2         # nothing run: bad arguments, unreadable checkpoint, missing input, outputs in the way
EXIT_OOD = 3           # every input has its report, at least one flagged out of distribution


def exit_code(summary: dict) -> int:
    """The exit code of a finished batch (failures outrank OOD flags)."""
    if summary["errors"]:
        return EXIT_SOME_FAILED
    return EXIT_OOD if summary["ood_flagged"] else EXIT_OK


def combine_ood(per_model: dict[str, dict | None]) -> dict | None:
    """One ``ood`` entry over the models: flagged when any model flags the case; ``score``
    the largest robust z; reasons prefixed with the model. ``None`` when no model has a
    training summary."""
    checked = {name: r for name, r in per_model.items() if r is not None}
    if not checked:
        return None
    scores = [r["score"] for r in checked.values()]
    return {"flag": any(r["flag"] for r in checked.values()),
            "score": None if None in scores else max(scores),
            "threshold": max(r["threshold"] for r in checked.values()),
            "reasons": [f"{name}: {text}" for name, r in checked.items() for text in r["reasons"]],
            "checked_by": sorted(checked),
            "not_checked": sorted(set(per_model) - set(checked))}


def _model_name(model: Model) -> str:
    return f"{model.role} ({model.checkpoint.path.name})"


def run_case(case: Case, models: list[Model], folder: Path, device: str = "cpu",
             saliency: str | None = "gradcam", ood_threshold: float | None = None) -> dict:
    """Run every model on ``case``, write its files into ``folder``; returns the report."""
    from cogimg.paradigms.explain.export import save_overlay_png, save_saliency_nifti
    from cogimg.paradigms.explain.pipeline import explain_volume

    cid = case.case_id
    report: dict = {"case_id": cid, "input": str(case.source),
                    "created": datetime.now().astimezone().isoformat(timespec="seconds"),
                    "software": f"cogimg {__version__}",
                    "models": [m.describe() for m in models], "warnings": []}
    oods = {}
    for model in models:
        prepared = prepare(model, case, device)
        reference = prepared.meta["reference"]
        background = native_nifti(prepared.subject[reference])
        report.setdefault("scan", {"reference_modality": reference, **native_summary(background)})
        ood = oods[_model_name(model)] = input_check(model, prepared, ood_threshold)
        if ood is None:
            report["warnings"].append(f"{model.checkpoint.path.name}: no training-input summary in "
                                      "the checkpoint; out-of-distribution check not done")
        if model.role == "segmentation":
            mask, lesions = segment(model, prepared)
            names = {"mask": f"{cid}_lesion_msk.nii.gz", "figure": f"{cid}_lesions.png"}
            atomic_save_nifti(mask, folder / names["mask"])
            with cheap_gc():
                save_lesion_overlay_png(mask, background, lesions["lesions"], folder / names["figure"])
            report["segmentation"] = {**names, "reference_modality": reference, **lesions, "ood": ood}
        elif model.role == "detection":
            report["detection"] = {**detect(model, prepared), "ood": ood}
        else:
            result = classify(model, prepared)
            if not result["calibrated"]:
                report["warnings"].append(f"{model.checkpoint.path.name}: no fitted temperature; "
                                          "probabilities are uncalibrated")
            if saliency:
                stem = f"{cid}_{result['disease']}_{saliency}_saliency"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # Captum's notes on hooks and requires_grad
                    sal, _ = explain_volume(model.task, prepared.image, saliency)
                native = save_saliency_nifti(sal, prepared.meta, folder / f"{stem}.nii.gz")
                with cheap_gc():
                    save_overlay_png(native, background, folder / f"{stem}.png",
                                     title=f"{saliency}: evidence for {result['predicted']}")
                result.update(saliency=f"{stem}.nii.gz", saliency_figure=f"{stem}.png",
                              saliency_method=saliency)
            report.setdefault("classification", []).append({**result, "ood": ood})
    report["ood"] = combine_ood(oods)
    atomic_write_text(folder / f"{cid}_report.json", json.dumps(report, indent=2, default=float))
    write_html(report, folder, folder / f"{cid}_report.html")
    return report


def run_batch(input_path: str | Path, output_dir: str | Path, models: list[Model],
              device: str = "cpu", saliency: str | None = "gradcam",
              ood_threshold: float | None = None, overwrite: bool = False,
              progress: bool = True) -> dict:
    """Every case of ``input_path`` (:func:`~cogimg.data.inputs.find_cases`) → its folder.

    Raises before writing anything (``FileExistsError``) when a case folder or the summary
    exists and not ``overwrite``; a case that fails is recorded in the summary's
    ``errors`` with its reason, and the others still run. Returns the summary.
    """
    from tqdm.auto import tqdm

    out = Path(output_dir)
    modalities = tuple(dict.fromkeys(m for model in models for m in model.modalities))
    cases, problems = find_cases(input_path, modalities)
    if not cases and not problems:
        raise InputError(f"no input found under {input_path}")
    taken = [p for p in (out / SUMMARY_FILE, *(out / c.case_id for c in cases)) if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{taken[0]} exists ({len(taken)} output(s) in the way); pass "
                              "--overwrite to replace them")
    errors = [{"input": where, "case_id": None, "reason": why} for where, why in problems]
    written = []
    for case in tqdm(cases, desc="cogimg clinical", unit="case", disable=not progress):
        try:
            with atomic_directory(out / case.case_id, overwrite=overwrite) as tmp:
                report = run_case(case, models, tmp, device, saliency, ood_threshold)
        except Exception as exc:  # noqa: BLE001 -- one failed case must not stop the batch; it is listed
            errors.append({"input": str(case.source), "case_id": case.case_id,
                           "reason": f"{type(exc).__name__}: {exc}"})
            continue
        ood = report["ood"]
        written.append({"case_id": case.case_id, "input": str(case.source),
                        "report": f"{case.case_id}/{case.case_id}_report.html",
                        "ood_flag": None if ood is None else ood["flag"]})
    summary = {"input": str(input_path), "output": str(out), "software": f"cogimg {__version__}",
               "models": [m.describe() for m in models], "n_inputs": len(cases) + len(problems),
               "n_written": len(written), "n_failed": len(errors),
               "ood_flagged": [w["case_id"] for w in written if w["ood_flag"]],
               "written": written, "errors": errors}
    summary["exit_code"] = exit_code(summary)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    return summary


__all__ = ["EXIT_OK", "EXIT_OOD", "EXIT_SOME_FAILED", "EXIT_USAGE", "SUMMARY_FILE", "combine_ood",
           "exit_code", "run_batch", "run_case"]
