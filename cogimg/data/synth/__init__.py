"""Synthetic multi-site brain MRI/PET cohort with known ground truth (``cogimg synth``).

Modules, one per concern: :mod:`.anatomy` / :mod:`.regions` (template, deformation,
regions), :mod:`.contrasts` (tissue → modalities), :mod:`.atrophy` (AD), :mod:`.pd`,
:mod:`.stroke` / :mod:`.microbleeds` (lesions), :mod:`.sites` (scanners), :mod:`.plan`
(who is in the cohort), :mod:`.cohort` (per-subject generation, workers),
:mod:`.writer` (BIDS files) and :mod:`.preview` (montage figure).
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
    check_output_dir(out, overwrite)
    plan = plan_cohort(n_subjects, seed, sites, diseases, diff, proportions, site_confound)
    staging = staging_dir(out)
    try:
        config = SynthConfig(staging=staging, sites=tuple(plan.sites), spacing_mm=float(spacing_mm),
                             difficulty=diff, seed=int(seed), version=__version__)
        rows = run_subjects(plan.subjects, config, workers=workers, progress=progress)
        settings = {"subjects": n_subjects, "seed": seed, "spacing_mm": float(spacing_mm),
                    "sites": sites, "diseases": ",".join(diseases), "difficulty": diff.name,
                    "site_spread": float(site_spread), "site_confound": site_confound,
                    "site_probabilities": plan.site_probabilities}
        write_dataset_files(staging, rows, settings, [s.to_json() for s in plan.sites], command)
        publish(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


__all__ = ["DEFAULT_DISEASES", "generate_cohort"]
