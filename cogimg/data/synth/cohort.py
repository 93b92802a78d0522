"""Generating one subject, and a cohort of them in parallel.

A subject goes through: healthy anatomy → atrophy (age + AD, changes the tissue maps) →
lesion and signal effects on the atrophied anatomy (amyloid, stroke, microbleeds, PD) →
contrast synthesis × effect gains → the site's scanner → files. Each stage draws from its
own generator (``SubjectPlan.rngs``), so outputs are byte-identical for a seed whatever
the number of workers. Workers write their subject's files themselves and send back only
the ``participants.tsv`` row.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cogimg.data.synth.anatomy import build_anatomy, load_template
from cogimg.data.synth.atrophy import amyloid_effect, atrophy_effect
from cogimg.data.synth.bold import BoldConfig
from cogimg.data.synth.contrasts import MODALITIES, region_factor_map, subject_contrast, synthesize
from cogimg.data.synth.difficulty import Difficulty
from cogimg.data.synth.pd import pd_effect
from cogimg.data.synth.plan import SubjectPlan
from cogimg.data.synth.sites import ScannerModel, apply_scanner, bias_field, draw_subject_scan
from cogimg.data.synth.types import Effect, SubjectAnatomy
from cogimg.data.synth.writer import modality_path, write_json, write_nifti

#: Regions whose volume goes into the ground truth (GM volume; ventricles: CSF volume).
VOLUME_REGIONS = ("hippocampus", "entorhinal", "temporal", "parietal", "precuneus",
                  "putamen", "caudate", "substantia_nigra")


@dataclass(frozen=True)
class SynthConfig:
    """What every subject job needs besides its plan (sent once to each worker)."""

    staging: Path
    sites: tuple[ScannerModel, ...]
    spacing_mm: float
    difficulty: Difficulty
    seed: int
    version: str
    bold: BoldConfig | None = None  # None: no functional data


def regional_volumes(anatomy: SubjectAnatomy, ventricle_growth_ml: float = 0.0) -> dict[str, float]:
    """Ground-truth volumes (mL): tissue classes, ICV, region GM, ventricle CSF."""
    v = anatomy.voxel_volume_ml
    labels = anatomy.regions.labels
    gm, csf = anatomy.tissue["gm"], anatomy.tissue["csf"]
    out = {"icv": float(anatomy.brain_mask.sum() * v)}
    for t, m in anatomy.tissue.items():
        out[t] = float(m.sum(dtype=np.float64) * v)
    sums_gm = np.bincount(labels.ravel(), weights=gm.ravel(), minlength=len(anatomy.regions) + 1)
    for base in VOLUME_REGIONS:
        for side in ("l", "r"):
            name = f"{base}_{side}"
            out[name] = float(sums_gm[anatomy.regions.label_of(name)] * v)
    vent = anatomy.regions.labels == anatomy.regions.label_of("ventricles")
    out["ventricles"] = float(csf[vent].sum(dtype=np.float64) * v + ventricle_growth_ml)
    return {k: round(val, 4) for k, val in out.items()}


def _lesion_effects(plan: SubjectPlan, rngs, anatomy: SubjectAnatomy, difficulty: Difficulty) -> list[Effect]:
    # The stroke and microbleed modules are separate (their own contract, types.py); they
    # take their difficulty on a 0 (easy) … 1 (hard) scale.
    from cogimg.data.synth.microbleeds import microbleed_effect
    from cogimg.data.synth.stroke import stroke_effect

    effects = []
    if plan.diagnosis == "stroke":
        effects.append(stroke_effect(rngs["stroke"], anatomy, difficulty.lesion_level))
    effects.append(microbleed_effect(rngs["microbleeds"], anatomy, difficulty.lesion_level))
    return effects


def _clinical_row(plan: SubjectPlan, effects: list[Effect], rng: np.random.Generator, site: str) -> dict:
    clinical = {}
    for e in effects:
        clinical.update(e.clinical)
    mmse = plan.ad.mmse
    cdr = plan.ad.cdr
    if plan.diagnosis == "stroke":  # post-stroke cognitive impairment grows with deficit
        mmse = mmse - 0.2 * float(clinical.get("NIHSS", 0)) + rng.normal(0.0, 1.0)
        cdr = None
    elif plan.diagnosis == "PD":
        mmse = mmse - 2.0 * plan.pd.severity + rng.normal(0.0, 0.8)
        cdr = None
    return {
        "participant_id": plan.participant_id,
        "diagnosis": plan.diagnosis,
        "site": site,
        "age": plan.age,
        "sex": plan.sex,
        "MMSE": int(np.clip(round(mmse), 0, 30)),
        "CDR": cdr,
        "APOE4": plan.ad.apoe4,
        "NIHSS": int(clinical["NIHSS"]) if plan.diagnosis == "stroke" and "NIHSS" in clinical else None,
        "UPDRS": plan.pd.updrs if plan.diagnosis in ("CN", "PD") else None,
        "converter": plan.ad.converter if plan.diagnosis == "MCI" else None,
    }


def synthesize_subject(plan: SubjectPlan, config: SynthConfig) -> dict:
    """Generate and write one subject under ``config.staging``; return its participants row."""
    template = load_template(config.spacing_mm)
    diff = config.difficulty
    rngs = plan.rngs()
    site = config.sites[plan.site]

    healthy = build_anatomy(template, rngs["anatomy"], plan.sex, deformation_mm=2.5 * diff.anatomy)
    healthy_volumes = regional_volumes(healthy.anatomy)
    tissue, atrophy = atrophy_effect(rngs["atrophy"], healthy.anatomy, plan.ad, plan.age, diff)
    anatomy = replace(healthy.anatomy, tissue=tissue)
    t1_residual, anatomy_info = healthy.t1_residual, healthy.info
    del healthy  # the pre-atrophy tissue maps: ~100 MB at 1 mm
    gm_extra, amyloid = amyloid_effect(anatomy, plan.ad)
    effects = [atrophy, amyloid, *_lesion_effects(plan, rngs, anatomy, diff),
               pd_effect(rngs["pd"], anatomy, plan.pd, diff)]

    params = subject_contrast(rngs["contrast"], site.tissue_scale, plan.age)
    scan = draw_subject_scan(rngs["scanner"], site)
    bias = bias_field(anatomy.shape, scan.bias_coeffs, scan.bias_amplitude, mask=anatomy.brain_mask)
    pid, root, affine = plan.participant_id, config.staging, anatomy.affine
    for modality in MODALITIES:
        fmap = region_factor_map(anatomy.regions, params.region_factors[modality], anatomy.spacing_mm)
        img = synthesize(
            modality, tissue, params, fmap,
            t1_residual=t1_residual if modality == "T1w" else None,
            gm_extra=gm_extra if modality == "pet_amyloid" else None,
        )
        for e in effects:
            if modality in e.gain:
                img *= e.gain[modality]
        img = apply_scanner(img, modality, anatomy.brain_mask, anatomy.spacing_mm, site, scan,
                            rngs["scanner"], bias)
        write_nifti(root / modality_path(pid, modality), img, affine, "image")
        del img, fmap
        if modality == "T1w":
            t1_residual = None

    label_files = _write_labels(root, pid, anatomy, effects)
    # The subject's own anatomical regions (names in derivatives/truth/regions.json), so
    # region-level analyses and explanations need no registration.
    regions_rel = f"derivatives/truth/{pid}/{pid}_desc-regions_dseg.nii.gz"
    write_nifti(root / regions_rel, anatomy.regions.labels, affine, "mask")
    # Tissue classes (TISSUE_LABELS): the label maps domain-randomised training draws from.
    tissue_rel = f"derivatives/truth/{pid}/{pid}_desc-tissue_dseg.nii.gz"
    write_nifti(root / tissue_rel, tissue_labels(anatomy), affine, "mask")
    map_files = {}
    for e in effects:
        for key, arr in e.maps.items():
            rel = f"derivatives/truth/{pid}/{pid}_desc-{key}_map.nii.gz"
            write_nifti(root / rel, arr, affine, "map")
            map_files[key] = rel

    row = _clinical_row(plan, effects, rngs["clinical"], site.name)
    bold_files = _write_bold(root, plan, anatomy, effects, config, rngs["bold"]) if config.bold else None
    growth = atrophy.info["regions"]["ventricles"]["growth_outside_label_ml"]
    truth = {
        "participant_id": pid,
        "generator": {"name": "cogimg synth", "version": config.version, "seed": config.seed,
                      "subject_index": plan.index, "difficulty": diff.name,
                      "spacing_mm": anatomy.spacing_mm},
        "clinical": row,
        "anatomy": anatomy_info,
        "regional_volumes_ml": regional_volumes(anatomy, growth),
        "healthy_volumes_ml": healthy_volumes,
        "ad": plan.ad.to_json(),
        "pd": plan.pd.to_json(),
        "effects": {e.name: e.info for e in effects},
        "contrast": params.to_json(),
        "scanner": {"site": site.name, "model": site.to_json(), "session": scan.to_json()},
        "maps": map_files,
        "labels": label_files,
        "regions": regions_rel,
        "tissue": tissue_rel,
    }
    if bold_files is not None:
        truth["bold"] = bold_files
    write_json(root / f"derivatives/truth/{pid}/{pid}_effects.json", truth)
    return row


#: Values of ``desc-tissue_dseg``: the most probable tissue class of each brain voxel.
TISSUE_LABELS = {0: "background", 1: "csf", 2: "gm", 3: "wm"}


def tissue_labels(anatomy: SubjectAnatomy) -> np.ndarray:
    """uint8 (X, Y, Z) map of :data:`TISSUE_LABELS`: argmax of the (post-atrophy) CSF, GM and
    WM probabilities inside the brain mask, 0 outside it."""
    probs = np.stack([anatomy.tissue["csf"], anatomy.tissue["gm"], anatomy.tissue["wm"]])
    labels = (np.argmax(probs, axis=0) + 1).astype(np.uint8)
    return labels * anatomy.brain_mask.astype(np.uint8)


def _write_bold(root: Path, plan: SubjectPlan, anatomy: SubjectAnatomy, effects: list[Effect],
                config: SynthConfig, rng: np.random.Generator) -> dict:
    """Simulate and write the subject's resting-state run (:mod:`.bold`); returns its files."""
    from cogimg.data.synth.bold import lesion_on_grid, simulate_bold, write_bold
    from cogimg.data.synth.bold_atlas import build_bold_grid

    grid = build_bold_grid(config.spacing_mm)
    lesion = next((e.labels["lesions"]["mask"] for e in effects if e.name == "stroke"), None)
    frac = lesion_on_grid(lesion, anatomy.template_mm, anatomy.voxel_volume_ml, grid)
    pd_loss = plan.pd.putamen_loss if plan.diagnosis == "PD" else {}
    result = simulate_bold(rng, grid, config.bold.sites[plan.site], config.bold.n_volumes,
                           plan.ad.stage, pd_loss, frac, effect=config.difficulty.effect)
    return write_bold(root, plan.participant_id, result, grid.affine)


def _write_labels(root: Path, pid: str, anatomy: SubjectAnatomy, effects: list[Effect]) -> dict:
    from cogimg.data.boxes import write_boxes_json

    labels = {}
    for e in effects:
        labels.update(e.labels)
    # Every subject has a (possibly empty) microbleed annotation: absence is information.
    labels.setdefault("microbleeds", {"mask": np.zeros(anatomy.shape, np.uint8),
                                      "instances": np.zeros(anatomy.shape, np.int16), "boxes": []})
    files = {}
    for pipeline, lab in labels.items():
        base = f"derivatives/{pipeline}/{pid}/anat/{pid}"
        write_nifti(root / f"{base}_msk.nii.gz", lab["mask"], anatomy.affine, "mask")
        write_nifti(root / f"{base}_dseg.nii.gz", lab["instances"], anatomy.affine, "instances")
        write_boxes_json(root / f"{base}_boxes.json", lab["boxes"], anatomy.shape, anatomy.affine,
                         meta={"pipeline": pipeline, "participant_id": pid})
        files[pipeline] = {"mask": f"{base}_msk.nii.gz", "instances": f"{base}_dseg.nii.gz",
                           "boxes": f"{base}_boxes.json", "count": len(lab["boxes"])}
    return files


_WORKER_CONFIG: SynthConfig | None = None


def _single_threaded_blas():
    """Context limiting BLAS to one thread: the few small matrix products here run several
    times slower when OpenBLAS spreads them over cores that the workers already occupy."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, just go on
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _init_worker(config: SynthConfig) -> None:
    global _WORKER_CONFIG
    _WORKER_CONFIG = config
    _single_threaded_blas()  # kept for the worker's lifetime
    load_template(config.spacing_mm)  # no-op when forked from a parent that loaded it


def _worker_job(plan: SubjectPlan) -> dict:
    return synthesize_subject(plan, _WORKER_CONFIG)


def run_subjects(plans: list[SubjectPlan], config: SynthConfig, workers: int = 1,
                 progress: bool = True) -> list[dict]:
    """Generate all subjects (``workers`` processes); rows come back in plan order."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plans), desc="synth", unit="subj", disable=not progress)
    rows = {}
    try:
        if workers <= 1:
            with _single_threaded_blas():
                for plan in plans:
                    rows[plan.participant_id] = synthesize_subject(plan, config)
                    bar.update()
        else:
            # fork shares the parent's loaded template copy-on-write; elsewhere each
            # worker loads its own in the initializer. Forking a process that runs other
            # threads (a gRPC/Flower server, W&B's client) can copy a held lock into the child
            # and hang it, so fork is used only from a single-threaded process.
            single_threaded = threading.active_count() == 1
            method = "fork" if single_threaded and "fork" in mp.get_all_start_methods() else "spawn"
            if method == "fork":
                load_template(config.spacing_mm)
            ctx = mp.get_context(method)
            with ctx.Pool(min(workers, len(plans)), initializer=_init_worker, initargs=(config,)) as pool:
                for row in pool.imap_unordered(_worker_job, plans, chunksize=1):
                    rows[row["participant_id"]] = row
                    bar.update()
    finally:
        bar.close()
    return [rows[p.participant_id] for p in plans]
