"""How long does `load_dataset` take to validate a cohort, read once per file?

Target (cogimg issue 3): a 120-subject cohort at 2 mm with ~10 files per subject validates
in well under a minute on 2 cores. Without ``--data`` this writes a stand-in cohort of that
size (per subject: T1w, FLAIR, T2starw, amyloid PET, DWI, ADC as noisy float32 91×109×91
volumes, two uint8 masks, a boxes JSON and a ground-truth map; 8 NIfTIs are validated, the
map is only recorded) and times full validation with 1 thread and with the default thread
count (``--workers`` reader threads), plus a header-only scan, side by side, and writes every time and
the speed-up of the parallel run over one thread to ``results/bids_validation.json``
(``--quick``: 10 subjects, ``results/bids_validation_quick.json``).

    python benchmarks/bids_validation.py                       # stand-in cohort in a temp dir
    python benchmarks/bids_validation.py --quick               # 10 subjects, well under a minute
    python benchmarks/bids_validation.py --data data/synth     # an existing tree (cogimg synth)
    taskset -c 0,1 python benchmarks/bids_validation.py        # as on a 2-core machine
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from _common import write_result

SHAPE = (91, 109, 91)  # MNI152 at 2 mm


def _write_subject(args: tuple[Path, int]) -> None:
    root, i = args
    rng = np.random.default_rng(i)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-90, -126, -72)
    pid = f"sub-{i:03d}"
    # smooth anatomy-like field + scanner noise: compresses like real float MRI, not like zeros
    field = np.cumsum(rng.normal(0, 1, SHAPE).astype(np.float32), axis=0)
    for folder, name in (
        ("anat", "T1w"),
        ("anat", "FLAIR"),
        ("anat", "T2starw"),
        ("pet", "trc-amyloid_pet"),
        ("dwi", "dwi"),
        ("dwi", "adc"),
    ):
        path = root / pid / folder / f"{pid}_{name}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = 500 + 10 * field + rng.normal(0, 20, SHAPE).astype(np.float32)
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    for pipeline in ("lesions", "microbleeds"):
        folder = root / "derivatives" / pipeline / pid / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        mask = np.zeros(SHAPE, np.uint8)
        x, y, z = rng.integers(20, 70, 3)
        mask[x : x + 6, y : y + 6, z : z + 4] = 1
        nib.save(nib.Nifti1Image(mask, affine), str(folder / f"{pid}_msk.nii.gz"))
    (root / "derivatives" / "lesions" / pid / "anat" / f"{pid}_boxes.json").write_text("[]", encoding="utf-8")
    truth = root / "derivatives" / "truth" / pid / "anat"
    truth.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(np.zeros(SHAPE, np.float32), affine),
        str(truth / f"{pid}_desc-atrophy_map.nii.gz"),
    )


def write_cohort(root: Path, n_subjects: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rows = ["participant_id\tdiagnosis\tsite\tage"]
    rows += [
        f"sub-{i:03d}\t{('CN', 'AD', 'stroke')[i % 3]}\tS{i % 4}\t{60 + i % 20}"
        for i in range(n_subjects)
    ]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_write_subject, [(root, i) for i in range(n_subjects)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="existing BIDS tree to time (default: write a stand-in)"
    )
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--workers", type=int, default=None,
                        help="reader threads of the parallel run (default: min(8, usable CPUs))")
    parser.add_argument("--quick", action="store_true", help="10 stand-in subjects")
    args = parser.parse_args()
    if args.quick:
        args.subjects = 10

    from cogimg.data.bids import forget_inspections, load_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "cohort"
            t0 = time.perf_counter()
            write_cohort(root, args.subjects)
            seconds = time.perf_counter() - t0
            print(f"wrote stand-in cohort: {args.subjects} subjects in {seconds:.0f} s")
        n_files = sum(1 for p in root.rglob("*") if p.is_file())
        size_gb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e9
        cpus = len(os.sched_getaffinity(0))
        print(f"tree: {root} ({n_files} files, {size_gb:.2f} GB on disk), usable CPUs: {cpus}")
        load_dataset(root, validate_voxels=False)  # warm the directory cache for every run alike

        workers = args.workers or min(8, cpus)
        timings = {}
        for label, kwargs in (
            ("headers only", {"validate_voxels": False}),
            ("full, 1 thread", {"num_workers": 1}),
            (f"full, {workers} threads", {"num_workers": workers}),
        ):
            forget_inspections()  # each run reads every file (no per-process memo)
            t0 = time.perf_counter()
            ds = load_dataset(root, strict=False, **kwargs)
            timings[label] = time.perf_counter() - t0
            n_read = len(ds.summaries)
        base = timings["full, 1 thread"]
        print(f"{'run':<34}{'seconds':>9}{'ms/NIfTI':>10}{'speed-up vs 1 thread':>22}")
        for label, seconds in timings.items():
            print(
                f"{label:<34}{seconds:>9.1f}{seconds / n_read * 1000:>10.1f}{base / seconds:>22.2f}"
            )
        print(f"{len(ds.subjects)} subjects, {n_read} NIfTIs inspected, {len(ds.errors)} errors")
        speedup = base / timings[f"full, {workers} threads"]
        write_result(
            "bids_validation_quick" if args.quick else "bids_validation",
            {"settings": {"subjects": len(ds.subjects), "nifti_read": n_read, "files": n_files,
                          "size_gb": size_gb, "threads": workers, "stand_in": args.data is None},
             "seconds": timings, "ms_per_nifti": {k: v / n_read * 1000 for k, v in timings.items()},
             "errors": len(ds.errors)},
            device="cpu",
            headline={"full validation, s": timings[f"full, {workers} threads"],
                      f"speed-up {workers} threads vs 1": speedup})


if __name__ == "__main__":
    main()
