"""Synthetic multi-site brain MRI/PET cohort with known ground truth (``cogimg synth``).

Modules, one per concern: :mod:`.anatomy` / :mod:`.regions` (template, deformation,
regions), :mod:`.contrasts` (tissue → modalities), :mod:`.atrophy` (AD), :mod:`.pd`,
:mod:`.stroke` / :mod:`.microbleeds` (lesions), :mod:`.sites` (scanners), :mod:`.plan`
(who is in the cohort), :mod:`.cohort` (per-subject generation, workers),
:mod:`.writer` (BIDS files), :mod:`.preview` (montage figure) and :mod:`.bold` (resting-state
BOLD with network effects, optional).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

DEFAULT_DISEASES = ("stroke", "ad", "pd")


def generate_cohort(
    out: str | Path,
    n_subjects: int,
    seed: int,
    spacing_mm: float = 2.0,
    sites: int = 3,
    diseases=DEFAULT_DISEASES,
    difficulty: str = "medium",
    site_spread: float = 1.0,
    workers: int = 1,
    proportions: dict[str, float] | None = None,
    site_confound: float = 0.3,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    bold: bool = False,
    bold_volumes: int = 150,
    bold_tr: float = 2.0,
) -> Path:
    """Generate a synthetic cohort under ``out`` and return its path.

    Args:
        out: output directory; must be absent or empty unless ``overwrite``.
        n_subjects: number of subjects (exact counts per diagnosis from ``proportions``).
        seed: master seed; the same arguments give byte-identical arrays and tables.
        spacing_mm: isotropic voxel size of the MNI152 output grid (2 mm: 99 × 117 × 95).
        sites: number of scanner sites K.
        diseases: subset of ``stroke``, ``ad``, ``pd`` (list or comma string); CN controls
            are always included.
        difficulty: ``easy``, ``medium`` or ``hard`` (effect size vs noise and site spread).
        site_spread: multiplies the difficulty's scanner spread (tissue contrast, response
            curve, blur, bias field) and nothing else: a stronger site effect at the same
            disease effect and noise.
        workers: parallel processes (1 = in this process).
        proportions: diagnosis → weight, overriding ``plan.DEFAULT_PROPORTIONS`` entries.
        site_confound: 0 (sites balanced across diagnoses) … 1 (each diagnosis at one site).
        overwrite: replace a non-empty ``out``.
        progress: show a tqdm bar.
        command: the command line, recorded in the README.
        bold: also write resting-state BOLD (raw BIDS func + fMRIPrep-like derivative with
            confounds), the parcellation under ``derivatives/cogimg_atlas`` and the perturbed
            edges under ``derivatives/groundtruth`` (:mod:`cogimg.data.synth.bold`).
        bold_volumes: volumes per run (≥ 50).
        bold_tr: repetition time of the first site in seconds (other sites scale it).

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is false.
        ValueError: an argument is out of range (the message names it).
    """
    from cogimg import __version__
    from cogimg.data.synth.cohort import SynthConfig, run_subjects
    from cogimg.data.synth.difficulty import get_difficulty
    from cogimg.data.synth.plan import parse_diseases, plan_cohort
    from cogimg.data.synth.writer import check_output_dir, publish, staging_dir, write_dataset_files

    out = Path(out)
    diff = get_difficulty(difficulty)
    if not 0 <= float(site_spread) <= 5:
        raise ValueError(f"site_spread must be in [0, 5], got {site_spread}")
    diff = dataclasses.replace(diff, site=diff.site * float(site_spread))
    diseases = parse_diseases(diseases)
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    if not 0.5 <= float(spacing_mm) <= 8.0:
        raise ValueError(f"spacing_mm must be in [0.5, 8] mm, got {spacing_mm}")
    if bold and not (bold_volumes >= 50 and 0.5 <= float(bold_tr) <= 5.0):
        raise ValueError(f"bold_volumes must be ≥ 50 and bold_tr in [0.5, 5] s, got {bold_volumes}, {bold_tr}")
    check_output_dir(out, overwrite)
    plan = plan_cohort(n_subjects, seed, sites, diseases, diff, proportions, site_confound)
    staging = staging_dir(out)
    try:
        bold_config = _bold_config(seed, sites, diff, bold_volumes, bold_tr, staging, spacing_mm) if bold else None
        config = SynthConfig(staging=staging, sites=tuple(plan.sites), spacing_mm=float(spacing_mm),
                             difficulty=diff, seed=int(seed), version=__version__, bold=bold_config)
        rows = run_subjects(plan.subjects, config, workers=workers, progress=progress)
        settings = {"subjects": n_subjects, "seed": seed, "spacing_mm": float(spacing_mm),
                    "sites": sites, "diseases": ",".join(diseases), "difficulty": diff.name,
                    "site_spread": float(site_spread), "site_confound": site_confound,
                    "site_probabilities": plan.site_probabilities}
        if bold_config is not None:
            from cogimg.data.synth.bold import bold_config_json

            settings["bold"] = bold_config_json(bold_config)
        write_dataset_files(staging, rows, settings, [s.to_json() for s in plan.sites], command)
        publish(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _bold_config(seed, n_sites, diff, n_volumes, tr_s, staging, spacing_mm):
    """Draw the sites' BOLD protocols (their own seed stream) and write the parcellation."""
    import numpy as np

    from cogimg.data.synth.bold import BoldConfig, make_bold_sites
    from cogimg.data.synth.bold_atlas import build_bold_grid, write_parcellation
    from cogimg.data.synth.plan import child_seed

    rng = np.random.default_rng(child_seed(np.random.SeedSequence(seed), 3))  # 0–2: the plan's
    sites = make_bold_sites(rng, n_sites, float(tr_s), diff.noise, diff.site)
    write_parcellation(staging, build_bold_grid(float(spacing_mm)))
    return BoldConfig(n_volumes=int(n_volumes), tr_s=float(tr_s), sites=sites)


__all__ = ["DEFAULT_DISEASES", "generate_cohort"]
